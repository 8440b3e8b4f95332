"""Tile plans of the integer vector-unit operators (qbinary, qlut, qconcat, qpool, qmean) on int8
views: equal byte slots sharing what is left of ACT, resident operands and tables loaded once."""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import mean_axes, pad4, pool_geometry
from ..ir.memory import sram_bytes
from ..ir.plan import ConcatPlan, IntTilePlan, MeanPlan, PoolPlan
from ..ir.quant import quant_record
from ..isa import DType, Space
from ..isa.spec import SRAM_ALIGN, row_stride
from .vector import pool_tile_bytes

I8, I32 = DType.INT8, DType.INT32
MAX_DIM = 65535  # SRAM tensor dims are u16
RESERVE = 64  # ACT bytes kept free besides the named buffers (alignment slack)
LUT_BYTES = sram_bytes((1, 1, 1, 256), I8)


def _align(n: int) -> int:
    return (n + SRAM_ALIGN - 1) // SRAM_ALIGN * SRAM_ALIGN


def _slots(double_buffer: bool) -> int:
    return 2 if double_buffer else 1


def slot_bytes(config: NPUConfig, used: int, n_buffers: int) -> int:
    """Bytes per buffer when `n_buffers` equal buffers share what is left of ACT after `used` bytes."""
    free = config.act_sram_bytes - used - RESERVE
    cap = free // max(n_buffers, 1) // 16 * 16
    if cap < 16:
        raise Unsupported(f"ACT SRAM too small for {n_buffers} tile buffers")
    return cap


def tiles(shape4: Sequence[int], cap: int):
    """Tiles (i0, j1, t1, j2, t2, c0, tc) over an int8 4-D shape, each at most `cap` bytes in SRAM: whole
    rows of dim 3 when one fits, else chunks of dim 3 (multiples of 16)."""
    d0, d1, d2, c = shape4
    tc = c if row_stride(c, I8) <= cap else min(cap // 16 * 16, MAX_DIM // 16 * 16)
    tc = min(tc, MAX_DIM)
    if tc < 1:
        raise Unsupported(f"no tile of {list(shape4)} fits {cap} bytes")
    rows = min(cap // row_stride(tc, I8), MAX_DIM)
    t2 = min(d2, rows)
    t1 = max(1, min(d1, rows // t2, MAX_DIM)) if t2 == d2 else 1
    for i0 in range(d0):
        for j1 in range(0, d1, t1):
            for j2 in range(0, d2, t2):
                for c0 in range(0, c, tc):
                    yield i0, j1, min(t1, d1 - j1), j2, min(t2, d2 - j2), c0, min(tc, c - c0)


def largest_tile(shape4: Sequence[int], cap: int) -> Tuple[int, int, int]:
    """The largest (t1, t2, tc) of `tiles` (the first tile is never an edge tile)."""
    _, _, t1, _, t2, _, tc = next(iter(tiles(shape4, cap)))
    return t1, t2, tc


def fold(shape: Sequence[int], limit: int = 2048) -> Tuple[int, int]:
    """A dense tensor as (rows, length) with trailing dims folded into the length while it stays <=
    `limit` (so that a small last dim does not pad every SRAM row to 16 bytes)."""
    shape = tuple(int(d) for d in shape) or (1,)
    length, i = shape[-1], len(shape) - 2
    while i >= 0 and length * shape[i] <= limit:
        length *= shape[i]
        i -= 1
    return math.prod(shape) // max(length, 1), length


# ---- qbinary ------------------------------------------------------------------------------------

def qbinary_views(in_shapes: Sequence[Tuple[int, ...]], out_shape: Tuple[int, ...]):
    """(operand 4-D views, output 4-D view): plain elementwise operands (or scalars) folded into
    (rows, length); broadcasting ones padded to 4-D."""
    size = math.prod(out_shape)
    if all(math.prod(s) in (1, size) for s in in_shapes):
        o4 = pad4(fold(out_shape))
        return [o4 if math.prod(s) == size else (1, 1, 1, 1) for s in in_shapes], o4
    return [pad4(s) for s in in_shapes], pad4(out_shape)


def qbinary(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> IntTilePlan:
    """Operands equal for every tile (a per-channel vector, a scalar) stay resident unless the channel
    dim may be tiled (with at most 3 double-buffered tiles sharing ACT, a row that fits is never split);
    the others and the output share the rest of ACT in equal slots."""
    ops, o4 = qbinary_views([t.shape for t in desc.inputs], tuple(desc.output.shape))
    n = _slots(double_buffer)
    whole_row = slot_bytes(config, 0, n * 3)
    resident = tuple(o[:3] == (1, 1, 1) and (o[3] == 1 or row_stride(o4[3], I8) <= whole_row) for o in ops)
    used = 0
    for o, r in zip(ops, resident):
        if r:
            used = _align(used + sram_bytes((1, 1, 1, o[3]), I8))
    cap = slot_bytes(config, used, n * (sum(not r for r in resident) + 1))
    return IntTilePlan(cap, largest_tile(o4, cap), resident, double_buffer)


def qbinary_needs(desc: OpDesc, plan: IntTilePlan) -> Dict[Space, int]:
    ops, _ = qbinary_views([t.shape for t in desc.inputs], tuple(desc.output.shape))
    fixed = sum(sram_bytes((1, 1, 1, o[3]), I8) for o, r in zip(ops, plan.resident) if r)
    n = _slots(plan.double_buffer) * (sum(not r for r in plan.resident) + 1)
    return {Space.ACT: fixed + n * plan.slot_bytes + RESERVE}


# ---- qlut ---------------------------------------------------------------------------------------

def qlut_view(desc: OpDesc) -> Tuple[int, int, int, int]:
    return pad4(fold(desc.inputs[0].shape))


def qlut(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> IntTilePlan:
    """The table in ACT, then input and output slots sharing the rest."""
    cap = slot_bytes(config, LUT_BYTES, 2 * _slots(double_buffer))
    return IntTilePlan(cap, largest_tile(qlut_view(desc), cap), (), double_buffer)


def qlut_needs(desc: OpDesc, plan: IntTilePlan) -> Dict[Space, int]:
    return {Space.ACT: LUT_BYTES + 2 * _slots(plan.double_buffer) * plan.slot_bytes + RESERVE}


# ---- qconcat ------------------------------------------------------------------------------------

def _distinct_tables(desc: OpDesc) -> int:
    tables = quant_record(desc.kind, len(desc.inputs), desc.quant).tables
    return len({np.asarray(t).astype(np.int8).tobytes() for t in tables if t is not None})


def qconcat(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> ConcatPlan:
    """The requantisation tables in ACT, then one pair of byte slots every input is copied through."""
    if len(desc.output.shape) > 4:
        raise Unsupported(f"qconcat of rank {len(desc.output.shape)} (<= 4)")
    cap = slot_bytes(config, _distinct_tables(desc) * LUT_BYTES, 2 * _slots(double_buffer))
    return ConcatPlan(tuple(largest_tile(pad4(t.shape), cap) for t in desc.inputs), (cap,), double_buffer)


def qconcat_needs(desc: OpDesc, plan: ConcatPlan) -> Dict[Space, int]:
    return {Space.ACT: _distinct_tables(desc) * LUT_BYTES + 2 * _slots(plan.double_buffer) * plan.slot[0] + RESERVE}


# ---- qpool --------------------------------------------------------------------------------------

def qpool_needs(desc: OpDesc, plan: PoolPlan) -> Dict[Space, int]:
    return {Space.ACT: _slots(plan.double_buffer) * pool_tile_bytes(desc, plan.rows, plan.channels, I8) + RESERVE}


def qpool(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> PoolPlan:
    """All channels if one row of windows fits (else halved, in multiples of 16), then rows."""
    h, w, c, oh, ow, kh, sh = pool_geometry(desc)
    slots = _slots(double_buffer)
    cap = config.act_sram_bytes - RESERVE

    def need(rows: int, tc: int) -> int:
        return slots * pool_tile_bytes(desc, rows, tc, I8)

    tc = c
    while need(1, tc) > cap:
        if tc <= 16:
            raise Unsupported(f"one row of {kh}-high pooling windows ({kh} x {w} x {tc}) does not fit ACT")
        tc = max(16, (tc + 1) // 2 // 16 * 16 or 16)
    rows = 1
    while rows < oh and need(rows + 1, tc) <= cap:
        rows += 1
    return PoolPlan(rows, tc, double_buffer)


# ---- qmean --------------------------------------------------------------------------------------

def qmean_shapes(desc: OpDesc, plan: MeanPlan):
    """(input tile, output tile, reduced axis) in SRAM."""
    _, _, inner = mean_axes(desc.inputs[0].shape, desc.attrs.get("axis"))
    if inner > 1:
        return (1, plan.outer, plan.chunk, plan.inner), (1, plan.outer, 1, plan.inner), 2
    return (1, 1, plan.outer, plan.chunk), (1, 1, plan.outer, 1), 3


def qmean_needs(desc: OpDesc, plan: MeanPlan) -> Dict[Space, int]:
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs.get("axis"))
    in_shape, o_shape, _ = qmean_shapes(desc, plan)
    n = _slots(plan.double_buffer)
    chunks = -(-red // plan.chunk)
    return {Space.ACT: n * (sram_bytes(in_shape, I8) + sram_bytes(o_shape, I8)),
            Space.ACC: 16 + sram_bytes(o_shape, I32) * (2 if chunks > 1 else 1)}


def qmean(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> MeanPlan:
    """int32 sums in ACC: whole reductions when they fit (else chunks added in ACC), then outer rows."""
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs.get("axis"))
    slots = _slots(double_buffer)
    act = config.act_sram_bytes - RESERVE
    acc = config.acc_sram_bytes - 16 - RESERVE  # the offset scalar
    if inner > 1:
        # input tiles (1, to, rr, ti) reduced over axis 2 into (1, to, 1, ti) int32
        ti = min(inner, MAX_DIM)
        while slots * 2 * row_stride(ti, I8) > act or 2 * row_stride(ti, I32) > acc:
            if ti <= 16:
                raise Unsupported(f"a qmean row of {inner} does not fit")
            ti = max(16, (ti + 1) // 2 // 16 * 16 or 16)
        r8, r32 = row_stride(ti, I8), row_stride(ti, I32)
        rr = min(red, MAX_DIM, (act - slots * r8) // (slots * r8))
        if rr < 1:
            raise Unsupported(f"a qmean row of {inner} does not fit ACT")
        to = 1 if rr < red else max(1, min(outer, MAX_DIM, act // (slots * (red + 1) * r8), acc // (2 * r32)))
    else:
        # input tiles (1, 1, to, rr) reduced over axis 3 into (1, 1, to, 1) int32
        ti = 1
        rr = red if slots * (row_stride(red, I8) + 16) <= act and red <= MAX_DIM else \
            min(MAX_DIM // 16 * 16, (act // slots - 16) // 16 * 16)
        if rr < 1:
            raise Unsupported("qmean does not fit ACT")
        to = 1 if rr < red else max(1, min(outer, MAX_DIM, act // (slots * (row_stride(rr, I8) + 16)), acc // 32))
    return MeanPlan(to, rr, ti, double_buffer)
