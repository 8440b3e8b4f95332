"""The MetaSchedule design spaces of the vector-unit operators whose tiles matter: elementwise binaries
and activations and layout operators (RowPlan: rows of dims 1 and 2 per tile), softmax and layer norm
(SoftmaxPlan: rows per tile), mean and sum/max/min reductions (MeanPlan: outer rows and inner
columns per tile; the reduction chunk stays the default's, since it decides the order of fp32 sums).
Pooling is not searched: its PrimFunc is padded to the tile (the tiling stage's default decides).

Their tile size decides how well loads, vector passes and stores overlap (the largest tile that fits
leaves one or two tiles, and nothing to overlap): on MiniLM a (1,12,64,32) transpose takes 7,050
cycles with the largest tile and 4,138 with a quarter of it.

The workload is the operator's unscheduled PrimFunc (tir_schedules: `*_workload`), which does not depend
on the plan; the design space applies the compile path's own schedule steps (`*_tile`) with the tile
sizes sampled by `sample_categorical` over the values that split the axis into distinct tile counts,
and annotates the `store` block with the plan (`npu.family`, `npu.<field>`). A candidate's walked TIR
is then exactly the compile path's for its plan (the builder checks it), and its program is the
compile path's lowering with the plan as an override. The operands are taken as the memory plan
stores them (ir.memory.storage_dtype), as the builder lowers them.
"""

from __future__ import annotations

import dataclasses
import math

import tvm
from tvm import s_tir

from ..ir.desc import OpDesc
from ..ir.geometry import layout_geom, mean_axes, pad4
from ..ir.memory import dtype_name, storage_dtype
from ..ir.memory import ACC, ACT
from ..ir.plan import MeanPlan, RowPlan, SoftmaxPlan
from ..isa import DType
from ..tir_schedules import layout as LS
from ..tir_schedules import vector as VS

VECTOR_KINDS = ("binary", "activation", "layout", "softmax", "layer_norm", "mean", "reduce")
FAMILY_KEY = "npu.family"
PLAN_BLOCK = "store"  # the block every vector workload has, annotated with the plan


def _key_dtype(d: DType) -> str:
    return "float32" if d == DType.FP32 else "float16"


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What a vector operator's schedule is built from: the builder (tir_schedules) and its arguments
    before the plan's fields, the plan type, and per field the axis extent it tiles."""

    kind: str
    schedule: object  # the compile path's memoised builder: schedule(*args, *fields, double_buffer)
    args: tuple
    plan_type: type
    extents: tuple  # per plan field (RowPlan: t1, t2; SoftmaxPlan: rows)
    valid: dict

    def workload_func(self) -> tvm.tirx.PrimFunc:
        if self.kind == "mean":
            return VS.mean_workload(*self.args, "float16")
        if self.kind == "reduce":
            return VS.reduce_workload(*self.args)
        if self.kind in ("binary", "activation"):
            return VS.elementwise_workload(*self.args)
        if self.kind == "layout":
            return LS.layout_workload(*self.args)
        if self.kind == "softmax":
            return VS.softmax_workload(*self.args)
        return VS.layer_norm_workload(*self.args)

    def tile(self, sch: s_tir.Schedule, fields, double_buffer: bool) -> None:
        """The compile path's schedule steps with the plan's fields (ints or sampled values)."""
        if self.kind in ("mean", "reduce"):
            to, rr, ti = fields
            if self.kind == "mean":
                name, scope = "msum", ACC
            else:
                name, scope = f"r{self.args[3]}", ACC if self.args[3] == "sum" else ACT
            VS.reduction_tile(sch, name, self.args[2], to, ti, rr, scope, double_buffer)
        elif self.kind in ("binary", "activation"):
            VS.elementwise_tile(sch, self.args[2], *fields, double_buffer)
        elif self.kind == "layout":
            LS.layout_tile(sch, self.args[4], *fields, double_buffer)
        elif self.kind == "softmax":
            VS.softmax_tile(sch, self.args[2], *fields, double_buffer)
        else:
            VS.layer_norm_tile(sch, *fields, double_buffer)

    def scheduled(self, fields: tuple, double_buffer: bool):
        """The compile path's memoised (schedule, valid extents) for the plan's fields, called as the
        lowering calls it."""
        if self.kind == "mean":
            to, rr, ti = fields
            return VS.mean_schedule(*self.args, to, ti, rr, "float16", double_buffer)
        if self.kind == "reduce":
            to, rr, ti = fields
            return VS.reduce_schedule(*self.args[:3], to, ti, self.args[3], double_buffer, rr)
        return self.schedule(*self.args, *fields, double_buffer)


def operand_dtypes(desc: OpDesc, dtypes=None) -> tuple:
    """How the operands are stored in DRAM: `dtypes` as the memory plan gave them, else the default."""
    return tuple(dtypes) if dtypes else tuple(storage_dtype(desc, t) for t in desc.inputs)


def geometry(desc: OpDesc, dtypes=None) -> Geometry:
    """The schedule arguments the lowering (lowering/vector.py, lowering/layout.py) derives for the
    operator with its operands stored as `dtypes` (default: as the memory plan stores them inside a
    function)."""
    dts = operand_dtypes(desc, dtypes)
    if desc.kind in ("binary", "activation"):
        shapes = tuple(pad4(t.shape) for t in desc.inputs)
        out = pad4(desc.output.shape)
        dtypes = tuple(_key_dtype(d) for d in dts)
        valid = {VS.operand_param(i): tuple(s) for i, s in enumerate(shapes)}
        return Geometry(desc.kind, VS.elementwise_schedule, (desc, shapes, dtypes, out), RowPlan, (out[1], out[2]),
                        valid)
    if desc.kind == "layout":
        g = layout_geom(desc)
        args = (g.in_shape, g.out_shape, g.src, g.fixed, dtype_name(dts[0]),
                dtype_name(storage_dtype(desc, desc.output)))
        return Geometry("layout", LS.layout_schedule, args, RowPlan, (g.out_shape[1], g.out_shape[2]), {})
    shape = desc.inputs[0].shape
    if desc.kind in ("mean", "reduce"):
        outer, red, inner = mean_axes(shape, desc.attrs["axis"])
        args = (outer, red, inner) + ((desc.attrs["op"],) if desc.kind == "reduce" else ())
        builder = VS.mean_schedule if desc.kind == "mean" else VS.reduce_schedule
        return Geometry(desc.kind, builder, args, MeanPlan, (outer, red, inner), {})
    rows, length = math.prod(shape[:-1]), shape[-1]
    if desc.kind == "softmax":
        return Geometry("softmax", VS.softmax_schedule, (rows, length, _key_dtype(dts[0])), SoftmaxPlan, (rows,), {})
    if desc.kind == "layer_norm":
        return Geometry("layer_norm", VS.layer_norm_schedule, (rows, length, desc.attrs["epsilon"]), SoftmaxPlan,
                        (rows,), {})
    raise ValueError(f"no vector design space for operator kind {desc.kind!r}")


def tunable(desc: OpDesc) -> bool:
    return desc.kind in VECTOR_KINDS and not desc.integer


def fields_of(plan) -> tuple:
    if isinstance(plan, MeanPlan):
        return (plan.outer, plan.chunk, plan.inner)
    return (plan.t1, plan.t2) if isinstance(plan, RowPlan) else (plan.rows,)


def illegal(desc: OpDesc, plan) -> str | None:
    """Why a reduction plan is not one the lowering takes (a partial row or a chunked reduction tiles
    one outer row at a time; a chunked reduction one inner column), None if it is."""
    if not isinstance(plan, MeanPlan):
        return None
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    to, rr, ti = plan.outer, plan.chunk, plan.inner
    if not (1 <= rr <= red and 1 <= ti <= inner and 1 <= to <= outer):
        return f"{plan.to_dict()} is outside {outer} x {red} x {inner}"
    if desc.kind == "mean" and (rr, ti) != (red, inner):
        return f"a float mean reduces whole rows: {plan.to_dict()}"
    if (ti < inner or rr < red) and to != 1 or rr < red and ti != 1:
        return f"{plan.to_dict()}: a partial row or a chunked reduction takes one outer row per tile"
    return None


def make_plan(plan_type: type, fields, double_buffer: bool):
    return plan_type(*fields, double_buffer)


FIELD_NAMES = {RowPlan: ("t1", "t2"), SoftmaxPlan: ("rows",), MeanPlan: ("outer", "chunk", "inner")}


def workload_func(desc: OpDesc, dtypes=None) -> tvm.tirx.PrimFunc:
    return geometry(desc, dtypes).workload_func()


def plan_of_schedule(sch: s_tir.Schedule, double_buffer: bool = True):
    """The vector plan a scheduled workload was built for (its `store` block's annotations), or None."""
    try:
        ann = sch.get(sch.get_sblock(PLAN_BLOCK)).annotations
    except Exception:  # noqa: BLE001 - TVM raises its own error type for a missing block
        return None
    family = str(ann[FAMILY_KEY]) if FAMILY_KEY in ann else None
    cls = {c.family: c for c in FIELD_NAMES}.get(family)
    if cls is None or any(f"npu.{n}" not in ann for n in FIELD_NAMES[cls]):
        return None
    return make_plan(cls, [int(ann[f"npu.{n}"]) for n in FIELD_NAMES[cls]], double_buffer)


def tile_counts(extent: int) -> tuple[int, ...]:
    """The tile sizes that split `extent` into distinct numbers of tiles (largest first)."""
    return tuple(sorted({-(-extent // n) for n in range(1, extent + 1)}, reverse=True))


@dataclasses.dataclass(frozen=True)
class VectorSpace:
    """The candidate values of each plan field (largest first) of one vector operator."""

    geom: Geometry
    values: tuple  # per field
    double_buffer: bool = True

    def size(self) -> int:
        return math.prod(len(v) for v in self.values)

    def plans(self) -> list:
        out = [()]
        for vals in self.values:
            out = [p + (v,) for p in out for v in vals]
        return [make_plan(self.geom.plan_type, p, self.double_buffer) for p in out]

    def _apply(self, sch: s_tir.Schedule, plan=None) -> None:
        fields = []
        for k, vals in enumerate(self.values):
            if len(vals) == 1:
                fields.append(vals[0])
                continue
            pick = None if plan is None else vals.index(fields_of(plan)[k])
            fields.append(sch.sample_categorical(list(vals), [1.0 / len(vals)] * len(vals), decision=pick))
        self.geom.tile(sch, fields, self.double_buffer)
        block = sch.get_sblock(PLAN_BLOCK)
        for name, value in zip(FIELD_NAMES[self.geom.plan_type], fields):
            sch.annotate(block, f"npu.{name}", value)
        sch.annotate(block, FAMILY_KEY, self.geom.plan_type.family)

    def design_spaces(self, mod) -> list[s_tir.Schedule]:
        sch = s_tir.Schedule(mod)
        self._apply(sch)
        return [sch]

    def schedule_of_plan(self, mod, plan) -> s_tir.Schedule:
        sch = s_tir.Schedule(mod)
        self._apply(sch, plan)
        return sch

    def events(self, plan):
        """The compile path's walked events for `plan` (what a candidate's TIR must give)."""
        from ..lowering.emit import vector_events

        return vector_events(self.geom.scheduled, fields_of(plan), self.double_buffer)


def space_of(desc: OpDesc, config, double_buffer: bool = True, dtypes=None) -> VectorSpace:
    """Per field, the tile sizes that give distinct tile counts and fit the SRAMs with the other
    fields at their smallest (the SRAM postprocessor checks the combinations), and the default plan's."""
    from ..ir.memory import over_budget
    from ..options import CompileOptions
    from ..tiling import needs
    from ..tiling import plan as tile_plan

    geom = geometry(desc, dtypes)
    names = FIELD_NAMES[geom.plan_type]
    dts = operand_dtypes(desc, dtypes)
    default = tile_plan(desc, config, CompileOptions(double_buffer=double_buffer), dts)
    extra = fields_of(default) if isinstance(default, geom.plan_type) else (None,) * len(names)
    fixed = {}
    if geom.plan_type is MeanPlan:  # the chunk stays the default's (the order of the sums)
        outer, red, inner = geom.extents
        chunk = extra[1] if extra[1] else red
        fixed = {1: (chunk,), 2: (inner,) if desc.kind == "mean" else None}
        if chunk < red:
            fixed = {0: (1,), 1: (chunk,), 2: (1,)}
    values = []
    for k in range(len(names)):
        if fixed.get(k):
            values.append(fixed[k])
            continue
        ok = []
        for v in sorted({*tile_counts(geom.extents[k]), *([extra[k]] if extra[k] else [])}, reverse=True):
            fields = [1] * len(names)
            if geom.plan_type is MeanPlan:
                fields[1] = (fixed.get(1) or (1,))[0]
            fields[k] = v
            if not over_budget(config, needs(desc, make_plan(geom.plan_type, fields, double_buffer), config, dts)):
                ok.append(v)
        values.append(tuple(ok) or (1,))
    return VectorSpace(geom, tuple(values), double_buffer)


def candidate_events(mod, desc: OpDesc, dtypes=None):
    """The walker's events of a candidate's scheduled workload."""
    from ..tir_schedules.walker import Walker

    return Walker(mod["main"], geometry(desc, dtypes).valid).events()


__all__ = ["VECTOR_KINDS", "VectorSpace", "candidate_events", "geometry", "illegal", "operand_dtypes",
           "plan_of_schedule", "space_of", "tile_counts", "tunable", "workload_func"]
