"""Constant scale / shift chains after a convolution folded into its weights and bias
(relay_ext/fold_affine.py), against onnxruntime: one NPU operator instead of one per affine step."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from onnx_graphs import RNG, compile_run, const, fp16_close, model, reference


def _lab_model(c=16, scale_shape=(1,), per_channel=False):
    """conv -> bias -> * s -> + b -> hard-swish (PP-LCNetV3's learnable affine block), and a second
    conv whose output also feeds the graph output (used twice: must not be folded)."""
    s = numpy_helper.from_array((np.full(scale_shape, 1.7) if not per_channel else
                                 RNG.uniform(0.5, 2.0, (1, c, 1, 1))).astype(np.float32), "s")
    b = numpy_helper.from_array((np.full(scale_shape, -0.3) if not per_channel else
                                 RNG.standard_normal((1, c, 1, 1))).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "wb"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c1", "s"], ["m1"], name="lab_scale"),
             helper.make_node("Add", ["m1", "b"], ["a1"], name="lab_shift"),
             helper.make_node("HardSwish", ["a1"], ["h1"], name="act"),
             helper.make_node("Conv", ["h1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Mul", ["c2", "s"], ["y2"], name="scaled_twice_used"),
             helper.make_node("Add", ["c2", "y2"], ["y"], name="out")]
    return model(nodes, [("x", [1, 8, 12, 12])], [("y", [1, c, 12, 12])],
                 [const("w", [c, 8, 3, 3]), const("wb", [c]), const("w2", [c, c, 1, 1]), s, b])


@pytest.mark.parametrize("per_channel", [False, True])
def test_affine_after_conv_folds_and_matches_onnxruntime(per_channel):
    m = _lab_model(per_channel=per_channel)
    x = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32)
    (got,), report = compile_run(m, {"x": x}, target="npu-edge")
    (want,) = reference(m, {"x": x})
    fp16_close(got, want, depth=72)
    npu = [p for p in report.placements if p.target == "npu"]
    assert len(npu) == len(report.placements)
    by_op = {p.binding: p for p in report.placements}
    # conv1's scale and shift live in its weights and bias: no multiply / add operators of their own
    assert not any("lab_scale" in b or "lab_shift" in b for b in by_op), sorted(by_op)
    # conv2's output is read twice (by the scale and by the final add): left alone
    assert any("scaled_twice_used" in b for b in by_op), sorted(by_op)


def test_chain_is_computed_exactly_in_float64_before_fp16():
    """The folded weights are W * s rounded once to fp16 by the NPU; compare with the unfolded graph
    compiled for llvm (float32): the NPU stays within fp16 tolerance of it too."""
    m = _lab_model(per_channel=True)
    x = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32)
    (got,), _ = compile_run(m, {"x": x}, target="npu-edge")
    (cpu,), _ = compile_run(m, {"x": x}, target="llvm")
    fp16_close(got, cpu, depth=72)


def test_nonchannel_constant_is_not_folded():
    """A constant that varies along W (shape (12,) on NCHW) is not a per-channel affine: kept."""
    wv = numpy_helper.from_array(RNG.standard_normal((12,)).astype(np.float32), "wv")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c1", "wv"], ["y"], name="along_w")]
    m = model(nodes, [("x", [1, 8, 12, 12])], [("y", [1, 16, 12, 12])], [const("w", [16, 8, 3, 3]), wv])
    x = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32)
    (got,), report = compile_run(m, {"x": x}, target="npu-edge")
    fp16_close(got, reference(m, {"x": x})[0], depth=72)
    assert any("along_w" in p.binding for p in report.placements)


def _input_affine_model(pads, groups=1, c=16):
    """hard-swish -> * s -> + b (per channel) -> conv (1x1 unpadded, or padded): the affine folds into
    the convolution only when no tap reads padding."""
    s = numpy_helper.from_array(RNG.uniform(0.5, 2.0, (1, c, 1, 1)).astype(np.float32), "s")
    b = numpy_helper.from_array(RNG.standard_normal((1, c, 1, 1)).astype(np.float32), "b")
    k = 1 if not any(pads) else 3
    nodes = [helper.make_node("HardSwish", ["x"], ["h"], name="act"),
             helper.make_node("Mul", ["h", "s"], ["m"], name="in_scale"),
             helper.make_node("Add", ["m", "b"], ["a"], name="in_shift"),
             helper.make_node("Conv", ["a", "w", "wb"], ["y"], name="conv", pads=pads, group=groups)]
    return model(nodes, [("x", [1, c, 10, 10])], [("y", [1, c, 10 - k + 1 + pads[0] + pads[2], 10 - k + 1 + pads[1] + pads[3]])],
                 [const("w", [c, c // groups, k, k]), const("wb", [c]), s, b])


@pytest.mark.parametrize("pads,folded", [([0, 0, 0, 0], True), ([1, 1, 1, 1], False)])
def test_affine_feeding_an_unpadded_conv_folds_into_it(pads, folded):
    m = _input_affine_model(pads)
    x = (RNG.standard_normal((1, 16, 10, 10)) * 3).astype(np.float32)
    (got,), report = compile_run(m, {"x": x}, target="npu-edge")
    fp16_close(got, reference(m, {"x": x})[0], depth=16 * 9)
    names = {p.binding for p in report.placements}
    assert all(p.target == "npu" for p in report.placements)
    assert (not any("in_scale" in n or "in_shift" in n for n in names)) == folded, sorted(names)
