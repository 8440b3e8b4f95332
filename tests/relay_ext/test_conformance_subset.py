"""CI subset of the ONNX operator conformance run (scripts/onnx_conformance.py, docs/CONFORMANCE.md).

76 of onnx's node test cases, chosen to cover every operator the NPU takes (conv, gemm / matmul,
the elementwise and activation ops, pooling, softmax, mean, concat), cases of the same operators
that must stay on the CPU (integer dtypes, softmax over a non-last axis, ceil-mode or dilated
pooling, pooling that counts padding, non-constant weights, ONNX Max/Min) and one case of each
known compiler bug. They run through the very functions the script uses (`load_cases`,
`run_cases`, `summarize`), on `llvm` and on `npu` with forced offload, in two worker processes.

Cases marked "weights" are run with their graph inputs after the first frozen to constants (the
script's `--freeze weights`): that is how convolution and matmul weights, clip bounds, divisors and
reduce axes become constants the NPU can take.

The assertions are exact so that a change shows:
* no case that passes on llvm fails on npu, except the KNOWN_NPU_FAILURES (compiler bugs recorded
  in docs/CONFORMANCE.md), which must still fail in the recorded way: when one gets fixed, move it;
* the set of cases that put at least one operator on the NPU is exactly EXPECTED_NPU_USED;
* every case that should fall back leaves everything on the CPU and passes.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))

import onnx_conformance as oc  # noqa: E402

# onnx/backend/test/case/node/<module>.py generators to import (fast: no full 1,884-case load)
MODULES = ["add", "sub", "mul", "div", "max", "min", "relu", "sigmoid", "tanh", "leakyrelu", "gelu", "hardswish",
           "hardsigmoid", "clip", "maxpool", "averagepool", "globalaveragepool", "softmax", "reducemean", "concat",
           "elu", "gemm", "matmul", "conv", "unsqueeze", "if_", "trilu"]

# Operators the NPU supports: each of these puts at least one operator on the NPU.
SUPPORTED = [
    "test_softmax_large_number",  # float32 inputs stay fp32 until the row maximum is subtracted
    "test_add", "test_add_bcast", "test_sub", "test_sub_bcast", "test_mul", "test_mul_bcast",
    "test_relu", "test_sigmoid", "test_tanh", "test_leakyrelu", "test_leakyrelu_default",
    "test_gelu_default_1", "test_gelu_tanh_1", "test_gelu_tanh_2_expanded", "test_hardswish", "test_hardsigmoid",
    "test_elu",
    "test_maxpool_2d_default", "test_maxpool_2d_pads", "test_maxpool_2d_strides", "test_maxpool_2d_same_upper",
    "test_averagepool_2d_default", "test_averagepool_2d_pads", "test_averagepool_2d_strides",
    "test_averagepool_2d_same_lower", "test_globalaveragepool", "test_globalaveragepool_precomputed",
    "test_softmax_example", "test_softmax_default_axis", "test_softmax_axis_2", "test_softmax_negative_axis",
    "test_concat_2d_axis_0", "test_concat_3d_axis_1", "test_concat_3d_axis_negative_1",
    "test_gemm_all_attributes", "test_gemm_default_vector_bias", "test_matmul_2d", "test_matmul_4d",
    "test_div",  # division by a tensor: a * reciprocal(b)
    "test_max_float32", "test_min_two_inputs",  # ONNX Max/Min (stack + max/min reductions)
    "test_relu_expanded_ver18",
]
SUPPORTED_WEIGHTS = [
    "test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same",
    "test_gemm_default_no_bias", "test_gemm_transposeB", "test_gemm_all_attributes", "test_gemm_default_matrix_bias",
    "test_matmul_2d", "test_reduce_mean_keepdims_random", "test_reduce_mean_do_not_keepdims_example",
    "test_div", "test_div_bcast", "test_clip", "test_clip_default_min",
]
# Must stay on the CPU and pass there: integer dtypes, softmax over a non-last axis, ceil-mode /
# dilated / 1-D / 3-D pooling, pooling that counts padding,
# Clip whose bounds are inputs, a convolution whose weights are inputs, and
# (frozen) matmul by a weight of rank > 2.
FALLBACK = [
    # IR that TVM's partitioning passes cannot take (shape computations, If, symbolic arange): CPU
    "test_unsqueeze_axis_0", "test_if", "test_triu_zero",
    "test_add_int8", "test_mul_uint8", "test_div_int32_trunc",
    "test_softmax_axis_0", "test_maxpool_2d_ceil", "test_maxpool_2d_dilations",
    "test_maxpool_3d_default", "test_averagepool_2d_pads_count_include_pad", "test_averagepool_1d_default",
    "test_conv_with_strides_no_padding", "test_clip",
]
FALLBACK_WEIGHTS = ["test_matmul_3d", "test_matmul_4d"]
# Cases that pass on llvm and fail on npu today, with the stage of the failure (and a fragment of
# the error where it is stable): compiler bugs (docs/CONFORMANCE.md, "Compiler bugs found"). They
# must keep failing at that stage; when one is fixed this test fails: move the case to SUPPORTED or
# FALLBACK.
KNOWN_NPU_FAILURES: dict = {}  # none: the compiler bugs the full run found are fixed (docs/CONFORMANCE.md)

W = "[weights]"
EXPECTED_NPU_USED = sorted(set(SUPPORTED) | {n + W for n in SUPPORTED_WEIGHTS})
EXPECTED_NPU_USED_COUNT = 60  # measured; the list above names them


def _cases():
    plain = set(SUPPORTED) | set(FALLBACK) | set(KNOWN_NPU_FAILURES)
    weights = set(SUPPORTED_WEIGHTS) | set(FALLBACK_WEIGHTS)
    loaded = {c["name"]: c for c in oc.load_cases(names=plain | weights, modules=MODULES)}
    cases = [loaded[n] for n in sorted(plain)]
    cases += [dict(loaded[n], name=n + W, freeze="weights") for n in sorted(weights)]
    return cases


@pytest.fixture(scope="module")
def conformance(npu_emulator):
    t0 = time.time()
    cases = _cases()
    records = oc.run_cases(cases, ("llvm", "npu"), workers=2, timeout=60, progress=False)
    summary = oc.summarize(records)
    print(oc.format_report(summary, records))
    print(f"subset: {len(cases)} cases in {time.time() - t0:.1f} s")
    return {r["name"]: r for r in records}, summary


def test_subset_size():
    n = len(_cases())
    assert 40 <= n <= 80, n


def test_every_case_ran_on_both_targets(conformance):
    records, _ = conformance
    for name, r in records.items():
        for t in ("llvm", "npu"):
            assert t in r, (name, t)
            assert r[t]["stage"] not in ("crash", "timeout"), (name, t, r[t]["error"])


def test_all_pass_on_llvm(conformance):
    records, _ = conformance
    failing = {n: r["llvm"]["error"] for n, r in records.items() if not oc.passed(r, "llvm")}
    assert not failing


def test_no_llvm_pass_fails_on_npu(conformance):
    records, summary = conformance
    regressions = {r["name"]: (r["stage"], r["error"]) for r in summary["regressions"]}
    unexpected = {n: e for n, e in regressions.items() if n not in KNOWN_NPU_FAILURES}
    assert not unexpected, "cases passing on llvm that fail on npu:\n" + "\n".join(
        f"{n}: {s}: {e}" for n, (s, e) in unexpected.items())
    for name, (stage, fragment) in KNOWN_NPU_FAILURES.items():
        assert name in regressions, f"{name} now passes on npu: move it out of KNOWN_NPU_FAILURES"
        got_stage, error = regressions[name]
        assert got_stage == stage and (fragment is None or fragment in error), (name, got_stage, error)


def test_npu_used_exactly(conformance):
    records, summary = conformance
    used = sorted(n for n, r in records.items() if r["npu"]["npu_ops"] > 0)
    assert used == EXPECTED_NPU_USED
    assert summary["npu_used"] == len(EXPECTED_NPU_USED) == EXPECTED_NPU_USED_COUNT


def test_fallback_cases_stay_on_cpu_and_pass(conformance):
    records, _ = conformance
    for name in FALLBACK + [n + W for n in FALLBACK_WEIGHTS]:
        r = records[name]
        assert r["npu"]["npu_ops"] == 0, (name, r["npu"].get("placements"))
        assert oc.passed(r, "npu"), (name, r["npu"]["error"])


def test_npu_outputs_use_fp16_tolerance_with_margin(conformance):
    """Every output computed on the NPU is within a tenth of the fp16 tolerance (the tolerance is a
    bound with margin, not a fit to today's errors)."""
    records, _ = conformance
    for name, r in records.items():
        if r["npu"]["npu_ops"] and oc.passed(r, "npu"):
            outs = r["npu"]["outputs"]
            assert any(o["tolerance"] == "fp16" for o in outs), name
            for o in outs:
                if o["tolerance"] == "fp16":
                    assert o["err_rel_to_max"] <= oc.FP16_RTOL / 10, (name, o)


def test_timeout_is_recorded_and_the_run_goes_on(npu_emulator):
    """A task that exceeds the per-case timeout is recorded as "timeout" and its worker replaced;
    the run still returns a record for every case (here every task times out: a fresh worker
    cannot even import TVM in 0.3 s)."""
    cases = oc.load_cases(names=["test_relu", "test_sigmoid"], modules=["relu", "sigmoid"])
    t0 = time.time()
    records = oc.run_cases(cases, ("llvm", "npu"), workers=2, timeout=0.3, progress=False)
    assert time.time() - t0 < 30
    assert [r["name"] for r in records] == ["test_relu", "test_sigmoid"]
    for r in records:
        for t in ("llvm", "npu"):
            assert r[t]["stage"] == "timeout" and r[t]["status"] == "fail", r[t]
    summary = oc.summarize(records)
    assert summary["llvm_pass"] == summary["npu_pass"] == summary["llvm_pass_npu_fail"] == 0


def test_worker_crash_is_recorded_and_the_run_goes_on(npu_emulator):
    """A case that kills its worker (SIGABRT) is recorded as "crash" with the worker's last log lines;
    the next cases run in a fresh worker and pass."""
    relu, sigmoid = oc.load_cases(names=["test_relu", "test_sigmoid"], modules=["relu", "sigmoid"])
    cases = [dict(relu, name="crasher", crash_worker_for_test=True), sigmoid]
    records = oc.run_cases(cases, ("llvm",), workers=1, timeout=60, progress=False)
    assert records[0]["llvm"]["stage"] == "crash"
    assert "crashing on purpose" in records[0]["llvm"]["error"]
    assert oc.passed(records[1], "llvm"), records[1]["llvm"]
