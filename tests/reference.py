"""Numpy reference kernels for the NPU ISA, written from docs/ISA.md and TFLite's reference code only.

Integer arithmetic runs in numpy int64 and reproduces the 32-bit behaviour of
``tensorflow/lite/kernels/internal/common.h`` explicitly (truncating division, arithmetic shifts,
wrap-around); float kernels reproduce the fp32 accumulation order the ISA specifies. Nothing here
looks at the emulator's C++.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# fixed-point helpers (TFLite common.h / gemmlowp fixedpoint.h)
# ---------------------------------------------------------------------------------------------


def wrap_i32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (what 32-bit C arithmetic does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32 - 2**31).astype(np.int64)


def _trunc_div(num: np.ndarray, den: int) -> np.ndarray:
    """C integer division (rounds toward zero) for int64 numerators and a positive denominator."""
    q = np.abs(num) // den
    return np.where(num < 0, -q, q)


def srdhm(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (given as any integer array)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.broadcast_arrays(a, b)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b  # |a*b| <= 2^62 fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div(ab + nudge, 1 << 31)
    return np.where(overflow, INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero (0 <= exponent <= 31)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    assert np.all((exponent >= 0) & (exponent <= 31)), exponent
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def mbqm(x, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding) on int32 values.

    ``x * 2^max(shift, 0)`` is a 32-bit product in TFLite; callers keep it in range (the overflow is
    undefined behaviour in C++), which this asserts.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = x * (np.int64(1) << left)
    assert np.all((shifted >= INT32_MIN) & (shifted <= INT32_MAX)), "left shift overflows int32"
    return rounding_divide_by_pot(srdhm(shifted, multiplier), right)


def quantize_multiplier(real: float) -> Tuple[int, int]:
    """TFLite QuantizeMultiplier: real = m * 2^(shift - 31), m in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = int(round(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m, shift


def clamp(x, lo, hi) -> np.ndarray:
    return np.minimum(np.maximum(np.asarray(x, dtype=np.int64), lo), hi)


# ---------------------------------------------------------------------------------------------
# requantisation and TFLite elementwise kernels
# ---------------------------------------------------------------------------------------------


def requant(acc, mult, shift, o_offset, act_min, act_max, out_dtype=np.int8) -> np.ndarray:
    """vrequant int32 -> int8/int16: clamp(MBQM(acc, m, s) + o_offset). mult/shift broadcast over C."""
    return clamp(mbqm(acc, mult, shift) + o_offset, act_min, act_max).astype(out_dtype)


def quant_add(x, y, *, a_offset, a_mult, a_shift, b_offset, b_mult, b_shift, left_shift,
              o_mult, o_shift, o_offset, act_min, act_max, sub=False, out_dtype=np.int8) -> np.ndarray:
    """TFLite reference_ops::Add / Sub for int8/int16 (broadcasting numpy-style)."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    xs = mbqm((x + a_offset) * (1 << left_shift), a_mult, a_shift)
    ys = mbqm((y + b_offset) * (1 << left_shift), b_mult, b_shift)
    raw = xs - ys if sub else xs + ys
    raw = wrap_i32(raw)
    return clamp(mbqm(raw, o_mult, o_shift) + o_offset, act_min, act_max).astype(out_dtype)


def quant_mul(x, y, *, a_offset, b_offset, o_mult, o_shift, o_offset, act_min, act_max,
              out_dtype=np.int8) -> np.ndarray:
    """TFLite reference_ops::Mul for int8/int16."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    prod = wrap_i32((x + a_offset) * (y + b_offset))
    return clamp(mbqm(prod, o_mult, o_shift) + o_offset, act_min, act_max).astype(out_dtype)


def float_binary(op: str, x, y, dtype) -> np.ndarray:
    """fp16/fp32 elementwise op: computed in fp32, rounded once to the destination dtype."""
    a = np.asarray(x).astype(np.float32)
    b = np.asarray(y).astype(np.float32)
    with np.errstate(all="ignore"):
        r = {"vadd": np.add, "vsub": np.subtract, "vmul": np.multiply,
             "vmax": np.maximum, "vmin": np.minimum}[op](a, b)
        return r.astype(dtype)


# ---------------------------------------------------------------------------------------------
# MAC array
# ---------------------------------------------------------------------------------------------


def gemm_int(a, w, a_offset=0, acc=None) -> np.ndarray:
    """int8/int16 x int8 -> int32 (wrapping): o[m, j] (+)= sum_k (a[m, k] + a_offset) * w[k, j]."""
    r = (np.asarray(a, np.int64) + a_offset) @ np.asarray(w, np.int64)
    if acc is not None:
        r = r + np.asarray(acc, np.int64)
    return wrap_i32(r).astype(np.int32)


def gemm_fp16(a, w, acc=None) -> np.ndarray:
    """fp16 x fp16 -> fp32, accumulated in k order with one fp32 rounding per add."""
    a32 = np.asarray(a, np.float16).astype(np.float32)
    w32 = np.asarray(w, np.float16).astype(np.float32)
    m, k = a32.shape
    n = w32.shape[1]
    out = np.zeros((m, n), np.float32) if acc is None else np.asarray(acc, np.float32).copy()
    for kk in range(k):
        # the fp16 x fp16 product is exact in fp32; only the add rounds
        out = (out + np.multiply.outer(a32[:, kk], w32[kk, :]).astype(np.float32)).astype(np.float32)
    return out


def conv2d_int(a, w, stride=(1, 1), dilation=(1, 1), groups=1, a_offset=0, acc=None) -> np.ndarray:
    """Valid NHWC conv, a [N,H,W,Cin], w [KH,KW,Cin/groups,Cout] -> int32 [N,OH,OW,Cout] (wrapping)."""
    a = np.asarray(a, np.int64) + a_offset
    w = np.asarray(w, np.int64)
    n, h, wd, cin = a.shape
    kh, kw, cg, cout = w.shape
    sh, sw = stride
    dh, dw = dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    ng = cout // groups
    assert cg * groups == cin
    out = np.zeros((n, oh, ow, cout), np.int64)
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                patch = a[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw,
                          g * cg:(g + 1) * cg]
                out[..., g * ng:(g + 1) * ng] += patch @ w[ky, kx, :, g * ng:(g + 1) * ng]
    if acc is not None:
        out += np.asarray(acc, np.int64)
    return wrap_i32(out).astype(np.int32)


def conv2d_fp16(a, w, stride=(1, 1), dilation=(1, 1), groups=1, acc=None) -> np.ndarray:
    """fp16 conv with fp32 sums in (ky, kx, ci) order, one rounding per add, starting from acc."""
    a = np.asarray(a, np.float16).astype(np.float32)
    w = np.asarray(w, np.float16).astype(np.float32)
    n, h, wd, cin = a.shape
    kh, kw, cg, cout = w.shape
    sh, sw = stride
    dh, dw = dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    ng = cout // groups
    out = np.zeros((n, oh, ow, cout), np.float32) if acc is None else np.array(acc, np.float32)
    for co in range(cout):
        g = co // ng
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(cg):
                    patch = a[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw,
                              g * cg + ci]
                    out[..., co] = (out[..., co] + patch * w[ky, kx, ci, co]).astype(np.float32)
    return out


def dwconv2d_int(a, w, stride=(1, 1), dilation=(1, 1), a_offset=0, acc=None) -> np.ndarray:
    """Depthwise valid NHWC conv, w [KH,KW,1,C*mult]; output channel co reads input channel co // mult."""
    a = np.asarray(a, np.int64) + a_offset
    w = np.asarray(w, np.int64)
    n, h, wd, cin = a.shape
    kh, kw, one, cout = w.shape
    assert one == 1 and cout % cin == 0
    mult = cout // cin
    sh, sw = stride
    dh, dw = dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    src = a[..., np.arange(cout) // mult]
    out = np.zeros((n, oh, ow, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = src[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw, :]
            out += patch * w[ky, kx, 0, :]
    if acc is not None:
        out += np.asarray(acc, np.int64)
    return wrap_i32(out).astype(np.int32)


def dwconv2d_fp16(a, w, stride=(1, 1), dilation=(1, 1), acc=None) -> np.ndarray:
    """fp16 depthwise conv, fp32 sums in (ky, kx) order, starting from acc."""
    a = np.asarray(a, np.float16).astype(np.float32)
    w = np.asarray(w, np.float16).astype(np.float32)
    n, h, wd, cin = a.shape
    kh, kw, _, cout = w.shape
    mult = cout // cin
    sh, sw = stride
    dh, dw = dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    src = a[..., np.arange(cout) // mult]
    out = np.zeros((n, oh, ow, cout), np.float32) if acc is None else np.array(acc, np.float32)
    for ky in range(kh):
        for kx in range(kw):
            patch = src[:, ky * dh: ky * dh + (oh - 1) * sh + 1: sh, kx * dw: kx * dw + (ow - 1) * sw + 1: sw, :]
            out = (out + patch * w[ky, kx, 0, :]).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# vector unit
# ---------------------------------------------------------------------------------------------


def pool(a, mode: str, kh, kw, stride=(1, 1), pad_top=0, pad_left=0, out_hw=None,
         act_min=None, act_max=None) -> np.ndarray:
    """TFLite reference max / average pooling (padding never counts) on NHWC int or float input."""
    a = np.asarray(a)
    n, h, w, c = a.shape
    sh, sw = stride
    oh, ow = out_hw
    is_float = a.dtype.kind == "f"
    out = np.zeros((n, oh, ow, c), np.float32 if is_float else np.int64)
    for y in range(oh):
        for x in range(ow):
            y0, x0 = y * sh - pad_top, x * sw - pad_left
            ys = range(max(y0, 0), min(y0 + kh, h))
            xs = range(max(x0, 0), min(x0 + kw, w))
            count = len(ys) * len(xs)
            assert count > 0
            if mode == "max":
                win = a[:, ys.start:ys.stop, xs.start:xs.stop, :].reshape(n, -1, c)
                out[:, y, x, :] = win.max(axis=1)
            elif is_float:
                s = np.zeros((n, c), np.float32)
                for yy in ys:  # row-major window order, one fp32 rounding per add
                    for xx in xs:
                        s = (s + a[:, yy, xx, :].astype(np.float32)).astype(np.float32)
                out[:, y, x, :] = (s / np.float32(count)).astype(np.float32)
            else:
                s = a[:, ys.start:ys.stop, xs.start:xs.stop, :].astype(np.int64).sum(axis=(1, 2))
                half = count // 2
                out[:, y, x, :] = np.where(s >= 0, _trunc_div(s + half, count), _trunc_div(s - half, count))
    if is_float:
        return out.astype(a.dtype)
    if act_min is not None:
        out = clamp(out, act_min, act_max)
    return out.astype(a.dtype)


def reduce(a, mode: str, axis: int) -> np.ndarray:
    """vreduce: int sums -> int32 (wrapping), float sums -> fp32 in index order, max keeps the dtype."""
    a = np.asarray(a)
    if mode == "max":
        return a.max(axis=axis, keepdims=True)
    if a.dtype.kind == "f":
        moved = np.moveaxis(a.astype(np.float32), axis, 0)
        s = np.zeros(moved.shape[1:], np.float32)
        for i in range(moved.shape[0]):
            s = (s + moved[i]).astype(np.float32)
        return np.expand_dims(s, axis)
    return wrap_i32(a.astype(np.int64).sum(axis=axis, keepdims=True)).astype(np.int32)


def _gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _sigmoid(x: float) -> float:
    try:
        e = math.exp(-x)
    except OverflowError:
        return 0.0
    return 1.0 / (1.0 + e)


def _safe(f: Callable[[float], float]) -> Callable[[float], float]:
    def g(x: float) -> float:
        if math.isnan(x):
            return math.nan
        try:
            return f(x)
        except OverflowError:
            return math.inf
    return g


def _rsqrt(x: float) -> float:
    if x == 0:
        return math.copysign(math.inf, x)
    if x < 0:
        return math.nan
    if math.isinf(x):
        return 0.0
    return 1.0 / math.sqrt(x)


def _recip(x: float) -> float:
    if x == 0:
        return math.copysign(math.inf, x)
    return 1.0 / x


def _exp(x: float) -> float:
    if x == math.inf:
        return math.inf
    if x == -math.inf:
        return 0.0
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _tanh(x: float) -> float:
    return math.tanh(x)


FUNCS: Dict[str, Callable[[float], float]] = {
    "exp": _safe(_exp), "tanh": _safe(_tanh), "sigmoid": _safe(_sigmoid), "gelu": _safe(_gelu),
    "rsqrt": _safe(_rsqrt), "reciprocal": _safe(_recip), "gelu_tanh": _safe(_gelu_tanh),
}


def func_double(name: str, x) -> np.ndarray:
    """vfunc in double precision (before the final rounding)."""
    f = FUNCS[name]
    flat = np.asarray(x).astype(np.float64).reshape(-1)
    return np.array([f(float(v)) for v in flat], np.float64).reshape(np.shape(x))


def func_allowed(name: str, x, dtype) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The acceptable rounded results of vfunc as three arrays (nearest, and the upper / lower
    neighbour where the double value lies within libm noise of the midpoint to it, else the nearest
    again): a double result a few ulps away could round either way only there."""
    d = func_double(name, x)
    xd = np.abs(np.asarray(x, np.float64))
    with np.errstate(all="ignore"):
        tol = np.abs(d) * 1e-12
        if name in ("gelu", "gelu_tanh"):
            # 1 + erf(.) / 1 + tanh(.) cancel for x << 0: their error is absolute, a few ulp(1),
            # so the result's error is about |x| * 2^-52
            tol = np.maximum(tol, xd * 1e-15)
    with np.errstate(all="ignore"):
        r = d.astype(dtype)
        up = np.nextafter(r, np.array(np.inf, dtype))
        down = np.nextafter(r, np.array(-np.inf, dtype))
        finite = np.isfinite(d) & np.isfinite(r)
        near_up = finite & (np.abs(d - (r.astype(np.float64) + up.astype(np.float64)) / 2) <= tol)
        near_down = finite & (np.abs(d - (r.astype(np.float64) + down.astype(np.float64)) / 2) <= tol)
        # the largest finite value rounds to inf beyond its midpoint
        big = np.isinf(r) & np.isfinite(d)
    fmax = float(np.finfo(dtype).max)
    threshold = fmax + (fmax - float(np.nextafter(np.array(fmax, dtype), np.array(0, dtype)))) / 2
    up = np.where(near_up, up, r).astype(dtype)
    down = np.where(near_down, down, r).astype(dtype)
    down = np.where(big & (np.abs(d) <= threshold + tol), np.copysign(fmax, d), down).astype(dtype)
    return r, up, down


def float_bits(x) -> np.ndarray:
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize])


def cvt(a, out_dtype) -> np.ndarray:
    """vcvt: fp16<->fp32 with round-to-nearest-even, int8/int16 -> int32 sign extension, or a copy."""
    return np.asarray(a).astype(out_dtype)


def lut(a, table) -> np.ndarray:
    """vlut: o = table[a + 128]."""
    return np.asarray(table, np.int8)[np.asarray(a, np.int64) + 128]


# ---------------------------------------------------------------------------------------------
# DMA
# ---------------------------------------------------------------------------------------------


def dma_gather(region: np.ndarray, addr: int, strides: Sequence[int], shape: Sequence[int],
               dtype) -> np.ndarray:
    """The elements a dma.load reads: element (n,h,w,c) from addr + n*sn + h*sh + w*sw + c*sc."""
    dt = np.dtype(dtype)
    n, h, w, c = shape
    idx = (addr + np.arange(n)[:, None, None, None] * strides[0] + np.arange(h)[None, :, None, None] * strides[1]
           + np.arange(w)[None, None, :, None] * strides[2] + np.arange(c)[None, None, None, :] * strides[3])
    raw = np.stack([region[idx + b] for b in range(dt.itemsize)], axis=-1)
    return raw.copy().view(dt)[..., 0]


def dma_scatter(region: np.ndarray, addr: int, strides: Sequence[int], values: np.ndarray) -> None:
    """What a dma.store writes, element by element in (n, h, w, c) order (later elements win)."""
    values = np.asarray(values)
    raw = values.reshape(-1).view(np.uint8).reshape(values.size, values.itemsize)
    n, h, w, c = values.shape
    i = 0
    for a in range(n):
        for b in range(h):
            for d in range(w):
                for e in range(c):
                    off = addr + a * strides[0] + b * strides[1] + d * strides[2] + e * strides[3]
                    region[off:off + values.itemsize] = raw[i]
                    i += 1


def pad_nhwc(x: np.ndarray, top: int, bottom: int, left: int, right: int, value) -> np.ndarray:
    """Halo padding of dma.load: the low bytes of ``value`` reinterpreted as x's dtype."""
    dt = x.dtype
    fill = np.array([value & 0xFFFFFFFF], np.uint32).view(np.uint8)[:dt.itemsize].copy().view(dt)[0]
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def f16_bits(x) -> np.ndarray:
    return np.asarray(x, np.float16).view(np.uint16)


def same_float(a, b) -> bool:
    """Bit-exact comparison of float arrays, treating every NaN as equal to every NaN."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return False
    ui = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize]
    return bool(np.array_equal(a.view(ui)[~nan_a], b.view(ui)[~nan_b]))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_multiplier(m: Optional[int]) -> None:
    assert m is None or INT32_MIN <= m <= INT32_MAX


# ---------------------------------------------------------------------------------------------
# TFLite parameter preparation (quantize.cc / add.cc / mul.cc), to build realistic test cases
# ---------------------------------------------------------------------------------------------


def tflite_add_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int, left_shift: int = 20,
                      act_min: int = -128, act_max: int = 127) -> Dict[str, int]:
    """The integer parameters TFLite's Prepare computes for a quantised ADD/SUB."""
    twice_max = 2 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left_shift) * so))
    return dict(a_offset=-zp1, a_mult=m1, a_shift=sh1, b_offset=-zp2, b_mult=m2, b_shift=sh2,
                left_shift=left_shift, o_mult=mo, o_shift=sho, o_offset=zpo, act_min=act_min, act_max=act_max)


def tflite_mul_params(s1: float, zp1: int, s2: float, zp2: int, so: float, zpo: int,
                      act_min: int = -128, act_max: int = 127) -> Dict[str, int]:
    mo, sho = quantize_multiplier(s1 * s2 / so)
    return dict(a_offset=-zp1, b_offset=-zp2, o_mult=mo, o_shift=sho, o_offset=zpo, act_min=act_min,
                act_max=act_max)
