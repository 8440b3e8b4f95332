"""Lowering of the MAC operators (conv2d, depthwise, grouped, matmul) through TensorIR: the plan's
schedule (tir_schedules.default) is walked and its events become DMA loads and stores with their
views and halos, one MAC instruction per tensorized tile, and the epilogue on the vector unit."""

from __future__ import annotations

from typing import List

import numpy as np

from ..ir.desc import OpDesc, Unsupported, signature
from ..ir.geometry import matmul_batches, matmul_geom
from ..ir.memory import dtype_of
from ..ir.plan import MacPlan
from ..isa import DType, Instr, Space
from ..tir_schedules.default import quant_key, schedule
from ..tir_schedules.walker import Walker
from .emit import F16, F32, Lowerer, at, binop, load, schedule_error
from .memory import DramTensor, SramAllocator
from .pipeline import Step

_EVENTS: dict = {}


def tir_events(desc: OpDesc, plan: MacPlan, double_buffer: bool):
    """(kernel, events) of the operator's scheduled TensorIR, memoised on what they depend on."""
    key = (signature(desc), plan, double_buffer, quant_key(desc))
    hit = _EVENTS.get(key)
    if hit is None:
        try:
            kernel, sch = schedule(desc, plan, double_buffer)
        except Unsupported:
            raise
        except Exception as e:  # noqa: BLE001 - see emit.schedule_error
            raise schedule_error(e, f" for plan {plan.to_dict()}") from e
        hit = _EVENTS[key] = (kernel, Walker(sch.mod["main"], kernel.valid).events())
    return hit


def lower_mac(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: MacPlan) -> None:
    """Schedules the operator's PrimFunc (tir_schedules.default), walks the scheduled TIR and
    emits its events: DMA loads and stores with their views and halos, one MAC instruction per
    tensorized tile, the epilogue on the vector unit."""
    kernel, events = tir_events(desc, plan, low.double_buffer)
    params = _mac_params(low, desc, kernel, ins, out)
    a = kernel.attrs
    alloc = SramAllocator(low.config)
    slots, shapes, first = low.event_slots(alloc, events)
    acc_buf = next(ev.buffer for ev in events if ev.kind == "mac")
    tmp, scalars, const_loads = low.act_consts(alloc, desc.activation, Space.ACC, dtype_of(first[acc_buf].dtype),
                                               shapes[acc_buf])
    bias_buf = next((ev.buffer for ev in events if ev.kind == "load" and ev.param == "B"), None)
    table_buf = next((ev.buffer for ev in events if ev.kind == "load" and ev.param == "Q"), None)
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
            ref = at(low.slot(slots[ev.buffer], r), ev.shape)
        if ev.kind == "load":
            pads = ev.pads
            step.loads.append(load(ref, params[ev.param].view(ev.axes, dict(ev.start)),
                                    (pads[0], pads[1], pads[2], pads[3]), ev.pad_value))
            current[ev.buffer] = ref
        elif ev.kind == "mac":
            ops = dict(ev.operands)
            o = at(slots[ev.buffer][0], ev.shape)
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
            acc_t = at(current[acc_buf], ev.shape)
            if bias_buf is not None:
                step.computes.append(binop("vadd", acc_t, at(current[bias_buf], (1, 1, 1, ev.shape[3])), acc_t))
            if desc.quant is not None:  # TFLite requantisation with the per-channel table in ACC
                table = current[table_buf]
                step.computes.append(Instr.make("vrequant", a=acc_t, o=ref,
                                                **desc.quant.vrequant_fields(table.addr, force_table=True)))
            else:
                step.computes += low.epilogue(acc_t, desc.activation, at(tmp, acc_t.shape) if tmp else None,
                                                scalars)
                step.computes.append(Instr.make("vrequant", a=acc_t, o=ref))
            current[ev.buffer] = ref
        elif ev.kind == "store":
            src = current[ev.buffer]
            if src.shape != ev.shape:
                raise Unsupported(f"store of {list(ev.shape)} from a {list(src.shape)} tile ({desc.composite})")
            step.stores.append(Instr.make("dma.store", src=src, dst=params[ev.param].view(ev.axes, dict(ev.start))))
    low.finish(steps)

def _mac_params(low: Lowerer, desc: OpDesc, kernel, ins: List[DramTensor], out: DramTensor) -> dict:
    """The DRAM tensor behind each PrimFunc parameter (weights packed HWIO fp16, bias fp32)."""
    params = {}
    q = desc.quant
    wdt = DType.INT8 if q is not None else F16
    if kernel.kind == "gemm":
        rows, k, n = matmul_geom(desc)
        b = matmul_batches(desc)
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
        params["W"] = low.consts.tensor(w_hwio, wdt)
        params["store"] = out
        cout = kernel.attrs["cout"]
    if len(desc.inputs) > 2:
        bias = desc.inputs[2].const.reshape(-1)
        if bias.size != cout:
            raise Unsupported(f"bias has {bias.size} values for {cout} output channels")
        params["B"] = (low.consts.tensor(q.bias, DType.INT32) if q is not None
                       else low.consts.tensor(bias.astype(np.float32), F32))
    if q is not None:
        params["Q"] = low.consts.tensor(q.param_table().reshape(-1), DType.INT32)
    return params
