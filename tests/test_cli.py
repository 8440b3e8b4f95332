"""The tvm-npu command line on a real ONNX file: explain, compile, run, inspect."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tvm_npu.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "relay_ext"))


def _model(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Exp", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_explain_needs_shapes_for_dynamic_inputs_and_names_placements(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    assert main(["explain", path]) == 2
    assert "--shape x=N,3,16,16" in capsys.readouterr().err
    assert main(["explain", path, "--shape", "x=1,3,16,16", "--force-offload", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    where = {p["op"]: p["target"] for p in report["placements"]}
    assert where == {"relax.nn.conv2d": "npu", "relax.nn.relu": "npu", "relax.exp": "cpu"}


def test_run_prints_profile_and_writes_json_and_trace(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_json, trace = tmp_path / "run.json", tmp_path / "trace.json"
    assert main(["run", path, "--shape", "x=1,3,16,16", "--force-offload", "--input", str(tmp_path / "x.npy"),
                 "--json", str(out_json), "--trace", str(trace)]) == 0
    text = capsys.readouterr().out
    assert "npu.conv2d_act" in text and "NPU profile" in text
    data = json.loads(out_json.read_text())
    (layer,) = data["profile"]["layers"]
    assert layer["op"] == "npu.conv2d_act" and layer["cycles"] > layer["roofline_cycles"] > 0
    assert abs(layer["predicted_cycles"] - layer["cycles"]) <= 0.01 * layer["cycles"]
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "conv2d" for e in events)


def test_compile_exports_a_library_that_runs_like_onnxruntime(tmp_path, capsys):
    import tvm
    from tvm import relax

    path = str(tmp_path / "m.onnx")
    _model(path)
    lib = str(tmp_path / "m.so")
    assert main(["compile", path, "--shape", "x=1,3,16,16", "--force-offload", "-o", lib]) == 0
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.abs(want).max())


def test_config_and_bad_model_errors(tmp_path, capsys):
    assert main(["config", "npu-nano"]) == 0
    assert json.loads(capsys.readouterr().out)["mac_rows"] == 8
    assert main(["run", str(tmp_path / "missing.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
