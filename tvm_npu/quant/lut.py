"""256-entry ``vlut`` tables of the unary int8 kernels, built from the reference kernels' own arithmetic."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from typing import Callable, Optional

import numpy as np

from .activation import _activation_name, activation_range
from .multiplier import (INT32_MAX, _tflite_round, multiply_by_quantized_multiplier, quantize_multiplier,
                         rounding_divide_by_pot)
from .params import QParams, _as_qparams, _f32, _require_per_tensor

__all__ = [
    "lut_from_float_fn", "logistic_lut", "tanh_lut", "elu_lut", "gelu_lut", "hard_swish_lut",
    "leaky_relu_lut", "relu_lut", "npu_lut_order", "apply_lut",
]

# ---------------------------------------------------------------------------------------------
# 256-entry tables for unary int8 kernels
# ---------------------------------------------------------------------------------------------


def npu_lut_order(tflite_lut) -> np.ndarray:
    """TFLite's int8 LUT layout (``lut[(uint8)x]``) -> the NPU's (``lut[x + 128]``)."""
    t = np.asarray(tflite_lut).astype(np.int8).reshape(256)
    return t[np.arange(-128, 128).astype(np.uint8)]


def apply_lut(table, x) -> np.ndarray:
    """numpy model of ``vlut``: ``table[x + 128]``."""
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]


class _LibM:
    """The float32 libm functions TFLite's LUT builders call (expf, tanhf, expm1f, erfcf).

    TFLite evaluates ``std::exp(float)`` etc. with the C library's float functions; the LiteRT wheel links
    libm dynamically, so on the same machine the same functions give the same bits. Without a loadable
    libm the double-precision function rounded to float32 is used (correctly rounded in practice, and
    equal to glibc's results except in rare last-bit cases).
    """

    def __init__(self) -> None:
        self.funcs = {}
        path = ctypes.util.find_library("m")
        try:
            lib = ctypes.CDLL(path) if path else None
        except OSError:
            lib = None
        for name in ("expf", "tanhf", "expm1f", "erfcf"):
            fn = getattr(lib, name, None) if lib is not None else None
            if fn is not None:
                fn.restype = ctypes.c_float
                fn.argtypes = [ctypes.c_float]
                self.funcs[name] = fn

    def call(self, name: str, x: np.float32) -> np.float32:
        fn = self.funcs.get(name)
        if fn is not None:
            return np.float32(fn(float(x)))
        fallback = {"expf": _safe_exp, "tanhf": math.tanh, "expm1f": _safe_expm1, "erfcf": math.erfc}[name]
        return np.float32(fallback(float(x)))


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _safe_expm1(x: float) -> float:
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


_LIBM: Optional[_LibM] = None


def _libm() -> _LibM:
    global _LIBM
    if _LIBM is None:
        _LIBM = _LibM()
    return _LIBM


def lut_from_float_fn(fn: Callable[[np.float32], np.float32], input: QParams, output: QParams) -> np.ndarray:
    """TFLite ``LUTPopulateInt8`` (common.h) for a float32 transform: the int8 LUT of LOGISTIC, TANH, ELU
    and GELU in the reference kernels (activations.cc Prepare), in NPU order.

    For every ``v`` in -128..127, all in float32: ``d = s_in * (float)(v - zp_in)``, ``t = fn(d)``,
    ``r = roundf(t * (1 / s_out))`` (the reciprocal is a float32), ``q = (int)(r + zp_out)``,
    clamped to int8. ``fn`` must reproduce the kernel's float32 transform bit for bit (use
    ``np.float32`` arithmetic; the :func:`logistic_lut` etc. wrappers do). A non-finite ``t * (1/s_out)``
    raises ValueError (TFLite's float-to-int conversion is undefined there).
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    if inp.dtype != "int8" or out.dtype != "int8":
        raise ValueError("LUT activations are int8 -> int8")
    inverse_scale = _f32(_f32(1.0) / out.s)
    table = np.empty(256, np.int8)
    for v in range(-128, 128):
        dequantized = _f32(inp.s * _f32(v - inp.zp))
        transformed = _f32(fn(dequantized))
        scaled = _f32(transformed * inverse_scale)
        if not np.isfinite(scaled):
            raise ValueError(f"transform gives {transformed!r} at input {v}: not representable")
        rescaled = _f32(_tflite_round(float(scaled)))
        quantized = int(_f32(rescaled + _f32(out.zp)))  # static_cast<int32_t> truncates (value is integral)
        table[v + 128] = min(127, max(-128, quantized))
    return table


def _sigmoid_f32(x: np.float32) -> np.float32:
    # activations.cc: [](float value) { return 1.0f / (1.0f + std::exp(-value)); }
    e = _libm().call("expf", -x)
    return _f32(_f32(1.0) / _f32(_f32(1.0) + e))


def logistic_lut(input: QParams, output: QParams) -> np.ndarray:
    """LOGISTIC int8: the table ``activations.cc`` ``SigmoidPrepare<kReference>`` builds with
    ``LUTPopulate<int8_t>`` and ``1.0f / (1.0f + std::exp(-value))``; ``SigmoidEval`` then only looks up.
    TFLite requires ``s_out == 1/256`` (checked here too); the output zero point is not checked by the
    reference path (the converter always uses -128)."""
    out = _as_qparams(output, "output")
    if float(out.s) != 1.0 / 256:
        raise ValueError(f"LOGISTIC int8 needs output scale 1/256, got {float(out.s)!r}")
    return lut_from_float_fn(_sigmoid_f32, input, output)


def tanh_lut(input: QParams, output: QParams) -> np.ndarray:
    """TANH int8: the table of ``activations.cc`` ``TanhPrepare<kReference>`` (``LUTPopulate<int8_t>`` with
    ``std::tanh(float)``). The reference Prepare checks no output parameters (the converter uses 1/128, 0)."""
    return lut_from_float_fn(lambda x: _libm().call("tanhf", x), input, output)


def elu_lut(input: QParams, output: QParams) -> np.ndarray:
    """ELU int8: ``activations.cc`` ``EluPrepare`` (``LUTPopulate<int8_t>`` with
    ``value < 0 ? std::expm1(value) : value``). ELU has one kernel, registered by the builtin resolver
    but not by BUILTIN_REF (LiteRT 2.3), so its reference is the builtin resolver without delegates."""
    def elu(x: np.float32) -> np.float32:
        return _libm().call("expm1f", x) if x < 0 else x
    return lut_from_float_fn(elu, input, output)


_SQRT1_2 = 0.70710678118654752440  # M_SQRT1_2
_2_SQRTPI = 1.12837916709551257390  # M_2_SQRTPI


def gelu_lut(input: QParams, output: QParams, approximate: bool = False) -> np.ndarray:
    """GELU int8: ``activations.cc`` ``GeluPrepare`` (``LUTPopulate<int8_t>`` with
    ``reference_ops::GeluTransform`` = ``0.5f * x * std::erfc(x * (float)(-M_SQRT1_2))``, or
    ``GeluTransformApproximate`` = ``0.5f * x * (1.f + std::tanh(kSqrt2dPi * (x + 0.044715f * x*x*x)))``
    with ``kSqrt2dPi = (float)(M_2_SQRTPI * M_SQRT1_2)``), in float32 in the C++ evaluation order."""
    libm = _libm()
    if approximate:
        k = _f32(_2_SQRTPI * _SQRT1_2)
        c = _f32(0.044715)

        def gelu(x: np.float32) -> np.float32:
            cube = _f32(_f32(_f32(c * x) * x) * x)
            th = libm.call("tanhf", _f32(k * _f32(x + cube)))
            return _f32(_f32(_f32(0.5) * x) * _f32(_f32(1.0) + th))
    else:
        neg = _f32(-_SQRT1_2)

        def gelu(x: np.float32) -> np.float32:
            return _f32(_f32(_f32(0.5) * x) * libm.call("erfcf", _f32(x * neg)))
    return lut_from_float_fn(gelu, input, output)


def leaky_relu_lut(input: QParams, output: QParams, alpha: float) -> np.ndarray:
    """LEAKY_RELU int8: ``activations.cc`` ``LeakyReluPrepare`` + ``reference_ops::QuantizeLeakyRelu``,
    evaluated for all 256 inputs.

    ``(m_id, s_id) = QuantizeMultiplier(s_in / s_out)`` and ``(m_a, s_a) = QuantizeMultiplier(s_in * alpha /
    s_out)``, both ratios in float32 as the C++ expressions are; ``d = x - zp_in``;
    ``y = zp_out + MBQM(d, d >= 0 ? m_id : m_a, ...)``, clamped to int8.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    m_a, s_a = quantize_multiplier(float(_f32(_f32(inp.s * _f32(alpha)) / out.s)))
    m_i, s_i = quantize_multiplier(float(_f32(inp.s / out.s)))
    d = np.arange(-128, 128, dtype=np.int64) - inp.zp
    pos = multiply_by_quantized_multiplier(np.maximum(d, 0), m_i, s_i)
    neg = multiply_by_quantized_multiplier(np.minimum(d, 0), m_a, s_a)
    y = np.where(d >= 0, pos, neg) + out.zp
    return np.clip(y, -128, 127).astype(np.int8)


def relu_lut(input: QParams, output: QParams, kind: str = "RELU") -> np.ndarray:
    """Standalone RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 int8: ``activations.cc`` ``ReluPrepare``
    (``QuantizeMultiplier(s_in / s_out)``, float32 ratio) and ``QuantizedReluX`` / ``ReluX``:
    ``y = clamp(zp_out + MBQM(x - zp_in, m, s), act_min, act_max)`` with the bounds
    ``max(-128, zp_out + roundf(lo / s_out))`` and ``min(127, zp_out + roundf(hi / s_out))`` (no upper
    bound for RELU). Unlike a fused activation this requantises, so it is a table, not a clamp.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    kind = _activation_name(kind)
    if kind == "NONE":
        raise ValueError("relu_lut needs RELU, RELU6, RELU_N1_TO_1 or RELU_0_TO_1")
    act_min, act_max = activation_range(kind, out)
    m, s = quantize_multiplier(float(_f32(inp.s / out.s)))
    y = multiply_by_quantized_multiplier(np.arange(-128, 128, dtype=np.int64) - inp.zp, m, s) + out.zp
    return np.clip(y, act_min, act_max).astype(np.int8)


# ---- HARD_SWISH: reference_ops::HardSwish (hard_swish.h), 16-bit fixed point -------------------

def _i16(x) -> np.ndarray:
    x = np.asarray(x, np.int64)
    return (x + 2**15) % 2**16 - 2**15


def _srdhm16(a, b) -> np.ndarray:
    # gemmlowp SaturatingRoundingDoublingHighMul<int16_t>
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    t = ab + nudge
    q = np.where(t < 0, -((-t) // (1 << 15)), t // (1 << 15))
    return np.where((a == b) & (a == -32768), 32767, _i16(q))


def _sdhm16(a, b) -> np.ndarray:
    # hard_swish.h SaturatingDoublingHighMul: truncating division, no rounding
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    ab = a * b
    q = np.where(ab < 0, -((-ab) // (1 << 15)), ab // (1 << 15))
    return np.where((a == b) & (a == -32768), 32767, _i16(q))


def _sat_left_shift16(x, amount: int) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64) * (1 << amount), -32768, 32767)


def _downscale_to_int16(m: int) -> int:
    # quantization_util / activations.cc DownScaleInt32ToInt16Multiplier
    if m >= INT32_MAX - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def hard_swish_lut(input: QParams, output: QParams) -> np.ndarray:
    """HARD_SWISH int8: ``activations.cc`` ``HardSwishPrepare`` and the fixed-point
    ``reference_ops::HardSwish`` (hard_swish.h) evaluated for all 256 inputs -- the reference kernel is not
    a LUT, but it is a function of one byte, so its table is exact.

    Prepare (float32): ``hires = (1/128) * s_in``; ``QuantizeMultiplier(hires / s_out)`` and
    ``QuantizeMultiplier(hires / (3/32768))``, each multiplier rounded to int16 by
    ``DownScaleInt32ToInt16Multiplier``; the output exponent must be <= 0 (TFLite's ENSURE; ValueError here).
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    hires = _f32(_f32(1.0 / 128.0) * inp.s)
    reluish_scale = _f32(3.0 / 32768.0)
    out_m32, out_exp = quantize_multiplier(float(_f32(hires / out.s)))
    if out_exp > 0:
        raise ValueError(f"HARD_SWISH: output multiplier exponent {out_exp} > 0 (s_in {float(inp.s)!r} is more than "
                         f"128 x s_out {float(out.s)!r}); TFLite's Prepare rejects it")
    rel_m32, rel_exp = quantize_multiplier(float(_f32(hires / reluish_scale)))
    out_m16, rel_m16 = _downscale_to_int16(out_m32), _downscale_to_int16(rel_m32)

    x = np.arange(-128, 128, dtype=np.int64)
    value = _i16(x - inp.zp)
    hires_value = _i16(value * 128)
    preshift_out = _srdhm16(hires_value, out_m16)
    reluish = hires_value
    if rel_exp > 0:
        reluish = _sat_left_shift16(reluish, rel_exp - 1)
    reluish = _srdhm16(reluish, rel_m16)
    if rel_exp > 0:
        reluish = _sat_left_shift16(reluish, 1)
    if rel_exp < 0:
        reluish = _i16(rounding_divide_by_pot(reluish, -rel_exp))
    reluish = _i16((reluish + (1 << 15)) >> 1)
    preshift = _sdhm16(reluish, preshift_out)
    y = _i16(rounding_divide_by_pot(preshift, -out_exp))
    y = _i16(y + out.zp)
    return np.clip(y, -128, 127).astype(np.int8)
