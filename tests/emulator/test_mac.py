"""MAC array: gemm (int8, int16 x int8, fp16), conv2d (stride, dilation, groups), dwconv2d (multiplier)."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import Kernel, rand_f16, rand_int, rng
from tvm_npu.isa import DramRef, Region, Space


def _gemm_kernel(a, w, a_offset=0, acc_init=None, cfg="npu-edge", shape_a=None):
    """a [M, K] (viewed as shape_a NHWC if given), w [K, N] -> ACC [M, N], stored as int32/fp32."""
    k = Kernel(cfg)
    m, kk = a.shape
    n = w.shape[1]
    ta = k.load(a.reshape(shape_a or (1, 1, m, kk)))
    tw = k.load(w.reshape(1, 1, kk, n), Space.WGT)
    acc_dt = np.float32 if a.dtype == np.float16 else np.int32
    if acc_init is not None:
        to = k.load(acc_init.astype(acc_dt).reshape(1, 1, m, n), Space.ACC)
    else:
        to = k.alloc(Space.ACC, acc_dt, (1, 1, m, n))
    k.op("gemm", a=ta, w=tw, o=to, a_offset=a_offset, accumulate=int(acc_init is not None))
    k.store(to)
    return k


@pytest.mark.parametrize("m,kk,n", [(1, 1, 1), (16, 16, 16), (17, 33, 20), (5, 64, 3), (40, 7, 48)])
@pytest.mark.parametrize("a_offset", [0, 128, -77])
def test_gemm_int8(npu_emulator, m, kk, n, a_offset):
    r = rng(m * 1000 + kk * 10 + n)
    a = rand_int(r, np.int8, (m, kk))
    w = rand_int(r, np.int8, (kk, n))
    (out,), res = _gemm_kernel(a, w, a_offset).run(npu_emulator)
    np.testing.assert_array_equal(out.reshape(m, n), ref.gemm_int(a, w, a_offset))
    assert res.counters.macs == m * n * kk


def test_gemm_int8_extremes(npu_emulator):
    a = np.full((4, 300), -128, np.int8)
    w = np.full((300, 16), -128, np.int8)
    (out,), _ = _gemm_kernel(a, w, a_offset=-128).run(npu_emulator)
    assert (out == 300 * 256 * 128).all()  # (-128 - 128) * -128 summed 300 times
    np.testing.assert_array_equal(out.reshape(4, 16), ref.gemm_int(a, w, -128))


def test_gemm_int32_wraps(npu_emulator):
    """int32 accumulation wraps around at both ends (accumulating onto INT32_MAX and INT32_MIN)."""
    a = np.array([[127, 127], [-128, -128]], np.int8)
    w = np.full((2, 16), 127, np.int8)
    init = np.array([[2**31 - 1] * 16, [-(2**31)] * 16], np.int64)
    (out,), _ = _gemm_kernel(a, w, acc_init=init.astype(np.int32)).run(npu_emulator)
    want = ref.gemm_int(a, w, acc=init)
    np.testing.assert_array_equal(out.reshape(2, 16), want)
    assert want[0, 0] < 0 < want[1, 0]  # the wraps really happened


def test_gemm_rows_from_a_4d_tensor(npu_emulator):
    """A GEMM sees [n, h, w, c] as n*h*w rows; rows are padded to 16 bytes (c = 20 -> 32)."""
    r = rng(21)
    a = rand_int(r, np.int8, (2, 3, 4, 20))
    w = rand_int(r, np.int8, (20, 24))
    k = Kernel()
    ta = k.load(a)
    tw = k.load(w.reshape(1, 1, 20, 24), Space.WGT)
    to = k.alloc(Space.ACC, np.int32, (2, 3, 4, 24))
    k.op("gemm", a=ta, w=tw, o=to, a_offset=3)
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out.reshape(24, 24), ref.gemm_int(a.reshape(24, 20), w, 3))


def test_gemm_accumulate_and_bias_preload(npu_emulator):
    """o += a*w onto a bias broadcast into ACC by the DMA, then a second gemm accumulates on top."""
    r = rng(22)
    a1, a2 = rand_int(r, np.int8, (8, 32)), rand_int(r, np.int8, (8, 32))
    w1, w2 = rand_int(r, np.int8, (32, 16)), rand_int(r, np.int8, (32, 16))
    bias = rand_int(r, np.int32, (16,), -10**6, 10**6)
    k = Kernel()
    t1, t2 = k.load(a1.reshape(1, 1, 8, 32)), k.load(a2.reshape(1, 1, 8, 32))
    tw1, tw2 = k.load(w1.reshape(1, 1, 32, 16), Space.WGT), k.load(w2.reshape(1, 1, 32, 16), Space.WGT)
    acc = k.alloc(Space.ACC, np.int32, (1, 1, 8, 16))
    k.load_raw(acc, DramRef(Region.IO, k.place(bias), (0, 0, 0, 4)))
    k.op("gemm", a=t1, w=tw1, o=acc, a_offset=5, accumulate=1)
    k.op("gemm", a=t2, w=tw2, o=acc, a_offset=-5, accumulate=1)
    k.store(acc)
    (out,), _ = k.run(npu_emulator)
    want = ref.gemm_int(a2, w2, -5, acc=ref.gemm_int(a1, w1, 5, acc=np.broadcast_to(bias, (8, 16))))
    np.testing.assert_array_equal(out.reshape(8, 16), want)


def test_gemm_overwrite_ignores_old_accumulator(npu_emulator):
    r = rng(23)
    a, w = rand_int(r, np.int8, (4, 16)), rand_int(r, np.int8, (16, 16))
    k = Kernel()
    ta, tw = k.load(a.reshape(1, 1, 4, 16)), k.load(w.reshape(1, 1, 16, 16), Space.WGT)
    acc = k.load(np.full((1, 1, 4, 16), 12345, np.int32), Space.ACC)
    k.op("gemm", a=ta, w=tw, o=acc, accumulate=0)
    k.store(acc)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out.reshape(4, 16), ref.gemm_int(a, w))


@pytest.mark.parametrize("a_offset", [0, 1000, -32768])
def test_gemm_int16_x_int8(npu_emulator, a_offset):
    r = rng(24)
    a = rand_int(r, np.int16, (9, 40))
    w = rand_int(r, np.int8, (40, 18))
    (out,), res = _gemm_kernel(a, w, a_offset).run(npu_emulator)
    np.testing.assert_array_equal(out.reshape(9, 18), ref.gemm_int(a, w, a_offset))


@pytest.mark.parametrize("m,kk,n", [(3, 5, 7), (16, 64, 16), (9, 200, 17)])
def test_gemm_fp16_bit_exact(npu_emulator, m, kk, n):
    r = rng(m + kk + n)
    a = rand_f16(r, (m, kk))
    w = rand_f16(r, (kk, n), 0.5)
    (out,), res = _gemm_kernel(a, w).run(npu_emulator)
    want = ref.gemm_fp16(a, w)
    assert out.dtype == np.float32
    assert ref.same_float(out.reshape(m, n), want)
    # the k-ordered fp32 sum is not the float64 sum rounded once: make sure the test can tell
    if kk >= 64:
        exact = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
        assert not np.array_equal(exact, want)


def test_gemm_fp16_rounding_order(npu_emulator):
    """1 + 2^-24 + 2^-24 ...: adding tiny terms one at a time to 1.0 in fp32 loses them all."""
    kk = 9
    a = np.ones((1, kk), np.float16)
    w = np.zeros((kk, 16), np.float16)
    w[0, :] = 1.0
    w[1:, :] = np.float16(2.0**-13)
    a[0, 1:] = np.float16(2.0**-12)  # products 2^-25 each: below half an ulp of 1.0 in fp32
    (out,), _ = _gemm_kernel(a, w).run(npu_emulator)
    want = ref.gemm_fp16(a, w)
    assert (want == 1.0).all()
    assert (a.astype(np.float64) @ w.astype(np.float64) > 1.0).all()
    assert ref.same_float(out.reshape(1, 16), want)


def test_gemm_fp16_accumulate_and_specials(npu_emulator):
    a = np.array([[1.0, 2.0, -3.0, 0.5], [np.inf, 1.0, 0.0, 0.0], [65504.0, 65504.0, 0.0, 0.0]], np.float16)
    w = np.array([[1.0] * 16, [2.0] * 16, [4.0] * 16, [-8.0] * 16], np.float16)
    init = np.full((3, 16), 100.0, np.float32)
    (out,), _ = _gemm_kernel(a, w, acc_init=init).run(npu_emulator)
    want = ref.gemm_fp16(a, w, acc=init)
    assert want[0, 0] == 100 + 1 + 4 - 12 - 4 and np.isinf(want[1, 0]) and want[2, 0] == np.float32(100 + 3 * 65504)
    assert ref.same_float(out.reshape(3, 16), want)


# ---- conv2d ---------------------------------------------------------------------------------

def _conv_kernel(x, w, stride=(1, 1), dilation=(1, 1), groups=1, a_offset=0, pads=(0, 0, 0, 0), pad_value=0,
                 cfg="npu-edge", out_hw=None):
    k = Kernel(cfg)
    ta = k.load(x, pads=pads, pad_value=pad_value)
    tw = k.load(w, Space.WGT)
    n, h, wd, _ = ta.shape
    kh, kw, _, cout = w.shape
    oh = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (wd - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    if out_hw:
        oh, ow = out_hw
    acc_dt = np.float32 if x.dtype == np.float16 else np.int32
    to = k.alloc(Space.ACC, acc_dt, (n, oh, ow, cout))
    k.op("conv2d", a=ta, w=tw, o=to, stride_h=stride[0], stride_w=stride[1], dilation_h=dilation[0],
         dilation_w=dilation[1], groups=groups, a_offset=a_offset)
    k.store(to)
    return k


CONV_CASES = [
    # (input NHWC, kernel KHxKW, cin, cout, stride, dilation, groups)
    ((1, 5, 5, 8), (3, 3), 8, 16, (1, 1), (1, 1), 1),
    ((2, 7, 6, 3), (3, 2), 3, 5, (2, 1), (1, 1), 1),
    ((1, 9, 9, 4), (3, 3), 4, 8, (1, 2), (2, 2), 1),
    ((1, 6, 6, 16), (1, 1), 16, 32, (1, 1), (1, 1), 1),
    ((1, 6, 5, 12), (3, 3), 12, 18, (1, 1), (1, 1), 3),
    ((1, 8, 8, 8), (2, 2), 8, 8, (2, 2), (1, 3), 8),
    ((2, 4, 4, 20), (2, 3), 20, 10, (1, 1), (1, 1), 2),
]


@pytest.mark.parametrize("shape,khw,cin,cout,stride,dilation,groups", CONV_CASES)
def test_conv2d_int8(npu_emulator, shape, khw, cin, cout, stride, dilation, groups):
    r = rng(sum(shape) + cout + groups)
    x = rand_int(r, np.int8, shape)
    w = rand_int(r, np.int8, (*khw, cin // groups, cout))
    (out,), res = _conv_kernel(x, w, stride, dilation, groups, a_offset=17).run(npu_emulator)
    want = ref.conv2d_int(x, w, stride, dilation, groups, a_offset=17)
    np.testing.assert_array_equal(out, want)
    assert res.counters.macs == want.size * khw[0] * khw[1] * (cin // groups)


def test_conv2d_padded_by_the_dma_with_zero_point(npu_emulator):
    """SAME padding: the halo carries the input zero point, which a_offset cancels exactly."""
    r = rng(31)
    zp = -9
    x = rand_int(r, np.int8, (1, 6, 6, 8))
    w = rand_int(r, np.int8, (3, 3, 8, 16))
    (out,), _ = _conv_kernel(x, w, pads=(1, 1, 1, 1), pad_value=zp, a_offset=-zp).run(npu_emulator)
    padded = ref.pad_nhwc(x, 1, 1, 1, 1, zp)
    want = ref.conv2d_int(padded, w, a_offset=-zp)
    np.testing.assert_array_equal(out, want)
    # equals a zero-padded convolution of the zero-point-corrected input
    corrected = np.pad(x.astype(np.int64) - zp, ((0, 0), (1, 1), (1, 1), (0, 0)))
    np.testing.assert_array_equal(out, ref.conv2d_int(corrected, w))


def test_conv2d_output_smaller_than_valid(npu_emulator):
    """o may cover only part of the valid output (a tile): its windows just need to fit."""
    r = rng(32)
    x = rand_int(r, np.int8, (1, 8, 8, 4))
    w = rand_int(r, np.int8, (3, 3, 4, 16))
    (out,), _ = _conv_kernel(x, w, out_hw=(2, 3)).run(npu_emulator)
    np.testing.assert_array_equal(out, ref.conv2d_int(x, w)[:, :2, :3])


def test_conv2d_int16(npu_emulator):
    r = rng(33)
    x = rand_int(r, np.int16, (1, 5, 5, 6))
    w = rand_int(r, np.int8, (3, 3, 3, 8))
    (out,), _ = _conv_kernel(x, w, groups=2, a_offset=-1000).run(npu_emulator)
    np.testing.assert_array_equal(out, ref.conv2d_int(x, w, groups=2, a_offset=-1000))


@pytest.mark.parametrize("shape,khw,cin,cout,stride,dilation,groups", CONV_CASES[:5])
def test_conv2d_fp16_bit_exact(npu_emulator, shape, khw, cin, cout, stride, dilation, groups):
    r = rng(sum(shape) * 7 + groups)
    x = rand_f16(r, shape)
    w = rand_f16(r, (*khw, cin // groups, cout), 0.3)
    (out,), _ = _conv_kernel(x, w, stride, dilation, groups).run(npu_emulator)
    assert ref.same_float(out, ref.conv2d_fp16(x, w, stride, dilation, groups))


def test_conv2d_accumulate(npu_emulator):
    r = rng(34)
    x = rand_int(r, np.int8, (1, 4, 4, 8))
    w = rand_int(r, np.int8, (2, 2, 8, 16))
    init = rand_int(r, np.int32, (1, 3, 3, 16), -10**5, 10**5)
    k = Kernel()
    ta, tw = k.load(x), k.load(w, Space.WGT)
    to = k.load(init, Space.ACC)
    k.op("conv2d", a=ta, w=tw, o=to, a_offset=1, accumulate=1)
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, ref.conv2d_int(x, w, a_offset=1, acc=init))


# ---- depthwise ------------------------------------------------------------------------------

DW_CASES = [
    ((1, 6, 6, 16), (3, 3), 1, (1, 1), (1, 1)),
    ((1, 7, 7, 8), (3, 3), 2, (2, 2), (1, 1)),
    ((2, 9, 8, 5), (3, 2), 3, (1, 2), (2, 3)),
    ((1, 4, 4, 32), (1, 1), 1, (1, 1), (1, 1)),
]


def _dw_kernel(x, w, stride, dilation, a_offset=0):
    k = Kernel()
    ta, tw = k.load(x), k.load(w, Space.WGT)
    n, h, wd, _ = x.shape
    kh, kw, _, cout = w.shape
    oh = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (wd - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    to = k.alloc(Space.ACC, np.float32 if x.dtype == np.float16 else np.int32, (n, oh, ow, cout))
    k.op("dwconv2d", a=ta, w=tw, o=to, stride_h=stride[0], stride_w=stride[1], dilation_h=dilation[0],
         dilation_w=dilation[1], a_offset=a_offset)
    k.store(to)
    return k


@pytest.mark.parametrize("shape,khw,mult,stride,dilation", DW_CASES)
def test_dwconv2d_int8(npu_emulator, shape, khw, mult, stride, dilation):
    r = rng(sum(shape) + mult)
    x = rand_int(r, np.int8, shape)
    w = rand_int(r, np.int8, (*khw, 1, shape[3] * mult))
    (out,), res = _dw_kernel(x, w, stride, dilation, a_offset=-3).run(npu_emulator)
    want = ref.dwconv2d_int(x, w, stride, dilation, a_offset=-3)
    np.testing.assert_array_equal(out, want)
    assert res.counters.macs == want.size * khw[0] * khw[1]


def test_dwconv2d_multiplier_channel_order(npu_emulator):
    """Output channel co reads input channel co // mult: with one-hot weights the output shows it."""
    x = np.arange(4, dtype=np.int8).reshape(1, 1, 1, 4) * 10 + 1  # channels 1, 11, 21, 31
    w = np.ones((1, 1, 1, 12), np.int8)
    (out,), _ = _dw_kernel(x, w, (1, 1), (1, 1)).run(npu_emulator)
    np.testing.assert_array_equal(out.reshape(-1), np.repeat([1, 11, 21, 31], 3))


@pytest.mark.parametrize("shape,khw,mult,stride,dilation", DW_CASES[:3])
def test_dwconv2d_fp16_bit_exact(npu_emulator, shape, khw, mult, stride, dilation):
    r = rng(sum(shape) * 3 + mult)
    x = rand_f16(r, shape)
    w = rand_f16(r, (*khw, 1, shape[3] * mult), 0.5)
    (out,), _ = _dw_kernel(x, w, stride, dilation).run(npu_emulator)
    assert ref.same_float(out, ref.dwconv2d_fp16(x, w, stride, dilation))


def test_dwconv2d_int16(npu_emulator):
    r = rng(35)
    x = rand_int(r, np.int16, (1, 5, 5, 8))
    w = rand_int(r, np.int8, (3, 3, 1, 16))
    (out,), _ = _dw_kernel(x, w, (1, 1), (1, 1), a_offset=300).run(npu_emulator)
    np.testing.assert_array_equal(out, ref.dwconv2d_int(x, w, a_offset=300))


# ---- float accumulation starts from the accumulator ------------------------------------------------
# docs/ISA.md: "o (= or +=) sum ..., fp32 accumulated in k order, one rounding per add". The emulator
# (and this reference) start the running sum from o, then add the products in order.

def test_gemm_fp16_accumulate_random(npu_emulator):
    r = rng(36)
    a, w = rand_f16(r, (8, 48)), rand_f16(r, (48, 16), 0.5)
    init = (r.standard_normal((8, 16)) * 1000).astype(np.float32)
    (out,), _ = _gemm_kernel(a, w, acc_init=init).run(npu_emulator)
    assert ref.same_float(out.reshape(8, 16), ref.gemm_fp16(a, w, acc=init))


def test_conv_and_dwconv_fp16_accumulate(npu_emulator):
    r = rng(37)
    x = rand_f16(r, (1, 5, 5, 8))
    wc = rand_f16(r, (3, 3, 8, 16), 0.3)
    wd = rand_f16(r, (3, 3, 1, 16), 0.3)
    init = (r.standard_normal((1, 3, 3, 16)) * 100).astype(np.float32)
    k = Kernel()
    ta, twc, twd = k.load(x), k.load(wc, Space.WGT), k.load(wd, Space.WGT)
    oc, od = k.load(init, Space.ACC), k.load(init, Space.ACC)
    k.op("conv2d", a=ta, w=twc, o=oc, accumulate=1)
    k.op("dwconv2d", a=ta, w=twd, o=od, accumulate=1)
    k.store(oc)
    k.store(od)
    (out_c, out_d), _ = k.run(npu_emulator)
    assert ref.same_float(out_c, ref.conv2d_fp16(x, wc, acc=init))
    assert ref.same_float(out_d, ref.dwconv2d_fp16(x, wd, acc=init))


def test_dwconv2d_int_accumulate(npu_emulator):
    r = rng(38)
    x = rand_int(r, np.int8, (1, 4, 4, 16))
    w = rand_int(r, np.int8, (2, 2, 1, 32))
    init = rand_int(r, np.int32, (1, 3, 3, 32))
    k = Kernel()
    ta, tw, to = k.load(x), k.load(w, Space.WGT), k.load(init, Space.ACC)
    k.op("dwconv2d", a=ta, w=tw, o=to, a_offset=-100, accumulate=1)
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, ref.dwconv2d_int(x, w, a_offset=-100, acc=init))


@pytest.mark.parametrize("cfg", ["npu-nano", "npu-edge", "npu-pro"])
def test_results_do_not_depend_on_the_configuration(npu_emulator, cfg):
    """Tiling inside the MAC array is invisible: the same conv gives the same bytes on every machine."""
    r = rng(39)
    x = rand_int(r, np.int8, (1, 9, 9, 24))
    w = rand_int(r, np.int8, (3, 3, 12, 40))
    (out,), _ = _conv_kernel(x, w, stride=(2, 1), groups=2, a_offset=7, cfg=cfg).run(npu_emulator)
    np.testing.assert_array_equal(out, ref.conv2d_int(x, w, (2, 1), groups=2, a_offset=7))
