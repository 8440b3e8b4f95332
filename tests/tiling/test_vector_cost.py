"""The analytic estimate of float vector-unit plans (tiling/vector_cost.py) against the truth, and the
default plan it chooses (tiling/vector.default): the estimate equals the performance model's cycles of
the lowered program (perf_model.pipeline_cycles, what the emulator counts) for every candidate plan of
elementwise, activation, layout, softmax, layer norm, mean, reduce and pooling operators; the default is
the estimate's argmin up to near ties (fewer tiles), no slower on the emulator than the largest tiles
that fit, and computes the same output bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tvm_npu
from tvm_npu import tiling
from tvm_npu.ir import Activation, OpDesc, TensorDesc
from tvm_npu.ir.memory import over_budget, storage_dtype
from tvm_npu.ir.plan import MeanPlan
from tvm_npu.isa import DType
from tvm_npu.lowering import lower_alone
from tvm_npu.tiling import vector, vector_cost

RNG = np.random.default_rng(5)
EDGE, NANO = tvm_npu.get_config("npu-edge"), tvm_npu.get_config("npu-nano")
F16, F32 = DType.FP16, DType.FP32


def _t(shape, const=False, positive=False):
    if not const:
        return TensorDesc(tuple(shape), "float32")
    v = RNG.standard_normal(shape).astype(np.float32)
    return TensorDesc(tuple(shape), "float32", np.abs(v) + 0.5 if positive else v)


def _binary(op, a, b, out, const_b=False):
    return OpDesc(f"npu.{op}", "binary", [_t(a), _t(b, const_b)], _t(out), {"op": op})


def _act(kind, shape, **kw):
    return OpDesc(f"npu.{kind}", "activation", [_t(shape)], _t(shape), {}, Activation(kind, **kw))


def _pool(mode, shape, k, s, pad, layout="NCHW"):
    n, c, h, w = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    out = (n, c, oh, ow) if layout == "NCHW" else (n, oh, ow, c)
    return OpDesc(f"npu.{mode}_pool2d", "pool", [_t(shape)], _t(out),
                  {"mode": mode, "pool_size": (k, k), "strides": (s, s), "padding": (pad,) * 4, "dilation": (1, 1),
                   "ceil_mode": False, "count_include_pad": False, "layout": layout, "out_layout": layout})


def _reduce(op, shape, axis, out):
    return OpDesc(f"npu.{op}", "reduce", [_t(shape)], _t(out), {"axis": axis, "keepdims": False, "op": op})


CASES = {
    "add": _binary("add", (1, 24, 40, 16), (1, 24, 40, 16), (1, 24, 40, 16)),
    "mul_broadcast_channels": _binary("mul", (1, 20, 14, 32), (1, 1, 1, 32), (1, 20, 14, 32)),
    "add_const_wide": _binary("add", (1, 12, 64, 64), (), (1, 12, 64, 64), const_b=True),
    "div_broadcast_rows": _binary("div", (1, 40, 96), (1, 40, 1), (1, 40, 96)),
    "prelu": _binary("prelu", (1, 20, 20, 16), (16,), (1, 20, 20, 16), const_b=True),
    "sigmoid": _act("sigmoid", (1, 30, 30, 24)),
    "leaky_relu": _act("leaky_relu", (2, 12, 20, 32), alpha=0.2),
    "hard_swish": _act("hard_swish", (1, 16, 16, 40)),
    "sqrt": _act("sqrt", (1, 50, 7)),
    "neg": _act("neg", (3, 33, 17)),
    "transpose": OpDesc("npu.transpose", "layout", [_t((1, 64, 12, 32))], _t((1, 12, 64, 32)),
                        {"op": "permute", "axes": (0, 2, 1, 3)}),
    "slice": OpDesc("npu.strided_slice", "layout", [_t((1, 20, 30, 48))], _t((1, 10, 15, 48)),
                    {"op": "slice", "begin": (0, 0, 1, 0), "steps": (1, 2, 2, 1)}),
    "reshape": OpDesc("npu.reshape", "layout", [_t((1, 50, 96))], _t((1, 96, 50)), {"op": "reshape"}),
    "softmax": OpDesc("npu.softmax", "softmax", [_t((1, 12, 64, 64))], _t((1, 12, 64, 64)), {"axis": -1}),
    "softmax_long_rows": OpDesc("npu.softmax", "softmax", [_t((37, 300))], _t((37, 300)), {"axis": -1}),
    "layer_norm": OpDesc("npu.layer_norm", "layer_norm", [_t((1, 50, 96)), _t((96,), True), _t((96,), True)],
                         _t((1, 50, 96)), {"epsilon": 1e-5}),
    "mean_spatial": OpDesc("npu.mean", "mean", [_t((1, 96, 7, 7))], _t((1, 96, 1, 1)),
                           {"axis": (2, 3), "keepdims": True}),
    "mean_inner": OpDesc("npu.mean", "mean", [_t((6, 10, 24, 16))], _t((6, 1, 24, 16)), {"axis": (1,), "keepdims": True}),
    "sum": _reduce("sum", (40, 64, 3), (1,), (40, 3)),
    "max": _reduce("max", (24, 30), (1,), (24,)),
    "min": _reduce("min", (9, 20, 12), (1,), (9, 12)),
    "maxpool": _pool("max", (1, 16, 28, 28), 3, 2, 1),
    "avgpool_global": _pool("avg", (1, 7, 7, 96), 7, 7, 0, layout="NHWC"),
    "avgpool_3x3": _pool("avg", (1, 17, 17, 40), 3, 1, 1, layout="NHWC"),
}


def _dtypes(desc):
    return tuple(storage_dtype(desc, t) for t in desc.inputs)


def _lower(desc, plan, dtypes=None, config=EDGE):
    """(performance model cycles, lowerer, input DRAM tensors, output DRAM tensor) of `desc` lowered alone."""
    low, ins, out = lower_alone(desc, config, plan, dtypes)
    return low.estimates[-1], low, ins, out


def _plans(desc, config=EDGE, double_buffer=True):
    return vector.candidates(desc, config, double_buffer, _dtypes(desc))


@pytest.mark.parametrize("name", sorted(CASES))
def test_estimate_equals_the_lowered_programs_cycles(name):
    """Every candidate plan (and its single-buffered twin for a few): the estimate is exactly what
    perf_model.pipeline_cycles says of the lowered steps."""
    desc = CASES[name]
    plans = _plans(desc)
    assert len(plans) > 1, plans
    plans += [dataclasses.replace(p, double_buffer=False) for p in plans[:3]]
    for plan in plans:
        truth = _lower(desc, plan)[0]
        assert vector_cost.estimate(desc, plan, EDGE, _dtypes(desc)) == truth, plan


@pytest.mark.parametrize("name", ["softmax", "softmax_long_rows"])
def test_estimate_of_a_float32_softmax_input(name):
    """A float32 input (kept fp32 in ACC until the maximum is subtracted): loads of 4 bytes an element
    and the extra rounding pass."""
    desc = CASES[name]
    dts = (F32,)
    for plan in vector.candidates(desc, EDGE, True, dts)[:6]:
        assert vector_cost.estimate(desc, plan, EDGE, dts) == _lower(desc, plan, dts)[0], plan


def test_estimate_of_chunked_reductions_and_on_nano():
    """Reductions in chunks (a plan the default never changes, but the estimate covers), and plans
    of the smaller configuration."""
    for op in ("sum", "max", "min"):
        desc = _reduce(op, (6, 30), (1,), (6,))
        for plan in (MeanPlan(1, 7, 1), MeanPlan(1, 15, 1), MeanPlan(1, 29, 1, False)):
            assert vector_cost.estimate(desc, plan, EDGE, (F16,)) == _lower(desc, plan)[0], (op, plan)
    for name in ("add", "softmax", "maxpool", "mean_spatial"):
        desc = CASES[name]
        for plan in _plans(desc, NANO)[:5]:
            truth = _lower(desc, plan, config=NANO)[0]
            assert vector_cost.estimate(desc, plan, NANO, _dtypes(desc)) == truth, (name, plan)


@pytest.mark.parametrize("near_tie", [0.0, vector.NEAR_TIE])
@pytest.mark.parametrize("name", sorted(CASES))
def test_default_is_the_estimates_argmin_up_to_near_ties(name, near_tie):
    """Over the candidates: the default's estimate is within `near_tie` of the least and no more than
    the largest plan's; among those it has the fewest tiles; it fits; tiling.plan returns it."""
    desc = CASES[name]
    dts = _dtypes(desc)
    est = {p: vector_cost.estimate(desc, p, EDGE, dts) for p in _plans(desc)}
    largest = vector.largest(desc, EDGE, True, dts)
    chosen = vector.default(desc, EDGE, True, dts, near_tie=near_tie)
    cap = min(min(est.values()) * (1 + near_tie), est[largest])
    assert est[chosen] <= cap
    assert vector_cost.tiles(desc, chosen) == min(vector_cost.tiles(desc, p) for p, e in est.items() if e <= cap)
    assert over_budget(EDGE, tiling.needs(desc, chosen, EDGE)) is None
    if near_tie == vector.NEAR_TIE:
        assert tiling.plan(desc, EDGE) == chosen


def _emulate(desc, plan, seed):
    """(emulator cycles, output bytes) of `desc` lowered with `plan`, on seeded random inputs."""
    from npu_emulator import Emulator

    _, low, ins, out = _lower(desc, plan)
    io = np.zeros(out.offset + out.nbytes, np.uint8)
    rng = np.random.default_rng(seed)
    for t, d in zip(desc.inputs, ins):
        if t.is_const:
            continue
        x = rng.standard_normal(d.shape)
        if desc.activation is not None and desc.activation.kind == "sqrt" or (desc.kind == "binary" and d is ins[1]
                                                                               and desc.attrs["op"] == "div"):
            x = np.abs(x) + 0.5
        raw = x.astype(np.float16 if d.dtype == F16 else np.float32).tobytes()
        io[d.offset:d.offset + len(raw)] = np.frombuffer(raw, np.uint8)
    res = Emulator(EDGE).run(low.program.encode(), const=bytes(low.consts.data), io=io, scratch_bytes=0)
    return res.counters.cycles, bytes(res.io[out.offset:out.offset + out.nbytes])


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_is_no_slower_than_the_largest_plan_and_computes_the_same_bytes(name):
    """Independently of the estimate: on the emulator, the default plan takes no more cycles than the
    largest tiles that fit (the rule before) and writes the same output bytes on random data (tiling
    rows, channels or outer rows changes no summation order)."""
    desc = CASES[name]
    chosen, largest = tiling.plan(desc, EDGE), vector.largest(desc, EDGE, True, _dtypes(desc))
    (c_new, out_new), (c_old, out_old) = _emulate(desc, chosen, 1), _emulate(desc, largest, 1)
    assert c_new <= c_old, (chosen, c_new, largest, c_old)
    assert out_new == out_old, (chosen, largest)
