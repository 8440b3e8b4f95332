"""Tile plans of the MAC operators (conv2d, depthwise, grouped, matmul): candidates, SRAM needs and
the default choice: the plan the analytic estimate (mac_cost.estimate, the performance model's
cycles without lowering) predicts fastest among every legal plan that fits, both loop orders;
ties go to the largest tiles ("largest": the rule before, whole K first, then wide, then tall)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import ConvGeom, conv_geom, matmul_geom
from ..ir.memory import over_budget, sram_bytes
from ..ir.plan import INPUTS_RESIDENT, MAC_ORDERS, WEIGHTS_RESIDENT, MacPlan
from ..isa import DType, Space
from . import mac_cost

F16, F32 = DType.FP16, DType.FP32


def _mults(total: int, unit: int, small: bool = False) -> list[int]:
    """Candidate tile sizes: multiples of `unit` up to `total`, plus `total` itself (and, with
    `small`, the sizes below `unit` for machines whose SRAMs cannot hold one unit), largest first."""
    cands = {total} | {k * unit for k in range(1, total // unit + 1)}
    if small:
        cands |= {c for c in (8, 4, 2, 1) if c < unit}
    return sorted((c for c in cands if 0 < c <= total), reverse=True)


def _rows_candidates(total: int) -> list[int]:
    cands = {total} | {2**i for i in range(int(math.log2(max(total, 1))) + 1)} | {math.ceil(total / k)
                                                                                   for k in range(1, 9)}
    return sorted((c for c in cands if 0 < c <= total), reverse=True)


def _table_bytes(plan: MacPlan, quant: bool) -> int:
    """Integer operators: the per-channel (multiplier, shift) table in ACC, double-buffered."""
    return 2 * sram_bytes((1, 1, 1, 2 * plan.cols), DType.INT32) if quant else 0


def needs_act_tmp(desc: OpDesc) -> bool:
    return desc.activation is not None and desc.activation.kind in ("silu", "leaky_relu", "hard_swish")


def conv_needs(g: ConvGeom, plan: MacPlan, bias: bool, act_tmp: bool, quant: bool = False) -> dict[Space, int]:
    cin_t = g.tile_in_channels(plan.cols, plan.depth)
    iwp = g.w + g.pad[1] + g.pad[3]
    in_tile = sram_bytes((1, g.in_rows(plan.rows), iwp, cin_t), F16)
    cg_t = 1 if g.depthwise else (g.cg if g.groups > 1 else plan.depth)
    w_tile = sram_bytes((g.kh, g.kw, cg_t, plan.cols), F16)
    out_tile = sram_bytes((1, plan.rows, g.ow, plan.cols), F16)
    acc = sram_bytes((1, plan.rows, g.ow, plan.cols), F32)
    acc_total = acc * (2 if act_tmp else 1) + (2 * sram_bytes((1, 1, 1, plan.cols), F32) if bias else 0) + 16
    return {Space.ACT: 2 * in_tile + 2 * out_tile, Space.WGT: 2 * w_tile,
            Space.ACC: acc_total + _table_bytes(plan, quant)}


def matmul_needs(k: int, plan: MacPlan, bias: bool, act_tmp: bool, quant: bool = False) -> dict[Space, int]:
    in_tile = sram_bytes((1, 1, plan.rows, plan.depth), F16)
    w_tile = sram_bytes((1, 1, plan.depth, plan.cols), F16)
    out_tile = sram_bytes((1, 1, plan.rows, plan.cols), F16)
    acc = sram_bytes((1, 1, plan.rows, plan.cols), F32)
    acc_total = acc * (2 if act_tmp else 1) + (2 * sram_bytes((1, 1, 1, plan.cols), F32) if bias else 0) + 16
    return {Space.ACT: 2 * in_tile + 2 * out_tile, Space.WGT: 2 * w_tile,
            Space.ACC: acc_total + _table_bytes(plan, quant)}


def needs(desc: OpDesc, plan: MacPlan, config: NPUConfig) -> dict[Space, int]:
    """SRAM bytes the plan takes per SRAM (double-buffered input, weight and output tiles)."""
    bias, tmp, quant = len(desc.inputs) > 2, needs_act_tmp(desc), desc.integer
    if desc.kind == "conv2d":
        return conv_needs(conv_geom(desc), plan, bias, tmp, quant)
    return matmul_needs(matmul_geom(desc)[1], plan, bias, tmp, quant)


def _axes(desc: OpDesc, config: NPUConfig):
    """(depth, cols, rows) candidate lists of the plan space, each largest first."""
    if desc.kind == "conv2d":
        g = conv_geom(desc)
        if g.depthwise:
            unit = config.mac_cols * (g.cout // g.cin)
            col_cands = [c for c in _mults(g.cout, unit) if c % (g.cout // g.cin) == 0]
            depth_cands = [1]
        elif g.groups > 1:
            col_cands = [c for c in _mults(g.cout, g.ng) if c % g.ng == 0]
            depth_cands = [g.cg]
        else:
            col_cands = _mults(g.cout, config.mac_cols)
            depth_cands = _mults(g.cin, 16, small=True)
        return depth_cands, col_cands, _rows_candidates(g.oh)
    rows, k, n = matmul_geom(desc)
    return _mults(k, 16, small=True), _mults(n, config.mac_cols), _rows_candidates(rows)


def candidates(desc: OpDesc, config: NPUConfig, double_buffer: bool = True,
               orders: Iterable[str] = (WEIGHTS_RESIDENT,)) -> Iterable[MacPlan]:
    """Every legal plan (the search space) with one of `orders`, largest depth first, then widest,
    then tallest (the default plan considers the weights-resident order only)."""
    orders = [o for o in orders if o == WEIGHTS_RESIDENT or desc.kind == "matmul" or conv_geom(desc).groups == 1]
    depth_cands, col_cands, row_cands = _axes(desc, config)
    for order in orders:
        for depth in depth_cands:
            for cols in col_cands:
                for rows in row_cands:
                    yield MacPlan(rows, cols, depth, double_buffer, order)


def illegal(desc: OpDesc, plan: MacPlan) -> str | None:
    """Why a plan is not a tiling of this operator (None: it is). Any tile sizes within the operator
    are legal (edge tiles are clipped); grouped convolutions keep whole groups per tile."""
    if plan.order not in MAC_ORDERS:
        return f"loop order {plan.order!r} (one of {', '.join(MAC_ORDERS)})"
    if desc.kind == "conv2d":
        g = conv_geom(desc)
        rows, cols, k = g.oh, g.cout, g.cg
        if plan.order != WEIGHTS_RESIDENT and g.groups > 1:
            return f"the {plan.order} loop order needs a dense convolution"
        if g.depthwise:
            mult = g.cout // g.cin
            if plan.depth != 1 or plan.cols % mult:
                return f"a depthwise tile takes depth 1 and a multiple of {mult} channels"
        elif g.groups > 1 and (plan.depth != g.cg or plan.cols % g.ng):
            return f"a grouped tile takes depth {g.cg} and whole groups of {g.ng} channels"
    else:
        rows, k, cols = matmul_geom(desc)
    for name, v, hi in (("rows", plan.rows, rows), ("cols", plan.cols, cols), ("depth", plan.depth, k)):
        if not 1 <= v <= max(hi, 1):
            return f"{name} {v} outside 1..{hi}"
    return None


def _score(desc: OpDesc):
    """Bigger is "larger": whole K first, then the output elements of a tile, then wide."""
    ow = conv_geom(desc).ow if desc.kind == "conv2d" else 1
    return lambda p: (p.depth, p.rows * p.cols * ow, p.cols)


def largest(desc: OpDesc, config: NPUConfig, double_buffer: bool = True) -> MacPlan:
    """The largest tiles that fit, preferring whole K (no re-accumulation), then wide, then tall:
    per (depth, cols) the tallest fitting rows (needs grow with rows), the best score; stops at the
    first depth that fits since whole-K tiles beat any re-accumulating ones (the default before the
    estimate chose it; still the tie-break)."""
    score = _score(desc)
    # walks candidates() in its order without building it: per (depth, cols) the first (tallest) rows
    # that fit; stops at the first depth that fits
    depth_cands, col_cands, row_cands = _axes(desc, config)
    best, smallest = None, None
    for depth in depth_cands:
        if best is not None and depth < best.depth:
            break
        for cols in col_cands:
            for rows in row_cands:
                plan = MacPlan(rows, cols, depth, double_buffer, WEIGHTS_RESIDENT)
                smallest = needs(desc, plan, config)
                if over_budget(config, smallest) is None:
                    if best is None or score(plan) > score(best):
                        best = plan
                    break
    if best is None:
        raise Unsupported(f"no {desc.kind} tile fits the SRAMs ({over_budget(config, smallest)} for the smallest tile)")
    return best


def _balanced(cands: list[int], total: int) -> list[int]:
    """Of the candidates (largest first) giving the same number of tiles of `total`, the smallest:
    the same tiles, evenly filled, in the least SRAM (MiniLM's 1536-wide matmuls: 96 column sizes,
    21 tile counts)."""
    return [c for i, c in enumerate(cands)
            if i + 1 == len(cands) or math.ceil(total / cands[i + 1]) > math.ceil(total / c)]


def _fitting_axes(desc: OpDesc, config: NPUConfig, double_buffer: bool, balanced: bool = False) -> list:
    """(depth, cols, rows that fit) of every (depth, cols): the rows from the tallest that fits down
    (SRAM needs grow with rows, found by bisection, and do not depend on the loop order). With
    `balanced`, only the evenly filled depth and column sizes (_balanced)."""
    depth_cands, col_cands, row_cands = _axes(desc, config)
    if balanced:
        if desc.kind == "conv2d":
            g = conv_geom(desc)
            k_total, n_total = (g.cin if g.groups == 1 else g.cg), g.cout
        else:
            _, k_total, n_total = matmul_geom(desc)
        depth_cands, col_cands = _balanced(depth_cands, k_total), _balanced(col_cands, n_total)
    out = []
    for depth in depth_cands:
        # widest first: a narrower tile needs no more, so its tallest fitting rows are at most as far
        # down the list as the wider tile's (hi; fits by that monotonicity when nothing above does)
        hi = len(row_cands)
        for cols in col_cands:
            lo = 0
            while lo < hi:
                mid = (lo + hi) // 2
                if over_budget(config, needs(desc, MacPlan(row_cands[mid], cols, depth, double_buffer), config)):
                    lo = mid + 1
                else:
                    hi = mid
            if lo < len(row_cands):
                out.append((depth, cols, row_cands[lo:]))
            hi = lo
    return out


def _orders(desc: OpDesc) -> list:
    dense = desc.kind == "matmul" or conv_geom(desc).groups == 1
    return [WEIGHTS_RESIDENT, INPUTS_RESIDENT] if dense else [WEIGHTS_RESIDENT]


def fitting(desc: OpDesc, config: NPUConfig, double_buffer: bool = True) -> list[MacPlan]:
    """Every candidate (both loop orders where legal) that fits the SRAMs: the space `default` ranks."""
    return [MacPlan(r, cols, depth, double_buffer, o) for depth, cols, rows in _fitting_axes(desc, config, double_buffer)
            for o in _orders(desc) for r in rows]


NEAR_TIE = 0.01  # estimates within 1% of the least count as ties (see default)


def default(desc: OpDesc, config: NPUConfig, double_buffer: bool = True, near_tie: float = NEAR_TIE) -> MacPlan:
    """The fitting plan of least estimated cycles (mac_cost.estimate, the performance model's cycles
    without lowering). Plans within `near_tie` (relative) of the least estimate are ties, decided by
    the fewest tile steps (fewer instructions: a smaller program, a faster compile; the least estimate
    often needs several times the steps of a plan 0.5% slower), then `largest`'s score (whole K, then
    output elements per tile, then columns), weights resident first; near_tie=0: the exact argmin. A
    tie is never estimated slower than the `largest` plan.
    The whole space (every fitting plan, both loop orders where legal) is ranked by a cheap bound
    (mac_cost.bounds, never above the estimate) and estimated in that order until the bound exceeds
    the tie range of the best estimate so far, so no plan is missed."""
    space = _fitting_axes(desc, config, double_buffer, balanced=True)
    if not space:
        return largest(desc, config, double_buffer)  # raises Unsupported with the reason
    layer = mac_cost.layer_of(desc, config)
    ow = conv_geom(desc).ow if desc.kind == "conv2d" else 1
    bounds, dense = mac_cost.bounds, len(_orders(desc)) == 2
    ranked = []  # (bound, rows, cols, depth, order)
    for depth, cols, rows in space:
        for r in rows:
            wr, ir = bounds(layer, r, cols, depth, double_buffer)
            ranked.append((wr, r, cols, depth, WEIGHTS_RESIDENT))
            if dense:
                ranked.append((ir, r, cols, depth, INPUTS_RESIDENT))
    ranked.sort(key=lambda t: t[0])
    est: dict = {}

    def estimate(p: MacPlan) -> int:
        if p not in est:
            est[p] = mac_cost.estimate(desc, p, config, layer)
        return est[p]

    least = None  # the least estimate: estimated in the order of the bound until the bound passes it
    for b, r, cols, depth, o in ranked:
        if least is not None and b > least:
            break
        e = estimate(MacPlan(r, cols, depth, double_buffer, o))
        least = e if least is None else min(least, e)
    # never a plan estimated slower than the largest tiles (the rule before)
    cap = min(least * (1 + near_tie), estimate(largest(desc, config, double_buffer)))
    # the ties in the order that decides them; the first whose estimate is within the cap wins
    ties = []
    for b, r, cols, depth, o in ranked:
        if b > cap:
            break
        p = MacPlan(r, cols, depth, double_buffer, o)
        ties.append((mac_cost.steps(layer, p), -depth, -r * cols * ow, -cols, o != WEIGHTS_RESIDENT, p))
    ties.sort(key=lambda t: t[:-1])
    for t in ties:
        if estimate(t[-1]) <= cap:
            return t[-1]
    raise AssertionError("the plan of the least estimate is within the cap")  # unreachable
