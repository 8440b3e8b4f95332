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
                           helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sin", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_explain_needs_shapes_for_dynamic_inputs_and_names_placements(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    assert main(["explain", path]) == 2
    _one_error_line(capsys, path, "--shape x=N,3,16,16")
    assert main(["explain", path, "--shape", "x=1,3,16,16", "--force-offload", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    where = {p["op"]: p["target"] for p in report["placements"]}
    assert where == {"relax.nn.conv2d": "npu", "relax.nn.relu": "npu", "relax.sin": "cpu"}


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


def _one_error_line(capsys, *words):
    """The command failed with exit code 2 (checked by the caller) and said why in one line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_config_and_bad_model_errors(tmp_path, capsys):
    assert main(["config", "npu-nano"]) == 0
    assert json.loads(capsys.readouterr().out)["mac_rows"] == 8
    missing = str(tmp_path / "missing.onnx")
    assert main(["run", missing]) == 2
    _one_error_line(capsys, missing, "no such file")
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_text("these are notes, not a model\n" * 20)
    assert main(["explain", str(not_a_model)]) == 2
    _one_error_line(capsys, str(not_a_model), "not an ONNX model")
    not_tflite = tmp_path / "m.tflite"
    not_tflite.write_bytes(b"\0" * 64)
    assert main(["compile", str(not_tflite), "-o", str(tmp_path / "m.so")]) == 2
    _one_error_line(capsys, str(not_tflite), "not a TFLite model")
    other = tmp_path / "m.pb"
    other.write_bytes(b"x")
    assert main(["explain", str(other)]) == 2
    _one_error_line(capsys, str(other), "unsupported model format '.pb'")


def test_bad_targets_options_and_inputs_are_refused_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    shape = ["--shape", "x=1,3,16,16"]
    assert main(["explain", path, *shape, "--target", "npu-tiny"]) == 2  # no fallback to the default configuration
    _one_error_line(capsys, "unknown NPU configuration 'npu-tiny'")
    assert main(["explain", path, *shape, "--target", "tpu"]) == 2
    _one_error_line(capsys, "unknown target 'tpu'")
    cfg = str(tmp_path / "missing.json")
    assert main(["explain", path, *shape, "--target", cfg]) == 2
    _one_error_line(capsys, cfg, "no such NPU configuration file")
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text('{"mac_rows": 8}')
    assert main(["explain", path, *shape, "--target", str(bad_cfg)]) == 2
    _one_error_line(capsys, str(bad_cfg), "not an NPU configuration")
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    assert main(["explain", path, *shape, "--plan", str(plan)]) == 2
    _one_error_line(capsys, str(plan))
    assert main(["explain", path, "--shape", "x=1,3,sixteen,16"]) == 2
    _one_error_line(capsys, "--shape", "x=1,3,sixteen,16")
    assert main(["explain", path, "--shape", "y=1,3,16,16"]) == 2
    _one_error_line(capsys, path, "no input 'y'")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    assert main(["run", path, *shape, "--input", str(x)]) == 2
    _one_error_line(capsys, str(x), "[1, 3, 8, 8]", "[1, 3, 16, 16]")
    assert main(["zoo", "no-such-model"]) == 2
    _one_error_line(capsys, "no zoo model 'no-such-model'")


def test_compile_flags_become_compile_options(tmp_path, monkeypatch, capsys):
    """--force-offload, --no-double-buffer and --plan reach tvm.compile as compile_options(...)."""
    import contextlib

    import tvm_npu.options

    seen = []
    real = tvm_npu.options.compile_options

    @contextlib.contextmanager
    def recording(**kw):
        seen.append(kw)
        with real(**kw):
            yield

    monkeypatch.setattr(tvm_npu.options, "compile_options", recording)
    path = str(tmp_path / "m.onnx")
    _model(path)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"c": {"rows": 4, "cols": 8, "depth": 3}}))
    assert main(["explain", path, "--shape", "x=1,3,16,16"]) == 0
    assert main(["explain", path, "--shape", "x=1,3,16,16", "--force-offload", "--no-double-buffer",
                 "--plan", str(plan)]) == 0
    assert seen[0] == {"should_run": True, "double_buffer": True}
    assert seen[1] == {"should_run": False, "double_buffer": False,
                       "plan_overrides": tvm_npu.options.load_plan_overrides(plan)}
    assert len(seen[1]["plan_overrides"]) == 1


def test_explain_groups_reasons_by_default_and_lists_operators_with_verbose(tmp_path, capsys):
    """The report is summary-first: one line per distinct reason an operator stayed on the CPU, with
    its count and the operators it covers; --verbose gives one line per operator."""
    path = str(tmp_path / "m.onnx")
    _model(path)
    assert main(["explain", path, "--shape", "x=1,3,16,16", "--force-offload"]) == 0
    short = capsys.readouterr().out
    assert main(["explain", path, "--shape", "x=1,3,16,16", "--force-offload", "--verbose"]) == 0
    long = capsys.readouterr().out
    ops = [line for line in long.splitlines() if " = relax." in line]
    assert len(ops) == 3, long  # conv2d, relu, exp: one line each
    assert not any(" = relax." in line for line in short.splitlines()), short
    assert short.splitlines()[0] == long.splitlines()[0]  # the same header
