"""Integer (int8) lowering of the vector-unit operators: qbinary, qpool, qlut, qconcat, qmean.

Every integer field comes from :mod:`tvm_npu.quant` (computed by the pattern side and carried in
``OpDesc.quant``, or, for qmean, by :func:`tvm_npu.quant.mean_quant` here); this module only tiles,
places and sequences. Tensors stay in their logical (Relax) layout in DRAM; the DMA views reshape,
broadcast and transpose them (NCHW pools), exactly as the float lowering in ``lower.py`` does.

OpDesc contract (``kind``, ``attrs``, ``inputs``, ``quant``); all inputs and the output are int8:

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

Anything else raises :class:`~tvm_npu.relay_ext.ops.Unsupported` with the reason (``dry_run`` relies on it).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import quant as Q
from ..isa import DType, Instr, PoolMode, ReduceMode, Space, TensorRef
from ..isa.spec import row_stride
from ..relay_ext.ops import OpDesc, Unsupported
from . import plans as P
from .lower import Lowerer, _at, _load, _pad4
from .memory import DramTensor, SramAllocator, sram_bytes
from .pipeline import Step

I8, I32 = DType.INT8, DType.INT32
MAX_DIM = 65535  # SRAM tensor dims are u16
RESERVE = 64  # ACT bytes kept free besides the named buffers (alignment slack)
BINARY_FIELDS = ("a_offset", "a_mult", "a_shift", "b_offset", "b_mult", "b_shift", "left_shift", "o_mult",
                 "o_shift", "o_offset", "act_min", "act_max")


def lower_int(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    """Lowers one integer vector operator (its operands already placed in DRAM) into ``low.program``."""
    fn = _KINDS.get(desc.kind)
    if fn is None:
        raise Unsupported(f"no integer vector lowering for kind {desc.kind!r}")
    for i, t in enumerate(list(ins) + [out]):
        if t is None or t.dtype != I8:
            what = "the output" if i == len(ins) else f"input {i}"
            raise Unsupported(f"{desc.kind}: {what} is {getattr(t, 'dtype', None)!r}, int8 expected")
    if desc.quant is None:
        raise Unsupported(f"{desc.kind}: no quantisation parameters (OpDesc.quant)")
    if any(math.prod(t.shape) == 0 for t in list(ins) + [out]):
        raise Unsupported(f"{desc.kind}: empty tensor")
    fn(low, desc, list(ins), out)


# ---- helpers --------------------------------------------------------------------------------------


def _n_slots(low: Lowerer) -> int:
    return 2 if low.double_buffer else 1


def _cap(low: Lowerer, alloc: SramAllocator, n_buffers: int) -> int:
    """Bytes per buffer when `n_buffers` equal buffers share what is left of ACT."""
    free = low.config.act_sram_bytes - alloc.top[Space.ACT] - RESERVE
    cap = free // max(n_buffers, 1) // 16 * 16
    if cap < 16:
        raise Unsupported(f"ACT SRAM too small for {n_buffers} tile buffers")
    return cap


def _byte_slots(low: Lowerer, alloc: SramAllocator, cap: int, what: str) -> List[TensorRef]:
    """Double-buffered slots of `cap` bytes; every use views them with its tile's dims (`_at`)."""
    return low._slots(alloc, Space.ACT, (1, 1, 1, cap), I8, what)


def _tiles(shape4: Sequence[int], cap: int):
    """Tiles (i0, j1, t1, j2, t2, c0, tc) over an int8 4-D shape, each at most `cap` bytes in SRAM: whole
    rows of dim 3 when one fits, else chunks of dim 3 (multiples of 16)."""
    d0, d1, d2, c = shape4
    tc = c if row_stride(c, I8) <= cap else min(cap // 16 * 16, MAX_DIM // 16 * 16)
    tc = min(tc, MAX_DIM)
    if tc < 1:
        raise Unsupported(f"no tile of {list(shape4)} fits {cap} bytes")
    rows = min(cap // row_stride(tc, I8), MAX_DIM)
    t2 = min(d2, rows)
    t1 = max(1, min(d1, rows // t2, MAX_DIM)) if t2 == d2 else 1
    for i0 in range(d0):
        for j1 in range(0, d1, t1):
            for j2 in range(0, d2, t2):
                for c0 in range(0, c, tc):
                    yield i0, j1, min(t1, d1 - j1), j2, min(t2, d2 - j2), c0, min(tc, c - c0)


def _fold(shape: Sequence[int], limit: int = 2048) -> Tuple[int, int]:
    """A dense tensor as (rows, length) with trailing dims folded into the length while it stays <=
    `limit` (so that a small last dim does not pad every SRAM row to 16 bytes)."""
    shape = tuple(int(d) for d in shape) or (1,)
    length, i = shape[-1], len(shape) - 2
    while i >= 0 and length * shape[i] <= limit:
        length *= shape[i]
        i -= 1
    return math.prod(shape) // max(length, 1), length


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
    return buf, _load(buf, src.view((None, None, None, 0)))


def _i32_scalar(low: Lowerer, alloc: SramAllocator, value: int, what: str) -> Tuple[TensorRef, Instr]:
    buf = alloc.alloc(Space.ACC, (1, 1, 1, 1), I32, what)
    src = low.consts.tensor(np.array([value], np.int32), I32)
    return buf, _load(buf, src.view((None, None, None, 0)))


# ---- qbinary ------------------------------------------------------------------------------------


def _qbinary(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    op = desc.attrs.get("op")
    if op not in ("add", "sub", "mul"):
        raise Unsupported(f"qbinary op {op!r} (add, sub or mul)")
    if len(ins) != 2:
        raise Unsupported(f"qbinary takes 2 operands, got {len(ins)}")
    q = desc.quant
    missing = [k for k in BINARY_FIELDS if not isinstance(q, dict) or k not in q]
    if missing:
        raise Unsupported(f"qbinary quant lacks the v{op} fields {missing}")
    fields = {k: int(q[k]) for k in BINARY_FIELDS}
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
    size = math.prod(out.shape)
    if all(math.prod(s) in (1, size) for s in shapes):  # plain elementwise (or with a scalar): fold dims
        rows, length = _fold(out.shape)
        o4 = _pad4((rows, length))
        ops = [_as(t, o4 if math.prod(t.shape) == size else (1, 1, 1, 1)) for t in ins]
    else:
        o4 = _pad4(out.shape)
        ops = [_as(t, _pad4(t.shape)) for t in ins]
    out4 = _as(out, o4)

    alloc = SramAllocator(low.config)
    # operands equal for every tile (a per-channel vector, a scalar) are loaded once, unless the channel
    # dim may be tiled: with at most 3 double-buffered tiles sharing ACT, a row that fits is never split
    whole_row = _cap(low, alloc, _n_slots(low) * 3)
    invariant = [o.shape[:3] == (1, 1, 1) and (o.shape[3] == 1 or row_stride(o4[3], I8) <= whole_row)
                 for o in ops]
    fixed = {k: alloc.alloc(Space.ACT, (1, 1, 1, o.shape[3]), I8, f"operand {k}")
             for k, (o, inv) in enumerate(zip(ops, invariant)) if inv}
    n_var = sum(not i for i in invariant)
    cap = _cap(low, alloc, _n_slots(low) * (n_var + 1))
    tiles = list(_tiles(o4, cap))
    tile = (max(t[2] for t in tiles), max(t[4] for t in tiles), max(t[6] for t in tiles))
    slots = {k: _byte_slots(low, alloc, cap, f"operand {k}") for k in range(2) if not invariant[k]}
    out_slots = _byte_slots(low, alloc, cap, "output")
    params = {f"in{k}": o for k, o in enumerate(ops)}
    params["store"] = out4
    _emit_int_tiles(low, op, [tuple(o.shape) for o in ops], tuple(o4), tile, invariant, params, fixed, slots,
                    out_slots, lambda a, o: Instr.make("v" + op, a=a[0], b=a[1], o=o, **fields))


def _emit_int_tiles(low: Lowerer, kind: str, shapes, o4, tile, invariant, params, fixed, slots, out_slots,
                    make) -> None:
    """Schedules the integer tile kernel (tir_schedules/vector.py:int_tile_schedule) and emits the
    walker's events: loads once (invariant operands, the table) or per tile, the vector instruction
    `make(operands, out)` per tile, the store."""
    from ..tir_schedules.vector import int_tile_schedule
    from .lower import vector_events

    events = vector_events(int_tile_schedule, kind, shapes, o4, tile, invariant, low.double_buffer)
    steps: List[Step] = []
    step, rank, current, first = None, 0, {}, []
    for ev in events:
        if ev.kind == "load":
            k = int(ev.param[2:]) if ev.param.startswith("in") else ev.param
            if k in fixed:  # once, with the first tile
                current[k] = _at(fixed[k], ev.shape)
                first.append(_load(current[k], params[ev.param].view(ev.axes, dict(ev.start))))
                continue
            if step is None or step.stores:
                step = Step(loads=first if not steps else [])
                steps.append(step)
            current[k] = _at(low._slot(slots[k], rank), ev.shape)
            step.loads.append(_load(current[k], params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute":
            if step is None or step.stores:  # every operand invariant
                step = Step(loads=first if not steps else [])
                steps.append(step)
            o = _at(low._slot(out_slots, rank), ev.shape)
            step.computes.append(make([current[k] for k in sorted(c for c in current if isinstance(c, int))], o))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            rank += 1
    low._finish(steps)


# ---- qlut ---------------------------------------------------------------------------------------


def _qlut(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    if len(ins) != 1:
        raise Unsupported(f"qlut takes 1 operand, got {len(ins)}")
    x = ins[0]
    if math.prod(x.shape) != math.prod(out.shape):
        raise Unsupported(f"qlut input {list(x.shape)} and output {list(out.shape)} differ in size")
    if not isinstance(desc.quant, dict) or "table" not in desc.quant:
        raise Unsupported("qlut quant must be {'table': int8[256]}")
    table = _table(desc.quant["table"], "qlut table")
    alloc = SramAllocator(low.config)
    lut = alloc.alloc(Space.ACT, (1, 1, 1, 256), I8, "LUT")
    shape4 = _pad4(_fold(x.shape))
    x4, o4 = _as(x, shape4), _as(out, shape4)
    cap = _cap(low, alloc, 2 * _n_slots(low))
    tiles = list(_tiles(shape4, cap))
    tile = (max(t[2] for t in tiles), max(t[4] for t in tiles), max(t[6] for t in tiles))
    in_slots = _byte_slots(low, alloc, cap, "input")
    out_slots = _byte_slots(low, alloc, cap, "output")
    params = {"in0": x4, "T": low.consts.tensor(table, I8), "store": o4}
    _emit_int_tiles(low, "lut", [tuple(shape4)], tuple(shape4), tile, [False], params, {"T": lut}, {0: in_slots},
                    out_slots, lambda a, o: Instr.make("vlut", a=a[0], o=o, lut_addr=lut.addr))


# ---- qconcat ------------------------------------------------------------------------------------


def _qconcat(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    q = desc.quant
    tables = q.get("inputs") if isinstance(q, dict) else q
    if not isinstance(tables, (list, tuple)) or len(tables) != len(ins):
        raise Unsupported(f"qconcat quant must be {{'inputs': [None or int8[256]] x {len(ins)}}}")
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
    from ..tir_schedules.vector import concat_schedule
    from .lower import vector_events

    pad = 4 - rank_
    o4 = _as(out, _pad4(out.shape))
    a4 = axis + pad
    cap = _cap(low, alloc, 2 * _n_slots(low))
    in_slots = _byte_slots(low, alloc, cap, "input")
    out_slots = _byte_slots(low, alloc, cap, "output")
    ins4 = [_as(t, _pad4(t.shape)) for t in ins]
    tiles = []
    for t4 in ins4:
        tl = list(_tiles(t4.shape, cap))
        tiles.append((max(x[2] for x in tl), max(x[4] for x in tl), max(x[6] for x in tl)))
    events = vector_events(concat_schedule, [t.shape for t in ins4], tiles, low.double_buffer, "int8",
                           [lut is not None for lut in per_input])
    offsets, off = [], 0
    for t4 in ins4:
        offsets.append(off)
        off += t4.shape[a4]
    params = {f"in{k}": t for k, t in enumerate(ins4)}
    steps: List[Step] = []
    for ev in events:  # the TensorIR tiles of each input: load, copy or lookup, store
        if ev.kind == "load" and ev.param.startswith("T"):
            continue  # the tables are loaded once, below
        if ev.kind == "load":
            k = int(ev.param[2:])
            rank = len(steps)
            a = _at(low._slot(in_slots, rank), ev.shape)
            step = Step(loads=(list(const_loads) if rank == 0 else []) + [_load(a, params[ev.param].view(
                ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute":
            o = _at(low._slot(out_slots, rank), ev.shape)
            lut = per_input[k]
            step.computes.append(Instr.make("vlut", a=a, o=o, lut_addr=lut.addr) if lut is not None
                                 else Instr.make("vcvt", a=a, o=o))
        elif ev.kind == "store":  # input k's place in the output: its start shifted along the axis
            start = {d: v + (offsets[k] if d == a4 else 0) for d, v in ev.start}
            step.stores.append(Instr.make("dma.store", src=o, dst=o4.view(ev.axes, start)))
    low._finish(steps)


# ---- qpool --------------------------------------------------------------------------------------


def _qpool(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    at = desc.attrs
    if len(ins) != 1:
        raise Unsupported(f"qpool takes 1 operand, got {len(ins)}")
    x = ins[0]
    layout = at.get("layout", "NCHW")
    if layout not in P.LAYOUT_AXES:
        raise Unsupported(f"qpool layout {layout} (NCHW or NHWC)")
    if at.get("out_layout") not in (None, "", layout):
        raise Unsupported(f"qpool out_layout {at.get('out_layout')} differs from layout {layout}")
    mode = at.get("mode")
    if mode not in ("avg", "max"):
        raise Unsupported(f"qpool mode {mode!r}")
    if tuple(at.get("dilation", (1, 1))) != (1, 1):
        raise Unsupported(f"qpool dilation {at.get('dilation')}")
    kh, kw = at["pool_size"]
    sh, sw = at["strides"]
    pads = tuple(at.get("padding", (0, 0, 0, 0)))
    pads = pads * 2 if len(pads) == 2 else pads
    pt, pl = pads[0], pads[1]
    if mode == "avg" and at.get("count_include_pad") and any(pads):
        raise Unsupported("average pooling that counts padding (vpool averages the in-bounds taps)")
    if len(x.shape) != 4 or len(out.shape) != 4:
        raise Unsupported(f"qpool of rank {len(x.shape)} (4 expected)")
    q = desc.quant
    if not isinstance(q, dict) or "act_min" not in q or "act_max" not in q:
        raise Unsupported("qpool quant must be pool_quant's {'act_min', 'act_max'}")
    act_min, act_max = int(q["act_min"]), int(q["act_max"])
    if not -128 <= act_min <= act_max <= 127:
        raise Unsupported(f"qpool activation range [{act_min}, {act_max}] is not int8")
    ax = P.LAYOUT_AXES[layout]
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
    slots = _n_slots(low)
    cap = low.config.act_sram_bytes - RESERVE

    def need(rows: int, tc: int) -> int:
        return slots * (sram_bytes((1, min(h, (rows - 1) * sh + kh), w, tc), I8) + sram_bytes((1, rows, ow, tc), I8))

    tc = c
    while need(1, tc) > cap:
        if tc <= 16:
            raise Unsupported(f"one row of {kh}-high pooling windows ({kh} x {w} x {tc}) does not fit ACT")
        tc = max(16, (tc + 1) // 2 // 16 * 16 or 16)
    rows = 1
    while rows < oh and need(rows + 1, tc) <= cap:
        rows += 1
    from ..tir_schedules.vector import pool_schedule
    from .lower import vector_events

    events = vector_events(pool_schedule, desc, tuple(x.shape), tuple(out.shape), rows, tc, low.double_buffer,
                           "int8")
    alloc = SramAllocator(low.config)
    in_slots = low._slots(alloc, Space.ACT, (1, min(h, (rows - 1) * sh + kh), w, tc), I8, "input")
    out_slots = low._slots(alloc, Space.ACT, (1, rows, ow, tc), I8, "output")
    pmode = int(PoolMode.MAX if mode == "max" else PoolMode.AVG)
    params = {"X": x, "store": out}
    steps: List[Step] = []
    for ev in events:  # the TensorIR tiles: load (halo clipped by vpool), pool, store
        if ev.kind == "load":
            rank = len(steps)
            step = Step()
            steps.append(step)
            p = ev.pads
            a = _at(low._slot(in_slots, rank), (1, ev.shape[1] - p[0] - p[1], ev.shape[2] - p[2] - p[3], ev.shape[3]))
            step.loads.append(_load(a, params[ev.param].view(ev.axes, dict(ev.start))))
        elif ev.kind == "compute" and ev.intrin == "res":
            o = _at(low._slot(out_slots, rank), ev.shape)
            step.computes.append(Instr.make("vpool", a=a, o=o, mode=pmode, kh=kh, kw=kw, stride_h=sh, stride_w=sw,
                                            pad_top=p[0], pad_left=p[2], act_min=act_min, act_max=act_max))
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
    low._finish(steps)


# ---- qmean --------------------------------------------------------------------------------------


def _qmean(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor) -> None:
    if len(ins) != 1:
        raise Unsupported(f"qmean takes 1 operand, got {len(ins)}")
    x = ins[0]
    shape = tuple(x.shape)
    nd = len(shape)
    axes = desc.attrs.get("axis")
    try:
        axes = tuple(range(nd)) if axes is None else tuple(sorted({int(a) % nd for a in axes}))
    except (TypeError, ZeroDivisionError):
        raise Unsupported(f"qmean axis {desc.attrs.get('axis')!r}") from None
    if not axes:
        raise Unsupported("qmean over no axis")
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        raise Unsupported(f"qmean over non-adjacent axes {axes}")
    outer = math.prod(shape[:axes[0]])
    red = math.prod(shape[axes[0]:axes[-1] + 1])
    inner = math.prod(shape[axes[-1] + 1:])
    if math.prod(out.shape) != outer * inner:
        raise Unsupported(f"qmean output {list(out.shape)} for {list(shape)} over {axes}")
    q = desc.quant
    if not isinstance(q, dict) or "in_q" not in q or "out_q" not in q:
        raise Unsupported("qmean quant must be {'in_q': QParams, 'out_q': QParams}")
    try:
        f = Q.mean_quant(q["in_q"], q["out_q"], red, q.get("rounding", "real"))
    except (TypeError, ValueError) as e:
        raise Unsupported(f"qmean: {e}") from e
    if not -31 <= f["shift"] <= 31:
        raise Unsupported(f"qmean shift {f['shift']} outside [-31, 31]")

    cfg = low.config
    slots = _n_slots(low)
    act = cfg.act_sram_bytes - RESERVE
    acc = cfg.acc_sram_bytes - 16 - RESERVE  # the offset scalar
    if inner > 1:
        # input tiles (1, to, rr, ti) reduced over axis 2 into (1, to, 1, ti) int32
        ti = min(inner, MAX_DIM)
        while slots * 2 * row_stride(ti, I8) > act or 2 * row_stride(ti, I32) > acc:
            if ti <= 16:
                raise Unsupported(f"a qmean row of {inner} does not fit")
            ti = max(16, (ti + 1) // 2 // 16 * 16 or 16)
        r8, r32 = row_stride(ti, I8), row_stride(ti, I32)
        rr = min(red, MAX_DIM, (act - slots * r8) // (slots * r8))
        if rr < 1:
            raise Unsupported(f"a qmean row of {inner} does not fit ACT")
        to = 1 if rr < red else max(1, min(outer, MAX_DIM, act // (slots * (red + 1) * r8), acc // (2 * r32)))
        in_shape, red_axis, o_shape = (1, to, rr, ti), 2, (1, to, 1, ti)
    else:
        # input tiles (1, 1, to, rr) reduced over axis 3 into (1, 1, to, 1) int32
        ti = 1
        rr = red if slots * (row_stride(red, I8) + 16) <= act and red <= MAX_DIM else \
            min(MAX_DIM // 16 * 16, (act // slots - 16) // 16 * 16)
        if rr < 1:
            raise Unsupported("qmean does not fit ACT")
        to = 1 if rr < red else max(1, min(outer, MAX_DIM, act // (slots * (row_stride(rr, I8) + 16)), acc // 32))
        in_shape, red_axis, o_shape = (1, 1, to, rr), 3, (1, 1, to, 1)
    chunks = -(-red // rr)
    alloc = SramAllocator(cfg)
    off, off_load = _i32_scalar(low, alloc, f["offset"], "-count * zp_in")
    in_slots = low._slots(alloc, Space.ACT, in_shape, I8, "input")
    out_slots = low._slots(alloc, Space.ACT, o_shape, I8, "output")
    total = alloc.alloc(Space.ACC, o_shape, I32, "sum")
    part = alloc.alloc(Space.ACC, o_shape, I32, "partial sum") if chunks > 1 else None
    from ..tir_schedules.vector import mean_schedule
    from .lower import vector_events

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
            a = _at(low._slot(in_slots, rank), ev.shape)
            step = Step(loads=([off_load] if rank == 0 else []) + [_load(a, params[ev.param].view(
                ev.axes, dict(ev.start)))])
            steps.append(step)
        elif ev.kind == "compute" and ev.intrin.startswith("msum"):  # msum_update after the decomposition
            s = _at(total, ev.shape)
            if first_chunk:
                step.computes.append(Instr.make("vreduce", a=a, o=s, mode=int(ReduceMode.SUM), axis=red_axis))
            else:
                p = _at(part, ev.shape)
                step.computes += [Instr.make("vreduce", a=a, o=p, mode=int(ReduceMode.SUM), axis=red_axis),
                                  Instr.make("vadd", a=s, b=p, o=s)]
            first_chunk = False
        elif ev.kind == "compute" and ev.intrin == "res":
            o = _at(low._slot(out_slots, n_out), ev.shape)
            step.computes += [Instr.make("vadd", a=s, b=off, o=s), Instr.make("vrequant", a=s, o=o, **rq)]
        elif ev.kind == "store":
            step.stores.append(Instr.make("dma.store", src=o, dst=params[ev.param].view(ev.axes, dict(ev.start))))
            n_out += 1
    low._finish(steps)


_KINDS = {"qbinary": _qbinary, "qlut": _qlut, "qconcat": _qconcat, "qpool": _qpool, "qmean": _qmean}
