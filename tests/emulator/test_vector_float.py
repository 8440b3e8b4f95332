"""Float vector unit: fp16/fp32 elementwise ops, clamp, transcendental functions, conversions."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import Kernel, rand_int, rng
from tvm_npu.isa import Func, Space

ALL_F16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)

F32_TRICKY = np.array([
    1.0, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, 1 - 2**-12, 2048 + 1, 2048 + 3, 2048 + 1 - 2**-10,
    65504.0, 65519.99, 65520.0, 65536.0, 1e30, -65520.0, -65519.99,
    2**-14, 2**-14 - 2**-25, 2**-24, 2**-25, 2**-25 + 2**-40, 3 * 2**-25, 5 * 2**-25, 2**-26, 1e-30, 1e-45,
    -2**-25, -3 * 2**-25, 0.0, -0.0, np.inf, -np.inf, np.nan, 0.1, -0.3, 3.14159265, 1 / 3,
], np.float32)


def _unary(emu, op, x, out_dtype=None, space=Space.ACT, out_space=None, cfg="npu-edge", **params):
    k = Kernel(cfg)
    t = k.load(x, space)
    o = k.alloc(out_space if out_space is not None else space, out_dtype or x.dtype, x.shape)
    k.op(op, a=t, o=o, **params)
    k.store(o)
    (out,), res = k.run(emu)
    return out, res


def _as4d(v):
    v = np.asarray(v)
    if v.size % 16 == 0:
        return v.reshape(1, 1, -1, 16)
    return v.reshape(1, 1, 1, -1)


# ---- elementwise ----------------------------------------------------------------------------

SPECIAL_F16 = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, -65504, 6e-8, -6e-8, 1.0, 2**-14, 60000, 1 + 2**-10,
                        2**-11, 2048, 1, -2048, 0.5], np.float16)


@pytest.mark.parametrize("op", ["vadd", "vsub", "vmul", "vmax", "vmin"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_float_binary(npu_emulator, op, dtype):
    r = rng(71)
    x = (r.standard_normal((1, 3, 4, 18)) * 100).astype(dtype)
    y = (r.standard_normal((1, 3, 1, 18)) * 100).astype(dtype)
    # every pair of specials somewhere in the tensors
    sx, sy = np.meshgrid(SPECIAL_F16.astype(dtype), SPECIAL_F16.astype(dtype))
    x = np.concatenate([x.reshape(-1), sx.reshape(-1)]).reshape(1, 1, -1, 18)
    y = np.concatenate([np.broadcast_to(y, (1, 3, 4, 18)).reshape(-1), sy.reshape(-1)]).reshape(1, 1, -1, 18)
    space = Space.ACC if dtype == np.float32 else Space.ACT
    k = Kernel()
    ta, tb = k.load(x, space), k.load(y, space)
    to = k.alloc(space, dtype, x.shape)
    k.op(op, a=ta, b=tb, o=to, act_min=5, act_max=-5)  # integer fields are unused for floats
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    pairs_equal = (x == y) & (np.signbit(x) != np.signbit(y))  # max(-0, +0): not specified, skip
    want = ref.float_binary(op, x, y, dtype)
    if op in ("vmax", "vmin"):
        out, want = out[~pairs_equal], want[~pairs_equal]
    assert ref.same_float(out, want)


def test_fp16_add_rounds_once_from_fp32(npu_emulator):
    """Sums whose fp32 value is an exact fp16 tie round to even; overflow goes to inf."""
    x = np.array([1, 1, 1 + 2**-10, 2048, 2048, 65504, 65504, -65504, 2**-24, 2**-24, 1], np.float16)
    y = np.array([2**-11, 3 * 2**-11, 2**-11, 1, 3, 8, 16, -16, 2**-24, -2**-24, -1], np.float16)
    x, y = x.reshape(1, 1, 1, -1), y.reshape(1, 1, 1, -1)
    k = Kernel()
    ta, tb = k.load(x), k.load(y)
    to = k.alloc(Space.ACT, np.float16, x.shape)
    k.op("vadd", a=ta, b=tb, o=to)
    k.store(to)
    (out,), _ = k.run(npu_emulator)
    want = np.array([1, 1 + 2**-9, 1 + 2**-9, 2048, 2052, 65504, np.inf, -np.inf, 2**-23, 0, 0], np.float16)
    assert ref.same_float(out.reshape(-1), want)
    assert ref.same_float(out, ref.float_binary("vadd", x, y, np.float16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_vclamp_float(npu_emulator, dtype):
    x = np.concatenate([SPECIAL_F16.astype(dtype), (rng(72).standard_normal(30) * 4).astype(dtype)])
    x = x.reshape(1, 1, 1, -1)
    out, _ = _unary(npu_emulator, "vclamp", x, min_f=-1.5, max_f=6.0, min_i=9, max_i=-9)
    want = np.where(np.isnan(x), x, np.clip(x, dtype(-1.5), dtype(6.0)))
    assert ref.same_float(out, want)
    assert np.isnan(out).sum() == 1


def test_vclamp_float_bounds_are_f32(npu_emulator):
    """f32 bounds that are not fp16 values clamp at the f32 value, then the result rounds to fp16."""
    x = np.array([0.0, 0.1, 0.2, 0.3], np.float16).reshape(1, 1, 1, 4)
    out, _ = _unary(npu_emulator, "vclamp", x, min_f=0.15, max_f=0.25)
    want = np.clip(x.astype(np.float32), np.float32(0.15), np.float32(0.25)).astype(np.float16)
    assert ref.same_float(out, want)


# ---- transcendental functions -----------------------------------------------------------------

def _assert_func(out, name, x, dtype):
    """Exact, except 1 ulp either way where the double value is within libm noise of a midpoint.

    One more allowance: for fp32 gelu / gelu_tanh with x < -3, ``1 + erf(.)`` (``1 + tanh(.)``)
    cancels in double to fewer bits than fp32 holds, so "computed in double, rounded once" fixes the
    result only to within the double error, about |x| * 2^-52 absolute.
    """
    allowed = ref.func_allowed(name, x, dtype)
    ob = ref.float_bits(out)
    good = np.isnan(out) & np.isnan(allowed[0])
    for a in allowed:
        good |= ob == ref.float_bits(a)
    loose = (ref.float_bits(allowed[1]) != ref.float_bits(allowed[0])) | \
        (ref.float_bits(allowed[2]) != ref.float_bits(allowed[0]))
    if dtype == np.float32 and name in ("gelu", "gelu_tanh"):
        d = ref.func_double(name, x)
        xd = np.asarray(x, np.float64)
        tail = xd < -3
        err = np.abs(out.astype(np.float64) - d)
        good |= tail & (err <= np.abs(xd) * 1e-15 + np.spacing(np.abs(d).astype(np.float32)).astype(np.float64))
        loose &= ~tail
    bad = np.flatnonzero(~good.reshape(-1))
    assert bad.size == 0, (f"{name}: {bad.size} mismatches, e.g. x={np.asarray(x).reshape(-1)[bad[:6]]} "
                           f"got={out.reshape(-1)[bad[:6]]} want={allowed[0].reshape(-1)[bad[:6]]}")
    # the 1-ulp allowance must stay rare, or the test would not be exact
    assert loose.sum() <= max(3, out.size // 1000)


@pytest.mark.parametrize("func", list(Func), ids=lambda f: f.name.lower())
def test_vfunc_fp16_every_input(npu_emulator, func):
    """All 65536 fp16 bit patterns, against float64 math rounded once to fp16."""
    name = func.name.lower()
    x = ALL_F16.reshape(1, 64, 64, 16)
    if name in ("gelu", "gelu_tanh"):  # gelu(-inf) = -inf * 0: leave the infinities out
        x = np.where(np.isinf(x), np.float16(0), x)
    out, _ = _unary(npu_emulator, "vfunc", x, cfg="npu-pro", func=int(func))
    _assert_func(out, name, x, np.float16)


@pytest.mark.parametrize("func", list(Func), ids=lambda f: f.name.lower())
def test_vfunc_fp32(npu_emulator, func):
    name = func.name.lower()
    r = rng(73 + int(func))
    x = np.concatenate([(r.standard_normal(2000) * 4), r.uniform(-100, 100, 1000), np.exp(r.uniform(-80, 80, 1000)),
                        [0.0, -0.0, 1.0, -1.0, 88.72, 88.73, -103.9, 1e-40, np.nan]]).astype(np.float32)
    x = x[: x.size // 16 * 16].reshape(1, 1, -1, 16)
    out, _ = _unary(npu_emulator, "vfunc", x, space=Space.ACC, func=int(func))
    _assert_func(out, name, x, np.float32)


def test_vfunc_fp16_to_fp32(npu_emulator):
    """fp16 in, fp32 out: the double result is rounded once to fp32."""
    x = ALL_F16[np.isfinite(ALL_F16)][::7][:4096].reshape(1, 1, -1, 16)
    out, _ = _unary(npu_emulator, "vfunc", x, out_dtype=np.float32, out_space=Space.ACC, func=int(Func.TANH))
    _assert_func(out, "tanh", x, np.float32)


def test_vfunc_named_values(npu_emulator):
    x = np.array([0, 1, -1, 2, 0.5, -0.5, 4, 11.09, 11.1, -17, 1e-7], np.float16).reshape(1, 1, 1, -1)
    with np.errstate(divide="ignore", over="ignore"):
        expect = {
            Func.EXP: np.exp(x.astype(np.float64)), Func.TANH: np.tanh(x.astype(np.float64)),
            Func.SIGMOID: 1 / (1 + np.exp(-x.astype(np.float64))),
            Func.RECIPROCAL: 1 / x.astype(np.float64),
        }
    for f, want in expect.items():
        with np.errstate(divide="ignore", over="ignore"):
            want16 = want.astype(np.float16)
        out, _ = _unary(npu_emulator, "vfunc", x, func=int(f))
        assert ref.same_float(out, want16), f.name
    out, _ = _unary(npu_emulator, "vfunc", np.array([4, 0.25, 1, 16], np.float16).reshape(1, 1, 1, 4),
                    func=int(Func.RSQRT))
    assert ref.same_float(out.reshape(-1), np.array([0.5, 2, 1, 0.25], np.float16))


# ---- conversions ----------------------------------------------------------------------------

def test_vcvt_f16_to_f32_every_input(npu_emulator):
    x = ALL_F16.reshape(1, 64, 64, 16)
    out, _ = _unary(npu_emulator, "vcvt", x, out_dtype=np.float32, out_space=Space.ACC, cfg="npu-pro")
    assert ref.same_float(out, x.astype(np.float32))
    finite = np.isfinite(x)
    np.testing.assert_array_equal(out[finite].view(np.uint32), x[finite].astype(np.float32).view(np.uint32))


def test_vcvt_f32_to_f16_tricky(npu_emulator):
    x = _as4d(F32_TRICKY)
    out, _ = _unary(npu_emulator, "vcvt", x, out_dtype=np.float16, space=Space.ACC, out_space=Space.ACT)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert ref.same_float(out, want)
    # the halfway cases by hand
    flat = out.reshape(-1)

    def got(v):
        return flat[np.flatnonzero(F32_TRICKY == np.float32(v))[0]]
    assert got(1 + 2**-11) == 1.0 and got(1 + 3 * 2**-11) == 1 + 2**-9 and got(1 + 2**-11 + 2**-20) == 1 + 2**-10
    assert got(2048 + 1) == 2048 and got(2048 + 3) == 2052 and got(2048 + 1 - 2**-10) == 2048
    assert got(65519.99) == 65504 and got(65520.0) == np.inf and got(-65520.0) == -np.inf
    assert got(2**-25) == 0 and got(3 * 2**-25) == 2**-23 and got(5 * 2**-25) == 2**-23
    assert got(2**-25 + 2**-40) == 2**-24 and got(2**-14 - 2**-25) == 2**-14
    assert got(-2**-25) == 0 and np.signbit(got(-2**-25))  # -0.0, sign kept


def test_vcvt_f32_to_f16_random_bits(npu_emulator):
    r = rng(74)
    bits = r.integers(0, 2**32, 8192, dtype=np.uint64).astype(np.uint32)
    # concentrate on the fp16 range: exponents 100..145 with random mantissas
    bits[:6000] = (bits[:6000] & 0x807FFFFF) | (r.integers(100, 146, 6000).astype(np.uint32) << 23)
    # and mantissas exactly at the rounding point
    bits[6000:7000] = (bits[6000:7000] & 0xFF800000) | (bits[6000:7000] & 0x007FE000) | 0x1000
    x = bits.view(np.float32)
    x = np.where((np.abs(x) > 0) & (np.abs(x) < 1e-38), np.float32(0), x).astype(np.float32)  # fp32 subnormals
    out, _ = _unary(npu_emulator, "vcvt", _as4d(x), out_dtype=np.float16, space=Space.ACC, out_space=Space.ACT)
    with np.errstate(over="ignore"):
        assert ref.same_float(out, _as4d(x).astype(np.float16))


def test_vcvt_f32_subnormal_inputs(npu_emulator):
    x = np.array([1e-40, -1e-40, 1.4e-45, 1e-39], np.float32)
    out, _ = _unary(npu_emulator, "vcvt", _as4d(x), out_dtype=np.float16, space=Space.ACC, out_space=Space.ACT)
    assert ref.same_float(out, _as4d(x).astype(np.float16))


@pytest.mark.parametrize("src", [np.int8, np.int16])
def test_vcvt_sign_extends(npu_emulator, src):
    info = np.iinfo(src)
    x = np.concatenate([np.array([info.min, info.max, -1, 0, 1], src), rand_int(rng(75), src, (27,))])
    out, _ = _unary(npu_emulator, "vcvt", _as4d(x), out_dtype=np.int32, out_space=Space.ACC)
    np.testing.assert_array_equal(out, _as4d(x).astype(np.int32))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float16, np.float32])
@pytest.mark.parametrize("spaces", [(Space.ACT, Space.ACC), (Space.ACC, Space.ACT), (Space.ACT, Space.ACT),
                                    (Space.ACC, Space.ACC)])
def test_vcvt_copies(npu_emulator, dtype, spaces):
    r = rng(76)
    x = (rand_int(r, dtype, (1, 2, 3, 20)) if np.dtype(dtype).kind == "i"
         else r.standard_normal((1, 2, 3, 20)).astype(dtype))
    out, _ = _unary(npu_emulator, "vcvt", x, space=spaces[0], out_space=spaces[1])
    assert out.tobytes() == x.tobytes()


def test_vreduce_and_vcvt_preserve_nan_payload_class(npu_emulator):
    """NaN stays NaN through f16 -> f32 -> f16."""
    x = np.array([np.nan, -np.nan, np.inf, 1.0], np.float16).reshape(1, 1, 1, 4)
    k = Kernel()
    t = k.load(x)
    mid = k.alloc(Space.ACC, np.float32, x.shape)
    back = k.alloc(Space.ACT, np.float16, x.shape)
    k.op("vcvt", a=t, o=mid)
    k.op("vcvt", a=mid, o=back)
    k.store(back)
    (out,), _ = k.run(npu_emulator)
    assert np.isnan(out.reshape(-1)[:2]).all() and out.reshape(-1)[2] == np.inf and out.reshape(-1)[3] == 1


# ---- numeric events: overflow, NaN and underflow counted per instruction ------------------------------

def test_fp16_events_are_counted_per_instruction(npu_emulator):
    """vmul of fp16 tiles: 300*300 overflows fp16 (90,000 > 65,504), 1e-4*1e-4 underflows to zero,
    inf*0 is NaN; the counts match numpy's float32 products rounded to fp16, and only the vmul (not
    the loads or the store) reports events."""
    x = np.array([300, 300, 1e-4, 1e-4, np.inf, 2.0, 1.0, -300], np.float16).reshape(1, 1, 1, 8)
    y = np.array([300, -300, 1e-4, 0.0, 0.0, 3.0, 1.0, 300], np.float16).reshape(1, 1, 1, 8)
    k = Kernel()
    ta, tb = k.load(x, Space.ACT), k.load(y, Space.ACT)
    to = k.alloc(Space.ACT, np.float16, x.shape)
    k.op("vmul", a=ta, b=tb, o=to)
    k.store(to)
    (out,), res = k.run(npu_emulator)
    exact = x.astype(np.float32) * y.astype(np.float32)
    want = exact.astype(np.float16)
    np.testing.assert_array_equal(out.view(np.uint16), want.view(np.uint16))  # counting changes no result
    overflow = int(np.sum(np.isinf(want) & np.isfinite(exact)))
    nan = int(np.sum(np.isnan(want)))
    underflow = int(np.sum((want == 0) & (exact != 0)))
    assert (overflow, nan, underflow) == (3, 1, 1)
    (event,) = res.counters.fp_events
    assert event[1:5] == (8, overflow, nan, underflow)
    finite = np.isfinite(exact)
    assert res.counters.fp_max_abs(event) == float(np.abs(exact[finite]).max())  # 300 * -300 = 90,000
    assert res.counters.fp16_overflows == 3 and res.counters.nans == 1 and res.counters.underflows == 1
    assert res.counters.to_dict()["fp_events"] == [list(event)]


def test_no_events_for_finite_results_and_sigmoid_tails_underflow(npu_emulator):
    x = (rng(5).standard_normal((1, 1, 4, 16)) * 3).astype(np.float16)  # sigmoid >= 1e-5: representable
    out, res = _unary(npu_emulator, "vfunc", x, func=int(Func.SIGMOID))
    assert res.counters.fp_events == () and np.all(np.isfinite(out))
    x = np.full((1, 1, 1, 16), -30.0, np.float16)  # sigmoid(-30) = 9e-14: below fp16's smallest subnormal
    out, res = _unary(npu_emulator, "vfunc", x, func=int(Func.SIGMOID))
    assert np.all(out == 0) and res.counters.underflows == 16 and res.counters.fp16_overflows == 0
