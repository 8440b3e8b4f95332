"""Hand-built NPU programs for the quantised operator tests: every integer field comes from tvm_npu.quant.

Each ``npu_*`` function lays the operands out with tests/helpers.Kernel (inputs in IO, weights, bias,
requantisation tables and LUTs in CONST), runs the emulator and returns the int8 result. The programs
are what the compiler is expected to emit for one TFLite operator:

* conv / depthwise / FC: ``dma.load`` (halo ``pad_value = zp_in``) -> ``conv2d`` / ``dwconv2d`` /
  ``gemm`` with ``a_offset`` -> int32 bias (``vadd.i32`` of a ``[1,1,1,C]`` operand, or a broadcast DMA
  preload + ``accumulate=1``) -> ``vrequant`` (per-channel pairs loaded into ACC) -> ``dma.store``;
* add / sub / mul: one ``vadd`` / ``vsub`` / ``vmul``;
* pools: ``vpool``; unary activations: ``vlut``; concatenation: strided ``dma.store`` per input.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from helpers import Kernel
from tvm_npu.isa import DramRef, PoolMode, Region, Space
from tvm_npu.quant import ConvQuant, same_padding

CONFIG = "npu-pro"


def _requant_to_output(k: Kernel, acc, cq: ConvQuant, per_channel_table: bool):
    """vrequant of the int32 accumulator into a fresh int8 ACT tensor (table loaded into ACC if needed)."""
    params_addr = 0
    if per_channel_table or not cq.uniform:
        table = k.load(cq.param_table().reshape(1, 1, 1, -1), Space.ACC, region=Region.CONST)
        params_addr = table.addr
    out = k.alloc(Space.ACT, np.int8, acc.shape)
    k.op("vrequant", a=acc, o=out, **cq.vrequant_fields(params_addr, force_table=per_channel_table))
    return out


def _add_bias(k: Kernel, acc, cq: ConvQuant) -> None:
    bias = k.load(cq.bias.astype(np.int32).reshape(1, 1, 1, -1), Space.ACC, region=Region.CONST)
    k.op("vadd", a=acc, b=bias, o=acc)


def _bias_preload(k: Kernel, acc, cq: ConvQuant) -> None:
    """Broadcasts the bias into every row of the accumulator with a stride-0 DMA (MAC accumulates onto it)."""
    addr = k.place(cq.bias.astype(np.int32), Region.CONST)
    k.load_raw(acc, DramRef(Region.CONST, addr, (0, 0, 0, 4)))


def npu_conv2d(emu, x: np.ndarray, w_ohwi: np.ndarray, cq: ConvQuant, stride: Tuple[int, int],
               dilation: Tuple[int, int], padding: str, bias_mode: str = "vadd",
               per_channel_table: bool = True) -> np.ndarray:
    """CONV_2D: x int8 NHWC, weights in TFLite layout [O, KH, KW, I] (transposed to HWIO for the MAC)."""
    n, h, w, c = x.shape
    o, kh, kw, _ = w_ohwi.shape
    oh, pt, pb = same_padding(h, kh, stride[0], dilation[0], padding)
    ow, pl, pr = same_padding(w, kw, stride[1], dilation[1], padding)
    k = Kernel(CONFIG)
    ta = k.load(x, pads=(pt, pb, pl, pr), pad_value=cq.pad_value)
    tw = k.load(np.ascontiguousarray(w_ohwi.transpose(1, 2, 3, 0)), Space.WGT, region=Region.CONST)
    acc = k.alloc(Space.ACC, np.int32, (n, oh, ow, o))
    if bias_mode == "preload":
        _bias_preload(k, acc, cq)
    k.op("conv2d", a=ta, w=tw, o=acc, stride_h=stride[0], stride_w=stride[1], dilation_h=dilation[0],
         dilation_w=dilation[1], groups=1, a_offset=cq.a_offset, accumulate=int(bias_mode == "preload"))
    if bias_mode == "vadd":
        _add_bias(k, acc, cq)
    out = _requant_to_output(k, acc, cq, per_channel_table)
    k.store(out)
    (y,), _ = k.run(emu)
    return y


def npu_depthwise_conv2d(emu, x: np.ndarray, w_1hwc: np.ndarray, cq: ConvQuant, stride: Tuple[int, int],
                         dilation: Tuple[int, int], padding: str, bias_mode: str = "vadd") -> np.ndarray:
    """DEPTHWISE_CONV_2D: weights in TFLite layout [1, KH, KW, C*M] (the MAC wants [KH, KW, 1, C*M])."""
    n, h, w, c = x.shape
    _, kh, kw, cout = w_1hwc.shape
    oh, pt, pb = same_padding(h, kh, stride[0], dilation[0], padding)
    ow, pl, pr = same_padding(w, kw, stride[1], dilation[1], padding)
    k = Kernel(CONFIG)
    ta = k.load(x, pads=(pt, pb, pl, pr), pad_value=cq.pad_value)
    tw = k.load(np.ascontiguousarray(w_1hwc.reshape(kh, kw, 1, cout)), Space.WGT, region=Region.CONST)
    acc = k.alloc(Space.ACC, np.int32, (n, oh, ow, cout))
    if bias_mode == "preload":
        _bias_preload(k, acc, cq)
    k.op("dwconv2d", a=ta, w=tw, o=acc, stride_h=stride[0], stride_w=stride[1], dilation_h=dilation[0],
         dilation_w=dilation[1], a_offset=cq.a_offset, accumulate=int(bias_mode == "preload"))
    if bias_mode == "vadd":
        _add_bias(k, acc, cq)
    out = _requant_to_output(k, acc, cq, per_channel_table=True)
    k.store(out)
    (y,), _ = k.run(emu)
    return y


def npu_fully_connected(emu, x: np.ndarray, w_nk: np.ndarray, cq: ConvQuant) -> np.ndarray:
    """FULLY_CONNECTED: x int8 [B, K], weights in TFLite layout [N, K] (the MAC wants [K, N])."""
    b, kk = x.shape
    units = w_nk.shape[0]
    k = Kernel(CONFIG)
    ta = k.load(x.reshape(1, 1, b, kk))
    tw = k.load(np.ascontiguousarray(w_nk.T).reshape(1, 1, kk, units), Space.WGT, region=Region.CONST)
    acc = k.alloc(Space.ACC, np.int32, (1, 1, b, units))
    k.op("gemm", a=ta, w=tw, o=acc, a_offset=cq.a_offset)
    _add_bias(k, acc, cq)
    out = _requant_to_output(k, acc, cq, per_channel_table=True)
    k.store(out)
    (y,), _ = k.run(emu)
    return y.reshape(b, units)


def _as4d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape((1,) * (4 - a.ndim) + a.shape)


def npu_binary(emu, op: str, x: np.ndarray, y: np.ndarray, fields: dict) -> np.ndarray:
    """vadd / vsub / vmul with numpy broadcasting of 4-D operands."""
    x4, y4 = _as4d(x), _as4d(y)
    k = Kernel(CONFIG)
    ta, tb = k.load(x4), k.load(y4)
    to = k.alloc(Space.ACT, np.int8, np.broadcast_shapes(x4.shape, y4.shape))
    k.op(op, a=ta, b=tb, o=to, **fields)
    k.store(to)
    (out,), _ = k.run(emu)
    return out.reshape(np.broadcast_shapes(np.shape(x), np.shape(y)))


def npu_pool(emu, x: np.ndarray, mode: str, kernel: Tuple[int, int], stride: Tuple[int, int], padding: str,
             fields: dict) -> np.ndarray:
    """vpool with TFLite's SAME/VALID padding given as pad_top / pad_left (the window is clipped)."""
    n, h, w, c = x.shape
    oh, pt, _ = same_padding(h, kernel[0], stride[0], 1, padding)
    ow, pl, _ = same_padding(w, kernel[1], stride[1], 1, padding)
    k = Kernel(CONFIG)
    ta = k.load(x)
    to = k.alloc(Space.ACT, np.int8, (n, oh, ow, c))
    k.op("vpool", a=ta, o=to, mode=int(PoolMode.MAX if mode == "max" else PoolMode.AVG), kh=kernel[0],
         kw=kernel[1], stride_h=stride[0], stride_w=stride[1], pad_top=pt, pad_left=pl, **fields)
    k.store(to)
    (out,), _ = k.run(emu)
    return out


def npu_lut(emu, x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """vlut with a 256-entry int8 table (NPU order, table[x + 128]) loaded into ACT."""
    x4 = _as4d(x)
    k = Kernel(CONFIG)
    lut = k.load(np.asarray(table, np.int8).reshape(1, 1, 1, 256), region=Region.CONST)
    ta = k.load(x4)
    to = k.alloc(Space.ACT, np.int8, x4.shape)
    k.op("vlut", a=ta, o=to, lut_addr=lut.addr)
    k.store(to)
    (out,), _ = k.run(emu)
    return out.reshape(np.shape(x))


def npu_concat_channels(emu, xs: Sequence[np.ndarray], tables: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """CONCATENATION along channels: each input is loaded, optionally re-mapped with vlut, and stored
    into its channel slice of the output with a strided dma.store (no copy through the MAC)."""
    n, h, w = xs[0].shape[:3]
    ctot = sum(x.shape[3] for x in xs)
    k = Kernel(CONFIG)
    out_addr = k.place(bytes([0xCD]) * (n * h * w * ctot), Region.IO)
    strides = (h * w * ctot, w * ctot, ctot, 1)
    c0 = 0
    for x, table in zip(xs, tables):
        t = k.load(x)
        if table is not None:
            lut = k.load(np.asarray(table, np.int8).reshape(1, 1, 1, 256), region=Region.CONST)
            t2 = k.alloc(Space.ACT, np.int8, x.shape)
            k.op("vlut", a=t, o=t2, lut_addr=lut.addr)
            t = t2
        k.store_raw(t, DramRef(Region.IO, out_addr + c0, strides))
        c0 += x.shape[3]
    res = k.run(emu)[1]
    io = np.asarray(res.io, np.uint8)
    return io[out_addr:out_addr + n * h * w * ctot].view(np.int8).reshape(n, h, w, ctot).copy()
