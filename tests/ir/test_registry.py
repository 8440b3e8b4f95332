"""The stage-boundary types: every npu.* composite is data in the registry and reaches a planner and
a lowering by its kind; memory scopes are defined once; quantisation records are typed."""

from __future__ import annotations

import numpy as np
import pytest

import tvm_npu  # noqa: F401 - fills the registry
from tvm_npu import lowering, tiling
from tvm_npu.ir import Unsupported, registry
from tvm_npu.ir.memory import SCOPES, space_of
from tvm_npu.ir.quant import BinaryQuant, ConcatQuant, LutQuant, MeanQuant, PoolQuant, quant_record
from tvm_npu.isa import Space
from tvm_npu.quant import QParams, add_quant, pool_quant
from tvm_npu.relay_ext import constraints
from tvm_npu.relay_ext.patterns import patterns


def test_every_registered_composite_has_a_planner_a_lowering_and_checks():
    specs = list(registry.specs())
    assert len({s.name for s in specs}) == len(specs) == len(patterns())
    for s in specs:
        assert s.kind in tiling.PLANNERS and s.kind in lowering.LOWERINGS, s.name
        assert s.kind in (constraints.QUANT_BY_KIND if s.integer else constraints.BY_KIND), s.name
        assert s.quantised_region <= s.integer  # only integer composites are quantised regions
    # the data, not the name, says what a composite is
    assert registry.lookup("npu.qconcat3").params["arity"] == 3
    assert registry.lookup("npu.qmax_pool2d_int").params == {"mode": "max", "raw": True}
    assert not registry.lookup("npu.qmax_pool2d_int").quantised_region
    assert registry.lookup("npu.conv2d_bias_hard_swish").kind == "conv2d"
    with pytest.raises(Unsupported, match="not in the NPU registry"):
        registry.lookup("npu.nothing")


def test_memory_scopes_are_defined_once():
    assert {space_of(s) for s in SCOPES.values()} == {Space.ACT, Space.WGT, Space.ACC}
    assert all(s.startswith("global.npu_") for s in SCOPES.values())
    with pytest.raises(ValueError, match="not an NPU memory scope"):
        space_of("global.vtcm")


def test_quantisation_records_are_typed():
    q = QParams.per_tensor(0.1, 3)
    b = quant_record("qbinary", 2, add_quant(q, q, q))
    assert isinstance(b, BinaryQuant) and b.fields() == {k: int(v) for k, v in add_quant(q, q, q).items()}
    assert quant_record("qpool", 1, pool_quant(q, q)) == PoolQuant(-128, 127)
    t = np.arange(-128, 128, dtype=np.int8)
    assert isinstance(quant_record("qlut", 1, {"table": t}), LutQuant)
    assert quant_record("qconcat", 2, {"inputs": [None, t]}).tables[1] is t
    assert quant_record("qmean", 1, {"in_q": q, "out_q": q}) == MeanQuant(q, q, "real")
    rec = ConcatQuant((None,))
    assert quant_record("qconcat", 1, rec) is rec  # records pass through
    with pytest.raises(Unsupported, match="lacks"):
        quant_record("qbinary", 2, {"a_offset": 0})
    with pytest.raises(Unsupported, match="x 2"):
        quant_record("qconcat", 2, {"inputs": [None]})
