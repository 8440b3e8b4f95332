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

ACT, WGT, ACC = "global.npu_act", "global.npu_wgt", "global.npu_acc"
_REGISTERED: Dict[str, str] = {}
# TVMScript's `T.prim_func` decorator calls inspect.stack(), which costs ~40 ms at the depth of a
# tvm.compile pass pipeline (3.5 s of a 12 s compile); parsed on a fresh thread the stack is short.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvm_npu-tvmscript")


def _parse(text: str):
    return _PARSER.submit(tvm.script.from_source, text).result()

Buf = Tuple[str, Sequence[int], str, str]  # name, shape, dtype, scope


def _region(name: str, shape: Sequence[int]) -> str:
    return f"{name}[{', '.join(f'0:{d}' for d in shape)}]"


def _script(fname: str, bufs: List[Buf], body: List[str]) -> str:
    args = ", ".join(f"{b[0].lower()}: T.handle" for b in bufs)
    lines = ["# from tvm.script import tirx as T", "@T.prim_func(s_tir=True)", f"def {fname}({args}):"]
    for name, shape, dtype, scope in bufs:
        lines.append(f"    {name} = T.match_buffer({name.lower()}, ({', '.join(map(str, shape))},), \"{dtype}\", "
                     f"offset_factor=1, scope=\"{scope}\")")
    out = bufs[-1]
    lines += ["    with T.sblock(\"root\"):",
              f"        T.reads({_region(out[0], out[1])}, {', '.join(_region(b[0], b[1]) for b in bufs[:-1])})",
              f"        T.writes({_region(out[0], out[1])})"]
    return "\n".join(lines + ["        " + x for x in body]) + "\n"


def _make(name: str, extern: str, bufs: List[Buf], loops: List[Tuple[str, int, str]], update: str) -> str:
    """Registers desc/impl for `out[...] += update` over `loops` (name, extent, "S"|"R"); `update`
    is a format string whose {name} fields become the block variables (0 for unit loops)."""
    if name in _REGISTERED:
        return name
    kept = [(v, e, k) for v, e, k in loops if e > 1]
    sub = {v: (f"v_{v}" if e > 1 else "0") for v, e, _ in loops}
    stmt = update.format(**sub)
    if kept:
        body = [f"for {', '.join(v for v, _, _ in loops)} in T.grid({', '.join(str(e) for _, e, _ in loops)}):",
                "    with T.sblock(\"update\"):",
                f"        {', '.join(sub[v] for v, _, _ in kept)} = T.axis.remap(\"{''.join(k for _, _, k in kept)}\", "
                f"[{', '.join(v for v, _, _ in kept)}])",
                f"        {stmt}"]
    else:
        body = ["with T.sblock(\"update\"):", f"    {stmt}"]
    ptrs = ", ".join(f"{b[0]}.data, {b[0]}.elem_offset" for b in bufs)
    desc = _parse(_script("desc", bufs, body))
    impl = _parse(_script("impl", bufs, [f"T.evaluate(T.call_extern(\"int32\", \"{extern}\", {ptrs}))"]))
    TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED[name] = name
    return name


def _a(adt: str, a_offset: int, load: str) -> str:
    """The activation operand of the MAC: cast, plus the input offset (-zp_in) of integer operands."""
    return f"(T.Cast(\"{adt}\", {load}) + {a_offset})" if a_offset else f"T.Cast(\"{adt}\", {load})"


def gemm_intrin(rows: int, depth: int, cols: int, batched_rhs: bool, dt: str = "float16",
                wdt: str = "float16", adt: str = "float32", a_offset: int = 0) -> str:
    """O[0, i, j] += (A[0, i, k] + a_offset) * W[(0,) k, j] on one (rows x depth) x (depth x cols) tile."""
    name = f"npu_gemm_{rows}x{depth}x{cols}_{'b' if batched_rhs else 's'}_{dt}_{wdt}_{adt}_o{a_offset}"
    w_shape = (1, depth, cols) if batched_rhs else (depth, cols)
    w_idx = "W[0, {k}, {j}]" if batched_rhs else "W[{k}, {j}]"
    return _make(name, "npu.gemm", [("A", (1, rows, depth), dt, ACT), ("W", w_shape, wdt, WGT),
                                     ("O", (1, rows, cols), adt, ACC)],
                 [("i", rows, "S"), ("j", cols, "S"), ("k", depth, "R")],
                 f"O[0, {{i}}, {{j}}] = O[0, {{i}}, {{j}}] + {_a(adt, a_offset, 'A[0, {i}, {k}]')} * "
                 f"T.Cast(\"{adt}\", {w_idx})")


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
    chan = f"{{c}} // {ng} * {cg} + {{ci}}" if ng else "{ci}"
    return _make(name, "npu.conv2d", [("A", (1, ih, iw, ca), dt, ACT), ("W", (kh, kw, ci, cols), wdt, WGT),
                                       ("O", (1, rows, ow, cols), adt, ACC)],
                 [("y", rows, "S"), ("x", ow, "S"), ("c", cols, "S"), ("ky", kh, "R"), ("kx", kw, "R"),
                  ("ci", ci, "R")],
                 f"O[0, {{y}}, {{x}}, {{c}}] = O[0, {{y}}, {{x}}, {{c}}] + "
                 + _a(adt, a_offset, f"A[0, {{y}} * {sh} + {{ky}} * {dh}, {{x}} * {sw} + {{kx}} * {dw}, {chan}]")
                 + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, {{ci}}, {{c}}])")


def dwconv2d_intrin(rows: int, ow: int, cols: int, kh: int, kw: int, mult: int, sh: int, sw: int, dh: int,
                    dw: int, dt: str = "float16", wdt: str = "float16", adt: str = "float32", a_offset: int = 0) -> str:
    """Depthwise tile: O[0, y, x, c] += A[0, y*sh + ky*dh, x*sw + kx*dw, c // mult] * W[ky, kx, 0, c]."""
    ih, iw = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    name = f"npu_dwconv2d_{rows}x{ow}x{cols}_k{kh}x{kw}_m{mult}_s{sh}x{sw}_d{dh}x{dw}_{dt}_{wdt}_{adt}_o{a_offset}"
    return _make(name, "npu.dwconv2d", [("A", (1, ih, iw, cols // mult), dt, ACT), ("W", (kh, kw, 1, cols), wdt, WGT),
                                         ("O", (1, rows, ow, cols), adt, ACC)],
                 [("y", rows, "S"), ("x", ow, "S"), ("c", cols, "S"), ("ky", kh, "R"), ("kx", kw, "R")],
                 f"O[0, {{y}}, {{x}}, {{c}}] = O[0, {{y}}, {{x}}, {{c}}] + "
                 + _a(adt, a_offset, f"A[0, {{y}} * {sh} + {{ky}} * {dh}, {{x}} * {sw} + {{kx}} * {dw}, {{c}} // {mult}]")
                 + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, 0, {{c}}])")
