"""The tiling stage: one plan per operator kind, checked by the one SRAM budget function; overrides
checked the same way; the can-run check asks the tiling stage and never lowers; the lowering obeys
the plan it is given (a different plan, the same numbers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tvm_npu
from tvm_npu import tiling
from tvm_npu.ir import Activation, OpDesc, Refusal, TensorDesc
from tvm_npu.ir.memory import over_budget
from tvm_npu.ir.plan import (
    ConcatPlan,
    IntTilePlan,
    MacPlan,
    MeanPlan,
    PoolPlan,
    RowPlan,
    SoftmaxPlan,
    plan_from_dict,
    plan_to_dict,
)
from tvm_npu.options import CompileOptions
from tvm_npu.quant import QParams, add_quant, pool_quant
from tvm_npu.relay_ext import constraints

RNG = np.random.default_rng(5)
EDGE, NANO = tvm_npu.get_config("npu-edge"), tvm_npu.get_config("npu-nano")


def _conv(cin=32, cout=24, hw=16, k=3):
    w = RNG.standard_normal((cout, cin, k, k)).astype(np.float32)
    return OpDesc("npu.conv2d", "conv2d", [TensorDesc((1, cin, hw, hw), "float32"), TensorDesc(w.shape, "float32", w)],
                  TensorDesc((1, cout, hw, hw), "float32"),
                  {"strides": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1, "data_layout": "NCHW",
                   "kernel_layout": "OIHW", "out_layout": "NCHW", "out_dtype": ""}, Activation("relu"))


def _pool(shape=(1, 64, 56, 56), integer=False):
    attrs = {"mode": "max", "pool_size": (3, 3), "strides": (2, 2), "padding": (1, 1, 1, 1), "dilation": (1, 1),
             "ceil_mode": False, "count_include_pad": False, "layout": "NCHW", "out_layout": "NCHW"}
    out = (shape[0], shape[1], (shape[2] - 1) // 2 + 1, (shape[3] - 1) // 2 + 1)
    dt = "int8" if integer else "float32"
    q = QParams.per_tensor(0.1, 0)
    return OpDesc("npu.qmax_pool2d" if integer else "npu.max_pool2d", "qpool" if integer else "pool",
                  [TensorDesc(shape, dt)], TensorDesc(out, dt), attrs, quant=pool_quant(q, q) if integer else None)


def _float(kind, shape, **attrs):
    return OpDesc(f"npu.{kind}", kind, [TensorDesc(shape, "float32")], TensorDesc(shape, "float32"), attrs,
                  Activation("sigmoid") if kind == "activation" else None)


def _qadd(shape):
    q = QParams.per_tensor(0.05, 3)
    return OpDesc("npu.qadd", "qbinary", [TensorDesc(shape, "int8"), TensorDesc(shape, "int8")],
                  TensorDesc(shape, "int8"), {"op": "add"}, quant=add_quant(q, q, q))


CASES = {
    "conv2d": (_conv(), MacPlan),
    "activation": (_float("activation", (1, 32, 40, 40)), RowPlan),
    "softmax": (_float("softmax", (4, 64, 1000), axis=-1), SoftmaxPlan),
    "mean": (OpDesc("npu.mean", "mean", [TensorDesc((1, 64, 28, 28), "float32")], TensorDesc((1, 64, 1, 1), "float32"),
                    {"axis": (2, 3), "keepdims": True}), MeanPlan),
    "pool": (_pool(), PoolPlan),
    "concat": (OpDesc("npu.concat", "concat", [TensorDesc((1, 16, 30, 30), "float32")] * 2,
                      TensorDesc((1, 32, 30, 30), "float32"), {"axis": 1}), ConcatPlan),
    "qbinary": (_qadd((1, 30, 30, 48)), IntTilePlan),
    "qpool": (_pool((1, 56, 56, 64), True), PoolPlan),
}


@pytest.mark.parametrize("config", [NANO, EDGE], ids=lambda c: c.name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kind_gets_a_plan_that_fits(case, config):
    desc, plan_type = CASES[case]
    plan = tiling.plan(desc, config)
    assert isinstance(plan, plan_type), plan
    assert over_budget(config, tiling.needs(desc, plan, config)) is None
    assert plan_from_dict(plan_to_dict(plan)) == plan  # a plan is data: it round-trips


def test_largest_mac_plan_is_the_largest_fitting_candidate():
    """The "largest" MAC plan (the default's tie-break, and the default before the estimate chose it:
    tests/tiling/test_mac_cost.py) fits, and no candidate with the same depth and columns and more
    rows fits."""
    desc = _conv(64, 64, 28)
    plan = tiling.mac.largest(desc, NANO)
    assert over_budget(NANO, tiling.needs(desc, plan, NANO)) is None
    bigger = [p for p in tiling.mac.candidates(desc, NANO) if (p.depth, p.cols) == (plan.depth, plan.cols)
              and p.rows > plan.rows]
    assert all(over_budget(NANO, tiling.needs(desc, p, NANO)) for p in bigger)


def test_override_is_checked_and_refused_with_the_reason():
    desc = _conv(32, 24, 16)
    ok = MacPlan(2, 8, 16)
    assert tiling.plan(desc, EDGE, override=ok) == ok
    wrong_type = tiling.plan(desc, EDGE, override=RowPlan(1, 1))
    assert isinstance(wrong_type, Refusal) and "RowPlan" in wrong_type.reason
    illegal = tiling.plan(desc, EDGE, override=MacPlan(3, 30, 5))  # more columns than output channels
    assert isinstance(illegal, Refusal) and "not a legal tiling" in illegal.reason and "cols 30" in illegal.reason
    huge = OpDesc("npu.conv2d", "conv2d", desc.inputs, desc.output, desc.attrs)
    too_big = tiling.plan(huge, NANO, override=MacPlan(16, 24, 32))
    assert isinstance(too_big, Refusal) and "does not fit" in too_big.reason


def test_refusal_names_the_short_sram():
    big = _float("softmax", (2, 60000), axis=-1)
    r = tiling.plan(big, NANO)
    assert isinstance(r, Refusal) and "does not fit" in r.reason
    assert constraints.check(big, NANO, CompileOptions()) == [f"tiles_fit: {r.reason}"]


def test_can_run_check_never_lowers(monkeypatch):
    """The check asks the tiling stage only: with every lowering removed it still answers."""
    from tvm_npu import lowering

    monkeypatch.setattr(lowering, "LOWERINGS", {})
    for desc, _ in CASES.values():
        assert constraints.tiles_fit(desc, EDGE, CompileOptions()) is None


def test_double_buffering_is_a_plan_field():
    desc = _float("activation", (1, 32, 100, 100))
    one, two = (tiling.plan(desc, NANO, CompileOptions(double_buffer=db)) for db in (False, True))
    assert not one.double_buffer and two.double_buffer
    assert one.t1 * one.t2 >= two.t1 * two.t2  # one slot per buffer: bigger tiles fit


def test_lowering_obeys_the_plan():
    """The same convolution lowered with two plans: different programs, the same numbers."""
    from npu_emulator import Emulator
    from tvm_npu.isa import DType, Region
    from tvm_npu.lowering import Lowerer, plan_and_lower
    from tvm_npu.lowering.memory import ConstPool, DramTensor

    desc = _conv(16, 16, 12)
    x = RNG.standard_normal(desc.inputs[0].shape).astype(np.float16)
    outs, programs = [], []
    for plan in (tiling.plan(desc, EDGE), MacPlan(3, 16, 16), MacPlan(5, 16, 8)):
        low = Lowerer(EDGE, ConstPool())
        xin = DramTensor(Region.IO, 0, x.shape, DType.FP16)
        out = DramTensor(Region.IO, (x.nbytes + 15) // 16 * 16, desc.output.shape, DType.FP16)
        w = low.consts.tensor(desc.inputs[1].const, DType.FP16)
        used = plan_and_lower(low, desc, [xin, w], out, override=plan)
        assert used == plan
        low.program.emit("end")
        io = bytearray(out.offset + out.nbytes)
        io[:x.nbytes] = x.tobytes()
        res = Emulator(EDGE).run(low.program.encode(), const=bytes(low.consts.data), io=bytes(io), scratch_bytes=0)
        outs.append(np.frombuffer(bytes(res.io)[out.offset:], np.float16))
        programs.append(low.program.encode())
    assert len(set(programs)) == 3
    np.testing.assert_allclose(outs[1].astype(np.float32), outs[0].astype(np.float32), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(outs[2].astype(np.float32), outs[0].astype(np.float32), rtol=2e-3, atol=2e-3)


def test_plan_dict_errors_are_clear():
    with pytest.raises(ValueError, match="unknown plan family"):
        plan_from_dict({"plan": "nope"})
    with pytest.raises(ValueError, match="unknown field"):
        plan_from_dict({"rows": 1, "cols": 2, "depth": 3, "colour": 4})
    assert plan_from_dict({"rows": 1, "cols": 2, "depth": 3}) == MacPlan(1, 2, 3)
    assert dataclasses.replace(MacPlan(1, 2, 3), double_buffer=False) != MacPlan(1, 2, 3)


@pytest.mark.parametrize("kind", ["conv2d", "matmul"])
def test_loop_order_is_a_decision_with_the_same_numbers(kind):
    """The inputs-resident order loads each input tile once per row tile (the weights once per row
    tile instead): a different program, the same numbers, counted loads that say which stayed."""
    from npu_emulator import Emulator
    from tvm_npu.ir.plan import INPUTS_RESIDENT
    from tvm_npu.isa import DType, Program, Region
    from tvm_npu.lowering import Lowerer, plan_and_lower
    from tvm_npu.lowering.memory import ConstPool, DramTensor

    if kind == "conv2d":
        desc = _conv(16, 32, 12)
    else:
        w = RNG.standard_normal((48, 40)).astype(np.float32)
        desc = OpDesc("npu.matmul", "matmul", [TensorDesc((24, 48), "float32"), TensorDesc(w.shape, "float32", w)],
                      TensorDesc((24, 40), "float32"))
    x = RNG.standard_normal(desc.inputs[0].shape).astype(np.float16)
    base = MacPlan(4, 16, desc.inputs[1].shape[1] if kind == "conv2d" else 48)
    outs, loads = {}, {}
    for order in ("weights_resident", INPUTS_RESIDENT):
        plan = dataclasses.replace(base, order=order)
        assert tiling.plan(desc, EDGE, override=plan) == plan
        low = Lowerer(EDGE, ConstPool())
        xin = DramTensor(Region.IO, 0, x.shape, DType.FP16)
        out = DramTensor(Region.IO, (x.nbytes + 15) // 16 * 16, desc.output.shape, DType.FP16)
        w = low.consts.tensor(desc.inputs[1].const, DType.FP16)
        plan_and_lower(low, desc, [xin, w], out, override=plan)
        low.program.emit("end")
        io = bytearray(out.offset + out.nbytes)
        io[:x.nbytes] = x.tobytes()
        res = Emulator(EDGE).run(low.program.encode(), const=bytes(low.consts.data), io=bytes(io), scratch_bytes=0)
        outs[order] = np.frombuffer(bytes(res.io)[out.offset:], np.float16)
        prog = Program.decode(low.program.encode())
        loads[order] = {r: sum(1 for i in prog if i.mnemonic == "dma.load" and i.operands["src"].region == r)
                        for r in (Region.IO, Region.CONST)}
    np.testing.assert_array_equal(outs["weights_resident"], outs[INPUTS_RESIDENT])  # same accumulation order
    rows_tiles = -(-desc.output.shape[2 if kind == "conv2d" else 0] // 4)
    col_tiles = -(-(32 if kind == "conv2d" else 40) // 16)
    assert loads[INPUTS_RESIDENT][Region.IO] == rows_tiles  # one input load per row tile
    assert loads["weights_resident"][Region.IO] == rows_tiles * col_tiles
    grouped = _conv(16, 16, 12)
    grouped.attrs = dict(grouped.attrs, groups=16)
    grouped.inputs = [grouped.inputs[0], TensorDesc((16, 1, 3, 3), "float32", np.ones((16, 1, 3, 3), np.float32))]
    refused = tiling.plan(grouped, EDGE, override=MacPlan(4, 16, 1, order=INPUTS_RESIDENT))
    assert isinstance(refused, Refusal) and "dense convolution" in refused.reason
