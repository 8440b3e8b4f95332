"""Integer vector unit: TFLite quantised add/sub/mul, max/min, int32 bias add, clamp and LUT."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from helpers import Kernel, rand_int, rng
from tvm_npu.isa import Space


def _binary(emu, op, x, y, out_shape=None, out_dtype=None, space=Space.ACT, **params):
    k = Kernel()
    ta, tb = k.load(x, space), k.load(y, space)
    shape = out_shape or np.broadcast_shapes(x.shape, y.shape)
    to = k.alloc(space, out_dtype or x.dtype, shape)
    k.op(op, a=ta, b=tb, o=to, **params)
    k.store(to)
    (out,), res = k.run(emu)
    return out, res


def _dequant(q, s, zp):
    return (q.astype(np.float64) - zp) * s


# ---- the reference itself against TFLite's known behaviour ---------------------------------

def test_reference_fixed_point_known_values():
    assert ref.srdhm(ref.INT32_MIN, ref.INT32_MIN) == ref.INT32_MAX
    assert ref.srdhm(2**30, 2**30) == 2**29
    assert ref.srdhm(3, 2**30) == 2 and ref.srdhm(-3, 2**30) == -1  # gemmlowp's nudge is asymmetric
    assert list(ref.rounding_divide_by_pot(np.array([5, -5, 6, -6, 7, -7]), 1)) == [3, -3, 3, -3, 4, -4]
    assert list(ref.rounding_divide_by_pot(np.array([2, -2, 3, -3]), 2)) == [1, -1, 1, -1]
    assert ref.mbqm(1000, 2**30, 1) == 1000 and ref.mbqm(1000, 2**30, -3) == 63  # 62.5 -> 63
    assert ref.quantize_multiplier(0.5) == (2**30, 0)
    assert ref.quantize_multiplier(1.0) == (2**30, 1)
    m, s = ref.quantize_multiplier(0.0123)
    assert abs(m * 2.0 ** (s - 31) - 0.0123) < 1e-9


def test_reference_add_is_close_to_real_arithmetic():
    s1, z1, s2, z2, so, zo = 0.05, -3, 0.11, 7, 0.13, 2
    p = ref.tflite_add_params(s1, z1, s2, z2, so, zo)
    x = np.arange(-128, 128, dtype=np.int8)[:, None]
    y = np.arange(-128, 128, 3, dtype=np.int8)[None, :]
    out = ref.quant_add(x, y, **p)
    real = _dequant(x, s1, z1) + _dequant(y, s2, z2)
    expect = np.clip(np.round(real / so) + zo, -128, 127)
    assert np.abs(out - expect).max() <= 1


# ---- quantised add / sub / mul --------------------------------------------------------------

ADD_CASES = [  # (s1, zp1, s2, zp2, so, zpo)
    (0.05, -3, 0.11, 7, 0.13, 2),
    (0.02, 0, 0.02, 0, 0.04, -128),
    (1.0, 127, 0.001, -128, 0.5, 10),
]


@pytest.mark.parametrize("case", ADD_CASES)
@pytest.mark.parametrize("sub", [False, True])
def test_quant_add_sub_int8_tflite(npu_emulator, case, sub):
    p = ref.tflite_add_params(*case)
    r = rng(41)
    x = rand_int(r, np.int8, (1, 4, 5, 24))
    y = rand_int(r, np.int8, (1, 4, 5, 24))
    x[0, 0, 0, :8] = [-128, 127, -128, 127, 0, 0, -1, 1]
    y[0, 0, 0, :8] = [-128, 127, 127, -128, 0, 1, 1, -1]
    out, _ = _binary(npu_emulator, "vsub" if sub else "vadd", x, y, **p)
    np.testing.assert_array_equal(out, ref.quant_add(x, y, sub=sub, **p))


@pytest.mark.parametrize("xs,ys", [
    ((1, 3, 4, 16), (1, 1, 1, 16)),  # per-channel vector
    ((1, 3, 4, 16), (1, 3, 4, 1)),   # per-pixel scalar
    ((2, 1, 4, 1), (1, 3, 1, 20)),   # both broadcast
    ((1, 1, 1, 1), (2, 2, 2, 8)),
])
def test_quant_add_broadcast(npu_emulator, xs, ys):
    p = ref.tflite_add_params(0.03, 5, 0.07, -11, 0.09, -4, act_min=-100, act_max=90)
    r = rng(42)
    x, y = rand_int(r, np.int8, xs), rand_int(r, np.int8, ys)
    out, _ = _binary(npu_emulator, "vadd", x, y, **p)
    want = ref.quant_add(x, y, **p)
    assert out.shape == want.shape
    np.testing.assert_array_equal(out, want)
    assert out.min() >= -100 and out.max() <= 90


def test_quant_add_int16(npu_emulator):
    """TFLite's int16 add: symmetric (zero points 0), left_shift 15."""
    p = ref.tflite_add_params(0.0005, 0, 0.0007, 0, 0.001, 0, left_shift=15, act_min=-32768, act_max=32767)
    r = rng(43)
    x, y = rand_int(r, np.int16, (1, 2, 3, 40)), rand_int(r, np.int16, (1, 2, 3, 40))
    x[0, 0, 0, :4] = [-32768, 32767, -32768, 32767]
    y[0, 0, 0, :4] = [-32768, 32767, 32767, -32768]
    for op in ("vadd", "vsub"):
        out, _ = _binary(npu_emulator, op, x, y, **p)
        np.testing.assert_array_equal(out, ref.quant_add(x, y, sub=op == "vsub", out_dtype=np.int16, **p))


@pytest.mark.parametrize("case", [(0.05, -3, 0.11, 7, 0.13, 2), (0.5, 0, 0.5, 0, 0.01, 0), (0.1, 10, 0.01, -20, 2.0, 100)])
def test_quant_mul_int8_tflite(npu_emulator, case):
    p = ref.tflite_mul_params(*case)
    r = rng(44)
    x = rand_int(r, np.int8, (1, 3, 3, 32))
    y = rand_int(r, np.int8, (1, 1, 3, 32))
    out, _ = _binary(npu_emulator, "vmul", x, y, **p)
    np.testing.assert_array_equal(out, ref.quant_mul(x, y, **p))


def test_quant_mul_int16(npu_emulator):
    p = ref.tflite_mul_params(0.001, 0, 0.002, 0, 0.5, 0, act_min=-32768, act_max=32767)
    assert p["o_shift"] <= 0
    r = rng(45)
    x, y = rand_int(r, np.int16, (1, 2, 2, 24)), rand_int(r, np.int16, (1, 2, 2, 24))
    out, _ = _binary(npu_emulator, "vmul", x, y, **p)
    np.testing.assert_array_equal(out, ref.quant_mul(x, y, out_dtype=np.int16, **p))


@settings(max_examples=25)
@given(st.data())
def test_quant_binary_random_parameters(npu_emulator, data):
    """Arbitrary legal multipliers / shifts (including negative multipliers and o_shift > 0 for mul)."""
    op = data.draw(st.sampled_from(["vadd", "vsub", "vmul"]))
    mult = st.integers(-(2**31), 2**31 - 1)
    zp = st.integers(-128, 127)
    lo = data.draw(st.integers(-128, 127))
    hi = data.draw(st.integers(lo, 127))
    p = dict(a_offset=data.draw(zp), b_offset=data.draw(zp), o_offset=data.draw(st.integers(-300, 300)),
             o_mult=data.draw(mult), act_min=lo, act_max=hi)
    if op == "vmul":
        p["o_shift"] = data.draw(st.integers(-31, 14))
    else:
        p.update(a_mult=data.draw(mult), b_mult=data.draw(mult), a_shift=data.draw(st.integers(-31, 0)),
                 b_shift=data.draw(st.integers(-31, 0)), left_shift=data.draw(st.integers(0, 20)),
                 o_shift=data.draw(st.integers(-31, 0)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    r = rng(seed)
    x, y = rand_int(r, np.int8, (1, 2, 3, 16)), rand_int(r, np.int8, (1, 2, 1, 16))
    out, _ = _binary(npu_emulator, op, x, y, **p)
    if op == "vmul":
        want = ref.quant_mul(x, y, **p)
    else:
        want = ref.quant_add(x, y, sub=op == "vsub", **p)
    np.testing.assert_array_equal(out, want)


# ---- max / min ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,lo,hi", [(np.int8, -128, 127), (np.int8, -20, 30), (np.int16, -1000, 32767),
                                         (np.int32, -(2**31), 2**31 - 1), (np.int32, -5, 5)])
@pytest.mark.parametrize("op", ["vmax", "vmin"])
def test_max_min_int_with_clamp(npu_emulator, dtype, lo, hi, op):
    r = rng(46)
    x = rand_int(r, dtype, (1, 3, 4, 16))
    y = rand_int(r, dtype, (1, 3, 1, 16))
    space = Space.ACC if np.dtype(dtype) == np.int32 else Space.ACT
    # offsets and multipliers are ignored by max/min: set them to junk to prove it
    out, _ = _binary(npu_emulator, op, x, y, space=space, act_min=lo, act_max=hi, a_offset=99, b_offset=-99,
                     o_mult=12345, o_offset=7)
    raw = np.maximum(x, y) if op == "vmax" else np.minimum(x, y)
    np.testing.assert_array_equal(out, np.clip(raw, lo, hi).astype(dtype))


# ---- int32 -------------------------------------------------------------------------------------

def test_bias_add_int32_wraps(npu_emulator):
    r = rng(47)
    acc = rand_int(r, np.int32, (1, 4, 4, 24))
    acc[0, 0, 0, :4] = [2**31 - 1, -(2**31), 2**31 - 1, 0]
    bias = rand_int(r, np.int32, (1, 1, 1, 24))
    bias[0, 0, 0, :4] = [1, -1, 2**31 - 1, -(2**31)]
    out, _ = _binary(npu_emulator, "vadd", acc, bias, space=Space.ACC)
    np.testing.assert_array_equal(out, ref.wrap_i32(acc.astype(np.int64) + bias).astype(np.int32))
    assert out[0, 0, 0, 0] == -(2**31)


@pytest.mark.parametrize("op,fn", [("vsub", np.subtract), ("vmul", np.multiply)])
def test_int32_sub_mul_wrap(npu_emulator, op, fn):
    r = rng(48)
    x = rand_int(r, np.int32, (1, 2, 2, 16))
    y = rand_int(r, np.int32, (1, 2, 2, 16))
    out, _ = _binary(npu_emulator, op, x, y, space=Space.ACC)
    np.testing.assert_array_equal(out, ref.wrap_i32(fn(x.astype(np.int64), y.astype(np.int64))).astype(np.int32))


def test_int32_vector_ops_in_act(npu_emulator):
    """The vector unit reads and writes ACT as well as ACC."""
    x = np.arange(-16, 16, dtype=np.int32).reshape(1, 1, 2, 16)
    y = np.full((1, 1, 1, 16), 5, np.int32)
    out, _ = _binary(npu_emulator, "vadd", x, y, space=Space.ACT)
    np.testing.assert_array_equal(out, x + 5)


# ---- clamp and LUT --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,lo,hi", [(np.int8, -3, 6), (np.int8, -128, 127), (np.int8, 5, 5),
                                         (np.int16, -300, 20000), (np.int32, -(2**31), 0)])
def test_vclamp_int(npu_emulator, dtype, lo, hi):
    r = rng(49)
    x = rand_int(r, dtype, (2, 3, 3, 20))
    k = Kernel()
    space = Space.ACC if np.dtype(dtype) == np.int32 else Space.ACT
    t = k.load(x, space)
    o = k.alloc(space, dtype, x.shape)
    k.op("vclamp", a=t, o=o, min_i=lo, max_i=hi, min_f=-1.0, max_f=1.0)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, np.clip(x, lo, hi))


def test_vclamp_in_place(npu_emulator):
    r = rng(50)
    x = rand_int(r, np.int8, (1, 4, 4, 16))
    k = Kernel()
    t = k.load(x)
    k.op("vclamp", a=t, o=t, min_i=0, max_i=100)
    k.store(t)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, np.clip(x, 0, 100))


def test_vlut_every_entry(npu_emulator):
    r = rng(51)
    table = rand_int(r, np.int8, (256,))
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 4, 16)
    x = np.concatenate([x, rand_int(r, np.int8, (1, 4, 4, 16))], axis=1)
    k = Kernel()
    t = k.load(x)
    lut = k.load(table.reshape(1, 1, 1, 256))
    o = k.alloc(Space.ACT, np.int8, x.shape)
    k.op("vlut", a=t, o=o, lut_addr=lut.addr)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, ref.lut(x, table))
    np.testing.assert_array_equal(out[0, :4].reshape(-1), table)


def test_vlut_sigmoid_table(npu_emulator):
    """A LUT built the way TFLite builds an int8 LOGISTIC table."""
    s_in, zp_in, s_out, zp_out = 0.1, 3, 1 / 256, -128
    q = np.arange(-128, 128)
    table = np.clip(np.round(1 / (1 + np.exp(-(q - zp_in) * s_in)) / s_out) + zp_out, -128, 127).astype(np.int8)
    r = rng(52)
    x = rand_int(r, np.int8, (1, 2, 8, 24))
    k = Kernel()
    lut = k.load(table.reshape(1, 1, 1, 256))
    t = k.load(x)
    o = k.alloc(Space.ACT, np.int8, x.shape)
    k.op("vlut", a=t, o=o, lut_addr=lut.addr)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(out, table[x.astype(np.int64) + 128])
