"""The NPU tensor intrinsics built with the IR builder (tvm_npu/tir_schedules/intrinsics.py) are the
PrimFuncs that the TVMScript text the module used to generate and parse gives: structurally equal
after specialisation (and printed identically, names included), for each intrinsic over dtypes,
input offsets, groups, strides/dilations and loops of extent 1."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import tvm
import tvm.script
from tvm.s_tir import TensorIntrin

from tvm_npu.ir.memory import ACC, ACT, WGT
from tvm_npu.tir_schedules import intrinsics as I

# ---- the reference: the TVMScript text of the former implementation, parsed ---------------------

Buf = tuple[str, Sequence, str, str]


def _region(name: str, shape: Sequence) -> str:
    return f"{name}[{', '.join(f'0:{d}' for d in shape)}]"


def _script(fname: str, bufs: list[Buf], body: list[str], syms: Sequence[str]) -> str:
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


def _ref(extern: str, bufs: list[Buf], loops: list[tuple[str, str, str]], update: str, values: dict[str, int]):
    syms = sorted(values)
    unit = tuple(values[e] == 1 for _, e, _ in loops)
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
    desc = tvm.script.from_source(_script("desc", bufs, body, syms))
    impl = tvm.script.from_source(
        _script("impl", bufs, [f"T.evaluate(T.call_extern(\"int32\", \"{extern}\", {ptrs}))"], syms))
    n = len(bufs)

    def spec(f):
        return f.specialize({p: values[p.name] for p in f.params[n:]})
    return (desc, impl), (spec(desc), spec(impl))


def _a(adt: str, a_offset: int, load: str) -> str:
    return f"(T.Cast(\"{adt}\", {load}) + AOFF)" if a_offset else f"T.Cast(\"{adt}\", {load})"


def ref_gemm(rows, depth, cols, batched_rhs, dt="float16", wdt="float16", adt="float32", a_offset=0):
    values = {"R": rows, "D": depth, "C": cols}
    if a_offset:
        values["AOFF"] = a_offset
    w_shape = (1, "D", "C") if batched_rhs else ("D", "C")
    w_idx = "W[0, {k}, {j}]" if batched_rhs else "W[{k}, {j}]"
    return _ref("npu.gemm", [("A", (1, "R", "D"), dt, ACT), ("W", w_shape, wdt, WGT), ("O", (1, "R", "C"), adt, ACC)],
                [("i", "R", "S"), ("j", "C", "S"), ("k", "D", "R")],
                f"O[0, {{i}}, {{j}}] = O[0, {{i}}, {{j}}] + {_a(adt, a_offset, 'A[0, {i}, {k}]')} * "
                f"T.Cast(\"{adt}\", {w_idx})", values)


def ref_conv2d(rows, ow, cols, kh, kw, cin, sh, sw, dh, dw, groups_ng=0, groups_cg=0, dt="float16",
               wdt="float16", adt="float32", a_offset=0):
    ng, cg = groups_ng, groups_cg
    ci = cg if ng else cin
    ca = (cols // ng) * cg if ng else cin
    ih, iw = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    values = {"R": rows, "OW": ow, "CO": cols, "KH": kh, "KW": kw, "CI": ci, "IH": ih, "IW": iw, "CA": ca,
              "SH": sh, "SW": sw, "DH": dh, "DW": dw}
    if ng:
        values.update(NG=ng, CG=cg)
    if a_offset:
        values["AOFF"] = a_offset
    chan = "{c} // NG * CG + {ci}" if ng else "{ci}"
    return _ref("npu.conv2d", [("A", (1, "IH", "IW", "CA"), dt, ACT), ("W", ("KH", "KW", "CI", "CO"), wdt, WGT),
                               ("O", (1, "R", "OW", "CO"), adt, ACC)],
                [("y", "R", "S"), ("x", "OW", "S"), ("c", "CO", "S"), ("ky", "KH", "R"), ("kx", "KW", "R"),
                 ("ci", "CI", "R")],
                "O[0, {y}, {x}, {c}] = O[0, {y}, {x}, {c}] + "
                + _a(adt, a_offset, f"A[0, {{y}} * SH + {{ky}} * DH, {{x}} * SW + {{kx}} * DW, {chan}]")
                + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, {{ci}}, {{c}}])", values)


def ref_dwconv2d(rows, ow, cols, kh, kw, mult, sh, sw, dh, dw, dt="float16", wdt="float16", adt="float32",
                 a_offset=0):
    ih, iw = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    values = {"R": rows, "OW": ow, "CO": cols, "KH": kh, "KW": kw, "IH": ih, "IW": iw, "CA": cols // mult,
              "SH": sh, "SW": sw, "DH": dh, "DW": dw, "M": mult}
    if a_offset:
        values["AOFF"] = a_offset
    return _ref("npu.dwconv2d", [("A", (1, "IH", "IW", "CA"), dt, ACT), ("W", ("KH", "KW", 1, "CO"), wdt, WGT),
                                 ("O", (1, "R", "OW", "CO"), adt, ACC)],
                [("y", "R", "S"), ("x", "OW", "S"), ("c", "CO", "S"), ("ky", "KH", "R"), ("kx", "KW", "R")],
                "O[0, {y}, {x}, {c}] = O[0, {y}, {x}, {c}] + "
                + _a(adt, a_offset, "A[0, {y} * SH + {ky} * DH, {x} * SW + {kx} * DW, {c} // M]")
                + f" * T.Cast(\"{adt}\", W[{{ky}}, {{kx}}, 0, {{c}}])", values)


def _equal(a, b) -> bool:
    """tvm.ir.structural_equal (TVM 0.27 only has the asserting form)."""
    try:
        tvm.ir.assert_structural_equal(a, b)
    except ValueError:
        return False
    return True


# ---- the cases --------------------------------------------------------------------------------------

I8 = dict(dt="int8", wdt="int8", adt="int32")
I16 = dict(dt="int16", wdt="int8", adt="int32")

CASES = [
    # gemm: rows, depth, cols, batched_rhs
    (I.gemm_intrin, ref_gemm, (8, 16, 32, False), {}),
    (I.gemm_intrin, ref_gemm, (4, 64, 16, True), {}),
    (I.gemm_intrin, ref_gemm, (8, 16, 32, False), dict(I8, a_offset=128)),
    (I.gemm_intrin, ref_gemm, (1, 16, 8, True), dict(I16, a_offset=-3)),
    (I.gemm_intrin, ref_gemm, (4, 1, 1, False), I8),            # one block variable
    (I.gemm_intrin, ref_gemm, (1, 1, 1, True), dict(I8, a_offset=5)),  # no block variable
    # conv2d: rows, ow, cols, kh, kw, cin, sh, sw, dh, dw
    (I.conv2d_intrin, ref_conv2d, (4, 8, 16, 3, 3, 8, 1, 1, 1, 1), {}),
    (I.conv2d_intrin, ref_conv2d, (4, 1, 16, 3, 3, 8, 2, 1, 1, 1), dict(I8, a_offset=128)),
    (I.conv2d_intrin, ref_conv2d, (2, 3, 8, 3, 3, 0, 2, 2, 2, 2), dict(I8, groups_ng=4, groups_cg=2, a_offset=7)),
    (I.conv2d_intrin, ref_conv2d, (2, 2, 1, 1, 3, 0, 1, 1, 1, 1), dict(I16, groups_ng=1, groups_cg=3)),
    (I.conv2d_intrin, ref_conv2d, (1, 1, 1, 1, 1, 1, 1, 1, 1, 1), I8),  # no block variable
    (I.conv2d_intrin, ref_conv2d, (1, 4, 8, 1, 1, 3, 1, 2, 1, 1), {}),
    # dwconv2d: rows, ow, cols, kh, kw, mult, sh, sw, dh, dw
    (I.dwconv2d_intrin, ref_dwconv2d, (4, 8, 16, 3, 3, 1, 1, 1, 1, 1), {}),
    (I.dwconv2d_intrin, ref_dwconv2d, (2, 4, 16, 3, 3, 2, 2, 2, 1, 1), dict(I8, a_offset=128)),
    (I.dwconv2d_intrin, ref_dwconv2d, (1, 1, 1, 1, 1, 1, 1, 1, 1, 1), dict(I8, a_offset=-1)),  # c // M of c = 0
    (I.dwconv2d_intrin, ref_dwconv2d, (3, 1, 8, 5, 1, 1, 1, 1, 2, 1), I16),
]


@pytest.mark.parametrize("make, ref, args, kwargs", CASES,
                         ids=[f"{c[0].__name__}-{'x'.join(map(str, c[2]))}-{i}" for i, c in enumerate(CASES)])
def test_intrin_equals_parsed_tvmscript(make, ref, args, kwargs):
    name = make(*args, **kwargs)
    assert make(*args, **kwargs) == name  # registered once
    intrin = TensorIntrin.get(name)
    (desc_t, impl_t), (desc, impl) = ref(*args, **kwargs)
    for got, want in ((intrin.desc, desc), (intrin.impl, impl)):
        tvm.ir.assert_structural_equal(got, want)
        assert got.script() == want.script()
    # The templates (before specialisation) too: the same symbols, folding and block variables.
    templates = [t for t in I._TEMPLATES.values() if _equal(t[0], desc_t)]
    assert templates, "no template is structurally equal to the parsed description"
    tvm.ir.assert_structural_equal(templates[0][1], impl_t)


def test_no_tvmscript_parse(monkeypatch):
    """Building an intrinsic of a new structure does not go through the TVMScript parser."""
    def fail(*a, **k):
        raise AssertionError("TVMScript parsed")
    monkeypatch.setattr(tvm.script, "from_source", fail)
    monkeypatch.setattr(tvm.script.parser.core.entry, "parse", fail)
    I.conv2d_intrin(3, 5, 7, 2, 3, 11, 1, 3, 2, 1, dt="int8", wdt="int8", adt="int32", a_offset=13)
