"""ADD / SUB / MUL int8 (with broadcasting and fused activations), AVERAGE/MAX_POOL_2D and CONCATENATION:
LiteRT BUILTIN_REF vs the NPU emulator, byte for byte, parameters from tvm_npu.quant only."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qprog import npu_binary, npu_concat_channels, npu_lut, npu_pool
from tvm_npu.quant import QParams, add_quant, concat_quant, mul_quant, pool_quant, requantize_lut, sub_quant
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]
zps = st.integers(-128, 127)
scales = st.floats(0.003, 0.3)

SHAPE_PAIRS = [
    ((1, 4, 5, 8), (1, 4, 5, 8)),
    ((1, 4, 5, 8), (1, 1, 1, 8)),   # per-channel vector
    ((1, 4, 5, 8), (1, 4, 5, 1)),   # per-pixel scalar
    ((2, 1, 3, 1), (1, 4, 1, 6)),   # both broadcast
    ((1, 1, 1, 1), (1, 3, 2, 16)),
    ((6, 10), (10,)),               # rank 2 and 1
]


def _binary_case(op, seed, shapes, q1, q2, qo, act):
    b = ModelBuilder(seed)
    x = b.add_input("a", shapes[0], q1)
    y = b.add_input("b", shapes[1], q2)
    z = {"ADD": b.add, "SUB": b.sub, "MUL": b.mul}[op](x, y, qo, act)
    b.mark_output(z)
    xa, xb = rand_int8(b.rng, shapes[0]), rand_int8(b.rng, shapes[1])
    n = min(4, xa.size)
    xa.reshape(-1)[:n] = [-128, 127, -128, 127][:n]  # the extremes, against whatever b holds
    (want,) = run_reference(b.finish(), [xa, xb])
    return xa, xb, want


@settings(max_examples=40)
@given(op=st.sampled_from(["ADD", "SUB", "MUL"]), seed=st.integers(0, 2**31), shapes=st.sampled_from(SHAPE_PAIRS),
       s1=scales, z1=zps, s2=scales, z2=zps, so=st.floats(0.005, 0.5), zo=zps, act=st.sampled_from(ACTS),
       swap=st.booleans())
def test_binary_matches_tflite(npu_emulator, op, seed, shapes, s1, z1, s2, z2, so, zo, act, swap):
    if swap:
        shapes = shapes[::-1]
    q1, q2, qo = QParams.per_tensor(s1, z1), QParams.per_tensor(s2, z2), QParams.per_tensor(so, zo)
    if op == "MUL":
        qo = QParams.per_tensor(so * s1 * s2 * 20, zo)  # keep MUL outputs from saturating everywhere
    fields = {"ADD": add_quant, "SUB": sub_quant, "MUL": mul_quant}[op](q1, q2, qo, act)
    xa, xb, want = _binary_case(op, seed, shapes, q1, q2, qo, act)
    got = npu_binary(npu_emulator, {"ADD": "vadd", "SUB": "vsub", "MUL": "vmul"}[op], xa, xb, fields)
    assert got.shape == want.shape
    assert np.array_equal(got, want), np.abs(got.astype(int) - want).max()


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_binary_every_input_pair(npu_emulator, op):
    """All 256 x 256 input pairs at once, with unequal scales and zero points."""
    q1, q2 = QParams.per_tensor(0.0413, -7), QParams.per_tensor(0.1187, 33)
    qo = QParams.per_tensor(0.0871, 12) if op != "MUL" else QParams.per_tensor(0.0391, -3)
    xa = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 16, 16)
    xb = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 16, 16)
    b = ModelBuilder(0)
    x, y = b.add_input("a", xa.shape, q1), b.add_input("b", xb.shape, q2)
    b.mark_output({"ADD": b.add, "SUB": b.sub, "MUL": b.mul}[op](x, y, qo, "RELU"))
    (want,) = run_reference(b.finish(), [xa, xb])
    fields = {"ADD": add_quant, "SUB": sub_quant, "MUL": mul_quant}[op](q1, q2, qo, "RELU")
    got = npu_binary(npu_emulator, {"ADD": "vadd", "SUB": "vsub", "MUL": "vmul"}[op], xa, xb, fields)
    assert np.array_equal(got, want)


def test_binary_parameter_checks():
    q = QParams.per_tensor(0.1, 0)
    with pytest.raises(ValueError, match="output multiplier"):
        add_quant(q, q, QParams.per_tensor(1e-9, 0))
    with pytest.raises(ValueError, match="zero points 0"):
        add_quant(QParams.per_tensor(0.1, 3, "int16"), QParams.per_tensor(0.1, 0, "int16"),
                  QParams.per_tensor(0.1, 0, "int16"))
    with pytest.raises(ValueError, match="per tensor"):
        mul_quant(QParams.per_channel([0.1, 0.2], 0, 3), q, q)
    p = add_quant(QParams.per_tensor(0.05, 3), QParams.per_tensor(0.1, -4), QParams.per_tensor(0.2, 1))
    assert p["left_shift"] == 20 and p["b_mult"] == 2**30 and p["b_shift"] == 0  # the larger input: exactly 1/2
    assert p["a_offset"] == -3 and p["b_offset"] == 4 and p["o_offset"] == 1


# ---- pooling ---------------------------------------------------------------------------------------


@settings(max_examples=30)
@given(mode=st.sampled_from(["avg", "max"]), seed=st.integers(0, 2**31), c=st.integers(1, 20),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       padding=st.sampled_from(["SAME", "VALID"]), extra=st.integers(0, 5), act=st.sampled_from(ACTS),
       scale=scales, zp=zps)
def test_pool_matches_tflite(npu_emulator, mode, seed, c, kh, kw, sh, sw, padding, extra, act, scale, zp):
    q = QParams.per_tensor(scale, zp)
    b = ModelBuilder(seed)
    x = b.add_input("x", (1, kh + extra, kw + extra + 1, c), q)
    pool = b.average_pool2d if mode == "avg" else b.max_pool2d
    y = pool(x, (kh, kw), (sh, sw), padding, act)
    b.mark_output(y)
    xin = rand_int8(b.rng, b.shape(x))
    (want,) = run_reference(b.finish(), [xin])
    got = npu_pool(npu_emulator, xin, mode, (kh, kw), (sh, sw), padding, pool_quant(q, q, act, mode))
    assert np.array_equal(got, want)


def test_pool_requires_equal_params():
    with pytest.raises(ValueError, match="equal input and output"):
        pool_quant(QParams.per_tensor(0.1, 0), QParams.per_tensor(0.1, 1))
    with pytest.raises(ValueError, match="equal input and output"):
        pool_quant(QParams.per_tensor(0.1, 0), QParams.per_tensor(0.2, 0), mode="max")
    assert pool_quant(QParams.per_tensor(0.1, 5), QParams.per_tensor(0.1, 5), "RELU") == dict(act_min=5, act_max=127)


# ---- concatenation ----------------------------------------------------------------------------------


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), channels=st.lists(st.integers(1, 12), min_size=2, max_size=4), scale=scales,
       zp=zps)
def test_concatenation_matches_tflite(npu_emulator, seed, channels, scale, zp):
    q = QParams.per_tensor(scale, zp)
    b = ModelBuilder(seed)
    xs = [b.add_input(f"x{i}", (1, 3, 4, c), q) for i, c in enumerate(channels)]
    b.mark_output(b.concatenation(xs, axis=3))
    data = [rand_int8(b.rng, b.shape(t)) for t in xs]
    (want,) = run_reference(b.finish(), data)
    tables = concat_quant([q] * len(xs), q)
    assert tables == [None] * len(xs)  # TFLite int8 concatenation is a copy
    got = npu_concat_channels(npu_emulator, data, tables)
    assert np.array_equal(got, want)


def test_concatenation_with_requantised_input(npu_emulator):
    """Inputs with other parameters (rejected by TFLite's int8 CONCATENATION, found in other importers) are
    requantised with QUANTIZE semantics: equal to a TFLite QUANTIZE op in front of the concatenation."""
    qa, qb, qo = QParams.per_tensor(0.05, -10), QParams.per_tensor(0.11, 20), QParams.per_tensor(0.08, 3)
    b = ModelBuilder(4)
    xa, xb = b.add_input("a", (1, 2, 3, 5), qa), b.add_input("b", (1, 2, 3, 7), qb)
    ra, rb = b.quantize(xa, qo), b.quantize(xb, qo)
    b.mark_output(b.concatenation([ra, rb], axis=-1, out_q=qo))
    data = [np.arange(-128, 128)[:30].astype(np.int8).reshape(1, 2, 3, 5),
            np.arange(-128, 128)[::6][:42].astype(np.int8).reshape(1, 2, 3, 7)]
    (want,) = run_reference(b.finish(), data)
    tables = concat_quant([qa, qb], qo)
    assert all(t is not None for t in tables)
    got = npu_concat_channels(npu_emulator, data, tables)
    assert np.array_equal(got, want)


@settings(max_examples=15)
@given(s_in=scales, z_in=zps, s_out=scales, z_out=zps)
def test_quantize_int8_requantisation_lut(npu_emulator, s_in, z_in, s_out, z_out):
    """TFLite QUANTIZE int8 -> int8 (reference_ops::Requantize) as a vlut table, all 256 inputs."""
    qi, qo = QParams.per_tensor(s_in, z_in), QParams.per_tensor(s_out, z_out)
    b = ModelBuilder(0)
    x = b.add_input("x", (1, 1, 16, 16), qi)
    b.mark_output(b.quantize(x, qo))
    xin = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16)
    (want,) = run_reference(b.finish(), [xin])
    got = npu_lut(npu_emulator, xin, requantize_lut(qi, qo))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("seed", range(3))
def test_binary_int16_matches_tflite(npu_emulator, op, seed):
    """Symmetric int16 (zero points 0): ADD/SUB with left_shift 15 (the general, non power-of-two path)."""
    from helpers import Kernel
    from tvm_npu.isa import Space

    r = np.random.default_rng(seed)
    q1, q2 = (QParams.per_tensor(float(r.uniform(1e-4, 1e-3)), 0, "int16") for _ in range(2))
    qo = QParams.per_tensor(float(r.uniform(2e-4, 2e-3)) if op != "MUL" else float(q1.s * q2.s * 3000), 0, "int16")
    b = ModelBuilder(seed)
    x, y = b.add_input("a", (1, 3, 4, 8), q1), b.add_input("b", (1, 1, 4, 8), q2)
    b.mark_output({"ADD": b.add, "SUB": b.sub, "MUL": b.mul}[op](x, y, qo, "RELU"))
    xa = r.integers(-32768, 32767, (1, 3, 4, 8), endpoint=True).astype(np.int16)
    xb = r.integers(-32768, 32767, (1, 1, 4, 8), endpoint=True).astype(np.int16)
    (want,) = run_reference(b.finish(), [xa, xb])
    fields = {"ADD": add_quant, "SUB": sub_quant, "MUL": mul_quant}[op](q1, q2, qo, "RELU")
    assert fields["act_min"] == 0 and fields["act_max"] == 32767
    k = Kernel("npu-pro")
    ta, tb = k.load(xa), k.load(xb)
    to = k.alloc(Space.ACT, np.int16, xa.shape)
    k.op({"ADD": "vadd", "SUB": "vsub", "MUL": "vmul"}[op], a=ta, b=tb, o=to, **fields)
    k.store(to)
    (got,), _ = k.run(npu_emulator)
    assert np.array_equal(got, want)
