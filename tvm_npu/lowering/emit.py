"""The shared emission toolkit of the lowerings: one `Lowerer` per NPU function (program, constant
pool, statistics, per-operator cycle estimates), DMA and vector instruction helpers, activation
epilogues, and the walk of vector-unit TensorIR schedules.

Every DRAM tensor keeps its logical Relax layout (dense, row-major); the DMA descriptors view it
as the NHWC tiles the MAC array and vector unit need, so NCHW models need no transpose operators:
the layout change is folded into the strided loads and stores (counted in `stats`).
Float graphs run in fp16 with fp32 accumulation: activations and weights are fp16, accumulators,
bias and the epilogue fp32, rounded once to fp16 on the way out.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..config import NPUConfig
from ..ir.desc import Activation, Unsupported
from ..ir.memory import dtype_of, space_of
from ..isa import DType, Func, Instr, Program, Space, TensorRef
from ..isa.spec import DTYPE_SIZE
from ..perf_model import pipeline_cycles
from ..tir_schedules.walker import Walker
from .memory import ConstPool, SramAllocator
from .pipeline import Step, emit_pipeline

_VEVENTS: dict = {}


def schedule_error(e: Exception, what: str = "") -> Unsupported:
    """A TVM schedule error: the operator cannot be scheduled so; refuse it with the reason."""
    return Unsupported(f"TensorIR schedule failed{what}: {str(e).strip().splitlines()[-1][:200]}")


def vector_events(build, *args):
    """The walker's events of a vector-unit TensorIR schedule `build(*args)` -> (schedule, valid
    extents); builders memoise their schedules, and each schedule is walked once."""
    try:
        sch, valid = build(*args)
    except Unsupported:
        raise
    except Exception as e:  # noqa: BLE001 - see schedule_error
        raise schedule_error(e) from e
    hit = _VEVENTS.get(id(sch))
    if hit is None or hit[0] is not sch:
        hit = _VEVENTS[id(sch)] = (sch, Walker(sch.mod["main"], valid).events())
    return hit[1]



F16, F32 = DType.FP16, DType.FP32
INF = float("inf")
_FUNCS = {"sigmoid": Func.SIGMOID, "tanh": Func.TANH, "gelu": Func.GELU, "gelu_tanh": Func.GELU_TANH}


def load(dst: TensorRef, src, pad=(0, 0, 0, 0), pad_value: int = 0) -> Instr:
    return Instr.make("dma.load", dst=dst, src=src, pad_top=pad[0], pad_bottom=pad[1], pad_left=pad[2],
                      pad_right=pad[3], pad_value=pad_value)


# (space, dtype, addr, shape) -> TensorRef: the tiles of an operator repeat, so each view is one object
# (built once, and one fewer for the garbage collector to walk per instruction that uses it)
_AT: dict = {}


def at(t: TensorRef, shape: Sequence[int]) -> TensorRef:
    """The same buffer seen with smaller dims (edge tiles)."""
    key = (t.space, t.dtype, t.addr, tuple(shape))
    ref = _AT.get(key)
    if ref is None:
        if len(_AT) >= 65536:
            _AT.clear()
        ref = _AT[key] = TensorRef(*key)
    return ref


def binop(op: str, a: TensorRef, b: TensorRef, o: TensorRef) -> Instr:
    return Instr.make(op, a=a, b=b, o=o)


class Lowerer:
    """Lowers operators one after another into one program; operators are separated by barriers."""

    def __init__(self, config: NPUConfig, consts: ConstPool, double_buffer: bool = True):
        self.config = config
        self.consts = consts
        self.program = Program()
        self.double_buffer = double_buffer
        self.stats = {"transposing_dma": 0, "steps": 0}
        self.estimates: List[int] = []  # predicted cycles per lowered operator (perf_model)

    # ---- common helpers ---------------------------------------------------------------------
    def finish(self, steps: List[Step]) -> None:
        self.estimates.append(pipeline_cycles(steps, self.config, self.double_buffer))
        self.stats["steps"] += len(steps)
        self.stats["transposing_dma"] += sum(transposes(i) for s in steps for q in (s.loads, s.stores) for i in q)
        emit_pipeline(self.program, steps, self.double_buffer)
        self.program.emit("barrier")

    def slots(self, alloc: SramAllocator, space: Space, shape, dtype, what: str) -> List[TensorRef]:
        n = 2 if self.double_buffer else 1
        return [alloc.alloc(space, shape, dtype, f"{what} slot {i}") for i in range(n)]

    def slot(self, slots: List[TensorRef], rank: int) -> TensorRef:
        return slots[rank % len(slots)]

    def event_slots(self, alloc: SramAllocator, events) -> tuple:
        """SRAM slots for every buffer the walker's events write (loads, MACs, computes): the largest
        tile of each, in order of first use, two slots where the schedule double-buffers it.
        Returns (buffer -> slots, buffer -> largest shape, buffer -> first event)."""
        slots, shapes, first = {}, {}, {}
        for ev in events:
            if ev.kind in ("load", "mac", "compute"):
                old = shapes.get(ev.buffer)
                shapes[ev.buffer] = ev.shape if old is None else tuple(map(max, old, ev.shape))
                first.setdefault(ev.buffer, ev)
        for buf, ev in first.items():
            n = ev.slots if self.double_buffer else 1
            slots[buf] = [alloc.alloc(space_of(ev.scope), shapes[buf], dtype_of(ev.dtype), f"{buf} slot {i}")
                          for i in range(n)]
        return slots, shapes, first

    def epilogue(self, acc: TensorRef, act: Optional[Activation], tmp: Optional[TensorRef],
                 scalars: dict) -> List[Instr]:
        """Activation in place on an accumulator or ACT tile (`scalars`: constants from act_consts)."""
        if act is None:
            return []
        k = act.kind
        if k == "relu":
            return [Instr.make("vclamp", a=acc, o=acc, min_f=0.0, max_f=INF)]
        if k == "clip":
            return [Instr.make("vclamp", a=acc, o=acc, min_f=max(act.lo, -3.0e38), max_f=min(act.hi, 3.0e38))]
        if k in _FUNCS:
            return [Instr.make("vfunc", a=acc, o=acc, func=int(_FUNCS[k]))]
        if k == "leaky_relu":  # max(x, alpha x), valid for 0 <= alpha <= 1
            return [binop("vmul", acc, scalars["alpha"], tmp), binop("vmax", acc, tmp, acc)]
        if k == "silu":
            return [Instr.make("vfunc", a=acc, o=tmp, func=int(Func.SIGMOID)), binop("vmul", acc, tmp, acc)]
        if k in ("hard_sigmoid", "hard_swish"):  # clip(x + 3, 0, 6) / 6 [* x]
            h = acc if k == "hard_sigmoid" else tmp
            out = [binop("vadd", acc, scalars["three"], h), Instr.make("vclamp", a=h, o=h, min_f=0.0, max_f=6.0),
                   binop("vmul", h, scalars["sixth"], h)]
            return out + ([binop("vmul", acc, h, acc)] if k == "hard_swish" else [])
        raise Unsupported(f"activation {k}")

    def act_consts(self, alloc: SramAllocator, act: Optional[Activation], space: Space, dtype: DType,
                   shape) -> tuple:
        """(temporary buffer, named scalar constants, their loads) an activation needs."""
        tmp = None
        scalars, loads = {}, []
        if act is None:
            return tmp, scalars, loads
        if act.temporary:
            tmp = alloc.alloc(space, shape, dtype, "activation temporary")
        values = {"leaky_relu": {"alpha": act.alpha}, "hard_sigmoid": {"three": 3.0, "sixth": 1 / 6},
                  "hard_swish": {"three": 3.0, "sixth": 1 / 6}}.get(act.kind, {})
        for name, value in values.items():
            buf = alloc.alloc(space, (1, 1, 1, 1), dtype, f"activation constant {name}")
            loads.append(load(buf, self.consts.tensor(np.array([value]), dtype).view((None, None, None, 0))))
            scalars[name] = buf
        return tmp, scalars, loads



def transposes(instr: Instr) -> bool:
    """A DMA whose DRAM side does not walk the SRAM channel dim contiguously: a layout change."""
    operands, load = instr.operands, instr.opcode.mnemonic == "dma.load"
    ref, t = operands["src" if load else "dst"], operands["dst" if load else "src"]
    return t.shape[3] > 1 and ref.strides[3] not in (0, DTYPE_SIZE[t.dtype])
