"""Integer (int8) lowering of the vector-unit operators: qbinary, qpool, qlut, qconcat, qmean.

Every integer field comes from :mod:`tvm_npu.quant` (computed by the pattern side and carried in
``OpDesc.quant``, or, for qmean, by :func:`tvm_npu.quant.mean_quant` here); this module only tiles,
places and sequences. Tensors stay in their logical (Relax) layout in DRAM; the DMA views reshape,
broadcast and transpose them (NCHW pools), exactly as the float lowering in ``vector.py`` does.

OpDesc contract (``kind``, ``attrs``, ``inputs``, ``quant``); all inputs and the output are int8. ``quant`` is
the typed record of :mod:`tvm_npu.ir.quant` (``BinaryQuant``, ``PoolQuant``, ``LutQuant``, ``ConcatQuant``,
``MeanQuant``); a hand-written description may give the mapping forms below instead, which
``ir.quant.quant_record`` turns into the record (refusing what is missing):

* ``qbinary``: ``attrs["op"]`` in ``add | sub | mul``; inputs ``[a, b]`` (either may be an int8 CONST
  tensor), numpy broadcasting between the logical shapes, rank <= 4, output shape = the broadcast shape;
  ``quant`` = the dict of :func:`~tvm_npu.quant.add_quant` / ``sub_quant`` / ``mul_quant`` (the
  ``vadd`` / ``vsub`` / ``vmul`` fields; a narrower ``act_min`` / ``act_max`` for a fused clip is fine).
  One instruction per tile. Operands that are the same for every tile (a per-channel vector or a
  scalar) are loaded once.
* ``qpool``: attrs as the float pool OpDesc (``mode`` avg | max, ``pool_size``, ``strides``,
  ``padding`` (top, left, bottom, right), ``dilation``, ``ceil_mode``, ``count_include_pad``, ``layout``
  NCHW | NHWC); ``quant`` = :func:`~tvm_npu.quant.pool_quant` (``act_min``, ``act_max``). ``vpool`` on the
  raw int8 values with TFLite's clipped windows (padding never counts).
* ``qlut``: one input of any shape and rank; ``quant = {"table": int8[256]}`` in NPU order
  (``table[x + 128]``), loaded into ACT once; ``vlut`` per tile (any unary int8 function, QUANTIZE
  int8 -> int8 via :func:`~tvm_npu.quant.requantize_lut`).
* ``qconcat``: ``attrs["axis"]``; inputs: the tensors to join (rank <= 4); ``quant = {"inputs": tables}``
  with ``tables`` exactly the list :func:`~tvm_npu.quant.concat_quant` returns (one entry per input:
  None = byte copy, an int8[256] table = requantise that input with ``vlut``). The bare list is accepted
  too. Each input tile goes load -> ``vlut`` (or a ``vcvt`` int8 copy) -> strided ``dma.store`` into its
  slice of the output (the copy keeps the load and store buffers apart, so double buffering never
  overwrites a tile that is still being stored).
* ``qmean``: ``attrs = {"axis": tuple | None (all), "keepdims": bool}`` with the reduced axes adjacent;
  ``quant = {"in_q": QParams, "out_q": QParams}`` plus optionally ``"rounding": "real" | "tflite"``
  (default ``"real"``). ``vreduce`` SUM to int32 in ACC (long reductions in chunks, added with
  ``vadd.i32``), ``vadd.i32`` of the scalar ``-count * zp_in``, then ``vrequant``:
  ``y = clamp(MBQM(sum(x) - count*zp_in, m, s) + zp_out)``. With ``"real"`` ``(m, s) =
  QuantizeMultiplier(s_in / (s_out * count))``; LiteRT's int8 MEAN (``reference_ops::QuantizedMeanOrSum``)
  derives ``(m, s)`` differently (``QuantizeMultiplier(s_in / s_out)`` then an integer division of the
  multiplier by ``count``; see :func:`~tvm_npu.quant.mean_quant`), which ``"tflite"`` reproduces byte for
  byte; the two differ by one step on about 1% of outputs.

Anything else raises :class:`~tvm_npu.ir.Unsupported` with the reason. Tile sizes come from the tiling
stage (tvm_npu/tiling/integer.py); this module obeys them.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import quant as Q
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import LAYOUT_AXES, mean_axes, pad4
from ..ir.plan import ConcatPlan, IntTilePlan, MeanPlan, PoolPlan
from ..ir.quant import quant_record
from ..isa import DType, Instr, PoolMode, ReduceMode, Space, TensorRef
from ..tiling.integer import MAX_DIM, qbinary_views, qlut_view, qmean_shapes
from ..tir_schedules.vector import (concat_schedule, int_tile_schedule, mean_schedule, operand_param, pool_schedule,
                                    table_param)
from .emit import Lowerer, at, load, vector_events
from .memory import DramTensor, SramAllocator
from .pipeline import Step

I8, I32 = DType.INT8, DType.INT32


def _check_int8(desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    """Every operand and the result int8, with quantisation parameters, none empty."""
    for i, t in enumerate(list(ins) + [out]):
        if t is None or t.dtype != I8:
            what = "the output" if i == len(ins) else f"input {i}"
            raise Unsupported(f"{desc.kind}: {what} is {getattr(t, 'dtype', None)!r}, int8 expected")
    if desc.quant is None:
        raise Unsupported(f"{desc.kind}: no quantisation parameters (OpDesc.quant)")
    if any(math.prod(t.shape) == 0 for t in list(ins) + [out]):
        raise Unsupported(f"{desc.kind}: empty tensor")


# ---- helpers --------------------------------------------------------------------------------------


def _byte_slots(low: Lowerer, alloc: SramAllocator, cap: int, what: str) -> List[TensorRef]:
    """Double-buffered slots of `cap` bytes; every use views them with its tile's dims (`at`)."""
    return low.slots(alloc, Space.ACT, (1, 1, 1, cap), I8, what)


def _as(t: DramTensor, shape: Sequence[int]) -> DramTensor:
    return DramTensor(t.region, t.offset, tuple(shape), t.dtype)


def _table(table, what: str) -> np.ndarray:
    try:
        t = np.asarray(table)
    except Exception as e:  # noqa: BLE001
        raise Unsupported(f"{what}: not an array ({e})") from e
    if t.shape != (256,) or t.dtype.kind not in "iu" or np.any(t < -128) or np.any(t > 127):
        raise Unsupported(f"{what}: a LUT must be 256 int8 entries in NPU order, got {t.dtype} {t.shape}")
    return t.astype(np.int8)


def _load_table(low: Lowerer, alloc: SramAllocator, table: np.ndarray, what: str) -> Tuple[TensorRef, Instr]:
    buf = alloc.alloc(Space.ACT, (1, 1, 1, 256), I8, what)
    src = low.consts.tensor(table, I8)
    return buf, load(buf, src.view((None, None, None, 0)))


def _i32_scalar(low: Lowerer, alloc: SramAllocator, value: int, what: str) -> Tuple[TensorRef, Instr]:
    buf = alloc.alloc(Space.ACC, (1, 1, 1, 1), I32, what)
    src = low.consts.tensor(np.array([value], np.int32), I32)
    return buf, load(buf, src.view((None, None, None, 0)))


# ---- qbinary ------------------------------------------------------------------------------------


def lower_qbinary(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: IntTilePlan) -> None:
    _check_int8(desc, ins, out)
    op = desc.attrs.get("op")
    if op not in ("add", "sub", "mul"):
        raise Unsupported(f"qbinary op {op!r} (add, sub or mul)")
    if len(ins) != 2:
        raise Unsupported(f"qbinary takes 2 operands, got {len(ins)}")
    fields = quant_record(desc.kind, len(desc.inputs), desc.quant).fields()
    if not -128 <= fields["act_min"] <= fields["act_max"] <= 127:
        raise Unsupported(f"qbinary activation range [{fields['act_min']}, {fields['act_max']}] is not int8")
    shapes = [tuple(t.shape) for t in ins]
    if any(len(s) > 4 for s in shapes + [tuple(out.shape)]):
        raise Unsupported(f"qbinary of rank > 4 ({shapes} -> {list(out.shape)})")
    try:
        bshape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise Unsupported(f"qbinary operands {shapes} do not broadcast") from None
    if bshape != tuple(out.shape):
        raise Unsupported(f"qbinary operands {shapes} broadcast to {list(bshape)}, output is {list(out.shape)}")
    views, o4 = qbinary_views(shapes, tuple(out.shape))  # plain elementwise (or a scalar): dims folded
    ops = [_as(t, v) for t, v in zip(ins, views)]
    out4 = _as(out, o4)

    alloc = SramAllocator(low.config)
    # operands equal for every tile (a per-channel vector, a scalar) stay resident, as planned
    invariant = list(plan.resident)
    fixed = {k: alloc.alloc(Space.ACT, (1, 1, 1, o.shape[3]), I8, f"operand {k}")
             for k, (o, inv) in enumerate(zip(ops, invariant)) if inv}
    cap, tile = plan.slot_bytes, plan.tile
    slots = {k: _byte_slots(low, alloc, cap, f"operand {k}") for k in range(2) if not invariant[k]}
    out_slots = _byte_slots(low, alloc, cap, "output")
    params = {operand_param(k): o for k, o in enumerate(ops)}
    params["store"] = out4
    _emit_int_tiles(low, op, [tuple(o.shape) for o in ops], tuple(o4), tile, invariant, params, fixed, slots,
                    out_slots, lambda a, o: Instr.make("v" + op, a=a[0], b=a[1], o=o, **fields))


def _emit_int_tiles(low: Lowerer, kind: str, shapes, o4, tile, invariant, params, fixed, slots, out_slots,
                    make) -> None:
    """Schedules the integer tile kernel (tir_schedules/vector.py:int_tile_schedule) and emits the
    walker's events: loads once (invariant operands, the table) or per tile, the vector instruction
    `make(operands, out)` per tile, the store."""
    events = vector_events(int_tile_schedule, kind, shapes, o4, tile, invariant, low.double_buffer)
    operand_index = {operand_param(k): k for k in range(len(shapes))}
    steps: List[Step] = []
    step, rank, current, first = None, 0, {}, []
    for ev in events:
        if ev.kind == "load":
            k = operand_index.get(ev.param, ev.param)
            if k in fixed:  # once, with the first tile
                current[k] = at(fixed[k], ev.shape)
                first.append(load(current[k], params[ev.param].view(ev.axes, dict(ev.start))))
                continue
            if step is None or step.stores:
                step = Step(loads=first if not steps else [])
                steps.append(step)
            current[k] = at(low.slot(slots[k], rank), ev.shape)
            step.loads.append(load(current[k], params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute":
            if step is None or step.stores:  # every operand invariant
                step = Step(loads=first if not steps else [])
                steps.append(step)
            o = at(low.slot(out_slots, rank), ev.shape)
            step.computes.append(make([current[k] for k in sorted(c for c in current if isinstance(c, int))], o))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            rank += 1
    low.finish(steps)


# ---- qlut ---------------------------------------------------------------------------------------


def lower_qlut(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: IntTilePlan) -> None:
    _check_int8(desc, ins, out)
    if len(ins) != 1:
        raise Unsupported(f"qlut takes 1 operand, got {len(ins)}")
    x = ins[0]
    if math.prod(x.shape) != math.prod(out.shape):
        raise Unsupported(f"qlut input {list(x.shape)} and output {list(out.shape)} differ in size")
    table = _table(quant_record(desc.kind, len(desc.inputs), desc.quant).table, "qlut table")
    alloc = SramAllocator(low.config)
    lut = alloc.alloc(Space.ACT, (1, 1, 1, 256), I8, "LUT")
    shape4 = qlut_view(desc)
    x4, o4 = _as(x, shape4), _as(out, shape4)
    cap, tile = plan.slot_bytes, plan.tile
    in_slots = _byte_slots(low, alloc, cap, "input")
    out_slots = _byte_slots(low, alloc, cap, "output")
    params = {operand_param(0): x4, table_param(): low.consts.tensor(table, I8), "store": o4}
    _emit_int_tiles(low, "lut", [tuple(shape4)], tuple(shape4), tile, [False], params, {"T": lut}, {0: in_slots},
                    out_slots, lambda a, o: Instr.make("vlut", a=a[0], o=o, lut_addr=lut.addr))


# ---- qconcat ------------------------------------------------------------------------------------


def lower_qconcat(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: ConcatPlan) -> None:
    _check_int8(desc, ins, out)
    tables = quant_record(desc.kind, len(desc.inputs), desc.quant).tables
    if not ins:
        raise Unsupported("qconcat of no inputs")
    rank_ = len(out.shape)
    if rank_ > 4 or any(len(t.shape) != rank_ for t in ins):
        raise Unsupported(f"qconcat of ranks {[len(t.shape) for t in ins]} -> {rank_} (equal ranks <= 4)")
    axis = int(desc.attrs.get("axis", 0))
    if not -rank_ <= axis < rank_:
        raise Unsupported(f"qconcat axis {axis} for rank {rank_}")
    axis %= rank_
    for t in ins:
        if any(d != e for i, (d, e) in enumerate(zip(t.shape, out.shape)) if i != axis):
            raise Unsupported(f"qconcat input {list(t.shape)} does not match output {list(out.shape)} off axis {axis}")
    if sum(t.shape[axis] for t in ins) != out.shape[axis]:
        raise Unsupported(f"qconcat inputs do not add up to the output along axis {axis}")
    alloc = SramAllocator(low.config)
    luts: Dict[bytes, TensorRef] = {}
    const_loads = []
    per_input: List[Optional[TensorRef]] = []
    for i, t in enumerate(tables):
        if t is None:
            per_input.append(None)
            continue
        arr = _table(t, f"qconcat table of input {i}")
        key = arr.tobytes()
        if key not in luts:
            luts[key], ld = _load_table(low, alloc, arr, f"LUT {len(luts)}")
            const_loads.append(ld)
        per_input.append(luts[key])
    pad = 4 - rank_
    o4 = _as(out, pad4(out.shape))
    a4 = axis + pad
    cap = plan.slot[0]
    in_slots = _byte_slots(low, alloc, cap, "input")
    out_slots = _byte_slots(low, alloc, cap, "output")
    ins4 = [_as(t, pad4(t.shape)) for t in ins]
    tiles = [tuple(t) for t in plan.tiles]
    events = vector_events(concat_schedule, [t.shape for t in ins4], tiles, low.double_buffer, "int8",
                           [lut is not None for lut in per_input])
    offsets, off = [], 0
    for t4 in ins4:
        offsets.append(off)
        off += t4.shape[a4]
    params = {operand_param(k): t for k, t in enumerate(ins4)}
    operand_index = {operand_param(k): k for k in range(len(ins4))}
    steps: List[Step] = []
    for ev in events:  # the TensorIR tiles of each input: load, copy or lookup, store
        if ev.kind == "load" and ev.param not in operand_index:
            continue  # the tables are loaded once, below
        if ev.kind == "load":
            k = operand_index[ev.param]
            rank = len(steps)
            a = at(low.slot(in_slots, rank), ev.shape)
            step = Step(loads=(list(const_loads) if rank == 0 else []) + [load(a, params[ev.param].view(
                ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute":
            o = at(low.slot(out_slots, rank), ev.shape)
            lut = per_input[k]
            step.computes.append(Instr.make("vlut", a=a, o=o, lut_addr=lut.addr) if lut is not None
                                 else Instr.make("vcvt", a=a, o=o))
        elif ev.kind == "store":  # input k's place in the output: its start shifted along the axis
            start = {d: v + (offsets[k] if d == a4 else 0) for d, v in ev.start}
            step.stores.append(Instr.make("dma.store", src=o, dst=o4.view(ev.axes, start)))
    low.finish(steps)


# ---- qpool --------------------------------------------------------------------------------------


def lower_qpool(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: PoolPlan) -> None:
    _check_int8(desc, ins, out)
    attrs = desc.attrs
    if len(ins) != 1:
        raise Unsupported(f"qpool takes 1 operand, got {len(ins)}")
    x = ins[0]
    layout = attrs.get("layout", "NCHW")
    if layout not in LAYOUT_AXES:
        raise Unsupported(f"qpool layout {layout} (NCHW or NHWC)")
    if attrs.get("out_layout") not in (None, "", layout):
        raise Unsupported(f"qpool out_layout {attrs.get('out_layout')} differs from layout {layout}")
    mode = attrs.get("mode")
    if mode not in ("avg", "max"):
        raise Unsupported(f"qpool mode {mode!r}")
    if tuple(attrs.get("dilation", (1, 1))) != (1, 1):
        raise Unsupported(f"qpool dilation {attrs.get('dilation')}")
    kh, kw = attrs["pool_size"]
    sh, sw = attrs["strides"]
    pads = tuple(attrs.get("padding", (0, 0, 0, 0)))
    pads = pads * 2 if len(pads) == 2 else pads
    pt, pl = pads[0], pads[1]
    if mode == "avg" and attrs.get("count_include_pad") and any(pads):
        raise Unsupported("average pooling that counts padding (vpool averages the in-bounds taps)")
    if len(x.shape) != 4 or len(out.shape) != 4:
        raise Unsupported(f"qpool of rank {len(x.shape)} (4 expected)")
    q = quant_record(desc.kind, len(desc.inputs), desc.quant)
    act_min, act_max = q.act_min, q.act_max
    if not -128 <= act_min <= act_max <= 127:
        raise Unsupported(f"qpool activation range [{act_min}, {act_max}] is not int8")
    ax = LAYOUT_AXES[layout]
    n, h, w, c = (x.shape[a] for a in ax)
    on, oh, ow, oc = (out.shape[a] for a in ax)
    if (on, oc) != (n, c):
        raise Unsupported(f"qpool output {list(out.shape)} for input {list(x.shape)}")
    for name, v in (("kh", kh), ("kw", kw), ("stride_h", sh), ("stride_w", sw)):
        if not 1 <= v <= 255:
            raise Unsupported(f"qpool {name} = {v} (1..255)")
    if not (0 <= pt < kh and 0 <= pl < kw):
        raise Unsupported(f"qpool padding {pads} of a {kh}x{kw} window leaves empty windows")
    if (oh - 1) * sh - pt >= h or (ow - 1) * sw - pl >= w or oh < 1 or ow < 1:
        raise Unsupported(f"qpool output {oh}x{ow} has windows outside the {h}x{w} input")
    if max(h, w, oh, ow) > MAX_DIM:
        raise Unsupported(f"qpool spatial size {h}x{w} -> {oh}x{ow} above {MAX_DIM}")
    rows, tc = plan.rows, plan.channels
    events = vector_events(pool_schedule, desc, tuple(x.shape), tuple(out.shape), rows, tc, low.double_buffer,
                           "int8")
    alloc = SramAllocator(low.config)
    in_slots = low.slots(alloc, Space.ACT, (1, min(h, (rows - 1) * sh + kh), w, tc), I8, "input")
    out_slots = low.slots(alloc, Space.ACT, (1, rows, ow, tc), I8, "output")
    pmode = int(PoolMode.MAX if mode == "max" else PoolMode.AVG)
    params = {"X": x, "store": out}
    steps: List[Step] = []
    for ev in events:  # the TensorIR tiles: load (halo clipped by vpool), pool, store
        if ev.kind == "load":
            rank = len(steps)
            step = Step()
            steps.append(step)
            p = ev.pads
            a = at(low.slot(in_slots, rank), (1, ev.shape[1] - p[0] - p[1], ev.shape[2] - p[2] - p[3], ev.shape[3]))
            step.loads.append(load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute" and ev.intrin == "res":
            o = at(low.slot(out_slots, rank), ev.shape)
            step.computes.append(Instr.make("vpool", a=a, o=o, mode=pmode, kh=kh, kw=kw, stride_h=sh, stride_w=sw,
                                            pad_top=p[0], pad_left=p[2], act_min=act_min, act_max=act_max))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
    low.finish(steps)


# ---- qmean --------------------------------------------------------------------------------------


def lower_qmean(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: MeanPlan) -> None:
    _check_int8(desc, ins, out)
    if len(ins) != 1:
        raise Unsupported(f"qmean takes 1 operand, got {len(ins)}")
    x = ins[0]
    shape = tuple(x.shape)
    outer, red, inner = mean_axes(shape, desc.attrs.get("axis"))
    if math.prod(out.shape) != outer * inner:
        raise Unsupported(f"qmean output {list(out.shape)} for {list(shape)} over axes {desc.attrs.get('axis')}")
    q = quant_record(desc.kind, len(desc.inputs), desc.quant)
    try:
        f = Q.mean_quant(q.in_q, q.out_q, red, q.rounding)
    except (TypeError, ValueError) as e:
        raise Unsupported(f"qmean: {e}") from e
    if not -31 <= f["shift"] <= 31:
        raise Unsupported(f"qmean shift {f['shift']} outside [-31, 31]")

    # input tiles (1, to, rr, ti) reduced over axis 2, or (1, 1, to, rr) over axis 3, into int32 sums
    to, rr, ti = plan.outer, plan.chunk, plan.inner
    in_shape, o_shape, red_axis = qmean_shapes(desc, plan)
    chunks = -(-red // rr)
    alloc = SramAllocator(low.config)
    off, off_load = _i32_scalar(low, alloc, f["offset"], "-count * zp_in")
    in_slots = low.slots(alloc, Space.ACT, in_shape, I8, "input")
    out_slots = low.slots(alloc, Space.ACT, o_shape, I8, "output")
    total = alloc.alloc(Space.ACC, o_shape, I32, "sum")
    part = alloc.alloc(Space.ACC, o_shape, I32, "partial sum") if chunks > 1 else None
    events = vector_events(mean_schedule, outer, red, inner, to, ti, rr, "int8", low.double_buffer)
    params = {"X": _as(x, (outer, red, inner) if inner > 1 else (outer, red)),
              "store": _as(out, (outer, 1, inner) if inner > 1 else (outer, 1))}
    rq = dict(per_channel=0, mult=f["mult"], shift=f["shift"], params_addr=0, o_offset=f["o_offset"],
              act_min=f["act_min"], act_max=f["act_max"])
    steps: List[Step] = []
    n_out = 0
    first_chunk = True
    for ev in events:  # per tile: zeroing, chunks (load + reduce), requantise, store
        if ev.kind == "init":
            first_chunk = True
        elif ev.kind == "load":
            rank = len(steps)
            a = at(low.slot(in_slots, rank), ev.shape)
            step = Step(loads=([off_load] if rank == 0 else []) + [load(a, params[ev.param].view(
                ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute" and ev.intrin.startswith("msum"):  # msum_update after the decomposition
            s = at(total, ev.shape)
            if first_chunk:
                step.computes.append(Instr.make("vreduce", a=a, o=s, mode=int(ReduceMode.SUM), axis=red_axis))
            else:
                p = at(part, ev.shape)
                step.computes += [Instr.make("vreduce", a=a, o=p, mode=int(ReduceMode.SUM), axis=red_axis),
                                  Instr.make("vadd", a=s, b=p, o=s)]
            first_chunk = False
        elif ev.kind == "compute" and ev.intrin == "res":
            o = at(low.slot(out_slots, n_out), ev.shape)
            step.computes += [Instr.make("vadd", a=s, b=off, o=s), Instr.make("vrequant", a=s, o=o, **rq)]
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            n_out += 1
    low.finish(steps)
