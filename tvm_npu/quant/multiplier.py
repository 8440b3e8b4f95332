"""Fixed-point multipliers: TFLite QuantizeMultiplier, gemmlowp SRDHM / RoundingDivideByPOT / MBQM, single rounding."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "quantize_multiplier", "quantize_multiplier_smaller_than_one",
    "quantize_multiplier_greater_than_one", "srdhm", "rounding_divide_by_pot", "multiply_by_quantized_multiplier",
    "single_rounding_multiplier",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# fixed point (tflite/kernels/internal/quantization_util.cc, common.h, gemmlowp fixedpoint.h)
# ---------------------------------------------------------------------------------------------


def _tflite_round(x: float) -> float:
    """TfLiteRound / std::round: half away from zero (exact for float32 or double inputs)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def quantize_multiplier(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplier`` (quantization_util.cc): ``real ~= m * 2^(shift - 31)``.

    Returns ``(m, shift)`` with ``m`` an int32 in ``[2^30, 2^31)`` (or 0) and ``shift > 0`` meaning a left
    shift, computed as TFLite does: ``q = frexp(real)``, ``m = round_half_away(q * 2^31)``, the
    ``m == 2^31`` carry into the exponent, and a flush to ``(0, 0)`` when ``shift < -31`` (TFLite's
    behaviour for multipliers below about 2^-32; the MBQM of anything by it is 0).

    Raises ValueError, naming the value, for NaN, infinity, negative values (no TFLite scale ratio is
    negative) and values of 2^31 or more (``shift > 31``, which no ISA shift field can hold and whose
    left shift would overflow int32 for every nonzero input).
    """
    real = float(real)
    if math.isnan(real) or math.isinf(real):
        raise ValueError(f"cannot quantize multiplier {real!r}: not finite")
    if real < 0:
        raise ValueError(f"cannot quantize multiplier {real!r}: negative")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(_tflite_round(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 31:
        raise ValueError(f"cannot quantize multiplier {real!r}: shift {shift} > 31 is not representable")
    return q_fixed, shift


def quantize_multiplier_smaller_than_one(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: as :func:`quantize_multiplier` for ``0 <= real < 1``
    (so ``shift <= 0``); raises ValueError outside that range, where TFLite's CHECK aborts."""
    real = float(real)
    if not 0.0 <= real < 1.0:
        raise ValueError(f"multiplier {real!r} must be in [0, 1) (TFLite QuantizeMultiplierSmallerThanOneExp)")
    m, s = quantize_multiplier(real)
    if s > 0:
        raise ValueError(f"multiplier {real!r} rounds to shift {s} > 0")
    return m, s


def quantize_multiplier_greater_than_one(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplierGreaterThanOne``: as :func:`quantize_multiplier` for ``real > 1``."""
    real = float(real)
    if not real > 1.0:
        raise ValueError(f"multiplier {real!r} must be > 1 (TFLite QuantizeMultiplierGreaterThanOne)")
    return quantize_multiplier(real)


def _wrap_i32(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32 - 2**31).astype(np.int64)


def srdhm(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (numpy int64 arrays in and out)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    high = np.where(t < 0, -((-t) >> 31), t >> 31)  # C division by 2^31 truncates toward zero
    return np.where(overflow, INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero, 0 <= exponent <= 31."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError(f"RoundingDivideByPOT exponent {exponent} outside [0, 31]")
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding, common.h) on int32 values.

    ``x * 2^max(shift, 0)`` must fit in int32 (TFLite's C++ has undefined behaviour otherwise): checked.
    """
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    shifted = x * (np.int64(1) << np.maximum(shift, 0))
    if np.any((shifted < INT32_MIN) | (shifted > INT32_MAX)):
        raise ValueError("MultiplyByQuantizedMultiplier: x << shift overflows int32")
    return rounding_divide_by_pot(srdhm(shifted, multiplier), np.maximum(-shift, 0))


# ---------------------------------------------------------------------------------------------
# float QDQ semantics (ONNX): one rounding instead of TFLite's two
# ---------------------------------------------------------------------------------------------

def single_rounding_multiplier(real: float) -> Tuple[int, int]:
    """``(m, shift)`` such that ``MultiplyByQuantizedMultiplier(x, m, shift)`` rounds ``x * real`` ONCE.

    TFLite's pair for ``real < 0.5`` is a normalised ``m`` with a right shift: SaturatingRoundingDoublingHighMul
    rounds, then RoundingDivideByPOT rounds again, and the double rounding moves results that land
    within ``2^-k`` (``k`` = the shift) of a half step, which the float definition of a quantised graph
    (``quantize(dequantize(...))``: one round-half-to-even of the real value) does not. With
    ``m = round(real * 2^31)`` and ``shift = 0`` only the high-multiply rounds (``real`` keeps
    ``log2(real * 2^31)`` significant bits, 21 for ``real = 1e-3``); ``real >= 0.5`` keeps TFLite's pair,
    whose shift is a left shift (exact). Ties still round away from zero where the float definition
    rounds to even. A ``real`` below 2^-32 gives (0, 0), like TFLite's flush: ``x * real`` rounds to 0
    for every int32 ``x`` (dead channels of real models have such scales).
    """
    if not (real >= 0.0) or real != real or real == float("inf"):
        raise ValueError(f"requantisation multiplier {real!r} must be non-negative and finite")
    if real >= 0.5:
        return quantize_multiplier(real)
    return int(round(real * (1 << 31))), 0
