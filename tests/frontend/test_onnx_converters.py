"""Our ONNX converters (tvm_npu/frontend/onnx_ops.py): one small graph per converter, imported by
`tvm_npu.importer.load`, compiled for llvm and for npu (forced offload), compared with onnxruntime:
strictly on llvm, with the fp16 tolerance where an operator ran on the NPU."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_npu
from tvm_npu.errors import UnsupportedOperatorError
from tvm_npu import importer
from tvm_npu.frontend import onnx_ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "relay_ext"))
from onnx_graphs import fp16_close, on_npu, reference

RNG = np.random.default_rng(11)
F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def graph(nodes, inputs, outputs, inits=(), opset=18, ml=False):
    """inputs/outputs: [(name, elem_type, shape)]."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                          [helper.make_tensor_value_info(*o) for o in outputs], list(inits))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def run(m, feeds, target):
    mod = importer.load(m, static=False).mod
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target=target)
    report = tvm_npu.last_report() if target == "npu" else None
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input])
    outs = list(out) if not hasattr(out, "numpy") else [out]
    return [o.numpy() for o in outs], report


def check(m, feeds, expect_npu=None):
    """Both targets against onnxruntime; returns the npu report."""
    want = reference(m, feeds)
    got, _ = run(m, feeds, "llvm")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    got, report = run(m, feeds, "npu")
    used = bool(on_npu(report))
    if expect_npu is not None:
        assert used == expect_npu, report
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if used and w.dtype.kind == "f":
            fp16_close(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return report


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_install_is_idempotent_and_adds_to_tvm_table():
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    before = fe._get_convert_map
    onnx_ops.install()
    assert fe._get_convert_map is before
    table = fe._get_convert_map()
    assert table["CumProd"].base is onnx_ops.CumProd and table["Shape"] is onnx_ops.Shape
    assert table["Relu"].base is fe.Relu  # TVM's own converters stay, wrapped for constant folding


def test_shape_static_is_a_constant_and_slices():
    # Shape -> Cast -> Mul: TVM's ShapeExpr is refused by Cast/Mul ("cannot handle ShapeExpr inputs")
    m = graph([helper.make_node("Shape", ["x"], ["s"], start=-3, end=-1),
               helper.make_node("Cast", ["s"], ["f"], to=F32),
               helper.make_node("Mul", ["f", "x1"], ["y"])],
              [("x", F32, [2, 3, 4, 5]), ("x1", F32, [2])], [("y", F32, [2])])
    check(m, {"x": rand(2, 3, 4, 5), "x1": rand(2)})


def test_folded_shape_arithmetic_feeds_reshape():
    # Reshape fed by shape computations (Shape, Slice, Concat, ConstantOfShape): folded to a constant
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["head"]),
             helper.make_node("ConstantOfShape", ["one"], ["minus"],
                              value=numpy_helper.from_array(np.array([-1], np.int64))),
             helper.make_node("Concat", ["head", "minus"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    m = graph(nodes, [("x", F32, [2, 3, 4])], [("y", F32, [2, 12])], [one, zero])
    mod = importer.load(m).mod  # static: the folded shape gives the output its static shape
    assert "tensor_to_shape" not in mod.script() and importer.load(m).outputs[0].shape == (2, 12)
    report = check(m, {"x": rand(2, 3, 4)}, expect_npu=True)
    assert "relax.nn.relu" in [p.op for p in on_npu(report)]


def test_constant_value_attributes():
    nodes = [helper.make_node("Constant", [], ["a"], value_float=2.5),
             helper.make_node("Constant", [], ["b"], value_floats=[1.0, -1.0, 0.5]),
             helper.make_node("Constant", [], ["n"], value_ints=[3, 1]),
             helper.make_node("Mul", ["x", "a"], ["xa"]),
             helper.make_node("Add", ["xa", "b"], ["y"]),
             helper.make_node("Reshape", ["y", "n"], ["z"])]
    m = graph(nodes, [("x", F32, [3])], [("z", F32, [3, 1])])
    check(m, {"x": rand(3)})


def test_constant_refuses_strings():
    m = graph([helper.make_node("Constant", [], ["s"], value_strings=["a"], name="cs")], [], [("s", TensorProto.STRING, [1])])
    with pytest.raises(UnsupportedOperatorError, match="Constant node 'cs'.*value_strings"):
        importer.load(m, static=False)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_layer_normalization_three_outputs(axis):
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"], axis=axis, epsilon=1e-3)
    norm = [2, 3, 4][axis:]
    kept = [2, 3, 4][:axis % 3] + [1] * len(norm)
    m = graph([node], [("x", F32, [2, 3, 4]), ("w", F32, norm), ("b", F32, norm)],
              [("y", F32, [2, 3, 4]), ("mean", F32, kept), ("inv", F32, kept)], opset=17)
    check(m, {"x": rand(2, 3, 4), "w": rand(*norm), "b": rand(*norm)})


def test_rms_normalization_axis0():
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=0, epsilon=1e-4)
    m = graph([node], [("x", F32, [2, 3]), ("s", F32, [2, 3])], [("y", F32, [2, 3])], opset=23)
    check(m, {"x": rand(2, 3), "s": rand(2, 3)})


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization(p):
    m = graph([helper.make_node("LpNormalization", ["x"], ["y"], axis=0, p=p)], [("x", F32, [3, 4])],
              [("y", F32, [3, 4])])
    check(m, {"x": rand(3, 4)})


def test_lp_normalization_refuses_p3():
    m = graph([helper.make_node("LpNormalization", ["x"], ["y"], p=3, name="lp")], [("x", F32, [3, 4])],
              [("y", F32, [3, 4])])
    with pytest.raises(UnsupportedOperatorError, match="LpNormalization node 'lp': p=3"):
        importer.load(m)


def test_celu_and_swish():
    m = graph([helper.make_node("Celu", ["x"], ["c"], alpha=0.7), helper.make_node("Swish", ["c"], ["y"], alpha=1.5)],
              [("x", F32, [2, 5])], [("y", F32, [2, 5])], opset=24)
    check(m, {"x": rand(2, 5) * 3})


@pytest.mark.parametrize("op,exclusive,reverse", [("CumSum", 1, 0), ("CumProd", 0, 1)])
def test_cumulative_runtime_axis(op, exclusive, reverse):
    m = graph([helper.make_node(op, ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
              [("x", F32, [2, 3, 4]), ("axis", I64, [])], [("y", F32, [2, 3, 4])], opset=26)
    for axis in (1, -1):
        check(m, {"x": rand(2, 3, 4), "axis": np.array(axis, np.int64)})


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_negative_log_likelihood_loss(reduction):
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["loss"], reduction=reduction,
                            ignore_index=1)
    out = [2, 4] if reduction == "none" else []
    m = graph([node], [("x", F32, [2, 3, 4]), ("t", I64, [2, 4]), ("w", F32, [3])], [("loss", F32, out)])
    check(m, {"x": rand(2, 3, 4), "t": np.array([[0, 1, 2, 2], [1, 0, 0, 2]], np.int64), "w": rand(3) + 2})


def test_softmax_cross_entropy_loss_with_log_prob():
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["loss", "logp"], reduction="sum")
    m = graph([node], [("x", F32, [3, 5]), ("t", I64, [3])], [("loss", F32, []), ("logp", F32, [3, 5])])
    check(m, {"x": rand(3, 5), "t": np.array([4, 0, 2], np.int64)})


@pytest.mark.parametrize("op,keepdims", [("ReduceMean", 0), ("ReduceLogSumExp", 1), ("ReduceMax", 0)])
def test_reduce_runtime_axes(op, keepdims):
    out = [None] * (3 if keepdims else 1)
    m = graph([helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)],
              [("x", F32, [2, 3, 4]), ("axes", I64, [2])], [("y", F32, out)])
    for axes in ([0, -1], [2, 1]):
        check(m, {"x": rand(2, 3, 4), "axes": np.array(axes, np.int64)})


def test_attention_through_its_function_body():
    # ONNX Attention-23 (GQA, causal, softcap): TVM's "Attention" is com.microsoft's ("KeyError: 'num_heads'")
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, softcap=2.0)
    m = graph([node], [("q", F32, [1, 4, 3, 8]), ("k", F32, [1, 2, 5, 8]), ("v", F32, [1, 2, 5, 8])],
              [("y", F32, [1, 4, 3, 8])], opset=23)
    check(m, {"q": rand(1, 4, 3, 8), "k": rand(1, 2, 5, 8), "v": rand(1, 2, 5, 8)})


def test_window_through_its_function_body():
    # HannWindow has no TVM converter; its body (Range, Cos, ...) computes the window of a runtime size
    m = graph([helper.make_node("HannWindow", ["n"], ["y"], periodic=0)], [("n", I64, [])], [("y", F32, [None])],
              opset=17)
    check(m, {"n": np.array(6, np.int64)})


def test_reshape_runtime_shape():
    m = graph([helper.make_node("Reshape", ["x", "s"], ["y"])], [("x", F32, [2, 3, 4]), ("s", I64, [3])],
              [("y", F32, [None, None, None])])
    for shape in ([4, 0, -1], [-1, 2, 2]):
        check(m, {"x": rand(2, 3, 4), "s": np.array(shape, np.int64)})


def test_pow_isinf_eyelike_dropout_reversesequence():
    i32, b = TensorProto.INT32, TensorProto.BOOL
    nodes = [helper.make_node("Pow", ["xi", "yf"], ["p"]),
             helper.make_node("IsInf", ["xf"], ["inf"], detect_negative=0),
             helper.make_node("EyeLike", ["xi"], ["eye"], dtype=TensorProto.DOUBLE, k=1),
             helper.make_node("Dropout", ["xf"], ["d", "mask"]),
             helper.make_node("ReverseSequence", ["xf", "lens"], ["rev"], batch_axis=0, time_axis=1)]
    m = graph(nodes, [("xi", i32, [3, 4]), ("yf", F32, [3, 4]), ("xf", F32, [3, 4]), ("lens", I64, [3])],
              [("p", i32, [3, 4]), ("inf", b, [3, 4]), ("eye", TensorProto.DOUBLE, [3, 4]), ("d", F32, [3, 4]),
               ("mask", b, [3, 4]), ("rev", F32, [3, 4])], opset=13)
    xf = rand(3, 4)
    xf[0, :2] = [np.inf, -np.inf]
    check(m, {"xi": RNG.integers(-3, 4, (3, 4)).astype(np.int32), "yf": RNG.integers(0, 4, (3, 4)).astype(np.float32),
              "xf": xf, "lens": np.array([4, 1, 3], np.int64)})


def test_dropout_refuses_training_mode():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")
    m = graph([node], [("x", F32, [3]), ("r", F32, []), ("t", TensorProto.BOOL, [])], [("y", F32, [3])], opset=13)
    with pytest.raises(UnsupportedOperatorError, match="Dropout node 'drop'"):
        importer.load(m, static=False)


@pytest.mark.parametrize("op,gates,extra", [
    ("LSTM", 4, {"input_forget": 0}),  # peepholes, clip (layout=1: onnxruntime lacks it; test_lstm_batchwise)
    ("GRU", 3, {"linear_before_reset": 1, "activations": ["HardSigmoid", "Tanh"] * 2, "activation_alpha": [0.3, 0.3],
                "activation_beta": [0.4, 0.4]}),
    ("RNN", 1, {"activations": ["Relu", "Tanh"]}),
])
def test_recurrent_bidirectional_with_sequence_lens(op, gates, extra):
    seq, batch, inp, hid, dirs = 4, 3, 5, 6, 2
    layout = extra.get("layout", 0)
    xs = [batch, seq, inp] if layout else [seq, batch, inp]
    hs = [batch, dirs, hid] if layout else [dirs, batch, hid]
    names = ["x", "w", "r", "b", "lens", "h0"] + (["c0", "p"] if op == "LSTM" else [])
    attrs = {"hidden_size": hid, "direction": "bidirectional", **extra}
    if op == "LSTM":
        attrs["clip"] = 2.5
    node = helper.make_node(op, names, ["y", "yh"], **attrs)
    ins = [("x", F32, xs), ("w", F32, [dirs, gates * hid, inp]), ("r", F32, [dirs, gates * hid, hid]),
           ("b", F32, [dirs, 2 * gates * hid]), ("lens", TensorProto.INT32, [batch]), ("h0", F32, hs)]
    feeds = {"x": rand(*xs), "w": rand(dirs, gates * hid, inp) * 0.5, "r": rand(dirs, gates * hid, hid) * 0.5,
             "b": rand(dirs, 2 * gates * hid) * 0.5, "lens": np.array([4, 2, 1], np.int32), "h0": rand(*hs)}
    if op == "LSTM":
        ins += [("c0", F32, hs), ("p", F32, [dirs, 3 * hid])]
        feeds.update(c0=rand(*hs), p=rand(dirs, 3 * hid) * 0.5)
    ys = [batch, seq, dirs, hid] if layout else [seq, dirs, batch, hid]
    m = graph([node], ins, [("y", F32, ys), ("yh", F32, hs)], opset=14)
    check(m, feeds)


def test_qlinear_matmul_and_conv_per_channel():
    u8, i8 = TensorProto.UINT8, TensorProto.INT8
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
        ("a_s", 0.02, np.float32), ("a_zp", 128, np.uint8), ("b_s", [0.01, 0.03, 0.02], np.float32),
        ("b_zp", [0, 1, -2], np.int8), ("y_s", 0.05, np.float32), ("y_zp", 120, np.uint8),
        ("w_s", [0.01, 0.02], np.float32), ("w_zp", [0, 0], np.int8), ("bias", [100, -50], np.int32))]
    nodes = [helper.make_node("QLinearMatMul", ["a", "a_s", "a_zp", "b", "b_s", "b_zp", "y_s", "y_zp"], ["mm"]),
             helper.make_node("QLinearConv", ["x", "a_s", "a_zp", "w", "w_s", "w_zp", "y_s", "y_zp", "bias"], ["cv"],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("ConvInteger", ["x", "w", "a_zp"], ["ci"], pads=[0, 1, 0, 1])]
    m = graph(nodes, [("a", u8, [2, 4, 5]), ("b", i8, [5, 3]), ("x", u8, [1, 3, 5, 5]), ("w", i8, [2, 3, 3, 3])],
              [("mm", u8, [2, 4, 3]), ("cv", u8, [1, 2, 3, 3]), ("ci", TensorProto.INT32, [1, 2, 3, 5])], inits, opset=13)
    check(m, {"a": RNG.integers(0, 256, (2, 4, 5)).astype(np.uint8), "b": RNG.integers(-128, 128, (5, 3)).astype(np.int8),
              "x": RNG.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8),
              "w": RNG.integers(-128, 128, (2, 3, 3, 3)).astype(np.int8)})


def test_dft_complex_inverse_padded_and_onesided():
    n8 = numpy_helper.from_array(np.array(8, np.int64), "n8")
    ax = numpy_helper.from_array(np.array(1, np.int64), "ax")
    nodes = [helper.make_node("DFT", ["z", "n8", "ax"], ["inv"], inverse=1),
             helper.make_node("DFT", ["x", "", "ax"], ["half"], onesided=1)]
    m = graph(nodes, [("z", F32, [2, 6, 3, 2]), ("x", F32, [2, 7, 3, 1])],
              [("inv", F32, [2, 8, 3, 2]), ("half", F32, [2, 4, 3, 2])], [n8, ax], opset=20)
    check(m, {"z": rand(2, 6, 3, 2), "x": rand(2, 7, 3, 1)})


def test_runtime_sizes_constantofshape_onehot_split_and_binarizer():
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["fill"], value=numpy_helper.from_array(np.array([7], np.int32))),
             helper.make_node("OneHot", ["idx", "depth", "vals"], ["oh"], axis=0),
             helper.make_node("Split", ["x", "parts"], ["p0", "p1"], axis=1),
             helper.make_node("Binarizer", ["x"], ["bin"], domain="ai.onnx.ml", threshold=0.2)]
    m = graph(nodes, [("s", I64, [2]), ("idx", I64, [3]), ("depth", F32, []), ("vals", F32, [2]), ("x", F32, [2, 5]),
               ("parts", I64, [2])],
              [("fill", TensorProto.INT32, [None, None]), ("oh", F32, [None, 3]), ("p0", F32, [2, None]),
               ("p1", F32, [2, None]), ("bin", F32, [2, 5])], opset=18, ml=True)
    check(m, {"s": np.array([2, 3], np.int64), "idx": np.array([1, -1, 7], np.int64), "depth": np.array(4.0, np.float32),
              "vals": np.array([-1.0, 2.0], np.float32), "x": rand(2, 5), "parts": np.array([2, 3], np.int64)})


def test_training_optimizers_against_the_onnx_reference():
    # ai.onnx.preview.training (onnxruntime does not run it): onnx's reference evaluator is the reference
    from onnx.reference import ReferenceEvaluator

    tr = "ai.onnx.preview.training"
    nodes = [helper.make_node("Adagrad", ["r", "t", "x", "g", "h"], ["x1", "h1"], domain=tr, decay_factor=0.1,
                              epsilon=1e-6, norm_coefficient=0.01),
             helper.make_node("Adam", ["r", "t", "x", "g", "v", "h"], ["x2", "v2", "h2"], domain=tr, alpha=0.8,
                              beta=0.9, epsilon=1e-6, norm_coefficient=0.01, norm_coefficient_post=0.02),
             helper.make_node("Momentum", ["r", "t", "x", "g", "v"], ["x3", "v3"], domain=tr, alpha=0.9, beta=0.5,
                              mode="nesterov", norm_coefficient=0.01)]
    outs = [(n, F32, [4]) for n in ("x1", "h1", "x2", "v2", "h2", "x3", "v3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in
                                       [("r", F32, []), ("t", I64, []), ("x", F32, [4]), ("g", F32, [4]),
                                        ("v", F32, [4]), ("h", F32, [4])]],
                          [helper.make_tensor_value_info(*o) for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(tr, 1)])
    feeds = {"r": np.array(0.1, np.float32), "t": np.array(3, np.int64), "x": rand(4), "g": rand(4), "v": rand(4),
             "h": np.abs(rand(4))}
    want = ReferenceEvaluator(m).run(None, feeds)
    for target in ("llvm", "npu"):
        got, report = run(m, feeds, target)
        for a, w in zip(got, want):
            if report is not None and on_npu(report):
                fp16_close(a, w)
            else:
                np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-6)


def test_reduce_bool_and_lp_zero_norm():
    nodes = [helper.make_node("ReduceMax", ["b", "axes"], ["any"]),
             helper.make_node("LpNormalization", ["x"], ["n"], axis=1, p=2)]
    m = graph(nodes, [("b", TensorProto.BOOL, [2, 3]), ("axes", I64, [1]), ("x", F32, [2, 3])],
              [("any", TensorProto.BOOL, [None, None]), ("n", F32, [2, 3])], opset=20)
    x = rand(2, 3)
    x[1] = 0
    check(m, {"b": RNG.random((2, 3)) > 0.5, "axes": np.array([1], np.int64), "x": x})


@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_runtime_axes_of_unknown_length(noop):
    # axes of symbolic length: [] means every axis (or none with noop_with_empty_axes); emptiness is
    # read from the shape, as a TVM reduction over an empty tensor was seen to return garbage
    m = graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], noop_with_empty_axes=noop)],
              [("x", F32, [3, 2, 2]), ("axes", I64, ["n"])], [("y", F32, [None, None, None])])
    for axes in ([], [1]):
        check(m, {"x": rand(3, 2, 2), "axes": np.array(axes, np.int64)})
