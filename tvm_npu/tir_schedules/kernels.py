"""NPU MAC operators as TensorIR PrimFuncs (built with `tvm.te`), before scheduling.

A kernel's PrimFunc takes the operator's DRAM tensors in their logical layouts (NCHW or NHWC input,
HWIO weights, a per-channel bias, the output) and computes, as TensorIR stages:

* `xp` / `ap`: the input seen as NHWC (or [batch, rows, K]), with the convolution halo and the tile
  padding as zeros (`if_then_else`): scheduled, it becomes the DMA load with its padding;
* `wp`: the weights padded to whole tiles;
* `mac`: the accumulation (fp32, or int32 for integer operands), on whole tiles;
* `epilogue`: bias, activation and the rounding to the output dtype, on the real output extent;
* `store`: the output written back in its DRAM layout (the layout change is the store's DMA view).

Tile padding is what lets every MAC tile be tensorized with one fixed-shape intrinsic. It costs
nothing on the NPU: the code generator clamps every region to the `valid` extents recorded here
(the real tensors), so an edge tile is just a smaller instruction. Padding depends on the tile
sizes, so the PrimFunc is built for a Plan (see default.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

from tvm import te, tirx

from ..ir.desc import Activation, OpDesc, Unsupported
from ..ir.geometry import LAYOUT_AXES, conv_geom, matmul_batches, matmul_geom
from ..ir.plan import MacPlan


@dataclasses.dataclass
class Kernel:
    """An unscheduled NPU operator: the PrimFunc and what scheduling and code generation need."""

    kind: str  # "conv2d", "dwconv2d" or "gemm"
    func: tirx.PrimFunc
    params: Tuple[str, ...]  # PrimFunc parameter names, in order: input, weight, [bias], output
    valid: Dict[str, Tuple[int, ...]]  # stage -> extents that hold real data (the rest is tile padding)
    padded: Dict[str, int]  # axis -> padded extent ("rows", "cols", "depth")
    attrs: Dict[str, object]  # geometry the intrinsic needs (strides, groups, ...)


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def activation_expr(act: Optional[Activation], x):
    """The activation as a TensorIR expression on the fp32 accumulator (the vector unit's epilogue)."""
    if act is None:
        return x
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731
    k = act.kind
    if k == "relu":
        return tirx.max(x, f32(0.0))
    if k == "clip":
        return tirx.min(tirx.max(x, f32(max(act.lo, -3.0e38))), f32(min(act.hi, 3.0e38)))
    if k == "sigmoid":
        return tirx.sigmoid(x)
    if k == "tanh":
        return tirx.tanh(x)
    if k == "gelu":
        return f32(0.5) * x * (f32(1.0) + tirx.erf(x * f32(1 / math.sqrt(2.0))))
    if k == "gelu_tanh":
        return f32(0.5) * x * (f32(1.0) + tirx.tanh(f32(math.sqrt(2 / math.pi)) * (x + f32(0.044715) * x * x * x)))
    if k == "leaky_relu":
        return tirx.max(x, x * f32(act.alpha))
    if k == "silu":
        return x * tirx.sigmoid(x)
    if k in ("hard_sigmoid", "hard_swish"):
        h = tirx.min(tirx.max(x + f32(3.0), f32(0.0)), f32(6.0)) * f32(1 / 6)
        return h if k == "hard_sigmoid" else x * h
    raise Unsupported(f"activation {k}")


def _epilogue(acc, bias, out_shape, act: Optional[Activation], chan_axis: int, out_dtype: str, quant=None,
              table=None):
    """Float: bias, activation, one rounding. Integer: int32 bias, then the vector unit's requantise
    (TFLite's MultiplyByQuantizedMultiplier with the per-channel (multiplier, shift) of `table`, the
    output zero point and the activation clamp; parameters from tvm_npu.quant)."""
    def body(*i):
        v = acc[i]
        if bias is not None:
            v = v + bias[i[chan_axis]]
        if quant is not None:
            c = i[chan_axis]
            return tirx.call_pure_extern(out_dtype, "npu.requantize", v, table[2 * c], table[2 * c + 1],
                                         quant.o_offset, quant.act_min, quant.act_max)
        return activation_expr(act, v).astype(out_dtype)
    return te.compute(out_shape, body, name="epilogue")


def dtypes_of(desc: OpDesc) -> Tuple[str, str]:
    """(operand dtype, accumulator dtype) of a MAC operator."""
    return ("int8", "int32") if desc.quant is not None else ("float16", "float32")


def _mac_term(x, w, acc_dtype: str, a_offset: int):
    xv = x.astype(acc_dtype)
    if a_offset:
        xv = xv + tirx.const(a_offset, acc_dtype)
    return xv * w.astype(acc_dtype)


def conv2d_kernel(desc: OpDesc, plan: MacPlan) -> Kernel:
    dtype, acc_dtype = dtypes_of(desc)
    q = desc.quant
    a_off = q.a_offset if q is not None else 0
    g = conv_geom(desc)
    ax = LAYOUT_AXES[desc.attrs["data_layout"]]
    kind = "dwconv2d" if g.depthwise else "conv2d"
    grouped = g.groups > 1 and not g.depthwise
    oh_p, co_p = _ceil(g.oh, plan.rows), _ceil(g.cout, plan.cols)
    ci_w = 1 if g.depthwise else (g.cg if grouped else _ceil(g.cin, plan.depth))  # weight input channels
    ci_x = co_p // (g.cout // g.cin) if g.depthwise else ((co_p // g.ng) * g.cg if grouped else ci_w)
    xh = (oh_p - 1) * g.sh + (g.kh - 1) * g.dh + 1
    xw = g.w + g.pad[1] + g.pad[3]
    used_h = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1
    pt, pl = g.pad[0], g.pad[1]
    zero = tirx.const(q.pad_value if q is not None else 0, dtype)  # the halo: zp_in for int8

    X = te.placeholder(tuple(desc.inputs[0].shape), dtype, name="X")
    W = te.placeholder((g.kh, g.kw, 1 if g.depthwise else g.cg, g.cout), dtype, name="W")
    B = te.placeholder((g.cout,), acc_dtype, name="B") if len(desc.inputs) > 2 else None
    QT = te.placeholder((2 * g.cout,), "int32", name="Q") if q is not None else None

    def x_at(n, h, w, c):
        idx = [None] * 4
        idx[ax[0]], idx[ax[1]], idx[ax[2]], idx[ax[3]] = n, h - pt, w - pl, c
        return X[tuple(idx)]

    xp = te.compute((g.n, xh, xw, ci_x), lambda n, h, w, c: tirx.if_then_else(
        tirx.all(h >= pt, h < pt + g.h, w >= pl, w < pl + g.w, c < g.cin), x_at(n, h, w, c), zero), name="xp")
    wcin = 1 if g.depthwise else g.cg
    wp = te.compute((g.kh, g.kw, ci_w, co_p), lambda a, b, c, d: tirx.if_then_else(
        tirx.all(c < wcin, d < g.cout), W[a, b, c, d], tirx.const(0, dtype)), name="wp")
    ky = te.reduce_axis((0, g.kh), "ky")
    kx = te.reduce_axis((0, g.kw), "kx")
    if g.depthwise:
        mult = g.cout // g.cin
        acc = te.compute((g.n, oh_p, g.ow, co_p), lambda n, y, x, c: te.sum(_mac_term(
            xp[n, y * g.sh + ky * g.dh, x * g.sw + kx * g.dw, c // mult], wp[ky, kx, 0, c], acc_dtype, a_off),
            axis=[ky, kx]), name="mac")
    else:
        ci = te.reduce_axis((0, ci_w), "ci")
        chan = (lambda c: c // g.ng * g.cg + ci) if grouped else (lambda c: ci)
        acc = te.compute((g.n, oh_p, g.ow, co_p), lambda n, y, x, c: te.sum(_mac_term(
            xp[n, y * g.sh + ky * g.dh, x * g.sw + kx * g.dw, chan(c)], wp[ky, kx, ci, c], acc_dtype, a_off),
            axis=[ky, kx, ci]), name="mac")
    epi = _epilogue(acc, B, (g.n, g.oh, g.ow, g.cout), desc.activation, 3, dtype, q, QT)
    out_shape = tuple(desc.output.shape)

    def store(*i):
        return epi[i[ax[0]], i[ax[1]], i[ax[2]], i[ax[3]]]
    out = te.compute(out_shape, store, name="store")
    args = [X, W] + ([B] if B is not None else []) + ([QT] if QT is not None else []) + [out]
    func = te.create_prim_func(args)
    valid = {"xp": (g.n, min(xh, used_h), xw, g.cin),
             "wp": (g.kh, g.kw, wcin, g.cout), "mac": (g.n, g.oh, g.ow, g.cout), "epilogue": (g.n, g.oh, g.ow, g.cout),
             "B": (g.cout,), "Q": (2 * g.cout,)}
    attrs = dict(sh=g.sh, sw=g.sw, dh=g.dh, dw=g.dw, kh=g.kh, kw=g.kw, ow=g.ow, groups=g.groups,
                 ng=g.ng if grouped else 0, cg=g.cg if grouped else 0, mult=g.cout // g.cin if g.depthwise else 0,
                 cin=g.cin, cout=g.cout, depth_chunks=(ci_w // plan.depth) if kind == "conv2d" and not grouped else 1,
                 a_offset=a_off)
    return Kernel(kind, func, tuple(a.name for a in args), valid,
                  {"rows": oh_p, "cols": co_p, "depth": ci_w}, attrs)


def gemm_kernel(desc: OpDesc, plan: MacPlan) -> Kernel:
    dtype, acc_dtype = dtypes_of(desc)
    q = desc.quant
    a_off = q.a_offset if q is not None else 0
    rows, k, n = matmul_geom(desc)
    batches = matmul_batches(desc)
    batched_rhs = len(desc.inputs[1].shape) > 2
    lead = math.prod(desc.inputs[0].shape[:-2]) if batched_rhs else 1
    if batched_rhs and lead != batches:
        raise Unsupported(f"matmul batch dims {desc.inputs[0].shape[:-2]} and {desc.inputs[1].shape[:-2]} differ")
    m_p, n_p, k_p = _ceil(rows, plan.rows), _ceil(n, plan.cols), _ceil(k, plan.depth)
    zero = tirx.const(0, dtype)
    A = te.placeholder((batches, rows, k), dtype, name="A")
    W = te.placeholder((batches, k, n) if batched_rhs else (k, n), dtype, name="W")
    B = te.placeholder((n,), acc_dtype, name="B") if len(desc.inputs) > 2 else None
    QT = te.placeholder((2 * n,), "int32", name="Q") if q is not None else None
    ap = te.compute((batches, m_p, k_p), lambda b, i, j: tirx.if_then_else(
        tirx.all(i < rows, j < k), A[b, i, j], zero), name="ap")
    if batched_rhs:
        wp = te.compute((batches, k_p, n_p), lambda b, i, j: tirx.if_then_else(
            tirx.all(i < k, j < n), W[b, i, j], zero), name="wp")
    else:
        wp = te.compute((k_p, n_p), lambda i, j: tirx.if_then_else(tirx.all(i < k, j < n), W[i, j], zero), name="wp")
    kk = te.reduce_axis((0, k_p), "k")
    w_at = (lambda b, kk_, j: wp[b, kk_, j]) if batched_rhs else (lambda b, kk_, j: wp[kk_, j])
    acc = te.compute((batches, m_p, n_p), lambda b, i, j: te.sum(
        _mac_term(ap[b, i, kk], w_at(b, kk, j), acc_dtype, a_off), axis=kk), name="mac")
    epi = _epilogue(acc, B, (batches, rows, n), desc.activation, 2, dtype, q, QT)
    out = te.compute((batches, rows, n), lambda b, i, j: epi[b, i, j], name="store")
    args = [A, W] + ([B] if B is not None else []) + ([QT] if QT is not None else []) + [out]
    func = te.create_prim_func(args)
    valid = {"ap": (batches, rows, k), "wp": (batches, k, n) if batched_rhs else (k, n), "mac": (batches, rows, n),
             "epilogue": (batches, rows, n), "B": (n,), "Q": (2 * n,)}
    return Kernel("gemm", func, tuple(a.name for a in args), valid, {"rows": m_p, "cols": n_p, "depth": k_p},
                  dict(batched_rhs=batched_rhs, depth_chunks=k_p // plan.depth, a_offset=a_off))
