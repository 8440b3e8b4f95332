"""quantize_multiplier against an independent exact computation, its edge cases and MBQM (tvm_npu.quant.multiplier)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from tvm_npu.quant import (multiply_by_quantized_multiplier, quantize_multiplier, quantize_multiplier_greater_than_one,
                           quantize_multiplier_smaller_than_one)


def _exact(real: float):
    """QuantizeMultiplier with rational arithmetic: the significand in [1/2, 1) found by exact powers of two,
    rounded half away from zero at 2^-31."""
    f = Fraction(real)
    shift = 0
    while f >= 1:
        f /= 2
        shift += 1
    while f < Fraction(1, 2):
        f *= 2
        shift -= 1
    scaled = f * 2**31
    m = math.floor(scaled + Fraction(1, 2))
    if m == 2**31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m, shift


@settings(max_examples=300)
@given(st.floats(min_value=2.0**-40, max_value=2.0**30, allow_nan=False, allow_infinity=False))
def test_matches_exact_rational_computation(real):
    assert quantize_multiplier(real) == _exact(real)


@settings(max_examples=300)
@given(st.floats(min_value=2.0**-31, max_value=2.0**30))
def test_reconstructs_the_real_value(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    # |m * 2^(shift-31) - real| <= half an ulp of the 31-bit significand
    assert abs(Fraction(m) * Fraction(2) ** (shift - 31) - Fraction(real)) <= Fraction(2) ** (shift - 32)
    tie = (Fraction(real) * Fraction(2) ** (31 - shift)).denominator == 2
    if not tie:  # tests/reference.py rounds with Python's round(), half to even, at exact ties
        assert (m, shift) == ref.quantize_multiplier(real)


def test_ties_round_half_away_from_zero():
    """TfLiteRound is std::round: q * 2^31 = 2^30 + 1/2 rounds up (Python's round() would give 2^30)."""
    assert quantize_multiplier(1 + 2.0**-31) == (2**30 + 1, 1)
    assert quantize_multiplier(0.5 + 2.0**-32) == (2**30 + 1, 0)


@pytest.mark.parametrize("real,want", [
    (0.0, (0, 0)),
    (0.5, (2**30, 0)),
    (1.0, (2**30, 1)),
    (0.75, (3 * 2**29, 0)),
    (2.0**-31, (2**30, -30)),
    (2.0**-32, (2**30, -31)),
    (2.0**-33, (0, 0)),             # shift -32 < -31: flushed to zero, as TFLite does
    (1 - 2.0**-33, (2**30, 1)),     # rounds up to 2^31: the carry into the exponent
    (1 - 2.0**-32, (2**30, 1)),     # q * 2^31 = 2^31 - 1/2 rounds half away from zero to 2^31
    (1 - 2.0**-31, (2**31 - 1, 0)),
    (1 - 2.0**-30, (2**31 - 2, 0)),
    (2.0**30, (2**30, 31)),
])
def test_edge_cases(real, want):
    assert quantize_multiplier(real) == want


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, 2.0**31, 1e300])
def test_unrepresentable_values_raise_naming_the_value(bad):
    with pytest.raises(ValueError, match="multiplier"):
        quantize_multiplier(bad)
    with pytest.raises(ValueError, match=repr(float(bad)).replace("(", r"\(").replace("+", r"\+")):
        quantize_multiplier(bad)


def test_smaller_and_greater_than_one_variants():
    assert quantize_multiplier_smaller_than_one(0.3) == quantize_multiplier(0.3)
    assert quantize_multiplier_smaller_than_one(0.0) == (0, 0)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError):
            quantize_multiplier_smaller_than_one(bad)
    assert quantize_multiplier_greater_than_one(3.5) == (7 * 2**28, 2)
    with pytest.raises(ValueError):
        quantize_multiplier_greater_than_one(1.0)


@settings(max_examples=200)
@given(real=st.floats(1e-6, 0.999), x=st.integers(-(2**24), 2**24))
def test_mbqm_is_close_to_real_arithmetic(real, x):
    m, s = quantize_multiplier(real)
    y = int(multiply_by_quantized_multiplier(x, m, s))
    assert abs(y - x * real) <= 1.0 + abs(x * real) * 2**-30
