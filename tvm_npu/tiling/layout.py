"""Tile plans of the layout operators (reshape, transpose, slice): rows of the output's 4-D view
(dims 1 and 2, dim 3 whole), as many as fit ACT with the gather slot and the copy slot of each tile."""

from __future__ import annotations

from typing import Dict, Sequence

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import layout_geom
from ..ir.memory import over_budget, sram_bytes
from ..ir.plan import RowPlan
from ..isa import DType, Space

RESERVE = 64  # ACT bytes kept free besides the tiles


def _row_bytes(desc: OpDesc, dtypes: Sequence[DType]) -> Dict[Space, int]:
    """SRAM bytes of one tile row (one slot): the gathered input (ACC when stored in fp32) and the copy."""
    d3 = layout_geom(desc).out_shape[3]
    src = dtypes[0] if dtypes else DType.FP16
    out = DType.FP16 if src == DType.FP32 else src
    if src == DType.FP32:
        return {Space.ACC: sram_bytes((1, 1, 1, d3), src), Space.ACT: sram_bytes((1, 1, 1, d3), out)}
    return {Space.ACT: 2 * sram_bytes((1, 1, 1, d3), out)}


def layout_needs(desc: OpDesc, plan: RowPlan, dtypes: Sequence[DType]) -> Dict[Space, int]:
    slots = 2 if plan.double_buffer else 1
    rows = plan.t1 * plan.t2
    return {s: (RESERVE if s == Space.ACT else 0) + rows * b * slots for s, b in _row_bytes(desc, dtypes).items()}


def layout(desc: OpDesc, config: NPUConfig, double_buffer: bool, dtypes: Sequence[DType]) -> RowPlan:
    """Rows of dims 1 and 2 of the output's 4-D view, dim 3 whole: as many as fit, dim 2 first."""
    g = layout_geom(desc)
    _, d1, d2, d3 = g.out_shape
    slots = 2 if double_buffer else 1
    budget = min((config.sram_bytes(int(s)) - (RESERVE if s == Space.ACT else 0)) // (b * slots)
                 for s, b in _row_bytes(desc, dtypes).items())
    if budget < 1:
        raise Unsupported(f"one row of {d3} elements does not fit ACT with double buffering")
    t2 = min(d2, budget)
    t1 = max(1, min(d1, budget // t2)) if t2 == d2 else 1
    plan = RowPlan(t1, t2, double_buffer)
    why = over_budget(config, layout_needs(desc, plan, dtypes))
    if why:
        raise Unsupported(f"the layout tile does not fit: {why}")
    return plan
