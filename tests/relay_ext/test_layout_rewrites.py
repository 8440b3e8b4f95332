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
