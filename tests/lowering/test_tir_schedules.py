"""The TensorIR path of the MAC operators: PrimFunc semantics against numpy, the default schedule's
structure (tiles from the Plan, NPU memory scopes, double buffering, tensorized tiles), the walker's
DMA views and halos, and plans as schedule parameters (different tilings, same numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import tvm_npu
from tvm_npu.ir import Activation, OpDesc, TensorDesc
from tvm_npu.ir import plan as P
from tvm_npu.lowering.mac import lower_mac, tir_events
from tvm_npu.tir_schedules import Walker, schedule
from tvm_npu.tir_schedules.kernels import conv2d_kernel, gemm_kernel


RNG = np.random.default_rng(11)


def _conv_desc(x_shape, w_oihw, stride=1, pad=(0, 0, 0, 0), dil=1, groups=1, bias=None, act=None, layout="NCHW"):
    n, c, h, w = x_shape
    o, i, kh, kw = w_oihw.shape
    oh = (h + pad[0] + pad[2] - dil * (kh - 1) - 1) // stride + 1
    ow = (w + pad[1] + pad[3] - dil * (kw - 1) - 1) // stride + 1
    xs = x_shape if layout == "NCHW" else (n, h, w, c)
    os_ = (n, o, oh, ow) if layout == "NCHW" else (n, oh, ow, o)
    inputs = [TensorDesc(tuple(xs), "float32"), TensorDesc(w_oihw.shape, "float32", w_oihw)]
    if bias is not None:
        inputs.append(TensorDesc(bias.shape, "float32", bias))
    return OpDesc("npu.conv2d", "conv2d", inputs, TensorDesc(tuple(os_), "float32"),
                  {"strides": (stride, stride), "padding": pad, "dilation": (dil, dil), "groups": groups,
                   "data_layout": layout, "kernel_layout": "OIHW"}, act)


def _np_conv(x, w, stride, pad, dil, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    oh = (xp.shape[2] - dil * (kh - 1) - 1) // stride + 1
    ow = (xp.shape[3] - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    ng = o // groups
    for co in range(o):
        g = co // ng
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, ky * dil: ky * dil + stride * (oh - 1) + 1: stride,
                           kx * dil: kx * dil + stride * (ow - 1) + 1: stride]
                out[:, co] += np.einsum("nchw,c->nhw", patch, w[co, :, ky, kx])
    return out


def _run_llvm(func, args):
    ex = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    tensors = [tvm.runtime.tensor(a) for a in args]
    ex["main"](*tensors)
    return tensors[-1].numpy()


CONVS = {
    "dense_s2_pad_bias_relu": dict(x=(1, 5, 11, 9), w=(20, 5, 3, 3), stride=2, pad=(1, 1, 1, 1), bias=True,
                                   act=Activation("relu")),
    "dilated_nhwc": dict(x=(2, 8, 9, 7), w=(12, 8, 3, 3), dil=2, pad=(2, 2, 2, 2), layout="NHWC"),
    "depthwise_mult2": dict(x=(1, 6, 8, 8), w=(12, 1, 3, 3), groups=6, pad=(1, 1, 1, 1)),
    "grouped": dict(x=(1, 8, 7, 7), w=(16, 2, 3, 3), groups=4, pad=(0, 1, 2, 1)),
}


def _make(case):
    w = (RNG.standard_normal(case["w"]) * 0.3).astype(np.float32)
    b = (RNG.standard_normal(case["w"][0]) * 0.3).astype(np.float32) if case.get("bias") else None
    d = _conv_desc(case["x"], w, case.get("stride", 1), case.get("pad", (0, 0, 0, 0)), case.get("dil", 1),
                   case.get("groups", 1), b, case.get("act"), case.get("layout", "NCHW"))
    return d, w, b


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_primfunc_matches_numpy(name):
    """The unscheduled PrimFunc (with tile padding for a small plan) is the operator: built for llvm
    it computes numpy's convolution."""
    case = CONVS[name]
    d, w, b = _make(case)
    plan = P.Plan(rows=2, cols=4, depth=3 if case.get("groups", 1) == 1 else 1)
    k = conv2d_kernel(d, plan)
    x = RNG.standard_normal(d.inputs[0].shape).astype(np.float16)
    wl = np.transpose(w, (2, 3, 1, 0)).astype(np.float16)  # OIHW -> HWIO
    args = [x, wl] + ([b] if b is not None else []) + [np.zeros(d.output.shape, np.float16)]
    got = _run_llvm(k.func, args).astype(np.float32)
    xn = x.astype(np.float32) if case.get("layout", "NCHW") == "NCHW" else x.astype(np.float32).transpose(0, 3, 1, 2)
    ref = _np_conv(xn, wl.astype(np.float32).transpose(3, 2, 0, 1), case.get("stride", 1), case.get("pad"),
                   case.get("dil", 1), case.get("groups", 1))
    if b is not None:
        ref += b[None, :, None, None]
    if case.get("act") is not None:
        ref = np.maximum(ref, 0)
    if case.get("layout") == "NHWC":
        ref = ref.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)


def test_gemm_primfunc_matches_numpy():
    w = RNG.standard_normal((37, 23)).astype(np.float32)
    d = OpDesc("npu.matmul_bias", "matmul", [TensorDesc((2, 19, 37), "float32"), TensorDesc((37, 23), "float32", w),
                                             TensorDesc((23,), "float32", np.ones(23, np.float32))],
               TensorDesc((2, 19, 23), "float32"), {}, Activation("clip", 0.0, 6.0))
    k = gemm_kernel(d, P.Plan(rows=8, cols=16, depth=16))
    a = RNG.standard_normal((1, 38, 37)).astype(np.float16)
    got = _run_llvm(k.func, [a, w.astype(np.float16), np.ones(23, np.float32), np.zeros((1, 38, 23), np.float16)])
    ref = np.clip(a.astype(np.float32)[0] @ w.astype(np.float16).astype(np.float32) + 1, 0, 6)
    np.testing.assert_allclose(got[0].astype(np.float32), ref, rtol=2e-3, atol=2e-3)


def test_default_schedule_structure():
    """Tiles come from the Plan; inputs/weights/bias/output live in NPU scopes, double-buffered; the
    inner tile is one extern call to the NPU intrinsic."""
    d, _, _ = _make(CONVS["dense_s2_pad_bias_relu"])
    plan = P.Plan(rows=2, cols=16, depth=3)
    _, sch = schedule(d, plan)
    text = sch.mod.script()
    assert 'T.call_extern("int32", "npu.conv2d"' in text
    for scope in ("global.npu_act", "global.npu_wgt", "global.npu_acc"):
        assert f'scope="{scope}"' in text
    assert text.count('"double_buffer_scope": 0') == 4  # input, weight, bias, output
    loops = {}

    def visit(nodes):
        for n in nodes:
            if hasattr(n, "extent"):
                loops[n.var] = n.extent
                visit(n.body)
    visit(Walker(sch.mod["main"], {}).tree)  # the tile loops
    assert loops["y_0"] == 3 and loops["c_0"] == 2 and loops["ci_0"] == 2  # ceil(6/2), ceil(20/16), ceil(5/3)


def test_walker_halo_and_edge_tiles():
    """Events of a padded NCHW conv: the first row tile gets the top halo from the DMA, the last
    the bottom one; edge tiles are clamped to the real tensor (no work on tile padding)."""
    d, _, _ = _make(CONVS["dense_s2_pad_bias_relu"])  # x 11x9, out 6x5, stride 2, pad 1
    kernel, sch = schedule(d, P.Plan(rows=4, cols=16, depth=5))
    ev = Walker(sch.mod["main"], kernel.valid).events()
    loads = [e for e in ev if e.kind == "load" and e.param == "X"]
    assert [e.shape for e in loads] == [(1, 9, 11, 5), (1, 5, 11, 5)] * 2  # rows 0-3 then 4-5, two channel tiles
    assert loads[0].pads == (1, 0, 1, 1) and loads[1].pads == (0, 1, 1, 1)
    assert loads[0].axes == (0, 2, 3, 1)  # NCHW read as NHWC: the transpose is the DMA view
    macs = [e for e in ev if e.kind == "mac"]
    assert [e.shape for e in macs] == [(1, 4, 5, 16), (1, 2, 5, 16), (1, 4, 5, 4), (1, 2, 5, 4)]
    stores = [e for e in ev if e.kind == "store"]
    assert [dict(e.start)[1] for e in stores] == [0, 0, 16, 16] and [dict(e.start)[2] for e in stores] == [0, 4, 0, 4]


@pytest.mark.parametrize("plan", [P.Plan(2, 16, 3), P.Plan(5, 4, 5), P.Plan(1, 8, 1)])
def test_plans_are_schedule_parameters(plan):
    """Any legal plan gives a different program with the same numbers on the emulator."""
    from npu_emulator import Emulator
    from tvm_npu.lowering import Lowerer
    from tvm_npu.lowering.memory import ConstPool, DramTensor
    from tvm_npu.isa import DType, Region

    d, w, b = _make(CONVS["dense_s2_pad_bias_relu"])
    cfg = tvm_npu.get_config("npu-edge")
    low = Lowerer(cfg, ConstPool())
    x = RNG.standard_normal(d.inputs[0].shape).astype(np.float16)
    xin = DramTensor(Region.IO, 0, x.shape, DType.FP16)
    out = DramTensor(Region.IO, (x.nbytes + 15) // 16 * 16, d.output.shape, DType.FP16)
    lower_mac(low, d, [xin, None], out, plan)
    low.program.emit("end")
    io = bytearray(out.offset + out.nbytes)
    io[:x.nbytes] = x.tobytes()
    res = Emulator(cfg).run(low.program.encode(), const=bytes(low.consts.data), io=bytes(io), scratch_bytes=0)
    got = np.frombuffer(bytes(res.io)[out.offset:out.offset + out.nbytes], np.float16).reshape(d.output.shape)
    ref = np.maximum(_np_conv(x.astype(np.float32), w.astype(np.float16).astype(np.float32), 2, (1, 1, 1, 1), 1, 1)
                     + b[None, :, None, None], 0)
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=5e-3, atol=5e-3)
    _, events = tir_events(d, plan, True)
    assert sum(e.kind == "mac" for e in events) == (-(-6 // plan.rows)) * (-(-20 // plan.cols)) * (-(-5 // plan.depth))
