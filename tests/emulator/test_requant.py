"""vrequant: TFLite MultiplyByQuantizedMultiplier + zero point + clamp, per tensor and per channel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from helpers import Kernel, rand_int, rng
from tvm_npu.isa import Space

I32_MIN, I32_MAX = ref.INT32_MIN, ref.INT32_MAX


def _requant(emu, acc, out_dtype=np.int8, mult=0, shift=0, o_offset=0, act_min=-128, act_max=127, table=None):
    """Runs vrequant on acc ([1,1,rows,C] or 4-D int32); table is an int32 [C, 2] (mult, shift) array."""
    acc = np.asarray(acc, np.int32)
    if acc.ndim == 1:
        acc = acc.reshape(1, 1, -1, 1) if table is None else acc.reshape(1, 1, 1, -1)
    k = Kernel()
    ta = k.load(acc, Space.ACC)
    params_addr = 0
    if table is not None:
        params_addr = k.load(np.asarray(table, np.int32).reshape(1, 1, 1, -1), Space.ACC).addr
    to = k.alloc(Space.ACT, out_dtype, acc.shape)
    k.op("vrequant", a=ta, o=to, per_channel=int(table is not None), mult=mult, shift=shift,
         params_addr=params_addr, o_offset=o_offset, act_min=act_min, act_max=act_max)
    k.store(to)
    (out,), res = k.run(emu)
    return out, acc


def test_per_tensor_realistic(npu_emulator):
    m, s = ref.quantize_multiplier(0.0037)
    r = rng(61)
    acc = rand_int(r, np.int32, (1, 4, 4, 32), -60000, 60000)
    out, acc = _requant(npu_emulator, acc, mult=m, shift=s, o_offset=-7)
    np.testing.assert_array_equal(out, ref.requant(acc, m, s, -7, -128, 127))
    # and the reference is what real arithmetic says, to within one step
    assert np.abs(out - np.clip(np.round(acc * 0.0037) - 7, -128, 127)).max() <= 1


@pytest.mark.parametrize("shift", [-1, -2, -3, -7, -16, -31])
def test_rounding_ties(npu_emulator, shift):
    """mult = 2^30 halves: every odd multiple of 2^(-shift) lands exactly on .5 after the shift."""
    acc = np.arange(-2000, 2000, dtype=np.int64) * (1 << max(0, -shift - 4))
    acc = np.clip(acc, I32_MIN, I32_MAX)
    out, acc = _requant(npu_emulator, acc, np.int16, mult=2**30, shift=shift, act_min=-32768, act_max=32767)
    want = ref.requant(acc, 2**30, shift, 0, -32768, 32767, np.int16)
    np.testing.assert_array_equal(out, want)


def test_ties_round_away_from_zero_in_the_divide(npu_emulator):
    # MBQM(x, 2^30, -1) = RDBPOT(SRDHM(x, 2^30), 1); SRDHM(+-6) = +-3, then +-1.5 -> +-2
    acc = np.array([6, -6, 2, -2, 10, -10, 14, -14], np.int32)
    out, _ = _requant(npu_emulator, acc, mult=2**30, shift=-1)
    np.testing.assert_array_equal(out.reshape(-1), [2, -2, 1, -1, 3, -3, 4, -4])
    # SRDHM alone breaks a tie toward +inf: SRDHM(-3, 2^30) = -1, SRDHM(3, 2^30) = 2
    out, _ = _requant(npu_emulator, np.array([3, -3, 1, -1], np.int32), mult=2**30, shift=0)
    np.testing.assert_array_equal(out.reshape(-1), [2, -1, 1, 0])


@pytest.mark.parametrize("mult,shift", [(2**30, 1), (2**30, 5), (I32_MAX, 0), (1518500250, 3),
                                         (2**31 - 1, -31), (-(2**30), -2), (1, 0), (0, 4)])
def test_positive_and_negative_shifts(npu_emulator, mult, shift):
    r = rng(62)
    bound = (2**31 - 1) >> max(shift, 0)
    acc = rand_int(r, np.int32, (1, 2, 8, 16), -bound, bound)
    acc[0, 0, 0, :4] = [0, 1, -1, bound]
    out, acc = _requant(npu_emulator, acc, np.int16, mult=mult, shift=shift, o_offset=11, act_min=-32768,
                        act_max=32767)
    np.testing.assert_array_equal(out, ref.requant(acc, mult, shift, 11, -32768, 32767, np.int16))


def test_saturation_at_both_ends(npu_emulator):
    acc = np.array([I32_MIN, I32_MAX, -10**9, 10**9, -200, 200, -129, 128, 0], np.int32)
    out, _ = _requant(npu_emulator, acc, mult=2**30, shift=1)  # identity multiplier
    np.testing.assert_array_equal(out.reshape(-1), [-128, 127, -128, 127, -128, 127, -128, 127, 0])
    out, _ = _requant(npu_emulator, acc, np.int16, mult=2**30, shift=1, act_min=-32768, act_max=32767)
    np.testing.assert_array_equal(out.reshape(-1), [-32768, 32767, -32768, 32767, -200, 200, -129, 128, 0])


def test_srdhm_int32_min_squared_saturates(npu_emulator):
    """x = m = INT32_MIN: the doubling high multiply gives INT32_MAX, not a wrapped INT32_MIN."""
    acc = np.array([I32_MIN, I32_MIN + 1, I32_MAX], np.int32)
    out, _ = _requant(npu_emulator, acc, np.int16, mult=I32_MIN, shift=-20, act_min=-32768, act_max=32767)
    want = ref.requant(acc, I32_MIN, -20, 0, -32768, 32767, np.int16)
    assert want[0] == 2048  # INT32_MAX / 2^20 rounded; a wrap would give -2048
    np.testing.assert_array_equal(out.reshape(-1), want)
    out, _ = _requant(npu_emulator, acc, mult=I32_MIN, shift=0)
    np.testing.assert_array_equal(out.reshape(-1), [127, 127, -128])


@pytest.mark.parametrize("zp", [-128, -5, 0, 77, 127])
def test_output_zero_points_and_relu6_clamp(npu_emulator, zp):
    scale_out = 6.0 / 255
    lo, hi = max(-128, zp), min(127, zp + int(round(6.0 / scale_out)))  # relu6 in the quantised domain
    m, s = ref.quantize_multiplier(0.02 / scale_out)
    r = rng(63)
    acc = rand_int(r, np.int32, (1, 3, 5, 16), -3000, 3000)
    out, acc = _requant(npu_emulator, acc, mult=m, shift=s, o_offset=zp, act_min=lo, act_max=hi)
    want = ref.requant(acc, m, s, zp, lo, hi)
    np.testing.assert_array_equal(out, want)
    assert out.min() == lo or zp <= -128
    assert out.max() <= hi


def test_per_channel(npu_emulator):
    c = 24
    r = rng(64)
    scales = r.uniform(1e-4, 0.05, c)
    scales[:3] = [2.0, 1.0, 0.5]  # positive shifts too
    table = np.array([ref.quantize_multiplier(s) for s in scales], np.int64)
    acc = rand_int(r, np.int32, (2, 3, 4, c), -40000, 40000)
    out, acc = _requant(npu_emulator, acc, mult=999, shift=9, o_offset=3, table=table)  # mult/shift unused
    want = ref.requant(acc, table[:, 0], table[:, 1], 3, -128, 127)
    np.testing.assert_array_equal(out, want)


def test_per_channel_edge_pairs(npu_emulator):
    table = np.array([[I32_MIN, 0], [2**30, -31], [2**30, 31], [I32_MAX, -1], [0, 0], [-(2**30), 1],
                      [2**30, -1], [2**30, 0]], np.int64)
    acc = np.array([[I32_MIN, 2**30, 0, -7, 12345, 100, -3, -3],
                    [I32_MIN, I32_MIN, -1, 7, -1, -100, 3, 3]], np.int32).reshape(1, 1, 2, 8)
    out, _ = _requant(npu_emulator, acc, np.int16, table=table, act_min=-32768, act_max=32767)
    np.testing.assert_array_equal(out, ref.requant(acc, table[:, 0], table[:, 1], 0, -32768, 32767, np.int16))


@settings(max_examples=30)
@given(mult=st.integers(I32_MIN, I32_MAX), shift=st.integers(-31, 31), zp=st.integers(-200, 200),
       lo=st.integers(-128, 127), width=st.integers(0, 255), seed=st.integers(0, 2**32 - 1))
def test_random_parameters(npu_emulator, mult, shift, zp, lo, width, seed):
    hi = min(127, lo + width)
    r = rng(seed)
    bound = (2**31 - 1) >> max(shift, 0)
    acc = rand_int(r, np.int32, (1, 1, 4, 16), -bound, bound)
    out, acc = _requant(npu_emulator, acc, mult=mult, shift=shift, o_offset=zp, act_min=lo, act_max=hi)
    np.testing.assert_array_equal(out, ref.requant(acc, mult, shift, zp, lo, hi))


def test_requant_fp32_to_fp16(npu_emulator):
    vals = np.array([1.0, 1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65520.0, 65519.996, -65520.0, 2**-25, 3 * 2**-25,
                     2**-24, 1e-10, -0.0, np.inf, -np.inf, np.nan, 0.1, 3.14159, -2.5e-6], np.float32)
    k = Kernel()
    ta = k.load(vals.reshape(1, 1, 1, -1), Space.ACC)
    to = k.alloc(Space.ACT, np.float16, ta.shape)
    k.op("vrequant", a=ta, o=to, mult=5, shift=3, o_offset=9)  # integer fields unused for floats
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    with np.errstate(over="ignore"):
        assert ref.same_float(out.reshape(-1), vals.astype(np.float16))
