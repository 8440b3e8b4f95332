"""quantize_multiplier against an independent exact computation, its edge cases, QParams and activation ranges."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from tvm_npu.quant import (QParams, activation_range, conv2d_quant, multiply_by_quantized_multiplier,
                           quantize_multiplier, quantize_multiplier_greater_than_one,
                           quantize_multiplier_smaller_than_one, same_padding)


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


# ---- QParams / activation ranges / padding ------------------------------------------------------


def test_qparams_rounds_scales_to_float32_and_validates():
    q = QParams.per_tensor(0.1, -3)
    assert q.s == np.float32(0.1) and q.zp == -3 and q.is_per_tensor and (q.qmin, q.qmax) == (-128, 127)
    pc = QParams.per_channel([0.1, 0.2, 0.3], 0, axis=3)
    assert pc.scale.dtype == np.float32 and list(pc.zero_point) == [0, 0, 0] and pc.axis == 3
    assert np.array_equal(QParams.per_tensor(0.5).channel_scales(4), np.full(4, 0.5, np.float32))
    assert q.equals(QParams.per_tensor(np.float32(0.1), -3)) and not q.equals(QParams.per_tensor(0.1, -2))
    for bad in (lambda: QParams.per_tensor(0.0), lambda: QParams.per_tensor(-1.0), lambda: QParams.per_tensor(0.1, 200),
                lambda: QParams(np.array([0.1, 0.2]), np.array([0, 0])), lambda: QParams.per_tensor(0.1, 0, "uint8")):
        with pytest.raises(ValueError):
            bad()
    assert QParams.per_tensor(0.01, 0, "int16").qmax == 32767
    np.testing.assert_array_equal(q.quantize([0.0, 0.05, -0.05, 100.0]), [-3, -2, -4, 127])  # half away from zero


@pytest.mark.parametrize("act,scale,zp,want", [
    ("NONE", 0.1, 5, (-128, 127)),
    ("RELU", 0.1, 5, (5, 127)),
    ("RELU", 0.1, -128, (-128, 127)),
    ("RELU6", 6 / 255, -128, (-128, 127)),
    ("RELU6", 0.05, 10, (10, 127)),
    ("RELU6", 0.1, -100, (-100, -40)),
    ("RELU_N1_TO_1", 0.01, 0, (-100, 100)),
    ("RELU_N1_TO_1", 1 / 128, 0, (-128, 127)),
    (3, 0.1, -100, (-100, -40)),   # TFLite ActivationFunctionType RELU6
    ("RELU_0_TO_1", 0.01, -50, (-50, 50)),
])
def test_activation_range(act, scale, zp, want):
    assert activation_range(act, QParams.per_tensor(scale, zp)) == want


def test_activation_range_rejects_non_clamp_activations():
    with pytest.raises(ValueError, match="unsupported fused activation"):
        activation_range("TANH", QParams.per_tensor(0.1, 0))


@pytest.mark.parametrize("size,k,s,d,pad,want", [
    (8, 3, 1, 1, "SAME", (8, 1, 1)), (8, 3, 2, 1, "SAME", (4, 0, 1)), (7, 3, 2, 1, "SAME", (4, 1, 1)),
    (8, 2, 2, 1, "SAME", (4, 0, 0)), (8, 3, 1, 2, "SAME", (8, 2, 2)), (8, 3, 1, 1, "VALID", (6, 0, 0)),
    (9, 3, 2, 2, "VALID", (3, 0, 0)),
])
def test_padding(size, k, s, d, pad, want):
    assert same_padding(size, k, s, d, pad) == want


def test_conv_per_tensor_weights_broadcast_and_param_table():
    xq, oq = QParams.per_tensor(0.02, -5), QParams.per_tensor(0.1, 3)
    cq = conv2d_quant(xq, QParams.per_tensor(0.004), oq, "RELU", bias=np.arange(6), channels=6)
    assert cq.uniform and not cq.per_channel and cq.channels == 6
    assert cq.a_offset == 5 and cq.pad_value == -5 and (cq.act_min, cq.act_max) == (3, 127)
    f = cq.vrequant_fields()
    f32 = [float(np.float32(v)) for v in (0.02, 0.004, 0.1)]  # TFLite computes from the float32 scales
    assert f["per_channel"] == 0 and (f["mult"], f["shift"]) == quantize_multiplier(f32[0] * f32[1] / f32[2])
    pc = conv2d_quant(xq, QParams.per_channel([0.004, 0.008], 0, 0), oq)
    table = pc.param_table()
    assert table.dtype == np.int32 and table.shape == (2, 2)
    assert table[1, 0] == table[0, 0] and table[1, 1] == table[0, 1] + 1  # twice the scale: shift + 1
    assert pc.vrequant_fields(params_addr=64, force_table=True)["params_addr"] == 64
    with pytest.raises(ValueError, match="symmetric"):
        conv2d_quant(xq, QParams.per_channel([0.1, 0.1], [0, 1], 0), oq)
