"""Tile plans: the schedule parameters of each NPU operator, and the SRAM budget they must meet.

A plan is what the auto-tuner searches and what the lowering obeys. `default_plan` picks the
largest tiles that fit (fewest DMA descriptors and vector issues); `check_fit` says why a plan
does not fit. Sizes follow the SRAM layout of docs/ISA.md (rows padded to 16 bytes) and the
double buffering of codegen/pipeline.py (two input, two weight and two output slots).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Tuple

from ..config import NPUConfig
from ..isa import DType, Space
from ..relay_ext.ops import OpDesc, Unsupported
from .memory import sram_bytes

F16, F32 = DType.FP16, DType.FP32


@dataclasses.dataclass(frozen=True)
class Plan:
    """Tile sizes of one operator. `rows`: output rows (or matrix rows) per tile; `cols`: output
    channels (or matrix columns) per tile; `depth`: input channels (or K) per accumulation chunk."""

    rows: int
    cols: int
    depth: int

    def to_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)


# ---- geometry of each operator kind --------------------------------------------------------------

LAYOUT_AXES = {"NCHW": (0, 2, 3, 1), "NHWC": (0, 1, 2, 3)}  # logical axes of SRAM (n, h, w, c)


@dataclasses.dataclass(frozen=True)
class ConvGeom:
    n: int
    h: int
    w: int
    cin: int
    cout: int
    oh: int
    ow: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad: Tuple[int, int, int, int]  # top, left, bottom, right
    groups: int

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin

    @property
    def cg(self) -> int:  # input channels per group
        return self.cin // self.groups

    @property
    def ng(self) -> int:  # output channels per group
        return self.cout // self.groups

    def in_rows(self, rows: int) -> int:
        return (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1

    def tile_in_channels(self, cols: int, depth: int) -> int:
        if self.depthwise:
            return max(1, cols * self.cin // self.cout)
        if self.groups > 1:
            return (cols // self.ng) * self.cg
        return depth


def kernel_hw(desc: OpDesc) -> Tuple[int, int]:
    w = desc.inputs[1].shape
    layout = desc.attrs["kernel_layout"]
    return w[layout.index("H")], w[layout.index("W")]


def conv_geom(desc: OpDesc) -> ConvGeom:
    layout = desc.attrs["data_layout"]
    if layout not in LAYOUT_AXES:
        raise Unsupported(f"data layout {layout} (NCHW or NHWC only)")
    ax = LAYOUT_AXES[layout]
    x, o = desc.inputs[0].shape, desc.output.shape
    kh, kw = kernel_hw(desc)
    p = desc.attrs["padding"]
    pad = (p[0], p[1], p[2], p[3]) if len(p) == 4 else (p[0], p[1], p[0], p[1])
    return ConvGeom(x[ax[0]], x[ax[1]], x[ax[2]], x[ax[3]], o[ax[3]], o[ax[1]], o[ax[2]], kh, kw,
                    *desc.attrs["strides"], *desc.attrs["dilation"], pad, desc.attrs["groups"])


def _mults(total: int, unit: int, small: bool = False) -> List[int]:
    """Candidate tile sizes: multiples of `unit` up to `total`, plus `total` itself (and, with
    `small`, the sizes below `unit` for machines whose SRAMs cannot hold one unit), largest first."""
    cands = {total} | {k * unit for k in range(1, total // unit + 1)}
    if small:
        cands |= {c for c in (8, 4, 2, 1) if c < unit}
    return sorted((c for c in cands if 0 < c <= total), reverse=True)


def _rows_candidates(total: int) -> List[int]:
    cands = {total} | {2**i for i in range(0, int(math.log2(max(total, 1))) + 1)} | {math.ceil(total / k)
                                                                                   for k in range(1, 9)}
    return sorted((c for c in cands if 0 < c <= total), reverse=True)


# ---- SRAM needs ----------------------------------------------------------------------------------

def _table_bytes(plan: Plan, quant: bool) -> int:
    """Integer operators: the per-channel (multiplier, shift) table in ACC, double-buffered."""
    return 2 * sram_bytes((1, 1, 1, 2 * plan.cols), DType.INT32) if quant else 0


def conv_needs(g: ConvGeom, plan: Plan, bias: bool, act_tmp: bool, quant: bool = False) -> Dict[Space, int]:
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


def matmul_needs(k: int, plan: Plan, bias: bool, act_tmp: bool, quant: bool = False) -> Dict[Space, int]:
    in_tile = sram_bytes((1, 1, plan.rows, plan.depth), F16)
    w_tile = sram_bytes((1, 1, plan.depth, plan.cols), F16)
    out_tile = sram_bytes((1, 1, plan.rows, plan.cols), F16)
    acc = sram_bytes((1, 1, plan.rows, plan.cols), F32)
    acc_total = acc * (2 if act_tmp else 1) + (2 * sram_bytes((1, 1, 1, plan.cols), F32) if bias else 0) + 16
    return {Space.ACT: 2 * in_tile + 2 * out_tile, Space.WGT: 2 * w_tile,
            Space.ACC: acc_total + _table_bytes(plan, quant)}


def _fits(config: NPUConfig, needs: Dict[Space, int]) -> bool:
    return all(b <= config.sram_bytes(int(s)) for s, b in needs.items())


def _why(config: NPUConfig, needs: Dict[Space, int]) -> str:
    over = [f"{s.name} needs {b} of {config.sram_bytes(int(s))} bytes" for s, b in needs.items()
            if b > config.sram_bytes(int(s))]
    return "; ".join(over)


def needs_act_tmp(desc: OpDesc) -> bool:
    return desc.activation is not None and desc.activation.kind in ("silu", "leaky_relu", "hard_swish")


def conv_plans(desc: OpDesc, config: NPUConfig) -> Iterable[Plan]:
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
    for depth in depth_cands:
        for cols in col_cands:
            for rows in _rows_candidates(g.oh):
                yield Plan(rows, cols, depth)


def matmul_geom(desc: OpDesc) -> Tuple[int, int, int]:
    """(rows per batch, K, N). A 2-D rhs is shared by all rows of lhs; a batched rhs pairs with lhs
    batch by batch (matmul_batches)."""
    x, w = desc.inputs[0].shape, desc.inputs[1].shape
    rows = math.prod(x[:-1]) if len(w) == 2 else x[-2]
    return rows, x[-1], w[-1]


def matmul_batches(desc: OpDesc) -> int:
    w = desc.inputs[1].shape
    return 1 if len(w) == 2 else math.prod(w[:-2])


def matmul_plans(desc: OpDesc, config: NPUConfig) -> Iterable[Plan]:
    rows, k, n = matmul_geom(desc)
    for depth in _mults(k, 16, small=True):
        for cols in _mults(n, config.mac_cols):
            for r in _rows_candidates(rows):
                yield Plan(r, cols, depth)


def signature(desc: OpDesc, config: NPUConfig) -> tuple:
    """What tiling depends on (shapes, attributes, activation, configuration), not the weight values."""
    act = desc.activation
    return (desc.kind, tuple((t.shape, t.dtype, t.is_const) for t in desc.inputs), desc.output.shape,
            tuple(sorted((k, str(v)) for k, v in desc.attrs.items())),
            None if act is None else (act.kind, act.lo, act.hi, act.alpha), config)


_PLANS: Dict[tuple, Plan] = {}


def _best(plans_by_depth_cols, needs_of, score_of, config: NPUConfig, what: str) -> Plan:
    """Largest fitting rows per (depth, cols) (needs grow with rows), best score; stops at the first
    depth that fits since whole-K tiles beat any re-accumulating ones."""
    best, smallest = None, None
    for depth, cols, rows_cands in plans_by_depth_cols:
        if best is not None and depth < best.depth:
            break
        for rows in rows_cands:
            plan = Plan(rows, cols, depth)
            needs = needs_of(plan)
            smallest = needs
            if _fits(config, needs):
                if best is None or score_of(plan) > score_of(best):
                    best = plan
                break
    if best is None:
        raise Unsupported(f"no {what} tile fits the SRAMs ({_why(config, smallest)} for the smallest tile)")
    return best


def default_plan(desc: OpDesc, config: NPUConfig) -> Plan:
    """The largest tiles that fit, preferring whole K (no re-accumulation), then wide, then tall."""
    key = (signature(desc, config), desc.quant is not None)
    if key in _PLANS:
        return _PLANS[key]
    bias, tmp, quant = len(desc.inputs) > 2, needs_act_tmp(desc), desc.quant is not None
    if desc.kind == "conv2d":
        g = conv_geom(desc)
        groups = {}
        for p in conv_plans(desc, config):
            groups.setdefault((p.depth, p.cols), []).append(p.rows)
        plan = _best([(d, c, rows) for (d, c), rows in groups.items()], lambda p: conv_needs(g, p, bias, tmp, quant),
                     lambda p: (p.depth, p.rows * p.cols * g.ow, p.cols), config, "conv2d")
    elif desc.kind == "matmul":
        rows_total, k, n = matmul_geom(desc)
        groups = {}
        for p in matmul_plans(desc, config):
            groups.setdefault((p.depth, p.cols), []).append(p.rows)
        plan = _best([(d, c, rows) for (d, c), rows in groups.items()], lambda p: matmul_needs(k, p, bias, tmp, quant),
                     lambda p: (p.depth, p.rows * p.cols, p.cols), config, "matmul")
    else:
        raise ValueError(f"{desc.kind} operators have no tile plan (their lowering sizes rows itself)")
    _PLANS[key] = plan
    return plan


def plan_for(desc: OpDesc, config: NPUConfig, override: Optional[Plan] = None) -> Plan:
    return override if override is not None else default_plan(desc, config)
