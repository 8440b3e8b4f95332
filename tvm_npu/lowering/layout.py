"""Lowering of the layout operators (reshape, transpose, strided slice): DMA and a copy, no arithmetic.

The TensorIR schedule (tir_schedules/layout.py) gathers each output tile into ACT with one DMA load
whose strides do the transpose or the slice, copies it into a second slot on the vector unit (so
that the store never reads the slot the load two tiles later fills, and to round an fp32 input to
fp16), and stores it densely. A reshape is a copy of the same bytes through one flat view of both
tensors."""

from __future__ import annotations

from typing import List

from ..ir.desc import OpDesc
from ..ir.geometry import layout_geom
from ..ir.memory import dtype_name
from ..ir.plan import RowPlan
from ..isa import Instr
from ..tir_schedules.layout import layout_schedule
from .emit import Lowerer, at, load, vector_events
from .memory import DramTensor, SramAllocator
from .pipeline import Step


def lower_layout(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: RowPlan) -> None:
    g = layout_geom(desc)
    x, = ins
    x4 = DramTensor(x.region, x.offset, g.in_shape, x.dtype)
    o4 = DramTensor(out.region, out.offset, g.out_shape, out.dtype)
    events = vector_events(layout_schedule, g.in_shape, g.out_shape, g.src, g.fixed, dtype_name(x.dtype),
                           dtype_name(out.dtype), plan.t1, plan.t2, low.double_buffer)
    alloc = SramAllocator(low.config)
    bufs, _, _ = low.event_slots(alloc, events)
    params = {"in0": x4, "store": o4}
    steps: List[Step] = []
    rank: dict = {}
    current: dict = {}
    step = None
    for ev in events:
        if ev.kind in ("load", "compute"):
            r = rank.get(ev.buffer, 0)
            rank[ev.buffer] = r + 1
            ref = at(low.slot(bufs[ev.buffer], r), ev.shape)
            current[ev.buffer] = ref
        if ev.kind == "load":
            step = Step(loads=[load(ref, params[ev.param].view(ev.axes, dict(ev.start), ev.steps))])
            steps.append(step)
        elif ev.kind == "compute":
            (_, src), = ev.operands
            step.computes.append(Instr.make("vcvt", a=current[src], o=ref))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=current[ev.buffer],
                                          dst=params[ev.param].view(ev.axes, dict(ev.start), ev.steps)))
    low.finish(steps)
