"""Transposed convolution on the NPU: rewritten into one stride-1 conv2d over the phase kernels,
depth-to-space (reshape, DMA transpose, reshape) and a crop (relay_ext/resample.py). Values against
onnxruntime's ConvTranspose, on npu-edge and on a tiny configuration that forces tiling; what is not
rewritten stays on the CPU with its reason and is still right."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_graphs import compile_run, const, fp16_close, model, reference

import tvm_npu
from tvm_npu.relay_ext.resample import conv_transpose_plan

TINY = tvm_npu.npu_target(tvm_npu.NPUConfig("npu-tiny", 4, 4, 8 * 1024, 4 * 1024, 4 * 1024, 4, 16, 4, 100))
RNG = np.random.default_rng(21)


def _out(n, k, s, p0, p1, op, d=1):
    return (n - 1) * s + (k - 1) * d + 1 + op - p0 - p1


def _model(cin, cout, hw, k, s, pads=(0, 0, 0, 0), op=(0, 0), bias=True, group=1, dil=(1, 1)):
    kh, kw = k
    attrs = {"kernel_shape": [kh, kw], "strides": list(s), "pads": list(pads), "group": group, "dilations": list(dil)}
    if any(op):
        attrs["output_padding"] = list(op)
    ins = ["x", "w"] + (["b"] if bias else [])
    oh = _out(hw[0], kh, s[0], pads[0], pads[2], op[0], dil[0])
    ow = _out(hw[1], kw, s[1], pads[1], pads[3], op[1], dil[1])
    inits = [const("w", (cin, cout // group, kh, kw))] + ([const("b", (cout,))] if bias else [])
    return model([helper.make_node("ConvTranspose", ins, ["y"], **attrs)], [("x", (1, cin, *hw))],
                 [("y", (1, cout, oh, ow))], inits), (1, cin, *hw)


# name: (cin, cout, (h, w), kernel, strides, pads (t, l, b, r), output_padding, bias)
CASES = {
    "k2_s2": (8, 6, (5, 7), (2, 2), (2, 2), (0, 0, 0, 0), (0, 0), True),
    "k3_s2_p1_op1": (6, 5, (6, 5), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    "k4_s2_p1": (5, 8, (4, 6), (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), True),
    "k3_s1_p1": (7, 4, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), (0, 0), True),
    "k3_s2_p0": (4, 4, (5, 4), (3, 3), (2, 2), (0, 0, 0, 0), (0, 0), False),
    "k5_s3_asymmetric": (3, 4, (4, 5), (5, 3), (3, 2), (2, 0, 1, 1), (1, 1), True),
    "k3_s2_p1_no_op": (4, 6, (5, 5), (3, 3), (2, 2), (1, 1, 1, 1), (0, 0), True),
}


def _taps(k, s):
    return -(-k // s) + 1


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_transpose_matches_onnxruntime(name, target):
    cin, cout, hw, k, s, pads, op, bias = CASES[name]
    m, shape = _model(cin, cout, hw, k, s, pads, op, bias)
    x = RNG.standard_normal(shape).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x}, target)
    assert got[0].shape == want.shape
    fp16_close(got[0], want, cin * _taps(k[0], s[0]) * _taps(k[1], s[1]))
    assert all(p.target == "npu" for p in report.placements), report.summary()
    ops = [p.op for p in report.placements]
    assert "relax.nn.conv2d_transpose" not in ops and ops.count("relax.nn.conv2d") == 1, report.summary()
    assert len(report.functions) == 1, report.summary()
    if bias:  # the bias is folded into the phase convolution (one bias per phase channel)
        assert [p.composite for p in report.placements if p.op == "relax.add"] == ["npu.conv2d_bias"], \
            report.summary()


def test_dilated_conv_transpose():
    m, shape = _model(4, 3, (5, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 0), True, dil=(2, 1))
    x = RNG.standard_normal(shape).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want, 4 * 9)
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_depthwise_conv_transpose_stays_on_the_cpu_with_its_reason():
    m, shape = _model(4, 4, (5, 5), (4, 4), (2, 2), (1, 1, 1, 1), (0, 0), False, group=4)
    x = RNG.standard_normal(shape).astype(np.float32)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)  # on the CPU in fp32
    (p,) = [p for p in report.placements if p.op == "relax.nn.conv2d_transpose"]
    assert p.target == "cpu" and any("groups 4" in r for r in p.reasons), p.reasons


def test_plan_packs_phase_kernels():
    """k3 s2 p1 op1 (the usual decoder upsampling): four phases of at most 2x2 taps in one 2x2 window
    (the tap no phase uses is dropped), no padding, no crop."""
    w = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
    attrs = {"data_layout": "NCHW", "out_layout": "NCHW", "groups": 1, "kernel_layout": "IOHW", "dilation": (1, 1),
             "padding": (1, 1, 1, 1), "output_padding": (1, 1), "strides": (2, 2)}
    plan = conv_transpose_plan((1, 2, 5, 5), w, attrs)
    assert plan.weight.shape == (4 * 3, 2, 2, 2)
    assert (plan.h.pad_before, plan.h.pad_after, plan.h.rows * plan.h.stride, plan.h.out) == (0, 1, 10, 10)
    # phase (0, 0) reads only the centre tap w[1, 1]; phase (1, 1) the four corners, flipped
    np.testing.assert_array_equal(plan.weight[0:3, :, 0, 0], w[:, :, 1, 1].T)
    assert np.count_nonzero(plan.weight[0:3]) == np.count_nonzero(w[:, :, 1, 1])
    np.testing.assert_array_equal(plan.weight[9:12, :, 1, 1], w[:, :, 0, 0].T)
    np.testing.assert_array_equal(plan.weight[9:12, :, 0, 0], w[:, :, 2, 2].T)


def test_torch_conv_transpose2d_through_torch_export():
    torch = pytest.importorskip("torch")
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)).eval()
    x = torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        want = net(x).numpy()
        prog = torch.export.export(net, (x,))
    mod = from_exported_program(prog, keep_params_as_input=False)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target="npu")
    report = tvm_npu.last_report()
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    fp16_close(got, want, 8 * 4 + 4 * 9)
    assert not np.allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())  # fp16 ran, not the fp32 CPU
    assert all(p.target == "npu" for p in report.placements), report.summary()


def _numpy_conv_transpose_nhwc(x, w, s, pads, op):
    """Direct definition: every input pixel scatters w (IOHW) into the output, then the padding crops."""
    n, h, wd, _cin = x.shape
    _, cout, kh, kw = w.shape
    full = np.zeros((n, (h - 1) * s[0] + kh + op[0], (wd - 1) * s[1] + kw + op[1], cout))
    for i in range(h):
        for j in range(wd):
            full[:, i * s[0]:i * s[0] + kh, j * s[1]:j * s[1] + kw, :] += np.einsum("nc,copq->npqo", x[:, i, j], w)
    return full[:, pads[0]:full.shape[1] - pads[2], pads[1]:full.shape[2] - pads[3]]


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
def test_nhwc_conv_transpose_batch_2(target):
    """TFLite's layout (NHWC), batch 2: depth-to-space is one 4-D transpose with whole channel rows."""
    import tvm
    from tvm import relax

    x_np = RNG.standard_normal((2, 5, 6, 8)).astype(np.float32)
    w_np = (RNG.standard_normal((8, 6, 3, 3)) * 0.3).astype(np.float32)
    s, pads, op = (2, 2), (1, 1, 1, 1), (1, 1)
    want = _numpy_conv_transpose_nhwc(x_np.astype(np.float64), w_np.astype(np.float64), s, pads, op)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 5, 6, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d_transpose(x, relax.const(w_np), strides=s, padding=pads, output_padding=op,
                                                     data_layout="NHWC", kernel_layout="IOHW"))
            y = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(y)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(tvm.IRModule({"main": bb.get()["main"]}), target=target)
    report = tvm_npu.last_report()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x_np)).numpy()
    fp16_close(got, np.maximum(want, 0), 8 * 9)
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_tflite_custom_op_form_runs_in_nhwc_on_the_npu():
    """What tvm_npu/frontend/tflite_ops.py makes of MediaPipe's Convolution2DTransposeBias: NHWC -> NCHW
    transposes around an NCHW conv2d_transpose whose OHWI fp16 weights are dequantized (astype) and
    permuted, then the bias. The transposes cancel and the convolution runs in NHWC on the NPU."""
    import tvm
    from tvm import relax

    x_np = RNG.standard_normal((1, 6, 5, 8)).astype(np.float32)
    w_ohwi = (RNG.standard_normal((3, 2, 2, 8)) * 0.3).astype(np.float16)
    bias = RNG.standard_normal(3).astype(np.float32)
    w_iohw = np.transpose(w_ohwi.astype(np.float64), (3, 0, 1, 2))
    want = _numpy_conv_transpose_nhwc(x_np.astype(np.float64), w_iohw, (2, 2), (0, 0, 0, 0), (0, 0)) + bias
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 6, 5, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = bb.emit(relax.op.permute_dims(bb.emit(relax.op.astype(relax.const(w_ohwi), "float32")), [3, 0, 1, 2]))
            t = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
            y = bb.emit(relax.op.nn.conv2d_transpose(t, w, strides=(2, 2), data_layout="NCHW", kernel_layout="IOHW"))
            y = bb.emit(relax.op.permute_dims(y, [0, 2, 3, 1]))
            y = bb.emit_output(relax.op.add(y, relax.const(bias)))
        bb.emit_func_output(y)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(tvm.IRModule({"main": bb.get()["main"]}), target="npu")
    report = tvm_npu.last_report()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x_np)).numpy()
    fp16_close(got, want, 8 * 4)
    assert all(p.target == "npu" for p in report.placements), report.summary()
    ops = [p.op for p in report.placements]
    assert "relax.nn.conv2d_transpose" not in ops and ops.count("relax.permute_dims") == 1, report.summary()


def test_refused_nhwc_conv_transpose_runs_on_the_cpu_in_nchw():
    """TVM 0.27 cannot build an NHWC conv2d_transpose for the CPU: a refused one (grouped) is handed to
    the CPU between transposes in NCHW, with its reason, and is right."""
    import tvm
    from tvm import relax

    x_np = RNG.standard_normal((1, 5, 6, 4)).astype(np.float32)
    w_np = (RNG.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)  # IOHW, groups 4 (depthwise)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 5, 6, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d_transpose(x, relax.const(w_np), strides=(2, 2), padding=(1, 1, 1, 1),
                                                     groups=4, data_layout="NHWC", kernel_layout="IOHW"))
            y = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(y)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(tvm.IRModule({"main": bb.get()["main"]}), target="npu")
    report = tvm_npu.last_report()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x_np)).numpy()
    want = np.concatenate([_numpy_conv_transpose_nhwc(x_np[..., c:c + 1].astype(np.float64), w_np[c:c + 1], (2, 2),
                                                      (1, 1, 1, 1), (0, 0)) for c in range(4)], axis=-1)
    fp16_close(got, np.maximum(want, 0))
    (p,) = [p for p in report.placements if p.op == "relax.nn.conv2d_transpose"]
    assert p.target == "cpu" and any("groups 4" in r for r in p.reasons), p.reasons
