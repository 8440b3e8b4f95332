"""Lowering of NPU operators (OpDesc) to tiled, double-buffered NPU instructions.

Every DRAM tensor keeps its logical Relax layout (dense, row-major); the DMA descriptors view it
as the NHWC tiles the MAC array and vector unit need, so NCHW models need no transpose operators:
the layout change is folded into the strided loads and stores (counted in `stats`).
Float graphs run in fp16 with fp32 accumulation: activations and weights are fp16, accumulators,
bias and the epilogue fp32, rounded once to fp16 on the way out.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from ..config import NPUConfig
from ..isa import DType, Func, Instr, PoolMode, Program, ReduceMode, Region, Space, TensorRef
from ..isa.spec import DTYPE_SIZE
from ..perf_model import pipeline_cycles
from ..relay_ext.ops import Activation, OpDesc, Unsupported
from . import plans as P
from .memory import ConstPool, DramTensor, SramAllocator, sram_bytes
from .pipeline import Step, emit_pipeline

_DT = {"float16": DType.FP16, "float32": DType.FP32, "int8": DType.INT8, "int16": DType.INT16, "int32": DType.INT32}
_EVENTS: dict = {}


_VEVENTS: dict = {}


def _schedule_error(e: Exception, what: str = "") -> Unsupported:
    """A TVM schedule error: the operator cannot be scheduled so; refuse it with the reason."""
    return Unsupported(f"TensorIR schedule failed{what}: {str(e).strip().splitlines()[-1][:200]}")


def vector_events(build, *args):
    """The walker's events of a vector-unit TensorIR schedule `build(*args)` -> (schedule, valid
    extents); builders memoise their schedules, and each schedule is walked once."""
    from ..tir_schedules import Walker

    try:
        sch, valid = build(*args)
    except Unsupported:
        raise
    except Exception as e:  # noqa: BLE001 - see _schedule_error
        raise _schedule_error(e) from e
    hit = _VEVENTS.get(id(sch))
    if hit is None or hit[0] is not sch:
        hit = _VEVENTS[id(sch)] = (sch, Walker(sch.mod["main"], valid).events())
    return hit[1]


def tir_events(desc: OpDesc, plan: P.Plan, double_buffer: bool):
    """(kernel, events) of the operator's scheduled TensorIR, memoised on what they depend on."""
    from ..tir_schedules import Walker, schedule
    from ..tir_schedules.default import _quant_key

    key = (P.signature(desc, None), plan, double_buffer, _quant_key(desc))
    hit = _EVENTS.get(key)
    if hit is None:
        try:
            kernel, sch = schedule(desc, plan, double_buffer)
        except Unsupported:
            raise
        except Exception as e:  # noqa: BLE001 - see _schedule_error
            raise _schedule_error(e, f" for plan {plan.to_dict()}") from e
        hit = _EVENTS[key] = (kernel, Walker(sch.mod["main"], kernel.valid).events())
    return hit

F16, F32 = DType.FP16, DType.FP32
INF = float("inf")
_FUNCS = {"sigmoid": Func.SIGMOID, "tanh": Func.TANH, "gelu": Func.GELU, "gelu_tanh": Func.GELU_TANH}


def _load(dst: TensorRef, src, pad=(0, 0, 0, 0), pad_value: int = 0) -> Instr:
    return Instr.make("dma.load", dst=dst, src=src, pad_top=pad[0], pad_bottom=pad[1], pad_left=pad[2],
                      pad_right=pad[3], pad_value=pad_value)


def _at(t: TensorRef, shape: Sequence[int]) -> TensorRef:
    """The same buffer seen with smaller dims (edge tiles)."""
    return TensorRef(t.space, t.dtype, t.addr, tuple(shape))


def _binop(op: str, a: TensorRef, b: TensorRef, o: TensorRef) -> Instr:
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
    def _finish(self, steps: List[Step]) -> None:
        self.estimates.append(pipeline_cycles(steps, self.config, self.double_buffer))
        self.stats["steps"] += len(steps)
        for s in steps:
            self.stats["transposing_dma"] += sum(1 for i in s.loads + s.stores if _transposes(i))
        emit_pipeline(self.program, steps, self.double_buffer)
        self.program.emit("barrier")

    def _slots(self, alloc: SramAllocator, space: Space, shape, dtype, what: str) -> List[TensorRef]:
        n = 2 if self.double_buffer else 1
        return [alloc.alloc(space, shape, dtype, f"{what} slot {i}") for i in range(n)]

    def _slot(self, slots: List[TensorRef], rank: int) -> TensorRef:
        return slots[rank % len(slots)]

    def _epilogue(self, acc: TensorRef, act: Optional[Activation], tmp: Optional[TensorRef],
                  scalars: dict) -> List[Instr]:
        """Activation in place on an accumulator or ACT tile (`scalars`: constants from _act_consts)."""
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
            return [_binop("vmul", acc, scalars["alpha"], tmp), _binop("vmax", acc, tmp, acc)]
        if k == "silu":
            return [Instr.make("vfunc", a=acc, o=tmp, func=int(Func.SIGMOID)), _binop("vmul", acc, tmp, acc)]
        if k in ("hard_sigmoid", "hard_swish"):  # clip(x + 3, 0, 6) / 6 [* x]
            h = acc if k == "hard_sigmoid" else tmp
            out = [_binop("vadd", acc, scalars["three"], h), Instr.make("vclamp", a=h, o=h, min_f=0.0, max_f=6.0),
                   _binop("vmul", h, scalars["sixth"], h)]
            return out + ([_binop("vmul", acc, h, acc)] if k == "hard_swish" else [])
        raise Unsupported(f"activation {k}")

    def _act_consts(self, alloc: SramAllocator, act: Optional[Activation], space: Space, dtype: DType,
                    shape) -> tuple:
        """(temporary buffer, named scalar constants, their loads) an activation needs."""
        tmp = None
        scalars, loads = {}, []
        if act is None:
            return tmp, scalars, loads
        if act.kind in ("silu", "leaky_relu", "hard_swish"):
            tmp = alloc.alloc(space, shape, dtype, "activation temporary")
        values = {"leaky_relu": {"alpha": act.alpha}, "hard_sigmoid": {"three": 3.0, "sixth": 1 / 6},
                  "hard_swish": {"three": 3.0, "sixth": 1 / 6}}.get(act.kind, {})
        for name, value in values.items():
            buf = alloc.alloc(space, (1, 1, 1, 1), dtype, f"activation constant {name}")
            loads.append(_load(buf, self.consts.tensor(np.array([value]), dtype).view((None, None, None, 0))))
            scalars[name] = buf
        return tmp, scalars, loads

    # ---- MAC operators: conv2d, depthwise, grouped, matmul (TensorIR path) -------------------------
    def mac_op(self, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: P.Plan) -> None:
        """Schedules the operator's PrimFunc (tir_schedules.default), walks the scheduled TIR and
        emits its events: DMA loads and stores with their views and halos, one MAC instruction per
        tensorized tile, the epilogue on the vector unit."""
        kernel, events = tir_events(desc, plan, self.double_buffer)
        params = self._mac_params(desc, kernel, ins, out)
        a = kernel.attrs
        alloc = SramAllocator(self.config)
        slots, shapes, first = {}, {}, {}
        for ev in events:  # the largest tile of every SRAM buffer, in order of first use
            if ev.kind in ("load", "mac", "compute"):
                old = shapes.get(ev.buffer)
                shapes[ev.buffer] = ev.shape if old is None else tuple(map(max, old, ev.shape))
                first.setdefault(ev.buffer, ev)
        for buf, ev in first.items():
            space = {"act": Space.ACT, "wgt": Space.WGT, "acc": Space.ACC}[buf.rsplit(".npu_", 1)[1]]
            n = ev.slots if self.double_buffer else 1
            slots[buf] = [alloc.alloc(space, shapes[buf], _DT[ev.dtype], f"{buf} slot {i}") for i in range(n)]
        acc_buf = next(ev.buffer for ev in events if ev.kind == "mac")
        tmp, scalars, const_loads = self._act_consts(alloc, desc.activation, Space.ACC, _DT[first[acc_buf].dtype],
                                                   shapes[acc_buf])
        bias_buf = next((ev.buffer for ev in events if ev.kind == "load" and ev.param == "B"), None)
        steps: List[Step] = []
        rank: dict = {}
        current: dict = {}
        zeroed = set()
        step = None
        for ev in events:
            if ev.kind == "init":
                zeroed.add(ev.buffer)
                continue
            if ev.kind == "load" and (step is None or step.computes or step.stores):
                step = Step(loads=list(const_loads) if not steps else [])
                steps.append(step)
            if ev.kind in ("load", "compute"):
                r = rank.get(ev.buffer, 0)
                rank[ev.buffer] = r + 1
                ref = _at(self._slot(slots[ev.buffer], r), ev.shape)
            if ev.kind == "load":
                pads = ev.pads
                step.loads.append(_load(ref, params[ev.param].view(ev.axes, dict(ev.start)),
                                        (pads[0], pads[1], pads[2], pads[3]), ev.pad_value))
                current[ev.buffer] = ref
            elif ev.kind == "mac":
                ops = dict(ev.operands)
                o = _at(slots[ev.buffer][0], ev.shape)
                act_in, wgt = current[ops["A"]], current[ops["W"]]
                acc_flag = 0 if ev.buffer in zeroed else 1
                zeroed.discard(ev.buffer)
                off = a["a_offset"]
                if ev.intrin == "npu.gemm":
                    instr = Instr.make("gemm", a=act_in, w=wgt, o=o, a_offset=off, accumulate=acc_flag)
                elif ev.intrin == "npu.dwconv2d":
                    instr = Instr.make("dwconv2d", a=act_in, w=wgt, o=o, stride_h=a["sh"], stride_w=a["sw"],
                                       dilation_h=a["dh"], dilation_w=a["dw"], a_offset=off, accumulate=acc_flag)
                else:
                    instr = Instr.make("conv2d", a=act_in, w=wgt, o=o, stride_h=a["sh"], stride_w=a["sw"],
                                       dilation_h=a["dh"], dilation_w=a["dw"],
                                       groups=o.shape[3] // a["ng"] if a["ng"] else 1, a_offset=off,
                                       accumulate=acc_flag)
                step.computes.append(instr)
                current[ev.buffer] = o
            elif ev.kind == "compute":  # the epilogue: bias, activation, one rounding into ACT
                acc_t = _at(current[acc_buf], ev.shape)
                if bias_buf is not None:
                    step.computes.append(_binop("vadd", acc_t, _at(current[bias_buf], (1, 1, 1, ev.shape[3])), acc_t))
                if desc.quant is not None:  # TFLite requantisation with the per-channel table in ACC
                    table = current["Q_global.npu_acc"]
                    step.computes.append(Instr.make("vrequant", a=acc_t, o=ref,
                                                    **desc.quant.vrequant_fields(table.addr, force_table=True)))
                else:
                    step.computes += self._epilogue(acc_t, desc.activation, _at(tmp, acc_t.shape) if tmp else None,
                                                    scalars)
                    step.computes.append(Instr.make("vrequant", a=acc_t, o=ref))
                current[ev.buffer] = ref
            elif ev.kind == "store":
                src = current[ev.buffer]
                if src.shape != ev.shape:
                    raise Unsupported(f"store of {list(ev.shape)} from a {list(src.shape)} tile ({desc.composite})")
                step.stores.append(Instr.make("dma.store", src=src, dst=params[ev.param].view(ev.axes, dict(ev.start))))
        self._finish(steps)

    def _mac_params(self, desc: OpDesc, kernel, ins: List[DramTensor], out: DramTensor) -> dict:
        """The DRAM tensor behind each PrimFunc parameter (weights packed HWIO fp16, bias fp32)."""
        params = {}
        q = desc.quant
        wdt = DType.INT8 if q is not None else F16
        if kernel.kind == "gemm":
            rows, k, n = P.matmul_geom(desc)
            b = P.matmul_batches(desc)
            x, w = ins[0], ins[1]
            params["A"] = DramTensor(x.region, x.offset, (b, rows, k), x.dtype)
            params["W"] = DramTensor(w.region, w.offset, (b, k, n) if kernel.attrs["batched_rhs"] else (k, n), w.dtype)
            params["store"] = DramTensor(out.region, out.offset, (b, rows, n), out.dtype)
            cout = n
        else:
            w = desc.inputs[1].const
            wl = desc.attrs["kernel_layout"]
            w_hwio = np.transpose(w, [wl.index("H"), wl.index("W"), wl.index("I"), wl.index("O")])
            params["X"] = ins[0]
            params["W"] = self.consts.tensor(w_hwio, wdt)
            params["store"] = out
            cout = kernel.attrs["cout"]
        if len(desc.inputs) > 2:
            bias = desc.inputs[2].const.reshape(-1)
            if bias.size != cout:
                raise Unsupported(f"bias has {bias.size} values for {cout} output channels")
            params["B"] = (self.consts.tensor(q.bias, DType.INT32) if q is not None
                           else self.consts.tensor(bias.astype(np.float32), F32))
        if q is not None:
            params["Q"] = self.consts.tensor(q.param_table().reshape(-1), DType.INT32)
        return params

    # ---- elementwise, activations, softmax, mean, concat, pooling --------------------------------
    def _row_tiles(self, shape4: Sequence[int], bytes_per_row: int, reserve: int = 0, acc_bytes_per_row: int = 0):
        """Tiles (i0, j1, t1, j2, t2) over dims 0..2 of a 4-D shape with dim 3 whole, sized so that
        `bytes_per_row` x rows fits ACT after `reserve` bytes (and `acc_bytes_per_row` x rows fits ACC)."""
        d0, d1, d2, _ = shape4
        budget = (self.config.act_sram_bytes - reserve) // max(bytes_per_row, 1)
        if acc_bytes_per_row:
            budget = min(budget, (self.config.acc_sram_bytes - reserve) // acc_bytes_per_row)
        if budget < 1:
            raise Unsupported(f"one row of {shape4[3]} elements does not fit ACT with double buffering")
        t2 = min(d2, budget)
        t1 = max(1, min(d1, budget // t2)) if t2 == d2 else 1
        for i0 in range(d0):
            for j1 in range(0, d1, t1):
                for j2 in range(0, d2, t2):
                    yield i0, j1, min(t1, d1 - j1), j2, min(t2, d2 - j2)

    def elementwise(self, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
        """Binary ops with broadcasting, and activations, on 4-D views of the logical shapes, through
        TensorIR (tir_schedules/vector.py): the row tiling below is the schedule's split factors, the
        walker's events become loads, vector instructions and stores.

        A binary op with a constant operand (a bias, a scale, a division turned into a multiplication
        by the reciprocal) runs in fp32 on ACC with the constant kept in fp32, rounded to fp16 once:
        an fp16 constant would bias every result the same way (fp16(1/6) is 2.4e-4 too small)."""
        from ..tir_schedules.vector import elementwise_schedule

        shape4 = _pad4(out.shape)
        o4 = DramTensor(out.region, out.offset, shape4, out.dtype)
        ops = [DramTensor(t.region, t.offset, _pad4(t.shape), t.dtype) for t in ins]
        # operands already in fp32 (constants, float32 function inputs) load straight into ACC
        consts = [o.dtype == F32 for o in ops]
        wide = desc.kind == "binary" and any(consts)  # fp32 on ACC
        if any(consts) and not wide:
            raise Unsupported(f"{desc.kind} cannot read a float32 operand")
        row = sram_bytes((1, 1, 1, shape4[3]), F16)
        row32 = sram_bytes((1, 1, 1, shape4[3]), F32)
        n_act = sum(not c for c in consts) + 1 + (1 if desc.activation and desc.activation.kind == "silu" else 0)
        slots = 2 if self.double_buffer else 1
        tiles = list(self._row_tiles(shape4, row * n_act * slots, reserve=64,
                                     acc_bytes_per_row=row32 * (len(ops) + 1) * slots if wide else 0))
        t1m = max(t[2] for t in tiles)
        t2m = max(t[4] for t in tiles)
        key_dtypes = ["float32" if c else "float16" for c in consts]
        events = vector_events(elementwise_schedule, desc, [o.shape for o in ops], key_dtypes, shape4, t1m, t2m,
                               self.double_buffer)
        params = {f"in{i}": o for i, o in enumerate(ops)}
        params["store"] = o4
        alloc = SramAllocator(self.config)
        bufs, shapes, first = {}, {}, {}
        for ev in events:
            if ev.kind in ("load", "compute"):
                old = shapes.get(ev.buffer)
                shapes[ev.buffer] = ev.shape if old is None else tuple(map(max, old, ev.shape))
                first.setdefault(ev.buffer, ev)
        for buf, ev in first.items():
            space = Space.ACC if buf.endswith("npu_acc") else Space.ACT
            n = ev.slots if self.double_buffer else 1
            bufs[buf] = [alloc.alloc(space, shapes[buf], _DT[ev.dtype], f"{buf} slot {i}") for i in range(n)]
        tmp_act, scalars, const_loads = None, {}, []
        if desc.kind == "activation":
            tmp_act, scalars, const_loads = self._act_consts(alloc, desc.activation, Space.ACT, F16,
                                                           (1, t1m, t2m, shape4[3]))
        steps: List[Step] = []
        rank: dict = {}
        current: dict = {}
        step = None
        for ev in events:
            # one step per tile: a tile ends with its store (the schedule may place a load after the
            # widening of another operand; the load queue still runs it before the step's computes)
            if ev.kind == "load" and (step is None or step.stores):
                step = Step(loads=list(const_loads) if not steps else [])
                steps.append(step)
            if ev.kind in ("load", "compute"):
                r = rank.get(ev.buffer, 0)
                rank[ev.buffer] = r + 1
                ref = _at(self._slot(bufs[ev.buffer], r), ev.shape)
                current[ev.buffer] = ref
            if ev.kind == "load":
                step.loads.append(_load(ref, params[ev.param].view(ev.axes, dict(ev.start)), ev.pads[:2] + ev.pads[2:]))
            elif ev.kind == "compute":
                srcs = [current[b] for _, b in ev.operands]
                if ev.intrin.startswith("widen"):
                    step.computes.append(Instr.make("vcvt", a=srcs[0], o=ref))
                elif ev.intrin == "round":
                    step.computes.append(Instr.make("vrequant", a=srcs[0], o=ref))
                elif desc.kind == "binary":
                    step.computes.append(_binop("v" + desc.attrs["op"], srcs[0], srcs[1], ref))
                else:
                    step.computes.append(Instr.make("vcvt", a=srcs[0], o=ref))
                    step.computes += self._epilogue(ref, desc.activation, _at(tmp_act, ref.shape) if tmp_act else None,
                                                    scalars)
            elif ev.kind == "store":
                step.stores.append(Instr.make("dma.store", src=current[ev.buffer],
                                              dst=params[ev.param].view(ev.axes, dict(ev.start))))
        self._finish(steps)

    def softmax(self, desc: OpDesc, x: DramTensor, out: DramTensor) -> None:
        """Softmax over the last axis through TensorIR (tir_schedules/vector.py:softmax_schedule): the
        scheduled blocks mx / e / se / out become vreduce MAX, vsub + exp, vreduce SUM + reciprocal,
        vmul, on row tiles that fit ACT."""
        from ..tir_schedules.vector import softmax_schedule

        shape = x.shape
        axis = desc.attrs["axis"] % len(shape)
        if axis != len(shape) - 1:
            raise Unsupported("softmax over an axis other than the last")
        rows, length = math.prod(shape[:-1]), shape[-1]
        x2 = DramTensor(x.region, x.offset, (rows, length), x.dtype)
        o2 = DramTensor(out.region, out.offset, (rows, length), out.dtype)
        row = sram_bytes((1, 1, 1, length), F16)
        wide = x.dtype == F32  # a float32 input: subtract the row maximum in fp32, then round
        row32 = sram_bytes((1, 1, 1, length), F32) * 2 if wide else 0
        budget = min((self.config.act_sram_bytes - 1024) // (row * 4 + 64),
                     self.config.acc_sram_bytes // (64 + row32))
        if budget < 1:
            raise Unsupported(f"a softmax row of {length} does not fit ACT")
        tr = min(rows, budget)
        events = vector_events(softmax_schedule, rows, length, "float32" if wide else "float16", tr, self.double_buffer)
        params = {"X": x2, "store": o2}
        alloc = SramAllocator(self.config)
        in_slots = self._slots(alloc, Space.ACT, (1, 1, tr, length), F16, "input")
        out_slots = self._slots(alloc, Space.ACT, (1, 1, tr, length), F16, "output")
        mx = alloc.alloc(Space.ACT, (1, 1, tr, 1), F16, "row max")
        rec16 = alloc.alloc(Space.ACT, (1, 1, tr, 1), F16, "row reciprocal")
        total = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "row sum")
        if wide:
            in_slots = self._slots(alloc, Space.ACC, (1, 1, tr, length), F32, "fp32 input")
            mx = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "fp32 row max")
        steps: List[Step] = []
        rank = 0
        for ev in events:
            if ev.kind == "load":
                t = ev.shape[2]
                a = _at(self._slot(in_slots, rank), (1, 1, t, length))
                o = _at(self._slot(out_slots, rank), (1, 1, t, length))
                m, s, r = _at(mx, (1, 1, t, 1)), _at(total, (1, 1, t, 1)), _at(rec16, (1, 1, t, 1))
                step = Step(loads=[_load(a, params[ev.param].view(ev.axes, dict(ev.start)))])
                steps.append(step)
            elif ev.kind == "compute" and ev.intrin == "mx":
                step.computes.append(Instr.make("vreduce", a=a, o=m, mode=int(ReduceMode.MAX), axis=3))
            elif ev.kind == "compute" and ev.intrin == "e":
                step.computes += ([_binop("vsub", a, m, a), Instr.make("vrequant", a=a, o=o)] if wide else
                                  [_binop("vsub", a, m, o)])
                step.computes.append(Instr.make("vfunc", a=o, o=o, func=int(Func.EXP)))
            elif ev.kind == "compute" and ev.intrin == "se":
                step.computes += [Instr.make("vreduce", a=o, o=s, mode=int(ReduceMode.SUM), axis=3),
                                  Instr.make("vfunc", a=s, o=s, func=int(Func.RECIPROCAL)),
                                  Instr.make("vcvt", a=s, o=r)]
            elif ev.kind == "compute" and ev.intrin == "out":
                step.computes.append(_binop("vmul", o, r, o))
            elif ev.kind == "store":
                step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
                rank += 1
        self._finish(steps)

    def mean(self, desc: OpDesc, x: DramTensor, out: DramTensor) -> None:
        """Mean over adjacent axes through TensorIR (tir_schedules/vector.py:mean_schedule): vreduce
        SUM into ACC, multiply by 1/count, one rounding to fp16."""
        from ..tir_schedules.vector import mean_schedule

        shape = x.shape
        axes = desc.attrs["axis"]
        axes = tuple(range(len(shape))) if axes is None else tuple(sorted(a % len(shape) for a in axes))
        if axes != tuple(range(axes[0], axes[-1] + 1)):
            raise Unsupported(f"mean over non-adjacent axes {axes}")
        outer = math.prod(shape[:axes[0]])
        red = math.prod(shape[axes[0]:axes[-1] + 1])
        inner = math.prod(shape[axes[-1] + 1:])
        per = sram_bytes((1, 1, red, inner), F16) if inner > 1 else sram_bytes((1, 1, 1, red), F16)
        budget = (self.config.act_sram_bytes - 1024) // (2 * per + 64)
        if budget < 1:
            raise Unsupported(f"a mean over {red} x {inner} elements does not fit ACT")
        to = min(outer, budget)
        events = vector_events(mean_schedule, outer, red, inner, to, inner, red, "float16", self.double_buffer)
        view = (outer, red, inner) if inner > 1 else (outer, red)
        params = {"X": DramTensor(x.region, x.offset, view, x.dtype),
                  "store": DramTensor(out.region, out.offset, (outer, 1, inner) if inner > 1 else (outer, 1),
                                      out.dtype)}
        red_axis = 2 if inner > 1 else 3
        alloc = SramAllocator(self.config)
        in_shape, o_shape = ((1, to, red, inner), (1, to, 1, inner)) if inner > 1 else ((1, 1, to, red), (1, 1, to, 1))
        in_slots = self._slots(alloc, Space.ACT, in_shape, F16, "input")
        out_slots = self._slots(alloc, Space.ACT, o_shape, F16, "output")
        acc = alloc.alloc(Space.ACC, o_shape, F32, "sum")
        scale = alloc.alloc(Space.ACC, (1, 1, 1, 1), F32, "1/count")
        scale_c = self.consts.tensor(np.array([1.0 / red]), F32)
        steps: List[Step] = []
        rank = 0
        a = s = None
        for ev in events:
            if ev.kind == "load":
                step = Step(loads=[_load(scale, scale_c.view((None, None, None, 0)))] if not steps else [])
                steps.append(step)
                a = _at(self._slot(in_slots, rank), ev.shape)
                step.loads.append(_load(a, params[ev.param].view(ev.axes, dict(ev.start))))
            elif ev.kind == "compute" and ev.intrin.startswith("msum"):  # one chunk: the whole reduction
                s = _at(acc, ev.shape)
                step.computes.append(Instr.make("vreduce", a=a, o=s, mode=int(ReduceMode.SUM), axis=red_axis))
            elif ev.kind == "compute" and ev.intrin == "res":
                o = _at(self._slot(out_slots, rank), ev.shape)
                step.computes += [_binop("vmul", s, scale, s), Instr.make("vrequant", a=s, o=o)]
            elif ev.kind == "store":
                step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
                rank += 1
        self._finish(steps)

    def concat(self, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
        """Copies each input's rows into its place in the output, through TensorIR
        (tir_schedules/vector.py:concat_schedule). The tile goes through the vector unit (a vcvt copy
        into an output slot): storing straight from the load slot would let the load two tiles later
        overwrite it before the store has read it (the slot-free token comes from the compute queue,
        not from the store)."""
        from ..tir_schedules.vector import concat_schedule

        axis = desc.attrs["axis"] % len(out.shape)
        rank_pad = 4 - len(out.shape)
        o4 = DramTensor(out.region, out.offset, _pad4(out.shape), out.dtype)
        a4 = axis + rank_pad
        row = sram_bytes((1, 1, 1, o4.shape[3]), F16)
        budget = (self.config.act_sram_bytes - 64) // (4 * row)
        ins4 = [DramTensor(t.region, t.offset, _pad4(t.shape), t.dtype) for t in ins]
        tiles = []
        for t4 in ins4:
            tl = list(self._row_tiles(t4.shape, 4 * row))
            tiles.append((max(x[2] for x in tl), max(x[4] for x in tl)))
        events = vector_events(concat_schedule, [t.shape for t in ins4], tiles, self.double_buffer)
        offsets, off = [], 0
        for t4 in ins4:
            offsets.append(off)
            off += t4.shape[a4]
        params = {f"in{k}": t for k, t in enumerate(ins4)}
        alloc = SramAllocator(self.config)
        shape = (1, max(t[0] for t in tiles), min(o4.shape[2], budget), o4.shape[3])
        in_slots = self._slots(alloc, Space.ACT, shape, F16, "copy in")
        out_slots = self._slots(alloc, Space.ACT, shape, F16, "copy out")
        steps: List[Step] = []
        rank = 0
        for ev in events:
            if ev.kind == "load":
                buf = _at(self._slot(in_slots, rank), ev.shape)
                step = Step(loads=[_load(buf, params[ev.param].view(ev.axes, dict(ev.start)))])
                steps.append(step)
            elif ev.kind == "compute":
                dst = _at(self._slot(out_slots, rank), ev.shape)
                step.computes.append(Instr.make("vcvt", a=buf, o=dst))
            elif ev.kind == "store":  # store<k> writes input k's place: shift its start along the axis
                k = int(ev.param[len("store"):])
                start = {d: v + (offsets[k] if d == a4 else 0) for d, v in ev.start}
                step.stores.append(Instr.make("dma.store", src=dst, dst=o4.view(ev.axes, start)))
                rank += 1
        self._finish(steps)

    def pool(self, desc: OpDesc, x: DramTensor, out: DramTensor) -> None:
        """Max / average pooling through TensorIR (tir_schedules/vector.py:pool_schedule). The tile
        (`rows` output rows x `tc` channels, the largest double-buffered tiles that fit ACT) is the
        schedule's split; the input tile is loaded without its halo, which `vpool` clips instead."""
        from ..tir_schedules.vector import pool_schedule

        at = desc.attrs
        ax = P.LAYOUT_AXES[at["layout"]]
        xs, os_ = x.shape, out.shape
        n, h, w, c = (xs[a] for a in ax)
        oh, ow = os_[ax[1]], os_[ax[2]]
        kh, kw = at["pool_size"]
        sh, sw = at["strides"]
        cap = self.config.act_sram_bytes

        def need(rows: int, tc: int) -> int:  # double-buffered input and output tiles
            return 2 * (sram_bytes((1, min(h, (rows - 1) * sh + kh), w, tc), F16) + sram_bytes((1, rows, ow, tc), F16))

        tc = c
        while need(1, tc) > cap:
            if tc <= 16:
                raise Unsupported(f"one pooling window row ({w} x {tc}) does not fit ACT")
            tc = max(16, (tc + 1) // 2)
        rows = 1
        while rows < oh and need(rows + 1, tc) <= cap:
            rows += 1
        events = vector_events(pool_schedule, desc, tuple(xs), tuple(os_), rows, tc, self.double_buffer)
        params = {"X": x, "store": out}
        alloc = SramAllocator(self.config)
        in_buf = next(ev.buffer for ev in events if ev.kind == "load")
        out_buf = next(ev.buffer for ev in events if ev.kind == "compute" and ev.intrin == "res")
        in_shape = (1, min(h, (rows - 1) * sh + kh), w, tc)
        in_slots = self._slots(alloc, Space.ACT, in_shape, F16, "input")
        out_slots = self._slots(alloc, Space.ACT, (1, rows, ow, tc), F16, "output")
        mode = PoolMode.MAX if at["mode"] == "max" else PoolMode.AVG
        steps: List[Step] = []
        rank = {in_buf: 0, out_buf: 0}
        step, a, pads = None, None, (0, 0, 0, 0)
        for ev in events:
            if ev.kind == "load":
                step = Step()
                steps.append(step)
                pads = ev.pads
                # the tile without its halo: vpool clips its windows at the input's edges
                shape = (1, ev.shape[1] - pads[0] - pads[1], ev.shape[2] - pads[2] - pads[3], ev.shape[3])
                a = _at(self._slot(in_slots, rank[in_buf]), shape)
                rank[in_buf] += 1
                step.loads.append(_load(a, params[ev.param].view(ev.axes, dict(ev.start))))
            elif ev.kind == "compute" and ev.intrin == "res":
                o = _at(self._slot(out_slots, rank[out_buf]), ev.shape)
                rank[out_buf] += 1
                step.computes.append(Instr.make("vpool", a=a, o=o, mode=int(mode), kh=kh, kw=kw, stride_h=sh,
                                                stride_w=sw, pad_top=pads[0], pad_left=pads[2]))
            elif ev.kind == "store":
                step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
        self._finish(steps)


def lower_op(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor,
             plan: Optional[P.Plan] = None) -> Optional[P.Plan]:
    """Lowers one operator (its operands already placed in DRAM); returns the tile plan used."""
    if desc.kind in ("conv2d", "matmul"):
        plan = P.plan_for(desc, low.config, plan)
        low.mac_op(desc, ins, out, plan)
        return plan
    if desc.kind.startswith("q"):  # integer vector operators
        from .lower_int import lower_int
        lower_int(low, desc, ins, out)
        return None
    if desc.kind in ("binary", "activation"):
        low.elementwise(desc, ins, out)
    elif desc.kind == "concat":
        low.concat(desc, ins, out)
    else:
        getattr(low, desc.kind)(desc, ins[0], out)
    return None


def const_dtype(desc: OpDesc, t=None) -> DType:
    """How a constant operand is stored: fp32 for elementwise binaries (computed in fp32, see
    Lowerer.elementwise), fp16 for weights; integer composites keep their integer dtypes."""
    if desc.quant is not None:
        return _DT[t.dtype] if t is not None else DType.INT8
    return F32 if desc.kind == "binary" else F16


def dry_run(desc: OpDesc, config: NPUConfig) -> None:
    """Lowers the operator into a throwaway program: raises Unsupported exactly when codegen would."""
    low = Lowerer(config, ConstPool())
    act = DType.INT8 if desc.quant is not None else F16
    ins = [low.consts.tensor(t.const, const_dtype(desc, t)) if t.is_const else DramTensor(Region.IO, 0, t.shape, act)
           for t in desc.inputs]
    lower_op(low, desc, ins, DramTensor(Region.IO, 0, desc.output.shape, act))


def _pad4(shape: Sequence[int]) -> tuple:
    if len(shape) > 4:
        raise Unsupported(f"rank {len(shape)} > 4")
    return (1,) * (4 - len(shape)) + tuple(shape)


def _transposes(instr: Instr) -> bool:
    """A DMA whose DRAM side does not walk the SRAM channel dim contiguously: a layout change."""
    ref = instr.operands["src"] if instr.mnemonic == "dma.load" else instr.operands["dst"]
    t = instr.operands["dst"] if instr.mnemonic == "dma.load" else instr.operands["src"]
    return t.shape[3] > 1 and ref.strides[3] not in (0, DTYPE_SIZE[t.dtype])
