"""Rewrites that turn what frontends emit into operators the NPU runs: a split into strided slices
(layout operators), a zero pad into the padding of the convolution that reads it. Values against
onnxruntime, placement from the report."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from onnx_graphs import compile_run, const, fp16_close, model, reference

RNG = np.random.default_rng(5)


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def test_split_parts_become_slices_on_the_npu():
    """A YOLO-style split into unequal channel groups, one part activated, concatenated back: exact
    (copies and relu on fp16-representable data), one NPU region, no split left on the CPU."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Split", ["a", "sizes"], ["s0", "s1", "s2"], axis=1),
             helper.make_node("Sigmoid", ["s1"], ["t1"]),
             helper.make_node("Concat", ["s2", "t1", "s0"], ["y"], axis=1)]
    m = model(nodes, [("x", (1, 12, 6, 10))], [("y", (1, 12, 6, 10))], [_ints("sizes", [3, 4, 5])])
    x = RNG.standard_normal((1, 12, 6, 10)).astype(np.float16).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want)
    untouched = np.concatenate([want[:, :5], want[:, 9:]], axis=1)  # the copied parts are exact
    np.testing.assert_array_equal(np.concatenate([got[0][:, :5], got[0][:, 9:]], axis=1), untouched)
    assert all(p.target == "npu" for p in report.placements), report.summary()
    assert sum(p.op == "relax.strided_slice" for p in report.placements) == 3, report.summary()
    assert len(report.functions) == 1


def test_written_out_softmax_becomes_the_operator():
    """ONNX's expanded Softmax (ReduceMax, Sub, Exp, ReduceSum, Div) on values around 1e4: rewritten into
    softmax, which subtracts the row maximum before rounding to fp16 (written out, fp16 would round the
    maximum of 10000-ish values to a multiple of 8 first)."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Exp", ["d"], ["e"]),
             helper.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1), helper.make_node("Div", ["e", "s"], ["y"])]
    m = model(nodes, [("x", (3, 8))], [("y", (3, 8))], [_ints("ax", [1])], opset=13)
    x = (10000 + RNG.standard_normal((3, 8)) * 2).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want)
    assert [p.composite for p in report.placements] == ["npu.softmax"], report.summary()
def test_zero_pad_is_folded_into_the_convolution():
    """ONNX Pad (asymmetric, on H and W) before a strided Conv: the pad disappears into the conv's
    padding, so no operator copies the padded tensor, and the result matches onnxruntime."""
    pads = [0, 0, 1, 2, 0, 0, 0, 1]  # ONNX: begins of N, C, H, W, then ends
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w", "b"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1])]
    oh = (9 + 1 + 1 + 0 - 3) // 2 + 1
    ow = (11 + 2 + 1 + 0 + 1 - 3) // 2 + 1
    m = model(nodes, [("x", (1, 4, 9, 11))], [("y", (1, 6, oh, ow))],
              [_ints("pads", pads), const("w", (6, 4, 3, 3)), const("b", (6,))])
    x = RNG.standard_normal((1, 4, 9, 11)).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want, 36)
    ops = [p.op for p in report.placements]
    assert "relax.nn.pad" not in ops, report.summary()
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_nonzero_pad_is_not_folded():
    """A pad with value 1 is not a convolution's zero halo: it stays a pad, and the result is right."""
    nodes = [helper.make_node("Pad", ["x", "pads", "v"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3])]
    m = model(nodes, [("x", (1, 2, 6, 6))], [("y", (1, 3, 6, 6))],
              [_ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), numpy_helper.from_array(np.array(1.0, np.float32), "v"),
               const("w", (3, 2, 3, 3))])
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want, 18)
    assert "relax.nn.pad" in [p.op for p in report.placements], report.summary()
