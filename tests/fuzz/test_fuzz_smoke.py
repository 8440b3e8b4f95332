"""The fuzz targets' CI smoke run (tests/fuzz/harness.py), and hypothesis properties of the cheap
checks that run before any frontend. The bar: no crash, no hang, no numeric mismatch against the
CPU build; every bad input a typed error of ours.

The smoke counts are small for the compile-bound targets (each ONNX / TFLite input that loads is
compiled twice, for the NPU and for llvm, and run on both): onnx 30, tflite 40, cli 150 (some of
its inputs compile the seed model), artifact 300 - 36-57 s on two shared cores. scripts/fuzz.py runs
the long ones (`--n 1000`).
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import seeds  # noqa: E402

SMOKE = {"artifact": 300, "cli": 150, "tflite": 40, "onnx": 30}  # (the corpus first, then mutations)


@pytest.mark.parametrize("target", list(SMOKE))
def test_smoke_run_has_no_crash_hang_or_mismatch(target):
    n = SMOKE[target]
    result = harness.fuzz(target, n, seed=int(os.environ.get("FUZZ_SEED", "0")), timeout=120)
    assert result["n"] == n
    assert result["findings"] == [], result["findings"]
    counts = result["counts"]
    # the run reached both sides: inputs refused with our errors, and inputs that went all the way
    assert counts["error"] > 0 and counts["success"] > 0, counts
    assert counts["crash"] == counts["hang"] == counts["mismatch"] == 0


def test_the_classifier_calls_a_raw_exception_a_crash_and_a_wrong_output_a_mismatch():
    import numpy as np

    from tvm_npu.errors import InternalError, ModelFileError

    assert harness._error(ModelFileError("m.onnx", "bad"))["outcome"] == "error"
    assert harness._error(KeyError("x"))["outcome"] == "crash"
    assert harness._error(InternalError("bug"))["outcome"] == "crash"
    cpu = [np.array([1.0, 2.0, 100.0], np.float32)]
    assert harness.compare([cpu[0] + 0.5], cpu) is None  # within fp16 rounding of the range
    assert "max |npu - cpu| = 5" in harness.compare([cpu[0] + 5], cpu)
    assert "non-finite" in harness.compare([np.array([1.0, np.inf, 100.0], np.float32)], cpu)
    assert "3 steps" in harness.compare([np.array([3], np.int8)], [np.array([0], np.int8)])


# ---- hypothesis: the checks before the frontends accept or refuse, never crash ---------------------

_TFLITE = seeds.tflite_int8_conv()
_ARTIFACT = seeds.artifact_bytes()


def _patched(seed: bytes, patch: bytes, at: int, cut: int) -> bytes:
    data = seed[:at] + patch + seed[at + len(patch):]
    return data[:len(data) - cut] if cut < len(data) else data


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=16), st.integers(0, len(_TFLITE)), st.integers(0, 64))
def test_tflite_flatbuffer_checks_refuse_with_our_errors_only(patch, at, cut):
    import tflite

    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    from tvm_npu.errors import ModelFileError, UnsupportedOperatorError
    from tvm_npu.model_check import check_tflite, check_tflite_operators

    data = _patched(_TFLITE, patch, at, cut)
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        check_tflite(model, data, "m.tflite")
        if model.SubgraphsLength():
            check_tflite_operators(model, "m.tflite", OperatorConverter)
    except (ModelFileError, UnsupportedOperatorError) as e:
        assert str(e).startswith("cannot load model m.tflite: ") and "\n" not in str(e)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=16), st.integers(0, len(_ARTIFACT)), st.integers(0, 64))
def test_artifact_loader_refuses_with_artifact_errors_only(patch, at, cut):
    from tvm_npu.artifact import Artifact, ArtifactError

    try:
        Artifact.deserialize(_patched(_ARTIFACT, patch, at, cut))
    except ArtifactError as e:
        assert e.exit_code == 5 and "\n" not in str(e)


_WORDS = st.sampled_from(["explain", "run", "compile", "zoo", "inspect", "--shape", "--json", "-", "-o", "--report",
                          "--target", "npu", "--debug", "-v", "x=1,3,8,8", "m.onnx", "--input", "--seed"])


@settings(max_examples=300)
@given(st.lists(_WORDS | st.text(max_size=8), max_size=8))
def test_cli_argument_parsing_ends_in_a_namespace_or_a_usage_exit(argv):
    import contextlib
    import io

    from tvm_npu.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code in (0, 2)
            return
    assert callable(args.func) and args.command in argv


# What each regression input of the corpus (inputs the fuzzer found crashing or mismatching, then
# fixed) gives now: refused with that error, or (the fp16 overflows, which the compiler may also learn
# to compute right: "match or refuse") a success that matches the CPU build.
REGRESSIONS = {
    "tflite/regress_negative_pool_output_segfault.tflite": ("ModelFileError", "its output gets the shape [1, 4, -27, 4]"),
    "tflite/regress_schema_version_1.tflite": ("ModelFileError", "schema version 1; TFLite models are version 3"),
    "tflite/regress_tensor_without_name.tflite": ("ModelFileError", "tensor #0: its vtable says it has 0 bytes"),
    "tflite/regress_subnormal_scale.tflite": ("ModelFileError", "scales are positive normal float32 numbers"),
    "tflite/regress_nan_scale.tflite": ("ModelFileError", "quantisation scale nan of INT8"),
    "tflite/regress_name_offset.tflite": ("ModelFileError", "its name string is misaligned"),
    "tflite/regress_bias_scale.tflite": ("ModelFileError", "its bias scale 2.52435e-29 is not input scale x weight scale"),
    "tflite/regress_float_input_int8_conv.tflite": ("ModelFileError", "its input is FLOAT32 and its output INT8"),
    "tflite/regress_litert_verifier.tflite": ("ModelFileError", "LiteRT's flatbuffer verifier rejects it"),
    "onnx/regress_fp16_boundary_overflow.onnx": ("RunError", "float32 from the CPU, stored as float16"),
    "onnx/regress_fp16_overflow_refused_a.onnx": ("RunError", "beyond the float16 range", "or a match"),
    "onnx/regress_fp16_overflow_refused_b.onnx": ("RunError", "NaN(s)", "or a match"),
}


def test_regression_inputs_are_refused_with_their_errors():
    found = sorted(str(p.relative_to(harness.CORPUS)) for p in harness.CORPUS.glob("*/regress_*"))
    assert found == sorted(REGRESSIONS)
    for target in ("tflite", "onnx"):
        runner = harness.Runner(target, timeout=120)
        try:
            for name, (kind, words, *match_too) in REGRESSIONS.items():
                if name.startswith(target):
                    result = runner.run((harness.CORPUS / name).read_bytes())
                    if match_too and result["outcome"] == "success":
                        continue
                    assert (result["outcome"], result["kind"]) == ("error", kind), (name, result)
                    assert words in result["detail"], (name, result["detail"])
        finally:
            runner.stop()
