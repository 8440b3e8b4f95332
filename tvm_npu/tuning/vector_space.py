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
from collections.abc import Callable

import tvm
from tvm import s_tir

from ..ir.desc import OpDesc
from ..ir.geometry import layout_geom, mean_axes, pad4
from ..ir.memory import ACC, ACT, dtype_name, storage_dtype
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
    """A vector operator's schedule as the tuner needs it: its unscheduled PrimFunc, the compile
    path's schedule steps with the plan's fields (ints or sampled values), the compile path's
    memoised scheduled function for a plan (called as the lowering calls it), the plan type and per
    field the axis extent it tiles."""

    kind: str
    workload: Callable[[], object]  # () -> PrimFunc
    tile: Callable[..., None]  # (sch, fields, double_buffer)
    scheduled: Callable[..., tuple]  # (fields, double_buffer) -> (schedule, valid extents)
    plan_type: type
    extents: tuple  # per plan field
    valid: dict

    def events(self, plan):
        """The compile path's walked events for `plan` (what a candidate's TIR must give)."""
        from ..lowering.emit import vector_events

        return vector_events(self.scheduled, fields_of(plan), plan.double_buffer)

    def candidate_events(self, mod):
        """The walker's events of a candidate's scheduled workload."""
        from ..tir_schedules.walker import Walker

        return Walker(mod["main"], self.valid).events()


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
        keys = tuple(_key_dtype(d) for d in dts)
        valid = {VS.operand_param(i): tuple(s) for i, s in enumerate(shapes)}
        return Geometry(desc.kind, lambda: VS.elementwise_workload(desc, shapes, keys, out),
                        lambda sch, f, db: VS.elementwise_tile(sch, keys, *f, db),
                        lambda f, db: VS.elementwise_schedule(desc, shapes, keys, out, *f, db),
                        RowPlan, (out[1], out[2]), valid)
    if desc.kind == "layout":
        g = layout_geom(desc)
        args = (g.in_shape, g.out_shape, g.src, g.fixed, dtype_name(dts[0]),
                dtype_name(storage_dtype(desc, desc.output)))
        return Geometry("layout", lambda: LS.layout_workload(*args),
                        lambda sch, f, db: LS.layout_tile(sch, args[4], *f, db),
                        lambda f, db: LS.layout_schedule(*args, *f, db),
                        RowPlan, (g.out_shape[1], g.out_shape[2]), {})
    shape = desc.inputs[0].shape
    if desc.kind in ("mean", "reduce"):  # fields (outer, chunk, inner)
        outer, red, inner = mean_axes(shape, desc.attrs["axis"])
        if desc.kind == "mean":
            return Geometry("mean", lambda: VS.mean_workload(outer, red, inner, "float16"),
                            lambda sch, f, db: VS.reduction_tile(sch, "msum", inner, f[0], f[2], f[1], ACC, db),
                            lambda f, db: VS.mean_schedule(outer, red, inner, f[0], f[2], f[1], "float16", db),
                            MeanPlan, (outer, red, inner), {})
        op = desc.attrs["op"]
        scope = ACC if op == "sum" else ACT
        return Geometry("reduce", lambda: VS.reduce_workload(outer, red, inner, op),
                        lambda sch, f, db: VS.reduction_tile(sch, f"r{op}", inner, f[0], f[2], f[1], scope, db),
                        lambda f, db: VS.reduce_schedule(outer, red, inner, f[0], f[2], op, db, f[1]),
                        MeanPlan, (outer, red, inner), {})
    rows, length = math.prod(shape[:-1]), shape[-1]
    if desc.kind == "softmax":
        key = _key_dtype(dts[0])
        return Geometry("softmax", lambda: VS.softmax_workload(rows, length, key),
                        lambda sch, f, db: VS.softmax_tile(sch, key, *f, db),
                        lambda f, db: VS.softmax_schedule(rows, length, key, *f, db),
                        SoftmaxPlan, (rows,), {})
    if desc.kind == "layer_norm":
        eps = desc.attrs["epsilon"]
        return Geometry("layer_norm", lambda: VS.layer_norm_workload(rows, length, eps),
                        lambda sch, f, db: VS.layer_norm_tile(sch, *f, db),
                        lambda f, db: VS.layer_norm_schedule(rows, length, eps, *f, db),
                        SoftmaxPlan, (rows,), {})
    raise ValueError(f"no vector design space for operator kind {desc.kind!r}")


def tunable(desc: OpDesc) -> bool:
    return desc.kind in VECTOR_KINDS and not desc.integer


def fields_of(plan) -> tuple:
    return tuple(getattr(plan, n) for n in FIELD_NAMES[type(plan)])


FIELD_NAMES = {RowPlan: ("t1", "t2"), SoftmaxPlan: ("rows",), MeanPlan: ("outer", "chunk", "inner")}


def workload_func(desc: OpDesc, dtypes=None) -> tvm.tirx.PrimFunc:
    return geometry(desc, dtypes).workload()


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
    return cls(*[int(ann[f"npu.{n}"]) for n in FIELD_NAMES[cls]], double_buffer)


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
        return [self.geom.plan_type(*p, self.double_buffer) for p in out]

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
            if not over_budget(config, needs(desc, geom.plan_type(*fields, double_buffer), config, dts)):
                ok.append(v)
        values.append(tuple(ok) or (1,))
    return VectorSpace(geom, tuple(values), double_buffer)


__all__ = ["VECTOR_KINDS", "VectorSpace", "geometry", "operand_dtypes",
           "plan_of_schedule", "space_of", "tile_counts", "tunable", "workload_func"]
