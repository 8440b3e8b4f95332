"""The MetaSchedule design space of a MAC operator: the default schedule's steps (tir_schedules.default)
on the unpadded workload, with the plan's tile sizes sampled.

The tile sizes (`rows`, `cols`, `depth`) are `sample_categorical` decisions over the legal candidates
of the tiling stage (tiling.mac.candidates); the splits are `disable_predication=True`, so the loops
cover whole tiles exactly as the padded kernel of the compile path does. Structural choices are
separate design spaces, one per (loop order, K whole or chunked), since a Python `if` on a sampled
value is not replayed: the order decides the loop nest, and whether K is one chunk decides where the
weight tile is cached.

Float sums keep their order. The MAC array adds a convolution's products into fp32 in (ky, kx, ci)
order within an instruction, so splitting Cin into K chunks reorders the sum of a multi-tap float
convolution (a 1x1 convolution or a matmul adds in k order either way, and int32 sums are exact).
Unless `reorder_sums`, the space of such an operator holds only the default plan's chunking: tuning
then changes cycles and never output bytes. Tensorizing is not part of the trace (a database whose traces tensorize onto
shape-specific intrinsics does not open in a fresh process); `tensorize` does it for a concrete plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tvm import s_tir

from ..config import NPUConfig
from ..ir.desc import OpDesc
from ..ir.geometry import conv_geom, matmul_geom
from ..ir.plan import INPUTS_RESIDENT, MAC_ORDERS, WEIGHTS_RESIDENT, MacPlan
from ..options import CompileOptions
from ..tiling import plan as tile_plan
from ..tiling import mac as mac_tiling
from ..tir_schedules.default import intrinsic, tile_loops
from ..tir_schedules.kernels import Kernel
from .records import ORDER_KEY, PLAN_KEYS, mac_block


@dataclasses.dataclass(frozen=True)
class Structure:
    """One design space: the loop order and whether K is one chunk (depth = K) or several."""

    order: str
    chunked: bool

    @property
    def name(self) -> str:
        return f"{self.order}{'_kchunks' if self.chunked else ''}"


@dataclasses.dataclass(frozen=True)
class Space:
    """The candidate values of each decision (largest first) and the design spaces of an operator."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    depth: tuple[int, ...]  # every legal depth; K itself is the whole-K space's only value
    k: int  # the reduction extent (input channels per group, or K)
    dense: bool  # depth is a decision (dense convolutions and matmuls)
    structures: tuple[Structure, ...]

    def depths(self, s: Structure) -> tuple[int, ...]:
        return tuple(d for d in self.depth if d < self.k) if s.chunked else (self.k,)

    def size(self) -> int:
        """Plans in the space (before the SRAM budget): the exhaustive trial count's upper bound."""
        return sum(len(self.rows) * len(self.cols) * len(self.depths(s)) for s in self.structures)

    def structure_of(self, plan: MacPlan) -> Structure:
        return Structure(plan.order, self.dense and plan.depth < self.k)


def sums_reorder(desc: OpDesc) -> bool:
    """Whether the K chunking changes the order of the operator's sums: a float dense convolution
    with more than one tap (see the module's docstring)."""
    if desc.integer or desc.kind != "conv2d":
        return False
    g = conv_geom(desc)
    return g.groups == 1 and g.kh * g.kw > 1


def space_of(desc: OpDesc, config: NPUConfig, double_buffer: bool = True, reorder_sums: bool = False) -> Space:
    """The operator's design space; `reorder_sums=False` keeps the default plan's K chunking where
    the chunking decides the order of float sums (the output bytes then never change)."""
    cands = list(mac_tiling.candidates(desc, config, double_buffer, MAC_ORDERS))
    rows = tuple(sorted({p.rows for p in cands}, reverse=True))
    cols = tuple(sorted({p.cols for p in cands}, reverse=True))
    depth = tuple(sorted({p.depth for p in cands}, reverse=True))
    orders = tuple(sorted({p.order for p in cands}, key=MAC_ORDERS.index))
    if desc.kind == "conv2d":
        g = conv_geom(desc)
        dense, k = g.groups == 1, (g.cin if g.groups == 1 else depth[0])
    else:
        dense, k = True, matmul_geom(desc)[1]
    whole = True  # the whole-K structures
    if dense and not reorder_sums and sums_reorder(desc):
        default = tile_plan(desc, config, CompileOptions(double_buffer=double_buffer))
        if isinstance(default, MacPlan):
            depth, whole = (default.depth,), default.depth >= k
    structures = [Structure(o, False) for o in orders] if whole else []
    if dense and any(d < k for d in depth):
        structures += [Structure(o, True) for o in orders]
    return Space(rows, cols, depth, k, dense, tuple(structures))


def _uniform(n: int) -> list[float]:
    return [1.0 / n] * n


TILE_PRIOR = 0.7  # rows and cols candidates (largest first) are sampled with weights TILE_PRIOR ** index


def _larger_first(n: int) -> list[float]:
    w = [TILE_PRIOR ** i for i in range(n)]
    return [x / sum(w) for x in w]


def apply_plan(sch: s_tir.Schedule, kernel: Kernel, structure: Structure, rows, cols, depth,
               double_buffer: bool = True) -> None:
    """tir_schedules.default's steps 1-5 (default.tile_loops) on the unpadded kernel; `rows`, `cols`,
    `depth` are ints or sampled ExprRVs, recorded as annotations of the `mac` block
    (records.plan_of_schedule)."""
    mac = sch.get_sblock("mac")  # (the update block once tile_loops splits the zeroing off)
    tile_loops(sch, kernel, rows, cols, depth, structure.order == INPUTS_RESIDENT, not structure.chunked,
               double_buffer, disable_predication=True)
    for key, value in zip(PLAN_KEYS, (rows, cols, depth)):
        sch.annotate(mac, key, value)
    sch.annotate(mac, ORDER_KEY, structure.order)


def sample_plan(sch: s_tir.Schedule, kernel: Kernel, space: Space, structure: Structure,
                plan: MacPlan | None = None, double_buffer: bool = True) -> None:
    """Samples the tile sizes of `structure` (with `plan`: decided as that plan) and applies them."""
    values = []
    for name, cands in (("rows", space.rows), ("cols", space.cols), ("depth", space.depths(structure))):
        if len(cands) == 1:
            values.append(cands[0])
            continue
        pick = None if plan is None else cands.index(getattr(plan, name))
        probs = _uniform(len(cands)) if name == "depth" else _larger_first(len(cands))
        values.append(sch.sample_categorical(list(cands), probs, decision=pick))
    apply_plan(sch, kernel, structure, *values, double_buffer=double_buffer)


def design_spaces(workload_mod, kernel: Kernel, space: Space, double_buffer: bool = True) -> list[s_tir.Schedule]:
    """One schedule per structure (ScheduleFn returns them all: each is a design space)."""
    out = []
    for s in space.structures:
        sch = s_tir.Schedule(workload_mod)
        sample_plan(sch, kernel, space, s, None, double_buffer)
        out.append(sch)
    return out


def schedule_of_plan(workload_mod, kernel: Kernel, space: Space, plan: MacPlan) -> s_tir.Schedule:
    """The design-space schedule whose decisions are `plan` (the default plan's record)."""
    sch = s_tir.Schedule(workload_mod)
    sample_plan(sch, kernel, space, space.structure_of(plan), plan, plan.double_buffer)
    return sch


def tensorize(sch: s_tir.Schedule, kernel: Kernel, plan: MacPlan) -> None:
    """Step 6 of tir_schedules.default for a concrete plan: the inner tile onto its NPU intrinsic
    (done by the builder and never recorded in a trace)."""
    loops = sch.get_loops(mac_block(sch))
    tile = loops[4] if kernel.kind == "gemm" or (kernel.kind == "conv2d" and not kernel.attrs["ng"]) else loops[3]
    sch.tensorize(tile, intrinsic(kernel, plan.rows, plan.cols, plan.depth))


@dataclasses.dataclass(frozen=True)
class MacSpace:
    """A MAC operator's space with its kernel: the interface the tuner uses for every operator kind
    (vector_space.VectorSpace has the same methods)."""

    kernel: Kernel
    space: Space
    double_buffer: bool = True

    def size(self) -> int:
        return self.space.size()

    def plans(self) -> Sequence[MacPlan]:
        return enumerate_plans(self.space, self.double_buffer)

    def design_spaces(self, mod) -> list[s_tir.Schedule]:
        return design_spaces(mod, self.kernel, self.space, self.double_buffer)

    def schedule_of_plan(self, mod, plan: MacPlan) -> s_tir.Schedule:
        return schedule_of_plan(mod, self.kernel, self.space, plan)


def enumerate_plans(space: Space, double_buffer: bool = True) -> Sequence[MacPlan]:
    """Every plan of the space (before the SRAM budget), for exhaustive search."""
    return [MacPlan(r, c, d, double_buffer, s.order) for s in space.structures for d in space.depths(s)
            for c in space.cols for r in space.rows]


__all__ = [
    "WEIGHTS_RESIDENT",
    "MacSpace",
    "Space",
    "Structure",
    "apply_plan",
    "design_spaces",
    "enumerate_plans",
    "sample_plan",
    "schedule_of_plan",
    "space_of",
    "sums_reorder",
    "tensorize",
]
