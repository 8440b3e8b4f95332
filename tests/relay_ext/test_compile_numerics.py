"""tvm.compile(target="npu") on small ONNX graphs: values against onnxruntime, and NPU placement."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper, numpy_helper
from tvm import relax

import tvm_npu
from onnx_graphs import RNG, compile_run, const, fp16_close, model, on_npu, reference

# A tiny custom machine: forces row tiles, channel tiles and K chunks on modest shapes.
TINY = tvm_npu.NPUConfig("npu-tiny", 4, 4, 8 * 1024, 4 * 1024, 4 * 1024, 4, 16, 4, 100)
TINY_TARGET = tvm_npu.npu_target(TINY)


def _conv_case(cin, cout, k, stride=1, dil=1, group=1, pad=1, hw=12, bias=True, act=None):
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], kernel_shape=[k, k],
                              strides=[stride, stride], dilations=[dil, dil], group=group, pads=[pad] * 4)]
    out = "c"
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
        out = "y"
    elif act == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["c"], ["y"]))
        out = "y"
    inits = [const("w", (cout, cin // group, k, k))] + ([const("b", (cout,))] if bias else [])
    oh = (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    m = model(nodes, [("x", (1, cin, hw, hw))], [(out, (1, cout, oh, oh))], inits)
    return m, cin * k * k // group


CONV_CASES = {
    "3x3_bias_relu": dict(cin=8, cout=16, k=3, act="relu"),
    "stride2": dict(cin=6, cout=10, k=3, stride=2),
    "dilation2": dict(cin=4, cout=8, k=3, dil=2, pad=2),
    "depthwise": dict(cin=12, cout=12, k=3, group=12),
    "depthwise_mult2": dict(cin=6, cout=12, k=3, group=6, act="relu"),
    "grouped": dict(cin=8, cout=12, k=3, group=4),
    "1x1_no_bias": dict(cin=20, cout=7, k=1, pad=0, bias=False, act="sigmoid"),
    "5x5_odd": dict(cin=3, cout=5, k=5, pad=2, hw=9),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
@pytest.mark.parametrize("target", ["npu", TINY_TARGET], ids=["npu-edge", "npu-tiny"])
def test_conv2d_matches_onnxruntime(name, target):
    m, depth = _conv_case(**CONV_CASES[name])
    x = RNG.standard_normal(m.graph.input[0].type.tensor_type.shape.dim and
                            [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x}, target)
    fp16_close(got[0], want, depth)
    placed = on_npu(report)
    assert any(p.op == "relax.nn.conv2d" for p in placed), report.summary()
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_tiny_config_tiles_rows_channels_and_depth():
    """On npu-tiny a 32->24 3x3 conv cannot hold whole rows of K or channels: the plan must split all three."""
    from tvm_npu import tiling
    from tvm_npu.ir import Activation, OpDesc, TensorDesc

    w = np.zeros((24, 32, 3, 3), np.float32)
    desc = OpDesc("npu.conv2d", "conv2d", [TensorDesc((1, 32, 16, 16), "float32"), TensorDesc(w.shape, "float32", w)],
                  TensorDesc((1, 24, 16, 16), "float32"),
                  {"strides": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1, "data_layout": "NCHW",
                   "kernel_layout": "OIHW", "out_layout": "NCHW", "out_dtype": ""}, Activation("relu"))
    plan = tiling.plan(desc, TINY)
    assert plan.rows < 16 and plan.cols < 24 and plan.depth < 32, plan
    m, depth = _conv_case(cin=32, cout=24, k=3, hw=16, act="relu")
    x = RNG.standard_normal((1, 32, 16, 16)).astype(np.float32)
    got, _ = compile_run(m, {"x": x}, TINY_TARGET)
    fp16_close(got[0], reference(m, {"x": x})[0], depth)


@pytest.mark.parametrize("act", [None, "Relu", "Sigmoid", "Tanh"])
def test_gemm_bias_activation(act):
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1)]
    out = "g"
    if act:
        nodes.append(helper.make_node(act, ["g"], ["y"]))
        out = "y"
    m = model(nodes, [("x", (5, 40))], [(out, (5, 24))], [const("w", (24, 40)), const("b", (24,))])
    x = RNG.standard_normal((5, 40)).astype(np.float32)
    for target in ("npu", TINY_TARGET):
        got, report = compile_run(m, {"x": x}, target)
        fp16_close(got[0], reference(m, {"x": x})[0], 40)
        assert any(p.composite.startswith("npu.matmul") for p in on_npu(report)), report.summary()


def test_matmul_batched_lhs():
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (2, 3, 7, 16))], [("y", (2, 3, 7, 9))],
              [const("w", (16, 9))])
    x = RNG.standard_normal((2, 3, 7, 16)).astype(np.float32)
    got, report = compile_run(m, {"x": x}, TINY_TARGET)
    fp16_close(got[0], reference(m, {"x": x})[0], 16)
    assert on_npu(report)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_broadcast(op):
    if op == "Div":  # by a constant, kept away from zero
        divisor = np.array([0.5, -1.5, 2.0, 3.0, -0.75, 1.25], np.float32).reshape(1, 6, 1, 1)
        inits, ins = [numpy_helper.from_array(divisor, "b")], [("a", (2, 6, 5, 7))]
    else:
        inits, ins = [], [("a", (2, 6, 5, 7)), ("b", (1, 6, 1, 7))]
    m = model([helper.make_node(op, ["a", "b"], ["y"])], ins, [("y", (2, 6, 5, 7))], inits)
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in ins}
    got, report = compile_run(m, feeds, "npu")
    fp16_close(got[0], reference(m, feeds)[0])
    assert on_npu(report), report.summary()


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_onnx_variadic_max_min_run_pairwise_on_the_npu(op):
    """ONNX Max/Min over several broadcasting inputs import pairwise (tvm_npu/frontend: TVM's own
    converter stacks broadcast copies and reduces them), so they run as NPU maximum/minimum: each
    result is one of the fp16-rounded inputs, exactly."""
    m = model([helper.make_node(op, ["a", "b", "c"], ["y"])],
              [("a", (2, 6, 5, 7)), ("b", (1, 6, 1, 7)), ("c", (7,))], [("y", (2, 6, 5, 7))])
    feeds = {n: RNG.standard_normal(s).astype(np.float16).astype(np.float32)
             for n, s in (("a", (2, 6, 5, 7)), ("b", (1, 6, 1, 7)), ("c", (7,)))}
    got, report = compile_run(m, feeds, "npu")
    np.testing.assert_array_equal(got[0], reference(m, feeds)[0])
    assert [p.op for p in on_npu(report)] == [f"relax.{op.lower()}imum"] * 2, report.summary()


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_relax_maximum_minimum_broadcast(op):
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([2, 6, 5, 7], "float32"))
    b = relax.Var("b", relax.TensorType([1, 6, 1, 7], "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            y = bb.emit_output(getattr(relax.op, op)(a, b))
        bb.emit_func_output(y)
    av = RNG.standard_normal((2, 6, 5, 7)).astype(np.float32)
    bv = RNG.standard_normal((1, 6, 1, 7)).astype(np.float32)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(bb.get(), target="npu")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(av), tvm.runtime.tensor(bv)).numpy()
    want = getattr(np, op)(av.astype(np.float16), bv.astype(np.float16)).astype(np.float32)
    np.testing.assert_array_equal(got, want)  # max/min of fp16 values is exact
    assert [p.composite for p in on_npu(tvm_npu.last_report())] == [f"npu.{op}"]


@pytest.mark.parametrize("act,attrs", [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.2}),
                                       ("Gelu", {}), ("HardSwish", {})])
def test_activations(act, attrs):
    opset = 20 if act == "Gelu" else 17
    m = model([helper.make_node(act, ["x"], ["y"], **attrs)], [("x", (1, 4, 6, 10))], [("y", (1, 4, 6, 10))],
              opset=opset)
    x = (RNG.standard_normal((1, 4, 6, 10)) * 3).astype(np.float32)
    got, report = compile_run(m, {"x": x}, "npu")
    fp16_close(got[0], reference(m, {"x": x})[0])
    assert on_npu(report), report.summary()


@pytest.mark.parametrize("kind,k,s,p", [("MaxPool", 3, 2, 1), ("MaxPool", 2, 2, 0), ("AveragePool", 3, 1, 1),
                                        ("AveragePool", 2, 2, 0)])
def test_pooling(kind, k, s, p):
    oh = (15 + 2 * p - k) // s + 1
    m = model([helper.make_node(kind, ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)],
              [("x", (1, 5, 15, 15))], [("y", (1, 5, oh, oh))])
    x = RNG.standard_normal((1, 5, 15, 15)).astype(np.float32)
    for target in ("npu", TINY_TARGET):
        got, report = compile_run(m, {"x": x}, target)
        fp16_close(got[0], reference(m, {"x": x})[0], k * k)
        assert on_npu(report), report.summary()


def test_softmax_mean_concat_chain():
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Concat", ["m", "g"], ["y"], axis=1)]
    m = model(nodes, [("x", (1, 6, 5, 9))], [("y", (1, 12, 1, 1))], opset=17)
    m.opset_import[0].version = 17
    x = (RNG.standard_normal((1, 6, 5, 9)) * 2).astype(np.float32)
    got, report = compile_run(m, {"x": x}, "npu")
    fp16_close(got[0], reference(m, {"x": x})[0], 45)
    ops = {p.op for p in on_npu(report)}
    assert {"relax.nn.softmax", "relax.mean", "relax.concat"} <= ops, report.summary()


def test_batch_matmul_of_two_activations_like_attention():
    """Q @ K^T and P @ V: both operands are activations, paired batch by batch."""
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = model(nodes, [("q", (2, 4, 7, 16)), ("k", (2, 4, 16, 7)), ("v", (2, 4, 7, 16))], [("y", (2, 4, 7, 16))])
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s in
             (("q", (2, 4, 7, 16)), ("k", (2, 4, 16, 7)), ("v", (2, 4, 7, 16)))}
    for target in ("npu", TINY_TARGET):
        got, report = compile_run(m, feeds, target)
        fp16_close(got[0], reference(m, feeds)[0], 16)
        assert [p.op for p in on_npu(report)] == ["relax.matmul", "relax.nn.softmax", "relax.matmul"], \
            report.summary()


def test_broadcast_batch_matmul_is_refused_with_reason():
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([2, 5, 8], "float32"))
    b = relax.Var("b", relax.TensorType([1, 8, 6], "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(y)
    av = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    bv = RNG.standard_normal((1, 8, 6)).astype(np.float32)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(bb.get(), target="npu")
    rep = tvm_npu.last_report()
    assert any("batch dimensions differ" in r for p in rep.placements for r in p.reasons), rep.summary()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(av), tvm.runtime.tensor(bv)).numpy()
    np.testing.assert_allclose(got, av @ bv, rtol=1e-5, atol=1e-5)


def test_division_by_a_constant_is_unbiased():
    """x / 6 must not become x * fp16(1/6), which is 2.4e-4 too small for every element."""
    m = model([helper.make_node("Div", ["x", "six"], ["y"])], [("x", (1, 8, 32, 32))], [("y", (1, 8, 32, 32))],
              [numpy_helper.from_array(np.array(6.0, np.float32), "six")])
    x = (RNG.uniform(0.5, 4.0, (1, 8, 32, 32))).astype(np.float16).astype(np.float32)  # exact fp16 inputs
    got, report = compile_run(m, {"x": x}, "npu")
    rel = (got[0].astype(np.float64) - x / 6.0) / (x / 6.0)
    assert on_npu(report)
    assert abs(rel.mean()) < 3e-5, rel.mean()  # rounding to fp16 once: unbiased
    assert np.abs(rel).max() <= 2.0 ** -11  # within half an fp16 ulp of the exact quotient
