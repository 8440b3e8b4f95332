"""Elementwise NPU operators (binary ops with broadcasting, activations) as TensorIR.

The PrimFunc works on 4-D views of the logical shapes (broadcast dims index 0). For a row tiling
(`rows`: dim-1 rows per tile, `cols`: dim-2 rows per tile, dim 3 whole; the vector unit's budget,
see Lowerer._row_tiles) the schedule splits the two row dims, caches every operand into an NPU
scope at the tile loop (ACT for fp16, ACC for fp32 operands), computes the result in ACT (or, when
a constant operand keeps the op in fp32, in ACC followed by a rounding stage into ACT), and stores
at the same loop. Stage names tell the code generator which vector instruction each compute block
is: `widen<k>` (vcvt to fp32), `vec` (the operator), `round` (vrequant fp32 -> fp16).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from tvm import s_tir, te, tirx

from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import LAYOUT_AXES
from ..ir.memory import ACC, ACT
from .kernels import activation_expr


# The parameter-naming contract between these kernels and the lowering (which looks names up, never parses them)
def operand_param(k: int) -> str:
    """The PrimFunc parameter of operand k."""
    return f"in{k}"


def store_param(k: int) -> str:
    """The store stage (and its events' param) of concatenation input k."""
    return f"store{k}"


def table_param(k: int = None) -> str:
    """The lookup table of concatenation input k (None: the one table of a lookup kernel)."""
    return "T" if k is None else f"T{k}"

_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "max": tirx.max, "min": tirx.min, "div": lambda a, b: a / b,
        # PReLU, b the slope (broadcast per channel): max(a, 0) + b * min(a, 0)
        "prelu": lambda a, b: tirx.max(a, tirx.const(0, a.dtype)) + b * tirx.min(a, tirx.const(0, a.dtype))}
_CACHE: Dict[tuple, object] = {}


def unary_expr(act, x):
    """An activation or a unary operator (neg, abs, exp, sqrt, reciprocal, square) on fp32 x."""
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731
    k = act.kind if act is not None else None
    if k == "neg":
        return x * f32(-1.0)
    if k == "abs":
        return tirx.max(x, x * f32(-1.0))
    if k == "exp":
        return tirx.exp(x)
    if k == "sqrt":
        return f32(1.0) / tirx.rsqrt(x)
    if k == "reciprocal":
        return f32(1.0) / x
    if k == "square":
        return x * x
    return activation_expr(act, x)


def elementwise_workload(desc: OpDesc, shapes: Sequence[Tuple[int, ...]], dtypes: Sequence[str],
                         out_shape: Tuple[int, ...]):
    """The unscheduled PrimFunc of a binary op or an activation on 4-D shapes (the tuner's workload)."""
    wide = desc.kind == "binary" and "float32" in dtypes
    ins = [te.placeholder(s, d, name=operand_param(i)) for i, (s, d) in enumerate(zip(shapes, dtypes))]

    def at(t, shape, i):  # broadcasting: a unit dim of an operand reads index 0
        return t[tuple(0 if shape[d] == 1 else i[d] for d in range(4))]

    if desc.kind == "binary":
        op = _OPS.get(desc.attrs["op"])
        if op is None:
            raise Unsupported(f"binary op {desc.attrs['op']}")
        if wide:
            def widen(t, k):
                return te.compute(t.shape, lambda *i: t[i].astype("float32"), name=f"widen{k}")
            srcs = [widen(t, k) if d != "float32" else t for k, (t, d) in enumerate(zip(ins, dtypes))]
            vec = te.compute(out_shape, lambda *i: op(at(srcs[0], shapes[0], i), at(srcs[1], shapes[1], i)),
                             name="vec")
            last = te.compute(out_shape, lambda *i: vec[i].astype("float16"), name="round")
        else:
            vec = te.compute(out_shape, lambda *i: op(at(ins[0], shapes[0], i), at(ins[1], shapes[1], i)), name="vec")
            last = vec
    else:
        vec = te.compute(out_shape, lambda *i: unary_expr(desc.activation, ins[0][i].astype("float32"))
                         .astype("float16"), name="vec")
        last = vec
    store = te.compute(out_shape, lambda *i: last[i], name="store")
    return te.create_prim_func(ins + [store])


def elementwise_tile(sch: s_tir.Schedule, dtypes: Sequence[str], rows, cols, double_buffer: bool = True) -> None:
    """The elementwise schedule's steps: rows of dims 1 and 2 per tile (`rows`, `cols`: ints, or the
    tuner's sampled values), every operand cached at the tile loop, the store there too."""
    wide = "float32" in dtypes  # (only a binary op reads a float32 operand)
    vb = sch.get_sblock("vec")
    i0, i1, i2, i3 = sch.get_loops(vb)
    i1o, i1i = sch.split(i1, [None, rows])
    i2o, i2i = sch.split(i2, [None, cols])
    sch.reorder(i0, i1o, i2o, i1i, i2i, i3)
    sch.set_scope(vb, 0, ACC if wide else ACT)
    caches, widens = [], []
    for k, d in enumerate(dtypes):
        wide_k = wide and d != "float32"
        consumer = sch.get_sblock(f"widen{k}") if wide_k else vb
        caches.append(sch.cache_read(consumer, 0 if wide_k else k, ACC if d == "float32" else ACT))
        if wide_k:
            sch.set_scope(consumer, 0, ACC)
            widens.append(consumer)
    for blk in widens + caches:  # consumers first: compute_at needs a block's consumers under the loop
        sch.compute_at(blk, i2o)
    annotate = caches + widens
    if wide:
        rb = sch.get_sblock("round")
        sch.set_scope(rb, 0, ACT)
        sch.reverse_compute_at(rb, i2o)
        annotate.append(rb)
    else:
        annotate.append(vb)
    sch.reverse_compute_at(sch.get_sblock("store"), i2o)
    if double_buffer:
        for blk in annotate:
            sch.annotate(blk, "double_buffer_scope", 0)


def elementwise_schedule(desc: OpDesc, shapes: Sequence[Tuple[int, ...]], dtypes: Sequence[str],
                         out_shape: Tuple[int, ...], rows: int, cols: int, double_buffer: bool = True):
    """The scheduled PrimFunc of a binary op or an activation on 4-D shapes; memoised."""
    key = (desc.kind, desc.attrs.get("op"), str(desc.activation), tuple(shapes), tuple(dtypes), out_shape, rows,
           cols, double_buffer)
    if key in _CACHE:
        return _CACHE[key]
    sch = s_tir.Schedule(elementwise_workload(desc, shapes, dtypes, out_shape))
    elementwise_tile(sch, dtypes, rows, cols, double_buffer)
    valid = {operand_param(i): tuple(s) for i, s in enumerate(shapes)}
    _CACHE[key] = (sch, valid)
    return _CACHE[key]


def pool_schedule(desc: OpDesc, x_shape: Tuple[int, ...], out_shape: Tuple[int, ...], rows: int, tc: int,
                  double_buffer: bool = True, dtype: str = "float16"):
    """Max / average pooling (windows clipped to the input, TFLite and ONNX `count_include_pad=0`
    semantics) on NHWC tiles of `rows` output rows x `tc` channels: the input stage holds the halo
    (the walker reports it; `vpool` clips its windows instead of the DMA padding), the window
    reduction is the `pool` block, the store writes the DRAM layout. Memoised."""
    at = desc.attrs
    key = ("pool", str(sorted((k, str(v)) for k, v in at.items())), x_shape, out_shape, rows, tc, double_buffer,
           dtype)
    if key in _CACHE:
        return _CACHE[key]
    ax = LAYOUT_AXES[at["layout"]]
    n, h, w, c = (x_shape[a] for a in ax)
    oh, ow = out_shape[ax[1]], out_shape[ax[2]]
    kh, kw = at["pool_size"]
    sh, sw = at["strides"]
    pt, pl, pb, pr = at["padding"] if len(at["padding"]) == 4 else (*at["padding"], *at["padding"])
    ohp, cp = -(-oh // rows) * rows, -(-c // tc) * tc
    xh, xw = (ohp - 1) * sh + kh, w + pl + pr
    X = te.placeholder(tuple(x_shape), dtype, name="X")

    def x_at(b, hh, ww, cc):
        idx = [None] * 4
        idx[ax[0]], idx[ax[1]], idx[ax[2]], idx[ax[3]] = b, hh - pt, ww - pl, cc
        return X[tuple(idx)]

    inb = lambda hh, ww, cc: tirx.all(hh >= pt, hh < pt + h, ww >= pl, ww < pl + w, cc < c)  # noqa: E731
    xp = te.compute((n, xh, xw, cp), lambda b, hh, ww, cc: tirx.if_then_else(
        inb(hh, ww, cc), x_at(b, hh, ww, cc), tirx.const(0, dtype)), name="xp")
    ky, kx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")

    def tap(b, y, x_, cc):
        return inb(y * sh + ky, x_ * sw + kx, cc)
    if at["mode"] == "max":
        pool = te.compute((n, ohp, ow, cp), lambda b, y, x_, cc: te.max(tirx.if_then_else(
            tap(b, y, x_, cc), xp[b, y * sh + ky, x_ * sw + kx, cc].astype("float32"),
            tirx.const(-3.0e38, "float32")), axis=[ky, kx]), name="pool")
    else:
        def count(y, x_):  # taps of the window inside the input
            rh = tirx.min(y * sh + kh, pt + h) - tirx.max(y * sh, pt)
            rw = tirx.min(x_ * sw + kw, pl + w) - tirx.max(x_ * sw, pl)
            return (rh * rw).astype("float32")
        pool = te.compute((n, ohp, ow, cp), lambda b, y, x_, cc: te.sum(tirx.if_then_else(
            tap(b, y, x_, cc), xp[b, y * sh + ky, x_ * sw + kx, cc].astype("float32") / count(y, x_),
            tirx.const(0.0, "float32")), axis=[ky, kx]), name="pool")
    res = te.compute((n, oh, ow, c), lambda *i: (pool[i] if dtype == "float16" else tirx.round(pool[i]))
                     .astype(dtype), name="res")

    def store(*i):
        return res[i[ax[0]], i[ax[1]], i[ax[2]], i[ax[3]]]
    out = te.compute(tuple(out_shape), store, name="store")
    func = te.create_prim_func([X, out])
    sch = s_tir.Schedule(func)
    pb_ = sch.get_sblock("pool")
    b_, y, x_, cc, kyl, kxl = sch.get_loops(pb_)
    c_o, c_i = sch.split(cc, [None, tc])
    y_o, y_i = sch.split(y, [None, rows])
    sch.reorder(b_, c_o, y_o, y_i, x_, c_i, kyl, kxl)
    rb = sch.get_sblock("res")
    sch.set_scope(pb_, 0, ACT)
    xc = sch.cache_read(pb_, 0, ACT)
    sch.compute_at(xc, y_o)
    sch.compute_inline(sch.get_sblock("xp"))
    sch.reverse_compute_at(rb, y_o)
    sch.set_scope(rb, 0, ACT)
    sch.reverse_compute_at(sch.get_sblock("store"), y_o)
    if double_buffer:
        for blk in (xc, rb):
            sch.annotate(blk, "double_buffer_scope", 0)
    used_h = (oh - 1) * sh + kh
    valid = {"xp": (n, min(xh, used_h), xw, c), "pool": (n, oh, ow, c), "res": (n, oh, ow, c)}
    _CACHE[key] = (sch, valid)
    return _CACHE[key]


def softmax_workload(rows: int, length: int, dtype: str):
    """Softmax over the last axis of a (rows, length) view: `mx` (row maximum), `e` = exp(x - mx),
    `se` (row sum, fp32 in ACC), `out` = e * (1 / se). A float32 input stays fp32 until the maximum is
    subtracted (large offsets would lose their low bits in fp16). Unscheduled (the tuner's workload)."""
    X = te.placeholder((rows, length), dtype, name="X")
    j = te.reduce_axis((0, length), "j")
    mx = te.compute((rows, 1), lambda i, z: te.max(X[i, j], axis=j), name="mx")
    e = te.compute((rows, length), lambda i, k: tirx.exp((X[i, k] - mx[i, 0]).astype("float16")), name="e")
    j2 = te.reduce_axis((0, length), "j2")
    se = te.compute((rows, 1), lambda i, z: te.sum(e[i, j2].astype("float32"), axis=j2), name="se")
    out = te.compute((rows, length), lambda i, k: e[i, k] * (tirx.const(1.0, "float32") / se[i, 0]).astype("float16"),
                     name="out")
    store = te.compute((rows, length), lambda i, k: out[i, k], name="store")
    return te.create_prim_func([X, store])


def softmax_tile(sch: s_tir.Schedule, dtype: str, tile, double_buffer: bool = True) -> None:
    """The softmax schedule's steps: `tile` rows per tile (an int, or the tuner's sampled value)."""
    ob = sch.get_sblock("out")
    i_o, i_i = sch.split(sch.get_loops(ob)[0], [None, tile])
    sch.set_scope(ob, 0, ACT)
    for name, scope in (("se", ACC), ("e", ACT), ("mx", ACC if dtype == "float32" else ACT)):
        blk = sch.get_sblock(name)
        sch.set_scope(blk, 0, scope)
        sch.compute_at(blk, i_o)
    xc = sch.cache_read(sch.get_sblock("mx"), 0, ACC if dtype == "float32" else ACT)
    sch.compute_at(xc, i_o)
    sch.reverse_compute_at(sch.get_sblock("store"), i_o)
    if double_buffer:
        for blk in (xc, ob):
            sch.annotate(blk, "double_buffer_scope", 0)


def softmax_schedule(rows: int, length: int, dtype: str, tile: int, double_buffer: bool = True):
    """The scheduled softmax (softmax_workload, softmax_tile); memoised."""
    key = ("softmax", rows, length, dtype, tile, double_buffer)
    if key in _CACHE:
        return _CACHE[key]
    sch = s_tir.Schedule(softmax_workload(rows, length, dtype))
    softmax_tile(sch, dtype, tile, double_buffer)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def concat_schedule(shapes: Sequence[Tuple[int, ...]], tiles: Sequence[Tuple[int, ...]], double_buffer: bool = True,
                    dtype: str = "float16", tables: Sequence[bool] = ()):
    """Concatenation as one PrimFunc with a copy per input: input k (4-D) is cache-read into ACT at
    its tile loop (`tiles[k]` = rows of dims 1 and 2 per tile), copied by the vector unit (`cp<k>`,
    so the store never reads the slot the next load fills) and stored by `store<k>`, whose output is
    the input's place in the concatenated tensor (the code generator offsets it). Memoised."""
    key = ("concat", tuple(map(tuple, shapes)), tuple(map(tuple, tiles)), double_buffer, dtype, tuple(tables))
    if key in _CACHE:
        return _CACHE[key]
    tables = list(tables) or [False] * len(shapes)
    ins = [te.placeholder(s, dtype, name=operand_param(k)) for k, s in enumerate(shapes)]
    luts = [te.placeholder((256,), "int8", name=table_param(k)) if tb else None for k, tb in enumerate(tables)]
    cps = [te.compute(t.shape, _ident(t) if lut is None else _lookup(lut, t), name=f"cp{k}")
           for k, (t, lut) in enumerate(zip(ins, luts))]
    stores = [te.compute(c.shape, _ident(c), name=store_param(k)) for k, c in enumerate(cps)]
    sch = s_tir.Schedule(te.create_prim_func(ins + [lut for lut in luts if lut is not None] + stores))
    annotate = []
    for k, tile in enumerate(tiles):
        cb = sch.get_sblock(f"cp{k}")
        i0, i1, i2, i3 = sch.get_loops(cb)
        i1o, i1i = sch.split(i1, [None, tile[0]])
        i2o, i2i = sch.split(i2, [None, tile[1]])
        inner = i2o
        if len(tile) > 2:  # channel tiles too (int8 rows wider than a tile)
            i3o, i3i = sch.split(i3, [None, tile[2]])
            sch.reorder(i0, i1o, i2o, i3o, i1i, i2i, i3i)
            inner = i3o
        else:
            sch.reorder(i0, i1o, i2o, i1i, i2i, i3)
        sch.set_scope(cb, 0, ACT)
        names = [r.source.name for r in sch.get(cb).reads]
        xc = sch.cache_read(cb, names.index(operand_param(k)), ACT)
        if luts[k] is not None:  # the table: once, outside the tile loops
            sch.cache_read(cb, [r.source.name for r in sch.get(cb).reads].index(table_param(k)), ACT)
        sch.compute_at(xc, inner)
        sch.reverse_compute_at(sch.get_sblock(store_param(k)), inner)
        annotate += [xc, cb]
    if double_buffer:
        for blk in annotate:
            sch.annotate(blk, "double_buffer_scope", 0)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def _ident(t):
    return lambda *i: t[i]


def _lookup(table, t):
    return lambda *i: table[t[i].astype("int32") + 128]


def int_tile_schedule(kind: str, shapes: Sequence[Tuple[int, ...]], out_shape: Tuple[int, ...],
                      tile: Tuple[int, int, int], invariant: Sequence[bool], double_buffer: bool = True):
    """Integer vector operators on 4-D int8 tiles of (dim-1 rows, dim-2 rows, channels) = `tile`:
    `kind` "lut" (one operand and a 256-entry table, `table[x + 128]`) or "add" / "sub" / "mul"
    (two operands with broadcasting; the vector unit's TFLite arithmetic is the `npu.q<op>`
    intrinsic, its fields come from tvm_npu.quant). Operands marked `invariant` (the same for every
    tile: a per-channel vector, a scalar) and the table are cache-read once, outside the tile loops.
    Memoised."""
    key = ("int", kind, tuple(map(tuple, shapes)), tuple(out_shape), tuple(tile), tuple(invariant), double_buffer)
    if key in _CACHE:
        return _CACHE[key]
    ins = [te.placeholder(s, "int8", name=operand_param(k)) for k, s in enumerate(shapes)]

    def at(t, shape, i):
        return t[tuple(0 if shape[d] == 1 else i[d] for d in range(4))]

    if kind == "lut":
        table = te.placeholder((256,), "int8", name=table_param())
        vec = te.compute(out_shape, lambda *i: table[ins[0][i].astype("int32") + 128], name="vec")
        params = ins + [table]
    else:
        vec = te.compute(out_shape, lambda *i: tirx.call_pure_extern(
            "int8", f"npu.q{kind}", at(ins[0], shapes[0], i), at(ins[1], shapes[1], i)), name="vec")
        params = list(ins)
    store = te.compute(out_shape, lambda *i: vec[i], name="store")
    sch = s_tir.Schedule(te.create_prim_func(params + [store]))
    vb = sch.get_sblock("vec")
    i0, i1, i2, i3 = sch.get_loops(vb)
    i1o, i1i = sch.split(i1, [None, tile[0]])
    i2o, i2i = sch.split(i2, [None, tile[1]])
    i3o, i3i = sch.split(i3, [None, tile[2]])
    sch.reorder(i0, i1o, i2o, i3o, i1i, i2i, i3i)
    sch.set_scope(vb, 0, ACT)
    annotate = [vb]
    names = [r.source.name for r in sch.get(vb).reads]
    operand_index = {operand_param(k): k for k in range(len(shapes))}
    for name in [p.name for p in params]:  # cache each parameter; per-tile ones at the tile loop
        c = sch.cache_read(vb, names.index(name), ACT)
        k = operand_index.get(name)
        if k is not None and not invariant[k]:
            sch.compute_at(c, i3o)
            annotate.append(c)
    sch.reverse_compute_at(sch.get_sblock("store"), i3o)
    if double_buffer:
        for blk in annotate:
            sch.annotate(blk, "double_buffer_scope", 0)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def mean_workload(outer: int, red: int, inner: int, dtype: str = "float16"):
    """The unscheduled mean PrimFunc (see mean_schedule; the tuner's workload)."""
    acc = "int32" if dtype == "int8" else "float32"
    r = te.reduce_axis((0, red), "r")
    if inner > 1:
        X = te.placeholder((outer, red, inner), dtype, name="X")
        msum = te.compute((outer, 1, inner), lambda o, z, i: te.sum(X[o, r, i].astype(acc), axis=r), name="msum")
    else:
        X = te.placeholder((outer, red), dtype, name="X")
        msum = te.compute((outer, 1), lambda o, z: te.sum(X[o, r].astype(acc), axis=r), name="msum")
    if dtype == "int8":
        res = te.compute(msum.shape, lambda *i: tirx.call_pure_extern("int8", "npu.requantize", msum[i]), name="res")
    else:
        res = te.compute(msum.shape, lambda *i: (msum[i] * tirx.const(1.0 / red, acc)).astype(dtype), name="res")
    store = te.compute(msum.shape, lambda *i: res[i], name="store")
    return te.create_prim_func([X, store])


def mean_schedule(outer: int, red: int, inner: int, to: int, ti: int, rr: int, dtype: str = "float16",
                  double_buffer: bool = True):
    """Mean over the middle axis of an (outer, red, inner) view ((outer, red) when inner == 1, so the
    reduced axis is SRAM's channel axis): `msum` accumulates the sums in ACC (fp32 for fp16 inputs,
    int32 for int8) over reduction chunks of `rr` (split off and decomposed: the zeroing block marks
    the first chunk), `res` scales by 1/red and rounds to fp16, or requantises int8 (the vector unit's
    TFLite arithmetic, `npu.requantize`; fields from tvm_npu.quant.mean_quant). Tiles: `to` outer rows
    x `ti` inner columns. Memoised."""
    key = ("mean", outer, red, inner, to, ti, rr, dtype, double_buffer)
    if key in _CACHE:
        return _CACHE[key]
    sch = s_tir.Schedule(mean_workload(outer, red, inner, dtype))
    reduction_tile(sch, "msum", inner, to, ti, rr, ACC, double_buffer)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def reduction_tile(sch: s_tir.Schedule, name: str, inner: int, to, ti, rr, scope: str, double_buffer: bool) -> None:
    """The schedule of mean_schedule and reduce_schedule: the reduction block `name` over (outer, red,
    inner) tiled `to` x `ti` with reduction chunks of `rr` (tile loops outer rows, inner columns, chunk),
    accumulating in `scope`; the input cached in ACT at the chunk, `res` (ACT) and the store at the tile,
    the zeroing split off (its init marks a tile's first chunk); input and result double-buffered.
    `to`, `ti`, `rr`: ints, or the tuner's sampled values."""
    mb = sch.get_sblock(name)
    if inner > 1:
        o, z, i, rl = sch.get_loops(mb)
        o_o, o_i = sch.split(o, [None, to])
        i_o, i_i = sch.split(i, [None, ti])
        r_o, r_i = sch.split(rl, [None, rr])
        sch.reorder(o_o, i_o, r_o, o_i, z, i_i, r_i)
        tile = i_o
    else:
        o, z, rl = sch.get_loops(mb)
        o_o, o_i = sch.split(o, [None, to])
        r_o, r_i = sch.split(rl, [None, rr])
        sch.reorder(o_o, r_o, o_i, z, r_i)
        tile = o_o
    sch.set_scope(mb, 0, scope)
    xc = sch.cache_read(mb, 0, ACT)
    sch.compute_at(xc, r_o)
    rb = sch.get_sblock("res")
    sch.set_scope(rb, 0, ACT)
    sch.reverse_compute_at(rb, tile)
    sch.reverse_compute_at(sch.get_sblock("store"), tile)
    sch.decompose_reduction(mb, r_o)
    if double_buffer:
        for blk in (xc, rb):
            sch.annotate(blk, "double_buffer_scope", 0)


def reduce_workload(outer: int, red: int, inner: int, op: str):
    """The unscheduled sum / max / min PrimFunc (see reduce_schedule; the tuner's workload)."""
    acc = "float32" if op == "sum" else "float16"
    reducer = {"sum": te.sum, "max": te.max, "min": te.min}[op]
    r = te.reduce_axis((0, red), "r")
    if inner > 1:
        X = te.placeholder((outer, red, inner), "float16", name="X")
        rb = te.compute((outer, 1, inner), lambda o, z, i: reducer(X[o, r, i].astype(acc), axis=r), name=f"r{op}")
    else:
        X = te.placeholder((outer, red), "float16", name="X")
        rb = te.compute((outer, 1), lambda o, z: reducer(X[o, r].astype(acc), axis=r), name=f"r{op}")
    res = te.compute(rb.shape, lambda *i: rb[i].astype("float16"), name="res")
    store = te.compute(rb.shape, lambda *i: res[i], name="store")
    return te.create_prim_func([X, store])


def reduce_schedule(outer: int, red: int, inner: int, to: int, ti: int, op: str, double_buffer: bool = True,
                    rr: int = 0):
    """sum / max / min over the middle axis of an (outer, red, inner) view ((outer, red) when inner == 1,
    so the reduced axis is SRAM's channel axis), `to` outer rows x `ti` inner columns per tile, the
    reduction in chunks of `rr` (0: whole; the decomposed reduction's init marks a tile's first chunk).
    sum: `rsum` accumulates in fp32 (ACC) and `res` rounds to fp16; max / min: `rmax` / `rmin` in fp16
    (ACT), exact, and `res` copies (the lowering reduces straight into the output slot). Memoised."""
    rr = rr or red
    key = ("reduce", outer, red, inner, to, ti, op, double_buffer, rr)
    if key in _CACHE:
        return _CACHE[key]
    sch = s_tir.Schedule(reduce_workload(outer, red, inner, op))
    reduction_tile(sch, f"r{op}", inner, to, ti, rr, ACC if op == "sum" else ACT, double_buffer)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def layer_norm_schedule(rows: int, length: int, eps: float, tile: int, double_buffer: bool = True):
    """Layer norm over the last axis of a (rows, length) fp16 view, in fp32 on ACC: `x32` (widen), `mu`
    (row mean), `xc` = x32 - mu, `var` (mean of xc^2), `rstd` = rsqrt(var + eps), `y` = xc * rstd *
    gamma + beta, `out` (one rounding to fp16, ACT); gamma and beta (fp32, `G`, `B`) are read into ACC
    once, outside the tile loop. `tile` rows per tile. Memoised."""
    key = ("layer_norm", rows, length, eps, tile, double_buffer)
    if key in _CACHE:
        return _CACHE[key]
    sch = s_tir.Schedule(layer_norm_workload(rows, length, eps))
    layer_norm_tile(sch, tile, double_buffer)
    _CACHE[key] = (sch, {})
    return _CACHE[key]


def layer_norm_workload(rows: int, length: int, eps: float):
    """The unscheduled layer norm PrimFunc (the tuner's workload; see layer_norm_schedule)."""
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731
    X = te.placeholder((rows, length), "float16", name="X")
    G = te.placeholder((length,), "float32", name="G")
    B = te.placeholder((length,), "float32", name="B")
    x32 = te.compute((rows, length), lambda i, k: X[i, k].astype("float32"), name="x32")
    j = te.reduce_axis((0, length), "j")
    mu = te.compute((rows, 1), lambda i, z: te.sum(x32[i, j] * f32(1.0 / length), axis=j), name="mu")
    xc = te.compute((rows, length), lambda i, k: x32[i, k] - mu[i, 0], name="xc")
    j2 = te.reduce_axis((0, length), "j2")
    var = te.compute((rows, 1), lambda i, z: te.sum(xc[i, j2] * xc[i, j2] * f32(1.0 / length), axis=j2), name="var")
    rstd = te.compute((rows, 1), lambda i, z: tirx.rsqrt(var[i, z] + f32(eps)), name="rstd")
    y = te.compute((rows, length), lambda i, k: xc[i, k] * rstd[i, 0] * G[k] + B[k], name="y")
    out = te.compute((rows, length), lambda i, k: y[i, k].astype("float16"), name="out")
    store = te.compute((rows, length), lambda i, k: out[i, k], name="store")
    return te.create_prim_func([X, G, B, store])


def layer_norm_tile(sch: s_tir.Schedule, tile, double_buffer: bool = True) -> None:
    """The layer norm schedule's steps: `tile` rows per tile (an int, or the tuner's sampled value)."""
    ob = sch.get_sblock("out")
    i_o, _ = sch.split(sch.get_loops(ob)[0], [None, tile])
    sch.set_scope(ob, 0, ACT)
    for name in ("y", "rstd", "var", "xc", "mu", "x32"):  # consumers first
        blk = sch.get_sblock(name)
        sch.set_scope(blk, 0, ACC)
        sch.compute_at(blk, i_o)
    yb = sch.get_sblock("y")
    for p in ("G", "B"):  # once, outside the tile loop
        sch.cache_read(yb, [r.source.name for r in sch.get(yb).reads].index(p), ACC)
    xcache = sch.cache_read(sch.get_sblock("x32"), 0, ACT)
    sch.compute_at(xcache, i_o)
    sch.reverse_compute_at(sch.get_sblock("store"), i_o)
    if double_buffer:
        for blk in (xcache, ob):
            sch.annotate(blk, "double_buffer_scope", 0)
