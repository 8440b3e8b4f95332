"""NPU tensor intrinsics for `tvm.s_tir.Schedule.tensorize`.

Each intrinsic is a TensorIntrin pair: a *description* (the tile computation in TensorIR, over
buffers in the NPU memory scopes) and an *implementation* (one `call_extern("npu.<op>", ...)` on
those buffers). Tensorizing a scheduled loop nest replaces its inner tile by the extern call, which
the code generator (walker.py) turns into one MAC instruction.

The MAC array takes any tile shape that fits the SRAMs, so intrinsics are generated per tile shape
on first use and registered under a name that encodes the shape. They are built with TVM's IR
builder (`tvm.script.ir_builder`), making the same calls the TVMScript parser would make for

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, o: T.handle, <shape symbols>: T.int32):
        A = T.match_buffer(a, (1, R, D), dt, offset_factor=1, scope=ACT)  # likewise W, O
        with T.sblock("root"):
            T.reads(O[0, 0:R, 0:C], A[0, 0:R, 0:D], W[0:D, 0:C])
            T.writes(O[0, 0:R, 0:C])
            for i, j, k in T.grid(R, C, D):
                with T.sblock("update"):
                    v_i, v_j, v_k = T.axis.remap("SSR", [i, j, k])
                    O[0, v_i, v_j] = O[0, v_i, v_j] + T.Cast(adt, A[0, v_i, v_k]) * T.Cast(adt, W[v_k, v_j])

(and `impl` with the body `T.evaluate(T.call_extern("int32", "npu.gemm", A.data, A.elem_offset,
...))`), so the PrimFuncs are those the TVMScript text parses to, at a fraction of a millisecond
instead of ~25 ms of parsing. A loop of extent 1 stays a loop but is not a block variable (its index
is the constant 0), as in the tile that the schedule's blockize matches. Operand dtypes are those of
docs/ISA.md: fp16 x fp16 -> fp32 and int8/int16 x int8 -> int32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tvm.s_tir import TensorIntrin
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from ..ir.memory import ACC, ACT, WGT

_REGISTERED: set = set()  # intrinsic names registered in this process

Buf = tuple[str, Sequence, str, str]  # name, shape (ints and symbol names), dtype, scope
# update(B, v, s, adt) -> (indices of O, value stored): B maps buffer names to buffers, v loop names to
# block variables (or the int 0 for a unit loop), s symbol names to the function's int32 parameters.
Update = Callable[[dict, dict, dict, str], tuple[list, object]]


def _region(buf, shape: Sequence, s: dict):
    return buf[tuple(slice(0, s[d] if isinstance(d, str) else d) for d in shape)]


def _build(fname: str, bufs: list[Buf], syms: Sequence[str], body: Callable[[dict, dict], None]):
    """The PrimFunc `fname(<buffer handles>, <syms>: int32)` matching `bufs` whose root block reads
    all buffers, writes the last one and runs `body(B, s)`."""
    with IRBuilder() as ib, T.prim_func(s_tir=True):
        T.func_name(fname)
        handles = [T.arg(b[0].lower(), T.handle()) for b in bufs]
        s = {name: T.arg(name, T.int32()) for name in syms}
        B = {}
        for (name, shape, dtype, scope), h in zip(bufs, handles):
            buf = T.match_buffer(h, tuple(s[d] if isinstance(d, str) else d for d in shape), dtype,
                                 offset_factor=1, scope=scope)
            IRBuilder.name(name, buf)
            B[name] = buf
        out = bufs[-1]
        with T.sblock("root"):
            T.reads(_region(B[out[0]], out[1], s), *(_region(B[b[0]], b[1], s) for b in bufs[:-1]))
            T.writes(_region(B[out[0]], out[1], s))
            body(B, s)
    return ib.get()


def _desc(bufs: list[Buf], syms: Sequence[str], loops: list[tuple[str, str, str]], unit: tuple[bool, ...],
          update: Update):
    kept = [(v, k) for (v, _, k), u in zip(loops, unit) if not u]
    adt = bufs[-1][2]

    def store(B, s, v):
        indices, value = update(B, v, s, adt)
        T.buffer_store(B[bufs[-1][0]], value, indices)

    def body(B, s):
        if not kept:
            with T.sblock("update"):
                store(B, s, {name: 0 for name, _, _ in loops})
            return
        with T.grid(*(1 if u else s[e] for (_, e, _), u in zip(loops, unit))) as iters:
            for (name, _, _), it in zip(loops, iters):
                IRBuilder.name(name, it)
            with T.sblock("update"):
                vs = T.axis.remap("".join(k for _, k in kept),
                                  [it for it, u in zip(iters, unit) if not u])
                vs = [vs] if len(kept) == 1 else list(vs)
                for (name, _), var in zip(kept, vs):
                    IRBuilder.name(f"v_{name}", var)
                v = {name: 0 for name, _, _ in loops}
                v.update({name: var for (name, _), var in zip(kept, vs)})
                store(B, s, v)
    return _build("desc", bufs, syms, body)


def _impl(bufs: list[Buf], syms: Sequence[str], extern: str):
    def body(B, s):
        ptrs = [x for b in bufs for x in (B[b[0]].data, B[b[0]].elem_offset)]
        T.evaluate(T.call_extern("int32", extern, *ptrs))
    return _build("impl", bufs, syms, body)


_TEMPLATES: dict[tuple, tuple] = {}


def _make(name: str, extern: str, bufs: list[Buf], loops: list[tuple[str, str, str]], update: Update,
          values: dict[str, int]) -> str:
    """Registers desc/impl for `O[...] += update` over `loops` (name, extent symbol, "S"|"R").

    Shapes, extents and index constants are symbols bound by `values`: the PrimFuncs are built once
    per *structure* (which loops have extent 1: such a loop stays a loop but is not a block
    variable, as in the tile blockize matches) and specialised per shape with PrimFunc.specialize."""
    if name in _REGISTERED:
        return name
    syms = sorted(values)
    unit = tuple(values[e] == 1 for _, e, _ in loops)
    key = (extern, tuple((b[0], tuple(b[1]), b[2], b[3]) for b in bufs), tuple(loops), update, unit, tuple(syms))
    if key not in _TEMPLATES:
        _TEMPLATES[key] = (_desc(bufs, syms, loops, unit, update), _impl(bufs, syms, extern))
    desc, impl = _TEMPLATES[key]
    n = len(bufs)

    def spec(f):
        return f.specialize({p: values[p.name] for p in f.params[n:]})
    TensorIntrin.register(name, spec(desc), spec(impl), override=True)
    _REGISTERED.add(name)
    return name


# The updates. Each evaluates its expression with the Python operators in the order the TVMScript
# text `O[...] = O[...] + (T.Cast(adt, A[...]) + AOFF) * T.Cast(adt, W[...])` would, so that the same
# constant folding happens (e.g. `0 * SW + v_kx * DW` -> `v_kx * DW` for a unit loop x).

def _mac(B, s, adt: str, out_idx: list, a_idx: tuple, w_idx: tuple):
    """O[out] + (Cast(adt, A[a]) (+ AOFF)) * Cast(adt, W[w]); AOFF (the input offset -zp_in of
    integer operands) only when it is a symbol."""
    a = T.Cast(adt, B["A"][a_idx])
    if "AOFF" in s:
        a = a + s["AOFF"]
    return out_idx, B["O"][tuple(out_idx)] + a * T.Cast(adt, B["W"][w_idx])


def _gemm_update(B, v, s, adt):
    i, j, k = v["i"], v["j"], v["k"]
    w_idx = (0, k, j) if len(B["W"].ty.shape) == 3 else (k, j)
    return _mac(B, s, adt, [0, i, j], (0, i, k), w_idx)


def _window(v, s):
    return v["y"] * s["SH"] + v["ky"] * s["DH"], v["x"] * s["SW"] + v["kx"] * s["DW"]


def _conv2d_update(B, v, s, adt):
    y, x, c, ci = v["y"], v["x"], v["c"], v["ci"]
    chan = c // s["NG"] * s["CG"] + ci if "NG" in s else ci
    return _mac(B, s, adt, [0, y, x, c], (0, *_window(v, s), chan), (v["ky"], v["kx"], ci, c))


def _dwconv2d_update(B, v, s, adt):
    y, x, c = v["y"], v["x"], v["c"]
    return _mac(B, s, adt, [0, y, x, c], (0, *_window(v, s), c // s["M"]), (v["ky"], v["kx"], 0, c))


def gemm_intrin(rows: int, depth: int, cols: int, batched_rhs: bool, dt: str = "float16",
                wdt: str = "float16", adt: str = "float32", a_offset: int = 0) -> str:
    """O[0, i, j] += (A[0, i, k] + a_offset) * W[(0,) k, j] on one (rows x depth) x (depth x cols) tile."""
    name = f"npu_gemm_{rows}x{depth}x{cols}_{'b' if batched_rhs else 's'}_{dt}_{wdt}_{adt}_o{a_offset}"
    values = {"R": rows, "D": depth, "C": cols}
    if a_offset:
        values["AOFF"] = a_offset
    w_shape = (1, "D", "C") if batched_rhs else ("D", "C")
    return _make(name, "npu.gemm", [("A", (1, "R", "D"), dt, ACT), ("W", w_shape, wdt, WGT),
                                     ("O", (1, "R", "C"), adt, ACC)],
                 [("i", "R", "S"), ("j", "C", "S"), ("k", "D", "R")], _gemm_update, values)


def conv2d_intrin(rows: int, ow: int, cols: int, kh: int, kw: int, cin: int, sh: int, sw: int, dh: int, dw: int,
                  groups_ng: int = 0, groups_cg: int = 0, dt: str = "float16", wdt: str = "float16",
                  adt: str = "float32", a_offset: int = 0) -> str:
    """Direct NHWC convolution of one tile: O[0, y, x, c] += A[0, y*sh + ky*dh, x*sw + kx*dw, ci'] *
    W[ky, kx, ci, c], with ci' = ci (dense) or (c // ng) * cg + ci (grouped; `groups_ng` output and
    `groups_cg` input channels per group)."""
    ng, cg = groups_ng, groups_cg
    ci = cg if ng else cin
    ca = (cols // ng) * cg if ng else cin
    ih, iw = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    name = f"npu_conv2d_{rows}x{ow}x{cols}_k{kh}x{kw}x{ci}_s{sh}x{sw}_d{dh}x{dw}_g{ng}x{cg}_{dt}_{wdt}_{adt}_o{a_offset}"
    values = {"R": rows, "OW": ow, "CO": cols, "KH": kh, "KW": kw, "CI": ci, "IH": ih, "IW": iw, "CA": ca,
              "SH": sh, "SW": sw, "DH": dh, "DW": dw}
    if ng:
        values.update(NG=ng, CG=cg)
    if a_offset:
        values["AOFF"] = a_offset
    return _make(name, "npu.conv2d", [("A", (1, "IH", "IW", "CA"), dt, ACT), ("W", ("KH", "KW", "CI", "CO"), wdt, WGT),
                                       ("O", (1, "R", "OW", "CO"), adt, ACC)],
                 [("y", "R", "S"), ("x", "OW", "S"), ("c", "CO", "S"), ("ky", "KH", "R"), ("kx", "KW", "R"),
                  ("ci", "CI", "R")], _conv2d_update, values)


def dwconv2d_intrin(rows: int, ow: int, cols: int, kh: int, kw: int, mult: int, sh: int, sw: int, dh: int,
                    dw: int, dt: str = "float16", wdt: str = "float16", adt: str = "float32", a_offset: int = 0) -> str:
    """Depthwise tile: O[0, y, x, c] += A[0, y*sh + ky*dh, x*sw + kx*dw, c // mult] * W[ky, kx, 0, c]."""
    ih, iw = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    name = f"npu_dwconv2d_{rows}x{ow}x{cols}_k{kh}x{kw}_m{mult}_s{sh}x{sw}_d{dh}x{dw}_{dt}_{wdt}_{adt}_o{a_offset}"
    values = {"R": rows, "OW": ow, "CO": cols, "KH": kh, "KW": kw, "IH": ih, "IW": iw, "CA": cols // mult,
              "SH": sh, "SW": sw, "DH": dh, "DW": dw, "M": mult}
    if a_offset:
        values["AOFF"] = a_offset
    return _make(name, "npu.dwconv2d", [("A", (1, "IH", "IW", "CA"), dt, ACT), ("W", ("KH", "KW", 1, "CO"), wdt, WGT),
                                         ("O", (1, "R", "OW", "CO"), adt, ACC)],
                 [("y", "R", "S"), ("x", "OW", "S"), ("c", "CO", "S"), ("ky", "KH", "R"), ("kx", "KW", "R")],
                 _dwconv2d_update, values)
