"""The analytic MAC plan estimate (tiling/mac_cost.py) against the truth, and the default plan it
chooses: within 1% of the performance model's cycles of the lowered plan (and of the emulator's) on
small layers of every MAC kind, never below its own bound; the default is the estimate's argmin over
the fitting plans up to near ties (mac.NEAR_TIE), no slower than the largest tiles that fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tvm_npu
from tvm_npu import tiling
from tvm_npu.ir import Activation, OpDesc, TensorDesc
from tvm_npu.ir.plan import INPUTS_RESIDENT, WEIGHTS_RESIDENT
from tvm_npu.isa import DType, Region
from tvm_npu.lowering import Lowerer, plan_and_lower
from tvm_npu.lowering.memory import ConstPool, DramTensor
from tvm_npu.quant import QParams, conv2d_quant
from tvm_npu.tiling import mac, mac_cost

RNG = np.random.default_rng(11)
EDGE, NANO = tvm_npu.get_config("npu-edge"), tvm_npu.get_config("npu-nano")
TOLERANCE = 0.01  # relative error allowed per plan (the estimate is meant to be exact)


def _conv(cin, cout, hw, k=3, stride=1, groups=1, act="relu", bias=True):
    w = RNG.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    oh = (hw + 2 * (k // 2) - k) // stride + 1
    ins = [TensorDesc((1, cin, hw, hw), "float32"), TensorDesc(w.shape, "float32", w)]
    if bias:
        ins.append(TensorDesc((cout,), "float32", RNG.standard_normal(cout).astype(np.float32)))
    return OpDesc("npu.conv2d", "conv2d", ins, TensorDesc((1, cout, oh, oh), "float32"),
                  {"strides": (stride, stride), "padding": (k // 2,) * 4, "dilation": (1, 1), "groups": groups,
                   "data_layout": "NCHW", "kernel_layout": "OIHW", "out_layout": "NCHW", "out_dtype": ""},
                  Activation(act) if act else None)


def _matmul(m, k, n, act="gelu", bias=True):
    w = RNG.standard_normal((k, n)).astype(np.float32)
    ins = [TensorDesc((m, k), "float32"), TensorDesc(w.shape, "float32", w)]
    if bias:
        ins.append(TensorDesc((n,), "float32", RNG.standard_normal(n).astype(np.float32)))
    return OpDesc("npu.matmul", "matmul", ins, TensorDesc((m, n), "float32"), {}, Activation(act) if act else None)


def _qconv(cin, cout, hw, k=3):
    w = RNG.integers(-127, 128, (cout, cin, k, k)).astype(np.int8)
    b = RNG.integers(-500, 500, cout).astype(np.int32)
    q = conv2d_quant(QParams.per_tensor(0.05, 3), QParams.per_tensor(0.01), QParams.per_tensor(0.1, -2), "RELU",
                     bias=b, channels=cout)
    return OpDesc("npu.qconv2d", "conv2d", [TensorDesc((1, cin, hw, hw), "int8"), TensorDesc(w.shape, "int8", w),
                                            TensorDesc((cout,), "int32", b)],
                  TensorDesc((1, cout, hw, hw), "int8"),
                  {"strides": (1, 1), "padding": (k // 2,) * 4, "dilation": (1, 1), "groups": 1, "data_layout": "NCHW",
                   "kernel_layout": "OIHW", "out_layout": "NCHW", "out_dtype": "int8"}, quant=q)


LAYERS = {
    "conv": _conv(32, 48, 12),
    "conv_stride2_edges": _conv(40, 24, 17, stride=2, act="hard_swish"),
    "pointwise": _conv(64, 40, 9, k=1, act=None, bias=False),
    "depthwise": _conv(32, 32, 12, groups=32, act="leaky_relu"),
    "grouped": _conv(32, 48, 10, groups=8, act="silu"),
    "matmul": _matmul(37, 100, 70),
    "matmul_no_bias": _matmul(24, 48, 40, act=None, bias=False),
    "int8_conv": _qconv(24, 40, 11),
}


def _lower(desc, plan, config=EDGE):
    """(performance model cycles, program, constants, io bytes) of `desc` lowered alone with `plan`."""
    integer = desc.quant is not None
    act = DType.INT8 if integer else DType.FP16
    low = Lowerer(config, ConstPool(), plan.double_buffer)
    xin = DramTensor(Region.IO, 0, desc.inputs[0].shape, act)
    out = DramTensor(Region.IO, (xin.nbytes + 15) // 16 * 16, desc.output.shape, act)
    ins = [xin, low.consts.tensor(desc.inputs[1].const, act)]
    if len(desc.inputs) > 2:
        ins.append(low.consts.tensor(desc.inputs[2].const, DType.INT32 if integer else DType.FP32))
    used = plan_and_lower(low, desc, ins, out, override=plan)
    assert used == plan
    low.program.emit("end")
    return low.estimates[-1], low, out.offset + out.nbytes


def _sample(desc, config, n, seed):
    space = mac.fitting(desc, config)
    rng = np.random.default_rng(seed)
    picks = [space[i] for i in rng.choice(len(space), min(n, len(space)), replace=False)]
    return picks + [mac.default(desc, config), mac.largest(desc, config)]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_estimate_matches_the_lowered_plans(name):
    """Sampled fitting plans of both loop orders: the estimate is within TOLERANCE of the cycles
    perf_model.pipeline_cycles gives the lowered steps."""
    desc = LAYERS[name]
    orders = set()
    for plan in _sample(desc, EDGE, 10, seed=len(name)):
        truth = _lower(desc, plan)[0]
        est = mac_cost.estimate(desc, plan, EDGE)
        assert abs(est - truth) <= TOLERANCE * truth, (plan, est, truth)
        orders.add(plan.order)
    dense = name not in ("depthwise", "grouped")
    assert orders == ({WEIGHTS_RESIDENT, INPUTS_RESIDENT} if dense else {WEIGHTS_RESIDENT})


def test_estimate_without_double_buffering_and_on_nano():
    desc = LAYERS["conv"]
    for config in (EDGE, NANO):
        for plan in _sample(desc, config, 4, seed=3):
            single = dataclasses.replace(plan, double_buffer=False)
            for p in (plan, single):
                truth = _lower(desc, p, config)[0]
                assert abs(mac_cost.estimate(desc, p, config) - truth) <= TOLERANCE * truth, (config.name, p)


@pytest.mark.parametrize("name", ["conv", "int8_conv"])
def test_estimate_matches_the_emulator(name):
    """The emulator's cycles of the lowered operator (the end instruction aside) for two plans."""
    from npu_emulator import Emulator

    desc = LAYERS[name]
    for plan in (mac.default(desc, EDGE), mac.largest(desc, EDGE)):
        _, low, io_bytes = _lower(desc, plan)
        res = Emulator(EDGE).run(low.program.encode(), const=bytes(low.consts.data), io=bytes(io_bytes),
                                 scratch_bytes=0)
        cycles = res.counters.cycles
        est = mac_cost.estimate(desc, plan, EDGE)
        assert abs(est - cycles) <= TOLERANCE * cycles, (plan, est, cycles)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bound_never_exceeds_the_estimate(name):
    desc = LAYERS[name]
    for plan in mac.fitting(desc, EDGE):
        assert mac_cost.lower_bound(desc, plan, EDGE) <= mac_cost.estimate(desc, plan, EDGE), plan


@pytest.mark.parametrize("near_tie", [0.0, mac.NEAR_TIE])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_default_is_the_estimates_argmin_up_to_near_ties(name, near_tie):
    """Brute force over every fitting plan: the default's estimate is within `near_tie` of the least
    (near_tie 0: the least) and no more than the "largest" plan's, and among the plans in that range
    it has the fewest steps, then the largest score (whole K, output elements per tile, columns)."""
    desc = LAYERS[name]
    layer = mac_cost.layer_of(desc, EDGE)
    est = {p: mac_cost.estimate(desc, p, EDGE) for p in mac.fitting(desc, EDGE)}
    least = min(est.values())
    chosen = mac.default(desc, EDGE, near_tie=near_tie)
    cap = min(least * (1 + near_tie), est[mac.largest(desc, EDGE)])  # never slower than "largest"
    assert chosen in est and est[chosen] <= cap
    ties = [p for p, e in est.items() if e <= cap]
    fewest = min(mac_cost.steps(layer, p) for p in ties)
    assert mac_cost.steps(layer, chosen) == fewest
    score = mac._score(desc)
    assert score(chosen) == max(score(p) for p in ties if mac_cost.steps(layer, p) == fewest)
    if near_tie == mac.NEAR_TIE:
        assert tiling.plan(desc, EDGE) == chosen


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_default_is_no_slower_than_the_largest_plan(name):
    """Independently of the estimate: the lowered default takes no more cycles than the lowered
    "largest" plan (the rule before), and it fits."""
    from tvm_npu.ir.memory import over_budget

    desc = LAYERS[name]
    chosen, largest = tiling.plan(desc, EDGE), mac.largest(desc, EDGE)
    assert over_budget(EDGE, tiling.needs(desc, chosen, EDGE)) is None
    assert _lower(desc, chosen)[0] <= _lower(desc, largest)[0]
