"""NPU tensor intrinsics for `tvm.s_tir.Schedule.tensorize`.

Each intrinsic is a TensorIntrin pair: a *description* (the tile computation in TensorIR, over
buffers in the NPU memory scopes) and an *implementation* (one `call_extern("npu.<op>", ...)` on
those buffers). Tensorizing a scheduled loop nest replaces its inner tile by the extern call, which
the code generator (walker.py) turns into one MAC instruction.

The MAC array takes any tile shape that fits the SRAMs, so intrinsics are generated per tile shape
on first use (TVMScript text parsed with `tvm.script.from_source`; a loop of extent 1 stays a loop
but not a block variable, as in the tile that the schedule's blockize matches) and registered under a name that
encodes the shape. Operand dtypes are those of docs/ISA.md: fp16 x fp16 -> fp32 and int8/int16 x
int8 -> int32.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

import tvm.script
from tvm.s_tir import TensorIntrin

from ..ir.memory import ACC, ACT, WGT

_REGISTERED: set = set()  # intrinsic names registered in this process
# TVMScript's `T.prim_func` decorator calls inspect.stack(), which costs ~40 ms at the depth of a
# tvm.compile pass pipeline (3.5 s of a 12 s compile); parsed on a fresh thread the stack is short.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvm_npu-tvmscript")


def _parse(text: str):
    return _PARSER.submit(tvm.script.from_source, text).result()

Buf = Tuple[str, Sequence[int], str, str]  # name, shape, dtype, scope


def _region(name: str, shape: Sequence) -> str:
    return f"{name}[{', '.join(f'0:{d}' for d in shape)}]"


def _script(fname: str, bufs: List[Buf], body: List[str], syms: Sequence[str]) -> str:
    args = ", ".join([f"{b[0].lower()}: T.handle" for b in bufs] + [f"{s}: T.int32" for s in syms])
    lines = ["# from tvm.script import tirx as T", "@T.prim_func(s_tir=True)", f"def {fname}({args}):"]
    for name, shape, dtype, scope in bufs:
        lines.append(f"    {name} = T.match_buffer({name.lower()}, ({', '.join(map(str, shape))},), \"{dtype}\", "
                     f"offset_factor=1, scope=\"{scope}\")")
    out = bufs[-1]
    lines += ["    with T.sblock(\"root\"):",
              f"        T.reads({_region(out[0], out[1])}, {', '.join(_region(b[0], b[1]) for b in bufs[:-1])})",
              f"        T.writes({_region(out[0], out[1])})"]
    return "\n".join(lines + ["        " + x for x in body]) + "\n"


_TEMPLATES: Dict[tuple, tuple] = {}


def _make(name: str, extern: str, bufs: List[Buf], loops: List[Tuple[str, str, str]], update: str,
          values: Dict[str, int]) -> str:
    """Registers desc/impl for `out[...] += update` over `loops` (name, extent symbol, "S"|"R").

    Shapes, extents and index constants are symbols bound by `values`: the TVMScript text is parsed
    once per *structure* (which loops have extent 1: such a loop stays a loop but is not a block
    variable, as in the tile blockize matches) and specialised per shape with PrimFunc.specialize,
    which costs microseconds where parsing costs ~50 ms."""
    if name in _REGISTERED:
        return name
    syms = sorted(values)
    unit = tuple(values[e] == 1 for _, e, _ in loops)
    key = (extern, tuple((b[0], tuple(b[1]), b[2], b[3]) for b in bufs), tuple(loops), update, unit, tuple(syms))
    if key not in _TEMPLATES:
        sub = {v: (f"v_{v}" if not u else "0") for (v, _, _), u in zip(loops, unit)}
        kept = [(v, e, k) for (v, e, k), u in zip(loops, unit) if not u]
        stmt = update.format(**sub)
        grid = ", ".join(e if not u else "1" for (_, e, _), u in zip(loops, unit))
        if kept:
            body = [f"for {', '.join(v for v, _, _ in loops)} in T.grid({grid}):",
                    "    with T.sblock(\"update\"):",
                    f"        {', '.join(sub[v] for v, _, _ in kept)} = T.axis.remap("
                    f"\"{''.join(k for _, _, k in kept)}\", [{', '.join(v for v, _, _ in kept)}])",
                    f"        {stmt}"]
        else:
            body = ["with T.sblock(\"update\"):", f"    {stmt}"]
        ptrs = ", ".join(f"{b[0]}.data, {b[0]}.elem_offset" for b in bufs)
        desc = _parse(_script("desc", bufs, body, syms))
        impl = _parse(_script("impl", bufs, [f"T.evaluate(T.call_extern(\"int32\", \"{extern}\", {ptrs}))"], syms))
        _TEMPLATES[key] = (desc, impl)
    desc, impl = _TEMPLATES[key]
    n = len(bufs)

    def spec(f):
        return f.specialize({p: values[p.name] for p in f.params[n:]})
    TensorIntrin.register(name, spec(desc), spec(impl), override=True)
    _REGISTERED.add(name)
    return name


def _a(adt: str, a_offset: int, load: str) -> str:
    """The activation operand of the MAC: cast, plus the input offset (-zp_in) of integer operands."""
    return f"(T.Cast(\"{adt}\", {load}) + AOFF)" if a_offset else f"T.Cast(\"{adt}\", {load})"


def gemm_intrin(rows: int, depth: int, cols: int, batched_rhs: bool, dt: str = "float16",
                wdt: str = "float16", adt: str = "float32", a_offset: int = 0) -> str:
    """O[0, i, j] += (A[0, i, k] + a_offset) * W[(0,) k, j] on one (rows x depth) x (depth x cols) tile."""
    name = f"npu_gemm_{rows}x{depth}x{cols}_{'b' if batched_rhs else 's'}_{dt}_{wdt}_{adt}_o{a_offset}"
    values = {"R": rows, "D": depth, "C": cols}
    if a_offset:
        values["AOFF"] = a_offset
    w_shape = (1, "D", "C") if batched_rhs else ("D", "C")
    w_idx = "W[0, {k}, {j}]" if batched_rhs else "W[{k}, {j}]"
    return _make(name, "npu.gemm", [("A", (1, "R", "D"), dt, ACT), ("W", w_shape, wdt, WGT),
                                     ("O", (1, "R", "C"), adt, ACC)],
                 [("i", "R", "S"), ("j", "C", "S"), ("k", "D", "R")],
                 f"O[0, {{i}}, {{j}}] = O[0, {{i}}, {{j}}] + {_a(adt, a_offset, 'A[0, {i}, {k}]')} * "
                 f"T.Cast(\"{adt}\", {w_idx})", values)


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
    chan = "{c} // NG * CG + {ci}" if ng else "{ci}"
    return _make(name, "npu.conv2d", [("A", (1, "IH", "IW", "CA"), dt, ACT), ("W", ("KH", "KW", "CI", "CO"), wdt, WGT),
                                       ("O", (1, "R", "OW", "CO"), adt, ACC)],
                 [("y", "R", "S"), ("x", "OW", "S"), ("c", "CO", "S"), ("ky", "KH", "R"), ("kx", "KW", "R"),
                  ("ci", "CI", "R")],
                 "O[0, {y}, {x}, {c}] = O[0, {y}, {x}, {c}] + "
                 + _a(adt, a_offset, f"A[0, {{y}} * SH + {{ky}} * DH, {{x}} * SW + {{kx}} * DW, {chan}]")
                 + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, {{ci}}, {{c}}])", values)


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
                 "O[0, {y}, {x}, {c}] = O[0, {y}, {x}, {c}] + "
                 + _a(adt, a_offset, "A[0, {y} * SH + {ky} * DH, {x} * SW + {kx} * DW, {c} // M]")
                 + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, 0, {{c}}])", values)
