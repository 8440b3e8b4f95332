"""vpool (max / average, TFLite padding semantics and rounding) and vreduce (sum / max per axis)."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import Kernel, rand_f16, rand_int, rng
from tvm_npu.isa import PoolMode, ReduceMode, Space


def _pool(emu, x, mode, kh, kw, stride=(1, 1), pads=(0, 0), out_hw=None, act=None):
    n, h, w, c = x.shape
    if out_hw is None:  # TFLite SAME when padded, VALID otherwise
        if pads == (0, 0):
            out_hw = ((h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1)
        else:
            out_hw = (-(-h // stride[0]), -(-w // stride[1]))
    if act is None and x.dtype.kind == "i":
        info = np.iinfo(x.dtype)
        act = (int(info.min), int(info.max))
    k = Kernel()
    t = k.load(x)
    o = k.alloc(Space.ACT, x.dtype, (n, *out_hw, c))
    k.op("vpool", a=t, o=o, mode=int(PoolMode.MAX if mode == "max" else PoolMode.AVG), kh=kh, kw=kw,
         stride_h=stride[0], stride_w=stride[1], pad_top=pads[0], pad_left=pads[1],
         act_min=act[0] if act else 0, act_max=act[1] if act else 0)
    k.store(o)
    (out,), res = k.run(emu)
    want = ref.pool(x, mode, kh, kw, stride, pads[0], pads[1], out_hw, *(act or (None, None)))
    return out, want, res


POOL_CASES = [  # (shape, kh, kw, stride, pads)
    ((1, 8, 8, 16), 2, 2, (2, 2), (0, 0)),
    ((1, 7, 7, 16), 3, 3, (2, 2), (1, 1)),
    ((2, 5, 6, 20), 3, 3, (1, 1), (1, 1)),
    ((1, 6, 9, 8), 3, 2, (1, 3), (2, 0)),
    ((1, 7, 7, 32), 7, 7, (1, 1), (0, 0)),  # global pooling
    ((1, 4, 4, 16), 5, 5, (1, 1), (2, 2)),  # windows larger than the input
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_pool_int(npu_emulator, case, mode, dtype):
    shape, kh, kw, stride, pads = case
    x = rand_int(rng(sum(shape) + kh), dtype, shape)
    out, want, res = _pool(npu_emulator, x, mode, kh, kw, stride, pads)
    np.testing.assert_array_equal(out, want)


def test_avg_pool_rounds_half_away_from_zero(npu_emulator):
    """Windows of 2 with odd sums: +-x.5 goes away from zero (TFLite), not to even."""
    x = np.array([1, 2, -1, -2, 3, 4, -3, -4, 0, 1, 0, -1, 127, 127, -128, -128], np.int8)
    x = np.tile(x.reshape(1, 1, 16, 1), (1, 1, 1, 16))
    out, want, _ = _pool(npu_emulator, x, "avg", 1, 2, (1, 2))
    np.testing.assert_array_equal(out[0, 0, :, 0], [2, -2, 4, -4, 1, -1, 127, -128])
    np.testing.assert_array_equal(out, want)


def test_avg_pool_padding_never_counts(npu_emulator):
    x = np.full((1, 3, 3, 16), 90, np.int8)
    out, want, _ = _pool(npu_emulator, x, "avg", 3, 3, (1, 1), (1, 1))
    assert (out == 90).all()  # a zero-padded count would give 40 (corners) and 60 (edges)
    np.testing.assert_array_equal(out, want)


def test_pool_clamps_to_the_activation_range(npu_emulator):
    x = rand_int(rng(81), np.int8, (1, 6, 6, 16))
    for mode in ("max", "avg"):
        out, want, _ = _pool(npu_emulator, x, mode, 2, 2, (2, 2), act=(-5, 40))
        np.testing.assert_array_equal(out, want)
        assert out.min() >= -5 and out.max() <= 40


@pytest.mark.parametrize("case", POOL_CASES[:4])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_fp16(npu_emulator, case, mode):
    shape, kh, kw, stride, pads = case
    x = rand_f16(rng(sum(shape) * 5 + kh), shape, 10.0)
    out, want, _ = _pool(npu_emulator, x, mode, kh, kw, stride, pads)
    assert ref.same_float(out, want)


def test_avg_pool_fp16_sums_in_fp32_row_major(npu_emulator):
    """1 + (2^-11) * 8 in a 3x3 window: fp32 keeps the small terms that fp16 accumulation would drop."""
    x = np.full((1, 3, 3, 16), 2**-11, np.float16)
    x[0, 0, 0] = 1.0
    out, want, _ = _pool(npu_emulator, x, "avg", 3, 3)
    assert want[0, 0, 0, 0] == np.float16(np.float32(1 + 8 * 2**-11) / np.float32(9))
    assert ref.same_float(out, want)


def test_pool_fp32(npu_emulator):
    x = rng(82).standard_normal((1, 5, 5, 8)).astype(np.float32)
    k = Kernel()
    t = k.load(x, Space.ACC)
    o = k.alloc(Space.ACC, np.float32, (1, 3, 3, 8))
    k.op("vpool", a=t, o=o, mode=int(PoolMode.AVG), kh=3, kw=3, stride_h=2, stride_w=2, pad_top=1, pad_left=1)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    assert ref.same_float(out, ref.pool(x, "avg", 3, 3, (2, 2), 1, 1, (3, 3)))


# ---- reductions -----------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_reduce_sum_int(npu_emulator, axis, dtype):
    x = rand_int(rng(83 + axis), dtype, (3, 4, 5, 20))
    k = Kernel()
    t = k.load(x)
    shape = list(x.shape)
    shape[axis] = 1
    o = k.alloc(Space.ACC, np.int32, shape)
    k.op("vreduce", a=t, o=o, mode=int(ReduceMode.SUM), axis=axis)
    k.store(o)
    (out,), res = k.run(npu_emulator)
    np.testing.assert_array_equal(out, ref.reduce(x, "sum", axis))


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float16, np.float32])
def test_reduce_max(npu_emulator, axis, dtype):
    r = rng(84 + axis)
    x = rand_int(r, dtype, (2, 3, 4, 17)) if np.dtype(dtype).kind == "i" else (
        r.standard_normal((2, 3, 4, 17)) * 50).astype(dtype)
    space = Space.ACC if np.dtype(dtype).itemsize == 4 else Space.ACT
    k = Kernel()
    t = k.load(x, space)
    shape = list(x.shape)
    shape[axis] = 1
    o = k.alloc(space, dtype, shape)
    k.op("vreduce", a=t, o=o, mode=int(ReduceMode.MAX), axis=axis)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    assert out.tobytes() == ref.reduce(x, "max", axis).tobytes()


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_reduce_sum_float_in_index_order(npu_emulator, axis, dtype):
    r = rng(85 + axis)
    x = (r.standard_normal((1, 6, 7, 40)) * np.exp(r.uniform(-8, 8, (1, 6, 7, 40)))).astype(dtype)
    space = Space.ACC if dtype == np.float32 else Space.ACT
    k = Kernel()
    t = k.load(x, space)
    shape = list(x.shape)
    shape[axis] = 1
    o = k.alloc(Space.ACC, np.float32, shape)
    k.op("vreduce", a=t, o=o, mode=int(ReduceMode.SUM), axis=axis)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    want = ref.reduce(x, "sum", axis)
    assert ref.same_float(out, want)
    if axis == 3:  # the order matters for these values: a pairwise or float64 sum would differ
        assert not np.array_equal(want, x.astype(np.float64).sum(axis=axis, keepdims=True).astype(np.float32))


def test_reduce_sum_large(npu_emulator):
    """Sums beyond the int16 range land in int32 exactly."""
    x = np.full((1, 64, 64, 16), 32767, np.int16)
    k = Kernel("npu-pro")
    t = k.load(x)
    o = k.alloc(Space.ACC, np.int32, (1, 64, 1, 16))
    k.op("vreduce", a=t, o=o, mode=int(ReduceMode.SUM), axis=2)
    k.store(o)
    (out,), _ = k.run(npu_emulator)
    assert (out == 64 * 32767).all()
