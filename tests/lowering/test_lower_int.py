"""Integer lowering of the vector operators (tvm_npu/lowering/integer.py, planned by tvm_npu/tiling) run on the emulator.

OpDescs are built by hand, lowered with a Lowerer, run on the emulator and compared byte for byte with an
independent reference: LiteRT's reference kernels (BUILTIN_REF) for ADD / SUB / MUL, AVERAGE_POOL_2D /
MAX_POOL_2D, LUT activations, QUANTIZE, CONCATENATION and MEAN (rounding "tflite"); a numpy formula for
MEAN with rounding "real". Shapes include broadcasting, constant operands, NCHW and NHWC pools with padding
and strides, and shapes large enough to force row, channel and reduction tiling on "npu-nano".
"""

from __future__ import annotations

import numpy as np
import pytest

import tvm_npu
from tvm_npu.ir import OpDesc, TensorDesc, Unsupported
from tvm_npu.lowering import Lowerer, plan_and_lower
from tvm_npu.lowering.memory import ConstPool, DramTensor
from tvm_npu.isa import DType, Region
from tvm_npu.quant import (QParams, add_quant, concat_quant, hard_swish_lut, logistic_lut, mul_quant, pool_quant,
                           quantize_multiplier, requantize_lut, same_padding, sub_quant, tanh_lut)
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

SENTINEL = 0xA5


def _desc(kind, shapes, out_shape, attrs=None, quant=None, consts=None):
    consts = consts or {}
    ins = [TensorDesc(tuple(s), "int8", consts.get(i)) for i, s in enumerate(shapes)]
    return OpDesc(f"npu.{kind}", kind, ins, TensorDesc(tuple(out_shape), "int8"), dict(attrs or {}), quant=quant)


def _run(emu, cfg, desc, arrays, double_buffer=True):
    """Lowers `desc` (arrays: the data of its non-constant inputs, in order) and runs it; returns the output
    and the lowerer. Checks that nothing outside the output is written."""
    low = Lowerer(tvm_npu.get_config(cfg), ConstPool(), double_buffer=double_buffer)
    io = bytearray()
    ins = []
    it = iter(arrays)
    for td in desc.inputs:
        if td.is_const:
            ins.append(low.consts.tensor(td.const, DType.INT8))
            continue
        a = np.ascontiguousarray(next(it), np.int8)
        assert a.shape == td.shape
        io += bytes(-len(io) % 16)
        ins.append(DramTensor(Region.IO, len(io), a.shape, DType.INT8))
        io += a.tobytes()
    io += bytes(-len(io) % 16)
    out = DramTensor(Region.IO, len(io), desc.output.shape, DType.INT8)
    io += bytes([SENTINEL]) * (out.nbytes + 32)
    plan_and_lower(low, desc, ins, out)
    low.program.emit("end")
    res = emu.Emulator(tvm_npu.get_config(cfg)).run(low.program.encode(), const=bytes(low.consts.data), io=bytes(io),
                                                    scratch_bytes=0)
    got = bytes(res.io)
    assert got[:out.offset] == bytes(io[:out.offset]), "an input was overwritten"
    assert got[out.offset + out.nbytes:] == bytes(io[out.offset + out.nbytes:]), "wrote past the output"
    y = np.frombuffer(got[out.offset:out.offset + out.nbytes], np.int8).reshape(desc.output.shape)
    return y, low


def _q(rng, lo=0.01, hi=0.2):
    return QParams.per_tensor(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), int(rng.integers(-100, 100)))


# ---- qbinary --------------------------------------------------------------------------------------

BINARY_CASES = [  # (a shape, b shape, b constant, config, activation)
    ((1, 4, 5, 8), (1, 4, 5, 8), False, "npu-nano", "NONE"),
    ((1, 4, 5, 8), (1, 1, 1, 8), True, "npu-nano", "RELU"),       # per-channel constant, loaded once
    ((2, 1, 3, 1), (1, 4, 1, 6), False, "npu-nano", "NONE"),      # both broadcast
    ((6, 10), (10,), True, "npu-edge", "RELU6"),                  # ranks 2 and 1
    ((1, 1, 1, 1), (1, 3, 2, 16), False, "npu-nano", "NONE"),     # scalar tensor
    ((1, 64, 64, 40), (1, 64, 64, 40), False, "npu-nano", "NONE"),  # many row tiles
    ((1, 48, 40, 24), (1, 1, 40, 24), True, "npu-nano", "RELU"),  # row tiles + broadcast constant
    ((3, 20000), (20000,), False, "npu-nano", "NONE"),            # channel tiles, tiled broadcast operand
    ((2, 3, 30000), (1,), True, "npu-nano", "NONE"),              # scalar constant on channel tiles
]


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("case", range(len(BINARY_CASES)))
def test_qbinary_matches_litert(npu_emulator, op, case):
    sa, sb, const_b, cfg, act = BINARY_CASES[case]
    rng = np.random.default_rng(case * 3 + len(op))
    q1, q2, qo = _q(rng), _q(rng), _q(rng)
    if op == "MUL":
        qo = QParams.per_tensor(float(q1.s) * float(q2.s) * 40, int(rng.integers(-50, 50)))
    b = ModelBuilder(case)
    xa = rand_int8(rng, sa)
    xb = rand_int8(rng, sb)
    ta = b.add_input("a", sa, q1)
    tb = b.add_const("b", xb, q2) if const_b else b.add_input("b", sb, q2)
    b.mark_output({"ADD": b.add, "SUB": b.sub, "MUL": b.mul}[op](ta, tb, qo, act))
    (want,) = run_reference(b.finish(), [xa] if const_b else [xa, xb])
    fields = {"ADD": add_quant, "SUB": sub_quant, "MUL": mul_quant}[op](q1, q2, qo, act)
    desc = _desc("qbinary", [sa, sb], want.shape, {"op": op.lower()}, fields, {1: xb} if const_b else None)
    got, low = _run(npu_emulator, cfg, desc, [xa] if const_b else [xa, xb])
    assert np.array_equal(got, want), np.abs(got.astype(int) - want).max()
    if case >= 5:
        assert low.stats["steps"] > 1  # tiled


def test_qbinary_every_input_pair(npu_emulator):
    """All 256 x 256 pairs through the tiled path (one operand constant, npu-nano)."""
    q1, q2, qo = QParams.per_tensor(0.0413, -7), QParams.per_tensor(0.1187, 33), QParams.per_tensor(0.0871, 12)
    xa = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 16, 16)
    xb = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 16, 16)
    b = ModelBuilder(0)
    b.mark_output(b.sub(b.add_input("a", xa.shape, q1), b.add_const("b", xb, q2), qo, "RELU"))
    (want,) = run_reference(b.finish(), [xa])
    desc = _desc("qbinary", [xa.shape, xb.shape], xa.shape, {"op": "sub"}, sub_quant(q1, q2, qo, "RELU"), {1: xb})
    got, _ = _run(npu_emulator, "npu-nano", desc, [xa])
    assert np.array_equal(got, want)


# ---- qpool ----------------------------------------------------------------------------------------

POOL_CASES = [  # (NHWC shape, kernel, stride, padding, config)
    ((1, 9, 11, 5), (3, 3), (2, 2), "SAME", "npu-nano"),
    ((2, 8, 8, 20), (2, 2), (2, 2), "VALID", "npu-nano"),
    ((1, 40, 40, 48), (3, 3), (2, 2), "SAME", "npu-nano"),   # row tiles
    ((1, 16, 200, 64), (5, 4), (1, 3), "SAME", "npu-nano"),  # channel and row tiles
    ((1, 7, 7, 40), (7, 7), (1, 1), "VALID", "npu-edge"),    # global pool
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_qpool_matches_litert(npu_emulator, layout, mode, case):
    shape, (kh, kw), (sh, sw), padding, cfg = POOL_CASES[case]
    rng = np.random.default_rng(case)
    q = _q(rng)
    act = "RELU6" if case % 2 else "NONE"
    b = ModelBuilder(case)
    x = b.add_input("x", shape, q)
    y = (b.average_pool2d if mode == "avg" else b.max_pool2d)(x, (kh, kw), (sh, sw), padding, act)
    b.mark_output(y)
    xin = rand_int8(rng, shape)
    (want,) = run_reference(b.finish(), [xin])
    _, pt, pb = same_padding(shape[1], kh, sh, 1, padding)
    _, pl, pr = same_padding(shape[2], kw, sw, 1, padding)
    attrs = {"mode": mode, "pool_size": (kh, kw), "strides": (sh, sw), "padding": (pt, pl, pb, pr),
             "dilation": (1, 1), "ceil_mode": False, "count_include_pad": False, "layout": layout,
             "out_layout": layout}
    if layout == "NCHW":
        xin, want = xin.transpose(0, 3, 1, 2), want.transpose(0, 3, 1, 2)
    desc = _desc("qpool", [xin.shape], want.shape, attrs, pool_quant(q, q, act, mode))
    got, low = _run(npu_emulator, cfg, desc, [xin])
    assert np.array_equal(got, want)
    if case in (2, 3):
        assert low.stats["steps"] > 1


# ---- qlut -----------------------------------------------------------------------------------------

LUT_CASES = [  # (op, shape, config)
    ("LOGISTIC", (1, 8, 8, 3), "npu-nano"),
    ("TANH", (2, 3, 4, 5, 6), "npu-nano"),        # rank 5
    ("HARD_SWISH", (4, 96, 96, 8), "npu-nano"),   # row tiles
    ("QUANTIZE", (1, 70000), "npu-nano"),         # channel tiles
    ("QUANTIZE", (16, 16), "npu-edge"),           # all 256 inputs
]


@pytest.mark.parametrize("case", range(len(LUT_CASES)))
def test_qlut_matches_litert(npu_emulator, case):
    op, shape, cfg = LUT_CASES[case]
    rng = np.random.default_rng(case)
    qi = _q(rng, 0.02, 0.1)
    b = ModelBuilder(case)
    x = b.add_input("x", shape, qi)
    if op == "LOGISTIC":
        y, table = b.logistic(x), None
        table = logistic_lut(qi, b.qparams(y))
    elif op == "TANH":
        y = b.tanh(x)
        table = tanh_lut(qi, b.qparams(y))
    elif op == "HARD_SWISH":
        qo = _q(rng, 0.02, 0.1)
        y, table = b.hard_swish(x, qo), hard_swish_lut(qi, qo)
    else:
        qo = _q(rng)
        y, table = b.quantize(x, qo), requantize_lut(qi, qo)
    b.mark_output(y)
    xin = rand_int8(rng, shape) if case != 4 else np.arange(-128, 128, dtype=np.int8).reshape(shape)
    (want,) = run_reference(b.finish(), [xin])
    desc = _desc("qlut", [shape], shape, {}, {"table": table})
    got, low = _run(npu_emulator, cfg, desc, [xin])
    assert np.array_equal(got, want)
    if case in (2, 3):
        assert low.stats["steps"] > 1


# ---- qconcat --------------------------------------------------------------------------------------

CONCAT_CASES = [  # (input shapes, axis, requantise inputs, config)
    ([(1, 3, 4, 5), (1, 3, 4, 7), (1, 3, 4, 1)], 3, False, "npu-nano"),
    ([(1, 3, 4, 5), (1, 3, 4, 7)], -1, True, "npu-nano"),
    ([(2, 5, 6, 6), (2, 3, 6, 6)], 1, False, "npu-nano"),          # NCHW channels
    ([(5, 10), (2, 10), (1, 10)], 0, True, "npu-edge"),            # rank 2, axis 0
    ([(1, 64, 64, 24), (1, 64, 64, 40)], 3, True, "npu-nano"),     # row tiles
    ([(1, 30000), (1, 5)], 1, False, "npu-nano"),                  # channel tiles
]


@pytest.mark.parametrize("case", range(len(CONCAT_CASES)))
def test_qconcat_matches_litert(npu_emulator, case):
    shapes, axis, requant, cfg = CONCAT_CASES[case]
    rng = np.random.default_rng(case)
    qo = _q(rng)
    qs = [_q(rng) if requant and i % 2 == 0 else qo for i in range(len(shapes))]
    b = ModelBuilder(case)
    xs = [b.add_input(f"x{i}", s, q) for i, (s, q) in enumerate(zip(shapes, qs))]
    ys = [b.quantize(t, qo) if not q.equals(qo) else t for t, q in zip(xs, qs)]  # what the converter inserts
    b.mark_output(b.concatenation(ys, axis=axis, out_q=qo))
    data = [rand_int8(rng, s) for s in shapes]
    (want,) = run_reference(b.finish(), data)
    tables = concat_quant(qs, qo)
    assert (sum(t is not None for t in tables) > 0) == requant
    desc = _desc("qconcat", shapes, want.shape, {"axis": axis}, {"inputs": tables})
    got, low = _run(npu_emulator, cfg, desc, data)
    assert np.array_equal(got, want)
    if case >= 4:
        assert low.stats["steps"] > len(shapes)
    if case == 1:  # the bare concat_quant list is accepted too
        got2, _ = _run(npu_emulator, cfg, _desc("qconcat", shapes, want.shape, {"axis": axis}, tables), data)
        assert np.array_equal(got2, want)


# ---- qmean ----------------------------------------------------------------------------------------

MEAN_CASES = [  # (shape, axes, keepdims, config)
    ((1, 7, 7, 32), (1, 2), True, "npu-nano"),       # NHWC global average
    ((2, 16, 7, 7), (2, 3), True, "npu-nano"),       # NCHW global average
    ((1, 5, 6, 8), (1, 2), False, "npu-edge"),
    ((4, 30), (-1,), False, "npu-nano"),
    ((3, 4, 10), (0, 1), False, "npu-nano"),         # outer 1
    ((1, 64, 64, 24), (1, 2), True, "npu-nano"),     # reduction in chunks (channels last)
    ((1, 8, 120, 120), (2, 3), True, "npu-nano"),    # several output tiles
    ((1, 2, 200, 200), (2, 3), False, "npu-nano"),   # reduction in chunks (channels first)
]


def _mean_desc(shape, axes, keep, qi, qo, rounding):
    nd = len(shape)
    ax = {a % nd for a in axes}
    out = tuple(1 if i in ax else d for i, d in enumerate(shape)) if keep else \
        tuple(d for i, d in enumerate(shape) if i not in ax)
    quant = {"in_q": qi, "out_q": qo}
    if rounding is not None:
        quant["rounding"] = rounding
    return _desc("qmean", [shape], out, {"axis": tuple(axes), "keepdims": keep}, quant)


@pytest.mark.parametrize("case", range(len(MEAN_CASES)))
def test_qmean_tflite_rounding_matches_litert(npu_emulator, case):
    shape, axes, keep, cfg = MEAN_CASES[case]
    rng = np.random.default_rng(case)
    qi = _q(rng)
    qo = QParams.per_tensor(float(qi.s) * float(rng.uniform(0.3, 1.5)), int(rng.integers(-100, 100)))
    desc = _mean_desc(shape, axes, keep, qi, qo, "tflite")
    b = ModelBuilder(case)
    x = b.add_input("x", shape, qi)
    y = b.add_tensor("mean", desc.output.shape, "int8", qo)
    b.add_op("MEAN", [x, b.add_const("axes", np.array(axes, np.int32))], [y], ("ReducerOptions", {"KeepDims": keep}))
    b.mark_output(y)
    xin = rand_int8(rng, shape)
    (want,) = run_reference(b.finish(), [xin])
    got, low = _run(npu_emulator, cfg, desc, [xin])
    assert np.array_equal(got, want)
    if case >= 5:
        assert low.stats["steps"] > 1


@pytest.mark.parametrize("case", range(len(MEAN_CASES)))
def test_qmean_real_rounding_matches_formula(npu_emulator, case):
    """The default: clamp(MBQM(sum(x) - count*zp_in, QuantizeMultiplier(s_in / (s_out*count))) + zp_out)."""
    shape, axes, keep, cfg = MEAN_CASES[case]
    rng = np.random.default_rng(100 + case)
    qi, qo = _q(rng), _q(rng)
    desc = _mean_desc(shape, axes, keep, qi, qo, None if case % 2 else "real")
    xin = rand_int8(rng, shape)
    got, _ = _run(npu_emulator, cfg, desc, [xin])
    ax = tuple(sorted(a % len(shape) for a in axes))
    count = int(np.prod([shape[a] for a in ax]))
    acc = xin.astype(np.int64).sum(axis=ax) - count * qi.zp
    m, s = quantize_multiplier(float(qi.s) / (float(qo.s) * count))
    want = np.clip(_mbqm(acc, m, s) + qo.zp, -128, 127).astype(np.int8).reshape(desc.output.shape)
    assert np.array_equal(got, want)


def _mbqm(x, m, s):
    """TFLite MultiplyByQuantizedMultiplier with Python integers (independent of tvm_npu.quant)."""
    def one(v):
        v = v * (1 << max(s, 0))
        v = max(-(2**31), min(2**31 - 1, v))
        ab = v * m
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        t = ab + nudge
        high = -((-t) >> 31) if t < 0 else t >> 31
        e = max(-s, 0)
        mask = (1 << e) - 1
        rem, thr = high & mask, (mask >> 1) + (1 if high < 0 else 0)
        return (high >> e) + (1 if rem > thr else 0)
    return np.vectorize(one, otypes=[np.int64])(np.asarray(x, np.int64))


# ---- refusals -------------------------------------------------------------------------------------


def _lower(desc, cfg="npu-nano", dtypes=None):
    low = Lowerer(tvm_npu.get_config(cfg), ConstPool())
    dtypes = dtypes or [DType.INT8] * (len(desc.inputs) + 1)
    ins = [DramTensor(Region.IO, 0, t.shape, dt) for t, dt in zip(desc.inputs, dtypes)]
    plan_and_lower(low, desc, ins, DramTensor(Region.IO, 0, desc.output.shape, dtypes[-1]))
    return low


def _pool_attrs(**kw):
    attrs = {"mode": "avg", "pool_size": (3, 3), "strides": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1),
             "ceil_mode": False, "count_include_pad": False, "layout": "NHWC", "out_layout": "NHWC"}
    attrs.update(kw)
    return attrs


def test_refusals():
    q = QParams.per_tensor(0.1, 0)
    add = add_quant(q, q, q)
    cases = [
        (_desc("qfoo", [(4,)], (4,), {}, {}), "no integer vector lowering"),
        (_desc("qbinary", [(1, 2, 3, 4, 5), (1, 2, 3, 4, 5)], (1, 2, 3, 4, 5), {"op": "add"}, add), "rank > 4"),
        (_desc("qbinary", [(3, 4), (5, 4)], (3, 4), {"op": "add"}, add), "do not broadcast"),
        (_desc("qbinary", [(3, 4), (3, 4)], (3, 4), {"op": "max"}, add), "add, sub or mul"),
        (_desc("qbinary", [(3, 4), (3, 4)], (3, 4), {"op": "add"}, {"a_offset": 0}), "lacks"),
        (_desc("qpool", [(1, 8, 8, 4)], (1, 4, 4, 4), _pool_attrs(dilation=(2, 2)), pool_quant(q, q)), "dilation"),
        (_desc("qpool", [(1, 8, 8, 4)], (1, 8, 8, 4), _pool_attrs(count_include_pad=True), pool_quant(q, q)),
         "counts padding"),
        (_desc("qpool", [(1, 8, 8, 4)], (1, 8, 8, 4), _pool_attrs(padding=(3, 3, 3, 3)), pool_quant(q, q)),
         "empty windows"),
        (_desc("qpool", [(1, 8, 8, 4)], (1, 8, 8, 4), _pool_attrs(layout="NCWH"), pool_quant(q, q)), "layout"),
        (_desc("qpool", [(1, 200, 4000, 64)], (1, 200, 4000, 64), _pool_attrs(), pool_quant(q, q)), "does not fit"),
        (_desc("qlut", [(4, 4)], (4, 4), {}, {"table": np.zeros(255, np.int8)}), "256 int8"),
        (_desc("qconcat", [(2, 3), (2, 4)], (2, 7), {"axis": 1}, {"inputs": [None]}), "quant must be"),
        (_desc("qconcat", [(2, 3), (3, 4)], (2, 7), {"axis": 1}, {"inputs": [None, None]}), "does not match"),
        (_mean_desc((2, 3, 4), (0, 2), False, q, q, None), "non-adjacent"),
        (_mean_desc((2, 3, 4), (1,), False, q, q, "nearest"), "rounding"),
        (_mean_desc((2, 3, 4), (1,), False, q, QParams.per_tensor(0.1, 0, "int16"), None), "int8 only"),
    ]
    for desc, match in cases:
        with pytest.raises(Unsupported, match=match):
            _lower(desc)
    with pytest.raises(Unsupported, match="int8 expected"):
        _lower(_desc("qlut", [(4, 4)], (4, 4), {}, {"table": np.zeros(256, np.int8)}), dtypes=[DType.FP16] * 2)
    with pytest.raises(Unsupported, match="no quantisation"):
        _lower(_desc("qlut", [(4, 4)], (4, 4), {}, None))


def test_single_buffered_programs(npu_emulator):
    """double_buffer=False (the serialised twin) gives the same bytes."""
    rng = np.random.default_rng(7)
    q1, q2, qo = _q(rng), _q(rng), _q(rng)
    xa, xb = rand_int8(rng, (1, 40, 40, 24)), rand_int8(rng, (1, 1, 1, 24))
    desc = _desc("qbinary", [xa.shape, xb.shape], xa.shape, {"op": "add"}, add_quant(q1, q2, qo))
    mean = _mean_desc((1, 64, 64, 24), (1, 2), True, q1, qo, None)
    xm = rand_int8(rng, (1, 64, 64, 24))
    for d, data in ((desc, [xa, xb]), (mean, [xm])):
        want, _ = _run(npu_emulator, "npu-nano", d, data)
        got, low = _run(npu_emulator, "npu-nano", d, data, double_buffer=False)
        assert np.array_equal(got, want) and low.stats["steps"] > 1


def test_qmean_roundings_differ(npu_emulator):
    """The two (multiplier, shift) derivations are both reproduced exactly and do differ: on ~1% of outputs
    LiteRT's MEAN is one step away from the one-step rescale of the real mean."""
    shape, axes = (64, 49, 64), (1,)
    qi, qo = QParams.per_tensor(0.0731, -9), QParams.per_tensor(0.0517, 14)
    rng = np.random.default_rng(3)
    xin = rand_int8(rng, shape)
    b = ModelBuilder(0)
    x = b.add_input("x", shape, qi)
    y = b.add_tensor("mean", (64, 64), "int8", qo)
    b.add_op("MEAN", [x, b.add_const("axes", np.array(axes, np.int32))], [y],
             ("ReducerOptions", {"KeepDims": False}))
    b.mark_output(y)
    (want_tflite,) = run_reference(b.finish(), [xin])
    acc = xin.astype(np.int64).sum(axis=1) - 49 * qi.zp
    m, s = quantize_multiplier(float(qi.s) / (float(qo.s) * 49))
    want_real = np.clip(_mbqm(acc, m, s) + qo.zp, -128, 127).astype(np.int8)
    got_tflite, _ = _run(npu_emulator, "npu-nano", _mean_desc(shape, axes, False, qi, qo, "tflite"), [xin])
    got_real, _ = _run(npu_emulator, "npu-nano", _mean_desc(shape, axes, False, qi, qo, None), [xin])
    assert np.array_equal(got_tflite, want_tflite)
    assert np.array_equal(got_real, want_real)
    differ = int(np.sum(want_real != want_tflite))
    assert 0 < differ < want_real.size // 20 and np.abs(want_real.astype(int) - want_tflite).max() == 1
