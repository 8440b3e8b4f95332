"""Lowering of the float vector-unit operators (elementwise with broadcasting, activations, softmax,
mean, concat, max / average pooling) through their TensorIR schedules (tir_schedules/vector.py), with
the tiles the tiling stage planned."""

from __future__ import annotations

import math
from typing import List

import numpy as np

from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import LAYOUT_AXES, mean_axes, pad4
from ..ir.plan import ConcatPlan, MeanPlan, PoolPlan, RowPlan, SoftmaxPlan
from ..isa import Func, Instr, PoolMode, ReduceMode, Space
from ..tiling.vector import reduce_shapes, reduction_illegal
from ..tir_schedules.vector import (concat_schedule, elementwise_schedule, layer_norm_schedule, mean_schedule,
                                    operand_param, pool_schedule, reduce_schedule, softmax_schedule, store_param)
from .emit import F16, F32, Lowerer, at, binop, load, vector_events
from .memory import DramTensor, SramAllocator
from .pipeline import Step


def lower_elementwise(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: RowPlan) -> None:
    """Binary ops with broadcasting (PReLU among them: max(x, 0) + slope * min(x, 0)), and
    activations, on 4-D views of the logical shapes, through
    TensorIR (tir_schedules/vector.py): the row tiling below is the schedule's split factors, the
    walker's events become loads, vector instructions and stores.

    A binary op with a constant operand (a bias, a scale, a division turned into a multiplication
    by the reciprocal) runs in fp32 on ACC with the constant kept in fp32, rounded to fp16 once:
    an fp16 constant would bias every result the same way (fp16(1/6) is 2.4e-4 too small)."""
    shape4 = pad4(out.shape)
    o4 = DramTensor(out.region, out.offset, shape4, out.dtype)
    ops = [DramTensor(t.region, t.offset, pad4(t.shape), t.dtype) for t in ins]
    # operands already in fp32 (constants, float32 function inputs) load straight into ACC
    consts = [o.dtype == F32 for o in ops]
    wide = desc.kind == "binary" and any(consts)  # fp32 on ACC
    if any(consts) and not wide:
        raise Unsupported(f"{desc.kind} cannot read a float32 operand")
    t1m, t2m = plan.t1, plan.t2
    key_dtypes = ["float32" if c else "float16" for c in consts]
    events = vector_events(elementwise_schedule, desc, [o.shape for o in ops], key_dtypes, shape4, t1m, t2m,
                           low.double_buffer)
    params = {operand_param(i): o for i, o in enumerate(ops)}
    params["store"] = o4
    alloc = SramAllocator(low.config)
    bufs, _, _ = low.event_slots(alloc, events)
    tmp_act, scalars, const_loads = None, {}, []
    prelu = desc.kind == "binary" and desc.attrs["op"] == "prelu"
    div = desc.kind == "binary" and desc.attrs["op"] == "div"
    unary = desc.kind == "activation" and desc.activation.kind in UNARY_OPS
    if prelu:  # slope * min(x, 0), fp32 beside the result
        tmp_act = alloc.alloc(Space.ACC, (1, t1m, t2m, shape4[3]), F32, "prelu temporary")
    if div:  # reciprocal(b) beside the operands (fp32 in ACC when wide)
        tmp_act = alloc.alloc(Space.ACC if wide else Space.ACT, (1, t1m, t2m, shape4[3]), F32 if wide else F16,
                              "reciprocal of the divisor")
    wide_act = desc.kind == "activation" and desc.activation.wide
    acc32 = None
    if unary:
        tmp_act, scalars, const_loads = _unary_buffers(low, alloc, desc.activation.kind, (1, t1m, t2m, shape4[3]))
    elif wide_act:  # fp32 on ACC, fp32 constants, one rounding
        acc32 = alloc.alloc(Space.ACC, (1, t1m, t2m, shape4[3]), F32, "fp32 activation")
        tmp_act, scalars, const_loads = low.act_consts(alloc, desc.activation, Space.ACC, F32,
                                                       (1, t1m, t2m, shape4[3]))
    elif desc.kind == "activation":
        tmp_act, scalars, const_loads = low.act_consts(alloc, desc.activation, Space.ACT, F16,
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
            ref = at(low.slot(bufs[ev.buffer], r), ev.shape)
            current[ev.buffer] = ref
        if ev.kind == "load":
            step.loads.append(load(ref, params[ev.param].view(ev.axes, dict(ev.start)), ev.pads[:2] + ev.pads[2:]))
        elif ev.kind == "compute":
            srcs = [current[b] for _, b in ev.operands]
            if ev.intrin.startswith("widen"):
                step.computes.append(Instr.make("vcvt", a=srcs[0], o=ref))
            elif ev.intrin == "round":
                step.computes.append(Instr.make("vrequant", a=srcs[0], o=ref))
            elif prelu:  # max(x, 0) + slope * min(x, 0), in fp32 on ACC
                neg = at(tmp_act, ref.shape)
                step.computes += [Instr.make("vclamp", a=srcs[0], o=neg, min_f=-3.0e38, max_f=0.0),
                                  binop("vmul", neg, srcs[1], neg),
                                  Instr.make("vclamp", a=srcs[0], o=ref, min_f=0.0, max_f=3.0e38),
                                  binop("vadd", ref, neg, ref)]
            elif div:  # a * reciprocal(b)
                rec = at(tmp_act, srcs[1].shape)
                step.computes += [Instr.make("vfunc", a=srcs[1], o=rec, func=int(Func.RECIPROCAL)),
                                  binop("vmul", srcs[0], rec, ref)]
            elif unary:
                step.computes += _unary(desc.activation.kind, srcs[0], ref, tmp_act, scalars)
            elif wide_act:
                w = at(acc32, ref.shape)
                step.computes.append(Instr.make("vcvt", a=srcs[0], o=w))
                step.computes += low.epilogue(w, desc.activation, at(tmp_act, ref.shape) if tmp_act else None,
                                              scalars)
                step.computes.append(Instr.make("vrequant", a=w, o=ref))
            elif desc.kind == "binary":
                step.computes.append(binop("v" + desc.attrs["op"], srcs[0], srcs[1], ref))
            else:
                step.computes.append(Instr.make("vcvt", a=srcs[0], o=ref))
                step.computes += low.epilogue(ref, desc.activation, at(tmp_act, ref.shape) if tmp_act else None,
                                              scalars)
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=current[ev.buffer],
                                          dst=params[ev.param].view(ev.axes, dict(ev.start))))
    low.finish(steps)


UNARY_OPS = ("neg", "abs", "exp", "sqrt", "reciprocal", "square")


def _unary_buffers(low: Lowerer, alloc: SramAllocator, kind: str, shape) -> tuple:
    """(temporary, scalars, their loads) of a unary operator: sqrt's fp32 rsqrt in ACC, the -1 of neg
    and abs in ACT (counted by tiling.vector._elementwise_rows)."""
    tmp, scalars, loads = None, {}, []
    if kind == "sqrt":
        tmp = alloc.alloc(Space.ACC, shape, F32, "rsqrt")
    if kind in ("neg", "abs"):
        buf = alloc.alloc(Space.ACT, (1, 1, 1, 1), F16, "constant -1")
        loads.append(load(buf, low.consts.tensor(np.array([-1.0]), F16).view((None, None, None, 0))))
        scalars["minus_one"] = buf
    return tmp, scalars, loads


def _unary(kind: str, a, o, tmp, scalars) -> list:
    """The vector instructions of a unary operator from tile a (fp16) into tile o (fp16), one rounding."""
    if kind == "neg":
        return [binop("vmul", a, scalars["minus_one"], o)]
    if kind == "abs":  # max(x, -x)
        return [binop("vmul", a, scalars["minus_one"], o), binop("vmax", a, o, o)]
    if kind == "exp":
        return [Instr.make("vfunc", a=a, o=o, func=int(Func.EXP))]
    if kind == "reciprocal":
        return [Instr.make("vfunc", a=a, o=o, func=int(Func.RECIPROCAL))]
    if kind == "square":
        return [binop("vmul", a, a, o)]
    if kind == "sqrt":  # 1 / rsqrt(x), the rsqrt in fp32
        r = at(tmp, a.shape)
        return [Instr.make("vfunc", a=a, o=r, func=int(Func.RSQRT)), Instr.make("vfunc", a=r, o=o,
                                                                                 func=int(Func.RECIPROCAL))]
    raise Unsupported(f"unary operator {kind}")


def lower_reduce(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: MeanPlan) -> None:
    """sum / max / min over adjacent axes through TensorIR (tir_schedules/vector.py:reduce_schedule):
    sum by vreduce SUM into fp32 ACC and one rounding; max by vreduce MAX in fp16 (exact); min as
    -max(-x) (negation is exact in fp16). A reduction in chunks combines each chunk's partial result
    with vadd (fp32) or vmax."""
    x = ins[0]
    op = desc.attrs["op"]
    outer, red, inner = mean_axes(x.shape, desc.attrs["axis"])
    to, rr, ti = plan.outer, plan.chunk, plan.inner
    why = reduction_illegal(desc, plan)
    if why:
        raise Unsupported(why)
    chunked = rr < red
    events = vector_events(reduce_schedule, outer, red, inner, to, ti, op, low.double_buffer, rr)
    view = (outer, red, inner) if inner > 1 else (outer, red)
    params = {"X": DramTensor(x.region, x.offset, view, x.dtype),
              "store": DramTensor(out.region, out.offset, (outer, 1, inner) if inner > 1 else (outer, 1),
                                  out.dtype)}
    in_shape, o_shape, red_axis = reduce_shapes(desc, to, ti, rr)
    alloc = SramAllocator(low.config)
    in_slots = low.slots(alloc, Space.ACT, in_shape, F16, "input")
    out_slots = low.slots(alloc, Space.ACT, o_shape, F16, "output")
    acc = alloc.alloc(Space.ACC, o_shape, F32, "sum") if op == "sum" else None
    m1 = alloc.alloc(Space.ACT, (1, 1, 1, 1), F16, "constant -1") if op == "min" else None
    m1_c = low.consts.tensor(np.array([-1.0]), F16) if op == "min" else None
    part = running = None
    if chunked:
        part = alloc.alloc(Space.ACC, o_shape, F32, "partial sum") if op == "sum" else alloc.alloc(
            Space.ACT, o_shape, F16, f"partial {op}")
        running = acc if op == "sum" else alloc.alloc(Space.ACT, o_shape, F16, f"running {op}")
    steps: List[Step] = []
    n_out = 0
    first = True
    a = o = None
    for ev in events:
        if ev.kind == "init":
            first = True
        elif ev.kind == "load":
            step = Step(loads=[load(m1, m1_c.view((None, None, None, 0)))] if m1 is not None and not steps else [])
            a = at(low.slot(in_slots, len(steps)), ev.shape)
            steps.append(step)
            step.loads.append(load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute" and ev.intrin.startswith(f"r{op}") and chunked:
            mode = int(ReduceMode.SUM if op == "sum" else ReduceMode.MAX)
            run = at(running, ev.shape)
            if op == "min":
                step.computes.append(binop("vmul", a, m1, a))
            if first:
                step.computes.append(Instr.make("vreduce", a=a, o=run, mode=mode, axis=red_axis))
            else:
                p = at(part, ev.shape)
                step.computes += [Instr.make("vreduce", a=a, o=p, mode=mode, axis=red_axis),
                                  binop("vadd" if op == "sum" else "vmax", run, p, run)]
            first = False
        elif ev.kind == "compute" and ev.intrin == "res":
            o = at(low.slot(out_slots, n_out), ev.shape)
            if chunked:
                run = at(running, ev.shape)
                step.computes.append(Instr.make("vrequant", a=run, o=o) if op == "sum" else
                                     Instr.make("vcvt", a=run, o=o) if op == "max" else binop("vmul", run, m1, o))
            elif op == "sum":
                s = at(acc, ev.shape)
                step.computes += [Instr.make("vreduce", a=a, o=s, mode=int(ReduceMode.SUM), axis=red_axis),
                                  Instr.make("vrequant", a=s, o=o)]
            elif op == "max":
                step.computes.append(Instr.make("vreduce", a=a, o=o, mode=int(ReduceMode.MAX), axis=red_axis))
            else:  # min(x) = -max(-x)
                step.computes += [binop("vmul", a, m1, a),
                                  Instr.make("vreduce", a=a, o=o, mode=int(ReduceMode.MAX), axis=red_axis),
                                  binop("vmul", o, m1, o)]
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            n_out += 1
    low.finish(steps)


def _layer_norm_stage(stage: str, a, o, xs, s2, m, r, inv_n, eps_b, vecs) -> list:
    """The vector instructions of one stage of layer_norm_schedule (input a, output o, fp32 rows xs
    and s2, per-row m and r)."""
    if stage == "x32":
        return [Instr.make("vcvt", a=a, o=xs)]
    if stage == "mu":
        return [Instr.make("vreduce", a=xs, o=m, mode=int(ReduceMode.SUM), axis=3), binop("vmul", m, inv_n, m)]
    if stage == "xc":
        return [binop("vsub", xs, m, xs)]
    if stage == "var":
        return [binop("vmul", xs, xs, s2), Instr.make("vreduce", a=s2, o=r, mode=int(ReduceMode.SUM), axis=3),
                binop("vmul", r, inv_n, r)]
    if stage == "rstd":
        return [binop("vadd", r, eps_b, r), Instr.make("vfunc", a=r, o=r, func=int(Func.RSQRT))]
    if stage == "y":
        return [binop("vmul", xs, r, xs), binop("vmul", xs, vecs["G"], xs), binop("vadd", xs, vecs["B"], xs)]
    if stage == "out":
        return [Instr.make("vrequant", a=xs, o=o)]
    raise Unsupported(f"layer norm stage {stage}")


def lower_layer_norm(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: SoftmaxPlan) -> None:
    """Layer norm over the last axis through TensorIR (tir_schedules/vector.py:layer_norm_schedule), in
    fp32 on ACC: widen, row sum * 1/n (mean), subtract, square, row sum * 1/n (variance), + epsilon,
    rsqrt, * 1/std, * gamma, + beta, one rounding to fp16. Gamma, beta (fp32) and the scalars are
    loaded once, with the first tile."""
    x = ins[0]
    shape = x.shape
    rows, length = math.prod(shape[:-1]), shape[-1]
    eps = desc.attrs["epsilon"]
    tr = plan.rows
    events = vector_events(layer_norm_schedule, rows, length, eps, tr, low.double_buffer)
    params = {"X": DramTensor(x.region, x.offset, (rows, length), x.dtype),
              "G": low.consts.tensor(desc.inputs[1].const.astype(np.float32), F32),
              "B": low.consts.tensor(desc.inputs[2].const.astype(np.float32), F32),
              "store": DramTensor(out.region, out.offset, (rows, length), out.dtype)}
    alloc = SramAllocator(low.config)
    in_slots = low.slots(alloc, Space.ACT, (1, 1, tr, length), F16, "input")
    out_slots = low.slots(alloc, Space.ACT, (1, 1, tr, length), F16, "output")
    x32 = alloc.alloc(Space.ACC, (1, 1, tr, length), F32, "x - mean")
    sq = alloc.alloc(Space.ACC, (1, 1, tr, length), F32, "square")
    mu = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "row mean")
    rstd = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "row 1/std")
    vecs = {p: alloc.alloc(Space.ACC, (1, 1, 1, length), F32, p) for p in ("G", "B")}
    inv_n = alloc.alloc(Space.ACC, (1, 1, 1, 1), F32, "1/n")
    eps_b = alloc.alloc(Space.ACC, (1, 1, 1, 1), F32, "epsilon")
    first = [load(inv_n, low.consts.tensor(np.array([1.0 / length]), F32).view((None, None, None, 0))),
             load(eps_b, low.consts.tensor(np.array([eps]), F32).view((None, None, None, 0)))]
    steps: List[Step] = []
    rank = 0
    a = o = xs = m = r = s2 = None
    for ev in events:
        if ev.kind == "load" and ev.param in vecs:
            first.append(load(vecs[ev.param], params[ev.param].view((None, None, None, 0))))
        elif ev.kind == "load":
            t = ev.shape[2]
            step = Step(loads=first if not steps else [])
            steps.append(step)
            a = at(low.slot(in_slots, rank), (1, 1, t, length))
            o = at(low.slot(out_slots, rank), (1, 1, t, length))
            xs, s2 = at(x32, (1, 1, t, length)), at(sq, (1, 1, t, length))
            m, r = at(mu, (1, 1, t, 1)), at(rstd, (1, 1, t, 1))
            step.loads.append(load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute":
            step.computes += _layer_norm_stage(ev.intrin, a, o, xs, s2, m, r, inv_n, eps_b, vecs)
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            rank += 1
    low.finish(steps)


def lower_softmax(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: SoftmaxPlan) -> None:
    """Softmax over the last axis through TensorIR (tir_schedules/vector.py:softmax_schedule): the
    scheduled blocks mx / e / se / out become vreduce MAX, vsub + exp, vreduce SUM + reciprocal,
    vmul, on row tiles that fit ACT."""
    x = ins[0]
    shape = x.shape
    axis = desc.attrs["axis"] % len(shape)
    if axis != len(shape) - 1:
        raise Unsupported("softmax over an axis other than the last")
    rows, length = math.prod(shape[:-1]), shape[-1]
    x2 = DramTensor(x.region, x.offset, (rows, length), x.dtype)
    o2 = DramTensor(out.region, out.offset, (rows, length), out.dtype)
    wide = x.dtype == F32  # a float32 input: subtract the row maximum in fp32, then round
    tr = plan.rows
    events = vector_events(softmax_schedule, rows, length, "float32" if wide else "float16", tr, low.double_buffer)
    params = {"X": x2, "store": o2}
    alloc = SramAllocator(low.config)
    in_slots = low.slots(alloc, Space.ACT, (1, 1, tr, length), F16, "input")
    out_slots = low.slots(alloc, Space.ACT, (1, 1, tr, length), F16, "output")
    mx = alloc.alloc(Space.ACT, (1, 1, tr, 1), F16, "row max")
    rec16 = alloc.alloc(Space.ACT, (1, 1, tr, 1), F16, "row reciprocal")
    total = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "row sum")
    if wide:
        in_slots = low.slots(alloc, Space.ACC, (1, 1, tr, length), F32, "fp32 input")
        mx = alloc.alloc(Space.ACC, (1, 1, tr, 1), F32, "fp32 row max")
    steps: List[Step] = []
    rank = 0
    for ev in events:
        if ev.kind == "load":
            t = ev.shape[2]
            a = at(low.slot(in_slots, rank), (1, 1, t, length))
            o = at(low.slot(out_slots, rank), (1, 1, t, length))
            m, s, r = at(mx, (1, 1, t, 1)), at(total, (1, 1, t, 1)), at(rec16, (1, 1, t, 1))
            step = Step(loads=[load(a, params[ev.param].view(ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute" and ev.intrin == "mx":
            step.computes.append(Instr.make("vreduce", a=a, o=m, mode=int(ReduceMode.MAX), axis=3))
        elif ev.kind == "compute" and ev.intrin == "e":
            step.computes += ([binop("vsub", a, m, a), Instr.make("vrequant", a=a, o=o)] if wide else
                              [binop("vsub", a, m, o)])
            step.computes.append(Instr.make("vfunc", a=o, o=o, func=int(Func.EXP)))
        elif ev.kind == "compute" and ev.intrin == "se":
            step.computes += [Instr.make("vreduce", a=o, o=s, mode=int(ReduceMode.SUM), axis=3),
                              Instr.make("vfunc", a=s, o=s, func=int(Func.RECIPROCAL)),
                              Instr.make("vcvt", a=s, o=r)]
        elif ev.kind == "compute" and ev.intrin == "out":
            step.computes.append(binop("vmul", o, r, o))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            rank += 1
    low.finish(steps)


def lower_mean(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: MeanPlan) -> None:
    """Mean over adjacent axes through TensorIR (tir_schedules/vector.py:mean_schedule): vreduce
    SUM into ACC, multiply by 1/count, one rounding to fp16."""
    x = ins[0]
    shape = x.shape
    outer, red, inner = mean_axes(shape, desc.attrs["axis"])
    why = reduction_illegal(desc, plan)
    if why:
        raise Unsupported(why)
    to = plan.outer
    events = vector_events(mean_schedule, outer, red, inner, to, inner, red, "float16", low.double_buffer)
    view = (outer, red, inner) if inner > 1 else (outer, red)
    params = {"X": DramTensor(x.region, x.offset, view, x.dtype),
              "store": DramTensor(out.region, out.offset, (outer, 1, inner) if inner > 1 else (outer, 1),
                                  out.dtype)}
    red_axis = 2 if inner > 1 else 3
    alloc = SramAllocator(low.config)
    in_shape, o_shape = ((1, to, red, inner), (1, to, 1, inner)) if inner > 1 else ((1, 1, to, red), (1, 1, to, 1))
    in_slots = low.slots(alloc, Space.ACT, in_shape, F16, "input")
    out_slots = low.slots(alloc, Space.ACT, o_shape, F16, "output")
    acc = alloc.alloc(Space.ACC, o_shape, F32, "sum")
    scale = alloc.alloc(Space.ACC, (1, 1, 1, 1), F32, "1/count")
    scale_c = low.consts.tensor(np.array([1.0 / red]), F32)
    steps: List[Step] = []
    rank = 0
    a = s = None
    for ev in events:
        if ev.kind == "load":
            step = Step(loads=[load(scale, scale_c.view((None, None, None, 0)))] if not steps else [])
            steps.append(step)
            a = at(low.slot(in_slots, rank), ev.shape)
            step.loads.append(load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute" and ev.intrin.startswith("msum"):  # one chunk: the whole reduction
            s = at(acc, ev.shape)
            step.computes.append(Instr.make("vreduce", a=a, o=s, mode=int(ReduceMode.SUM), axis=red_axis))
        elif ev.kind == "compute" and ev.intrin == "res":
            o = at(low.slot(out_slots, rank), ev.shape)
            step.computes += [binop("vmul", s, scale, s), Instr.make("vrequant", a=s, o=o)]
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            rank += 1
    low.finish(steps)


def lower_concat(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: ConcatPlan) -> None:
    """Copies each input's rows into its place in the output, through TensorIR
    (tir_schedules/vector.py:concat_schedule). The tile goes through the vector unit (a vcvt copy
    into an output slot): storing straight from the load slot would let the load two tiles later
    overwrite it before the store has read it (the slot-free token comes from the compute queue,
    not from the store)."""
    axis = desc.attrs["axis"] % len(out.shape)
    rank_pad = 4 - len(out.shape)
    o4 = DramTensor(out.region, out.offset, pad4(out.shape), out.dtype)
    a4 = axis + rank_pad
    ins4 = [DramTensor(t.region, t.offset, pad4(t.shape), t.dtype) for t in ins]
    tiles = [tuple(t) for t in plan.tiles]
    events = vector_events(concat_schedule, [t.shape for t in ins4], tiles, low.double_buffer)
    offsets, off = [], 0
    for t4 in ins4:
        offsets.append(off)
        off += t4.shape[a4]
    params = {operand_param(k): t for k, t in enumerate(ins4)}
    store_index = {store_param(k): k for k in range(len(ins4))}
    alloc = SramAllocator(low.config)
    shape = tuple(plan.slot)
    in_slots = low.slots(alloc, Space.ACT, shape, F16, "copy in")
    out_slots = low.slots(alloc, Space.ACT, shape, F16, "copy out")
    steps: List[Step] = []
    rank = 0
    for ev in events:
        if ev.kind == "load":
            buf = at(low.slot(in_slots, rank), ev.shape)
            step = Step(loads=[load(buf, params[ev.param].view(ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute":
            dst = at(low.slot(out_slots, rank), ev.shape)
            step.computes.append(Instr.make("vcvt", a=buf, o=dst))
        elif ev.kind == "store":  # store<k> writes input k's place: shift its start along the axis
            k = store_index[ev.param]
            start = {d: v + (offsets[k] if d == a4 else 0) for d, v in ev.start}
            step.stores.append(Instr.make("dma.store", src=dst, dst=o4.view(ev.axes, start)))
            rank += 1
    low.finish(steps)


def lower_pool(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: PoolPlan) -> None:
    """Max / average pooling through TensorIR (tir_schedules/vector.py:pool_schedule). The tile
    (`rows` output rows x `tc` channels, the largest double-buffered tiles that fit ACT) is the
    schedule's split; the input tile is loaded without its halo, which `vpool` clips instead."""
    x = ins[0]
    attrs = desc.attrs
    ax = LAYOUT_AXES[attrs["layout"]]
    xs, os_ = x.shape, out.shape
    n, h, w, c = (xs[a] for a in ax)
    ow = os_[ax[2]]
    kh, kw = attrs["pool_size"]
    sh, sw = attrs["strides"]
    rows, tc = plan.rows, plan.channels
    events = vector_events(pool_schedule, desc, tuple(xs), tuple(os_), rows, tc, low.double_buffer)
    params = {"X": x, "store": out}
    alloc = SramAllocator(low.config)
    in_buf = next(ev.buffer for ev in events if ev.kind == "load")
    out_buf = next(ev.buffer for ev in events if ev.kind == "compute" and ev.intrin == "res")
    in_shape = (1, min(h, (rows - 1) * sh + kh), w, tc)
    in_slots = low.slots(alloc, Space.ACT, in_shape, F16, "input")
    out_slots = low.slots(alloc, Space.ACT, (1, rows, ow, tc), F16, "output")
    mode = PoolMode.MAX if attrs["mode"] == "max" else PoolMode.AVG
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
            a = at(low.slot(in_slots, rank[in_buf]), shape)
            rank[in_buf] += 1
            step.loads.append(load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute" and ev.intrin == "res":
            o = at(low.slot(out_slots, rank[out_buf]), ev.shape)
            rank[out_buf] += 1
            step.computes.append(Instr.make("vpool", a=a, o=o, mode=int(mode), kh=kh, kw=kw, stride_h=sh,
                                            stride_w=sw, pad_top=pads[0], pad_left=pads[2]))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
    low.finish(steps)
