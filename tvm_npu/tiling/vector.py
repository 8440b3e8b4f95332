"""Tile plans of the float vector-unit operators (elementwise, layout, softmax, layer norm, mean,
sum / max / min, concat, pooling).

Per kind, the largest double-buffered tiles that fit ACT (and ACC for fp32 operands), and
`default`: the fitting plan of least estimated cycles (vector_cost.estimate, exact against the
lowered program) among even splits of each tiled axis, ties towards fewer tiles. One or two huge
tiles leave a double-buffered pipeline with nothing to overlap the first load and the last store
with; a few even tiles overlap them. `largest` is the rule before, kept as the reference (a plan
the default is never estimated slower than). Concat keeps its largest tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Dict, Sequence

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import layout_geom, mean_axes, pad4, pool_geometry
from ..ir.memory import over_budget, sram_bytes
from ..ir.plan import ConcatPlan, MeanPlan, PoolPlan, RowPlan, SoftmaxPlan, TilePlan
from ..isa import DType, Space
from . import layout as layout_tiles
from . import vector_cost

F16, F32 = DType.FP16, DType.FP32
RESERVE = 64  # ACT bytes kept free besides the tiles of elementwise operators
SCALARS = 1024  # ACT bytes kept for per-row scalars of softmax and mean


def _check(config: NPUConfig, needs: Dict[Space, int], what: str) -> None:
    why = over_budget(config, needs)
    if why:
        raise Unsupported(f"{what} does not fit: {why}")


# ---- elementwise: binary with broadcasting, activations -------------------------------------------

def _elementwise_rows(desc: OpDesc, dtypes: Sequence[DType], double_buffer: bool):
    """(bytes per ACT row, bytes per ACC row) of one tile row (d3 elements) with every buffer."""
    shape4 = pad4(desc.output.shape)
    consts = [d == F32 for d in dtypes]  # fp32 operands (constants, float32 inputs) go to ACC
    wide = desc.kind == "binary" and any(consts)
    if any(consts) and not wide:
        raise Unsupported(f"{desc.kind} cannot read a float32 operand")
    row = sram_bytes((1, 1, 1, shape4[3]), F16)
    row32 = sram_bytes((1, 1, 1, shape4[3]), F32)
    # the inputs, the output, and the activation's temporary (x * sigmoid(x), hard swish, leaky relu)
    n_act = sum(not c for c in consts) + 1 + (1 if desc.activation and desc.activation.temporary else 0)
    slots = 2 if double_buffer else 1
    # PReLU: its slope is one of the operands (a per-channel constant in ACC, counted as a whole row),
    # and slope * min(x, 0) needs one fp32 temporary row besides
    tmp32 = row32 if desc.kind == "binary" and desc.attrs.get("op") == "prelu" else 0
    if desc.kind == "binary" and desc.attrs.get("op") == "div":
        # a * reciprocal(b): the reciprocal tile beside the operands (fp32 in ACC when wide, else fp16 in ACT)
        if wide:
            tmp32 = row32
        else:
            return row * (n_act * slots + 1), 0
    if desc.kind == "activation" and desc.activation is not None and desc.activation.wide:
        # input and output slots in ACT; the fp32 tile (and the hard swish's fp32 temporary) in ACC
        return row * 2 * slots, row32 * (2 if desc.activation.temporary else 1)
    if desc.kind == "activation" and desc.activation is not None and desc.activation.kind == "sqrt":
        return row * n_act * slots, row32  # rsqrt(x) in fp32 on ACC, then its reciprocal rounded into ACT
    return row * n_act * slots, (row32 * (len(dtypes) + 1) * slots + tmp32 if wide else 0)


def elementwise_needs(desc: OpDesc, plan: RowPlan, dtypes: Sequence[DType]) -> Dict[Space, int]:
    act_row, acc_row = _elementwise_rows(desc, dtypes, plan.double_buffer)
    rows = plan.t1 * plan.t2
    out = {Space.ACT: RESERVE + rows * act_row}
    if acc_row:
        out[Space.ACC] = RESERVE + rows * acc_row
    return out


def elementwise(desc: OpDesc, config: NPUConfig, double_buffer: bool, dtypes: Sequence[DType]) -> RowPlan:
    """Rows of dims 1 and 2 of the 4-D view, dim 3 whole: as many as fit, dim 2 first."""
    _, d1, d2, d3 = pad4(desc.output.shape)
    act_row, acc_row = _elementwise_rows(desc, dtypes, double_buffer)
    budget = (config.act_sram_bytes - RESERVE) // max(act_row, 1)
    if acc_row:
        budget = min(budget, (config.acc_sram_bytes - RESERVE) // acc_row)
    if budget < 1:
        raise Unsupported(f"one row of {d3} elements does not fit ACT with double buffering")
    t2 = min(d2, budget)
    t1 = max(1, min(d1, budget // t2)) if t2 == d2 else 1
    plan = RowPlan(t1, t2, double_buffer)
    _check(config, elementwise_needs(desc, plan, dtypes), "the elementwise tile")
    return plan


# ---- softmax ------------------------------------------------------------------------------------

def softmax_needs(desc: OpDesc, plan: SoftmaxPlan, wide: bool) -> Dict[Space, int]:
    length = desc.inputs[0].shape[-1]
    row = sram_bytes((1, 1, 1, length), F16)
    row32 = sram_bytes((1, 1, 1, length), F32) * 2 if wide else 0
    return {Space.ACT: SCALARS + plan.rows * (row * 4 + 64), Space.ACC: plan.rows * (64 + row32)}


def softmax(desc: OpDesc, config: NPUConfig, double_buffer: bool, wide: bool) -> SoftmaxPlan:
    """Whole rows (the last axis), as many per tile as fit; `wide`: a float32 input kept fp32 in ACC."""
    shape = desc.inputs[0].shape
    rank = len(shape)
    if desc.attrs["axis"] % rank != rank - 1:
        raise Unsupported("softmax over an axis other than the last")
    rows, length = math.prod(shape[:-1]), shape[-1]
    row = sram_bytes((1, 1, 1, length), F16)
    row32 = sram_bytes((1, 1, 1, length), F32) * 2 if wide else 0
    budget = min((config.act_sram_bytes - SCALARS) // (row * 4 + 64), config.acc_sram_bytes // (64 + row32))
    if budget < 1:
        raise Unsupported(f"a softmax row of {length} does not fit ACT")
    plan = SoftmaxPlan(min(rows, budget), double_buffer)
    _check(config, softmax_needs(desc, plan, wide), "the softmax tile")
    return plan


# ---- mean ---------------------------------------------------------------------------------------

def _mean_row(desc: OpDesc) -> int:
    _, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    return sram_bytes((1, 1, red, inner), F16) if inner > 1 else sram_bytes((1, 1, 1, red), F16)


def mean_needs(desc: OpDesc, plan: MeanPlan) -> Dict[Space, int]:
    """Every buffer lower_mean allocates: two input slots per outer row, the output slots (64 bytes
    per outer row counted, more where the output row is wider), the fp32 sums and 1/count in ACC."""
    _, _, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    o_shape = (1, plan.outer, 1, inner) if inner > 1 else (1, 1, plan.outer, 1)
    outs = 2 * sram_bytes(o_shape, F16)
    return {Space.ACT: SCALARS + plan.outer * (2 * _mean_row(desc) + 64) + max(0, outs - 64 * plan.outer),
            Space.ACC: sram_bytes(o_shape, F32) + sram_bytes((1, 1, 1, 1), F32)}


def mean(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> MeanPlan:
    """Whole reductions (one chunk), as many outer rows per tile as fit."""
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    budget = (config.act_sram_bytes - SCALARS) // (2 * _mean_row(desc) + 64)
    if budget < 1:
        raise Unsupported(f"a mean over {red} x {inner} elements does not fit ACT")
    plan = MeanPlan(min(outer, budget), red, inner, double_buffer)
    while plan.outer > 1 and over_budget(config, mean_needs(desc, plan)):  # wide output rows, the ACC sums
        plan = MeanPlan(plan.outer - 1, red, inner, double_buffer)
    _check(config, mean_needs(desc, plan), "the mean tile")
    return plan


# ---- sum / max / min over adjacent axes -----------------------------------------------------------

def reduce_shapes(desc: OpDesc, to: int, ti: int = 0, rr: int = 0):
    """(input tile, output tile, reduced SRAM axis) of `to` outer rows x `ti` inner columns (0: all)
    and `rr` reduced elements per chunk (0: all) of a reduction seen as (outer, red, inner): the
    reduced axis is SRAM's w axis when inner > 1, else its channel axis."""
    _, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    rr = rr or red
    if inner > 1:
        ti = ti or inner
        return (1, to, rr, ti), (1, to, 1, ti), 2
    return (1, 1, to, rr), (1, 1, to, 1), 3


def reduce_needs(desc: OpDesc, plan: MeanPlan) -> Dict[Space, int]:
    """Every buffer lower_reduce allocates: input and output slots (two each with double buffering);
    sum: its fp32 accumulator in ACC; min: the -1 scalar; in chunks: the partial result (and for max /
    min the running result in ACT)."""
    n = 2 if plan.double_buffer else 1
    _, red, _ = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    in_shape, o_shape, _ = reduce_shapes(desc, plan.outer, plan.inner, plan.chunk)
    op = desc.attrs["op"]
    chunked = plan.chunk < red
    act = n * (sram_bytes(in_shape, F16) + sram_bytes(o_shape, F16)) + (sram_bytes((1, 1, 1, 1), F16)
                                                                       if op == "min" else 0)
    if chunked and op != "sum":
        act += 2 * sram_bytes(o_shape, F16)
    out = {Space.ACT: act}
    if op == "sum":
        out[Space.ACC] = sram_bytes(o_shape, F32) * (2 if chunked else 1)
    return out


def _largest(fits, hi: int) -> int:
    """The largest n in 1..hi with fits(n) (fits is monotone), 0 when none."""
    if not fits(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def reduce(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> MeanPlan:
    """Whole reductions, as many outer rows per tile as fit; when one outer row does not, a tile of
    inner columns; when one column does not, the reduction in chunks (partial results combined)."""
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])

    def fits(to, rr, ti):
        return not over_budget(config, reduce_needs(desc, MeanPlan(to, rr, ti, double_buffer)))

    to = _largest(lambda t: fits(t, red, inner), outer)
    if to:
        plan = MeanPlan(to, red, inner, double_buffer)
    else:
        ti = _largest(lambda t: fits(1, red, t), inner) if inner > 1 else 0
        if ti:
            plan = MeanPlan(1, red, ti, double_buffer)
        else:
            rr = _largest(lambda r: fits(1, r, 1), red - 1)
            if not rr:
                raise Unsupported(f"a {desc.attrs['op']} over {red} x {inner} elements does not fit even one "
                                  f"element per chunk")
            plan = MeanPlan(1, rr, 1, double_buffer)
    _check(config, reduce_needs(desc, plan), f"the {desc.attrs['op']} tile")
    return plan


# ---- layer norm over the last axis --------------------------------------------------------------

def layer_norm_needs(desc: OpDesc, plan: SoftmaxPlan) -> Dict[Space, int]:
    """Every buffer lower_layer_norm allocates: ACT input and output slots; ACC the fp32 rows (x - mean,
    its square), the per-row mean and 1/std, gamma, beta and the scalars 1/n and epsilon."""
    n = 2 if plan.double_buffer else 1
    length, tr = desc.inputs[0].shape[-1], plan.rows
    act = 2 * n * sram_bytes((1, 1, tr, length), F16)
    acc = (2 * sram_bytes((1, 1, tr, length), F32) + 2 * sram_bytes((1, 1, tr, 1), F32)
           + 2 * sram_bytes((1, 1, 1, length), F32) + 2 * sram_bytes((1, 1, 1, 1), F32))
    return {Space.ACT: act, Space.ACC: acc}


def layer_norm(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> SoftmaxPlan:
    """Whole rows (the last axis), as many per tile as fit ACT and ACC."""
    shape = desc.inputs[0].shape
    rows, length = math.prod(shape[:-1]), shape[-1]
    if over_budget(config, layer_norm_needs(desc, SoftmaxPlan(1, double_buffer))):
        raise Unsupported(f"a layer norm row of {length} does not fit: "
                          f"{over_budget(config, layer_norm_needs(desc, SoftmaxPlan(1, double_buffer)))}")
    lo, hi = 1, rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if over_budget(config, layer_norm_needs(desc, SoftmaxPlan(mid, double_buffer))):
            hi = mid - 1
        else:
            lo = mid
    plan = SoftmaxPlan(lo, double_buffer)
    _check(config, layer_norm_needs(desc, plan), "the layer norm tile")
    return plan


# ---- concat -------------------------------------------------------------------------------------

def concat_needs(desc: OpDesc, plan: ConcatPlan) -> Dict[Space, int]:
    n = 2 if plan.double_buffer else 1
    return {Space.ACT: 2 * n * sram_bytes(plan.slot, F16)}


def concat(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> ConcatPlan:
    """Each input copied in row tiles through one pair of slots (copy in, copy out)."""
    o4 = pad4(desc.output.shape)
    row = sram_bytes((1, 1, 1, o4[3]), F16)
    budget = config.act_sram_bytes // (4 * row)
    if budget < 1:
        raise Unsupported(f"one row of {o4[3]} elements does not fit ACT with double buffering")
    # one slot shape serves every input's tiles: rows of dim 2 up to the longest input's (or the budget),
    # and as many rows of dim 1 as fit beside them (a slot as tall as the output's dim 2 did not fit
    # when the concat runs along dim 2: 2 x 32 + 2 rows of 32 x 32 channels overflowed ACT)
    rows2 = min(max(pad4(t.shape)[2] for t in desc.inputs), budget)
    tiles = []
    for t in desc.inputs:
        _, d1, d2, _ = pad4(t.shape)
        t2 = min(d2, rows2)
        t1 = max(1, min(d1, budget // rows2)) if t2 == d2 else 1
        tiles.append((t1, t2))
    slot = (1, max(t[0] for t in tiles), rows2, o4[3])
    plan = ConcatPlan(tuple(tiles), slot, double_buffer)
    _check(config, concat_needs(desc, plan), "the concat slots")
    return plan


# ---- pooling ------------------------------------------------------------------------------------

def pool_tile_bytes(desc: OpDesc, rows: int, channels: int, dtype: DType) -> int:
    """One input tile (the rows its windows read) and one output tile."""
    h, w, _, _, ow, kh, sh = pool_geometry(desc)
    return sram_bytes((1, min(h, (rows - 1) * sh + kh), w, channels), dtype) + sram_bytes((1, rows, ow, channels), dtype)


def pool_needs(desc: OpDesc, plan: PoolPlan) -> Dict[Space, int]:
    return {Space.ACT: 2 * pool_tile_bytes(desc, plan.rows, plan.channels, F16)}


def pool(desc: OpDesc, config: NPUConfig, double_buffer: bool) -> PoolPlan:
    """All channels if one window row fits (else halved down to 16), then as many output rows as fit."""
    h, w, c, oh, ow, kh, sh = pool_geometry(desc)
    cap = config.act_sram_bytes

    def need(rows: int, tc: int) -> int:  # double-buffered input and output tiles
        return 2 * pool_tile_bytes(desc, rows, tc, F16)

    tc = c
    while need(1, tc) > cap:
        if tc <= 16:
            raise Unsupported(f"one pooling window row ({w} x {tc}) does not fit ACT")
        tc = max(16, (tc + 1) // 2)
    rows = 1
    while rows < oh and need(rows + 1, tc) <= cap:
        rows += 1
    plan = PoolPlan(rows, tc, double_buffer)
    _check(config, pool_needs(desc, plan), "the pooling tile")
    return plan


def reduction_illegal(desc: OpDesc, plan: MeanPlan) -> str | None:
    """Why a float mean's or reduction's plan is not one the lowering takes (a float mean reduces
    whole rows; a partial row or a chunked reduction tiles one outer row at a time, a chunked
    reduction one inner column), None if it is (and for other kinds)."""
    if desc.kind not in ("mean", "reduce"):
        return None
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    to, rr, ti = plan.outer, plan.chunk, plan.inner
    if not (1 <= rr <= red and 1 <= ti <= inner and 1 <= to <= outer):
        return f"a {desc.kind} plan {plan.to_dict()} is outside {outer} x {red} x {inner}"
    if desc.kind == "mean" and (rr, ti) != (red, inner):
        return f"a float mean reduces whole rows: plan {plan.to_dict()} for {red} x {inner}"
    if (ti < inner or rr < red) and to != 1 or rr < red and ti != 1:
        return f"a {desc.kind} plan {plan.to_dict()}: a partial row or a chunked reduction takes one outer row per tile"
    return None


# ---- the default: the estimate's argmin over even splits -----------------------------------------

NEAR_TIE = 0.01  # estimates within 1% of the least count as ties, decided towards fewer tiles
SPLITS = 8  # tile counts tried per axis: the fewest that fit and the next SPLITS - 1
MAX_TILES = 64  # and no more tiles in all than this (or twice the fewest)


def _wide_input(dtypes: Sequence[DType]) -> bool:
    return bool(dtypes) and dtypes[0] == F32


_NEEDS: dict[str, Callable] = {
    "binary": elementwise_needs,
    "activation": elementwise_needs,
    "layout": layout_tiles.layout_needs,
    "softmax": lambda d, p, dt: softmax_needs(d, p, _wide_input(dt)),
    "layer_norm": lambda d, p, dt: layer_norm_needs(d, p),
    "mean": lambda d, p, dt: mean_needs(d, p),
    "reduce": lambda d, p, dt: reduce_needs(d, p),
    "pool": lambda d, p, dt: pool_needs(d, p),
}
_LARGEST: dict[str, Callable] = {
    "binary": elementwise,
    "activation": elementwise,
    "layout": layout_tiles.layout,
    "softmax": lambda d, c, db, dt: softmax(d, c, db, _wide_input(dt)),
    "layer_norm": lambda d, c, db, dt: layer_norm(d, c, db),
    "mean": lambda d, c, db, dt: mean(d, c, db),
    "reduce": lambda d, c, db, dt: reduce(d, c, db),
    "pool": lambda d, c, db, dt: pool(d, c, db),
}

def largest(desc: OpDesc, config: NPUConfig, double_buffer: bool, dtypes: Sequence[DType]) -> TilePlan:
    """The largest tiles that fit (the rule before the estimate)."""
    return _LARGEST[desc.kind](desc, config, double_buffer, dtypes)


def _even(total: int, cap: int, n: int = SPLITS) -> list[int]:
    """Tile extents splitting `total` into the fewest tiles of at most `cap`, and into up to n - 1
    more, each as even as ceil allows; largest first."""
    k0 = -(-total // max(1, min(cap, total)))
    return sorted({-(-total // k) for k in range(k0, min(total, k0 + n - 1) + 1)}, reverse=True)


def _row_candidates(desc: OpDesc, plan: RowPlan) -> list[RowPlan]:
    _, d1, d2, _ = layout_geom(desc).out_shape if desc.kind == "layout" else pad4(desc.output.shape)
    rows = plan.t1 * plan.t2  # the most rows of a fitting tile
    out = []
    for t2 in _even(d2, plan.t2):
        out += [RowPlan(t1, t2, plan.double_buffer) for t1 in _even(d1, max(1, rows // t2))]
    return out


def _pool_candidates(desc: OpDesc, config: NPUConfig, plan: PoolPlan) -> list[PoolPlan]:
    _, _, c, oh, _, _, _ = pool_geometry(desc)
    chans = {plan.channels} | {min(c, (-(-c // k) + 15) // 16 * 16) for k in range(2, 9)}
    out = []
    for tc in sorted((t for t in chans if t <= plan.channels), reverse=True):
        rows = _largest(lambda r, tc=tc: not over_budget(config, pool_needs(desc, PoolPlan(r, tc, plan.double_buffer))),
                        oh)
        out += [PoolPlan(r, tc, plan.double_buffer) for r in _even(oh, rows)] if rows else []
    return out


def candidates(desc: OpDesc, config: NPUConfig, double_buffer: bool, dtypes: Sequence[DType]) -> list[TilePlan]:
    """The plans `default` chooses from: `largest`, and even splits of the axes it tiles (rows of
    dims 1 and 2; rows; outer rows or, when those are single, inner columns -- a mean's or a
    reduction's chunk never changes, it decides the fp32 summation order; pooling channels in
    multiples of 16, and output rows). Those that fit, with at most MAX_TILES tiles (or twice the
    fewest); `largest` first."""
    big = largest(desc, config, double_buffer, dtypes)
    if isinstance(big, RowPlan):
        cands = _row_candidates(desc, big)
    elif isinstance(big, SoftmaxPlan):
        rows = math.prod(desc.inputs[0].shape[:-1])
        cands = [SoftmaxPlan(r, double_buffer) for r in _even(rows, big.rows, 2 * SPLITS)]
    elif isinstance(big, MeanPlan):
        outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
        if big.chunk < red:
            cands = []
        elif big.inner == inner:
            cands = [MeanPlan(o, big.chunk, inner, double_buffer) for o in _even(outer, big.outer, 2 * SPLITS)]
        else:
            cands = [MeanPlan(1, big.chunk, i, double_buffer) for i in _even(inner, big.inner, 2 * SPLITS)]
    else:
        cands = _pool_candidates(desc, config, big)
    needs = _NEEDS[desc.kind]
    cap = max(MAX_TILES, 2 * vector_cost.tiles(desc, big))
    out = [big]
    for p in cands:
        if p != big and vector_cost.tiles(desc, p) <= cap and not over_budget(config, needs(desc, p, dtypes)):
            out.append(p)
    return out


def default(desc: OpDesc, config: NPUConfig, double_buffer: bool, dtypes: Sequence[DType],
            near_tie: float = NEAR_TIE) -> TilePlan:
    """The candidate of least estimated cycles (vector_cost.estimate; no lowering). Candidates
    within `near_tie` (relative) of the least are ties, decided towards fewer tiles, then the lesser
    estimate; never one estimated slower than `largest`."""
    scored = [(vector_cost.estimate(desc, p, config, dtypes), p) for p in candidates(desc, config, double_buffer,
                                                                                      dtypes)]
    cap = min(min(e for e, _ in scored) * (1 + near_tie), scored[0][0])  # scored[0]: the largest plan
    return min((((vector_cost.tiles(desc, p), e), p) for e, p in scored if e <= cap), key=lambda t: t[0])[1]
