"""Tile plans: the decisions of the tiling stage, one frozen record per operator family.

Every field is a decision a search may change and a report shows: tile sizes, K chunking (a MAC
`depth` below K re-accumulates), SRAM slot sizes, which operands stay resident (loaded once), and
double buffering. The lowering obeys the plan it is given and never re-decides. `Refusal` is the
tiling stage's answer when no plan fits, with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple, Union


@dataclasses.dataclass(frozen=True)
class Refusal:
    """No plan: the reason (what does not fit where)."""

    reason: str


WEIGHTS_RESIDENT = "weights_resident"  # loop order n, cols, rows, depth: a weight tile serves every row tile
INPUTS_RESIDENT = "inputs_resident"  # loop order n, rows, cols, depth: an input tile serves every column tile
MAC_ORDERS = (WEIGHTS_RESIDENT, INPUTS_RESIDENT)


@dataclasses.dataclass(frozen=True)
class MacPlan:
    """conv2d / depthwise / grouped / matmul. `rows`: output rows (or matrix rows) per tile; `cols`:
    output channels (or matrix columns) per tile; `depth`: input channels (or K) per accumulation
    chunk (below K: the accumulator is re-accumulated over K chunks); `order`: which operand stays
    resident while the other tile loop runs (weights: loop order n, cols, rows, depth; inputs:
    n, rows, cols, depth, dense convolutions and matmuls only)."""

    rows: int
    cols: int
    depth: int
    double_buffer: bool = True
    order: str = WEIGHTS_RESIDENT

    family = "mac"

    def to_dict(self) -> Dict[str, Any]:
        d = {"rows": self.rows, "cols": self.cols, "depth": self.depth}
        if self.order != WEIGHTS_RESIDENT:
            d["order"] = self.order
        return d


Plan = MacPlan  # the name the schedules and tests have used


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """Float elementwise operators on a 4-D view (d0, d1, d2, d3) with d3 whole: `t1` x `t2` rows of
    dims 1 and 2 per tile."""

    t1: int
    t2: int
    double_buffer: bool = True

    family = "rows"

    def to_dict(self) -> Dict[str, Any]:
        return {"t1": self.t1, "t2": self.t2}


@dataclasses.dataclass(frozen=True)
class SoftmaxPlan:
    """Softmax over the last axis: `rows` rows per tile."""

    rows: int
    double_buffer: bool = True

    family = "softmax"

    def to_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows}


@dataclasses.dataclass(frozen=True)
class MeanPlan:
    """Mean over adjacent axes seen as (outer, red, inner): `outer` rows per tile, `chunk` reduced
    elements per load (below red: partial sums added in ACC), `inner` trailing elements per tile."""

    outer: int
    chunk: int
    inner: int
    double_buffer: bool = True

    family = "mean"

    def to_dict(self) -> Dict[str, Any]:
        return {"outer": self.outer, "chunk": self.chunk, "inner": self.inner}


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """Pooling: `rows` output rows x `channels` channels per tile (the input tile holds its windows)."""

    rows: int
    channels: int
    double_buffer: bool = True

    family = "pool"

    def to_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows, "channels": self.channels}


@dataclasses.dataclass(frozen=True)
class ConcatPlan:
    """Concatenation, one copy per input: per input, its tile (rows of dim 1, rows of dim 2[, channels]);
    `slot` is the SRAM slot every tile is copied through (float: a (1, h, w, c) tile; integer: bytes)."""

    tiles: Tuple[Tuple[int, ...], ...]
    slot: Tuple[int, ...]
    double_buffer: bool = True

    family = "concat"

    def to_dict(self) -> Dict[str, Any]:
        return {"tiles": [list(t) for t in self.tiles], "slot": list(self.slot)}


@dataclasses.dataclass(frozen=True)
class IntTilePlan:
    """Integer vector operators on int8 4-D views: `slot_bytes` per SRAM slot, the largest tile
    (t1, t2, tc) of dims 1, 2 and 3, and which operands are `resident` (loaded once, not per tile)."""

    slot_bytes: int
    tile: Tuple[int, int, int]
    resident: Tuple[bool, ...] = ()
    double_buffer: bool = True

    family = "int_tiles"

    def to_dict(self) -> Dict[str, Any]:
        return {"slot_bytes": self.slot_bytes, "tile": list(self.tile), "resident": list(self.resident)}


TilePlan = Union[MacPlan, RowPlan, SoftmaxPlan, MeanPlan, PoolPlan, ConcatPlan, IntTilePlan]
PLAN_TYPES = {cls.family: cls for cls in (MacPlan, RowPlan, SoftmaxPlan, MeanPlan, PoolPlan, ConcatPlan, IntTilePlan)}


def plan_to_dict(plan: TilePlan) -> Dict[str, Any]:
    return {"plan": plan.family, **plan.to_dict(), "double_buffer": plan.double_buffer}


def plan_from_dict(d: Dict[str, Any]) -> TilePlan:
    """A plan from its dict (`{"plan": family, fields...}`; without "plan", a MAC plan)."""
    d = dict(d)
    family = d.pop("plan", "mac")
    cls = PLAN_TYPES.get(family)
    if cls is None:
        raise ValueError(f"unknown plan family {family!r} ({sorted(PLAN_TYPES)})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{family} plan: unknown field(s) {sorted(unknown)} (fields: {sorted(names)})")
    for k, v in list(d.items()):
        if isinstance(v, list):
            d[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"{family} plan: {e}") from None
