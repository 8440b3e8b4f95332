"""Walks a scheduled, tensorized NPU PrimFunc and lists what the hardware does, tile by tile.

The scheduled TIR is a nest of *tile loops* holding blocks of four kinds, told apart by the memory
scopes they move data between (nothing is recognised by name except the zeroing `*_init` blocks):

* a copy from a global (DRAM) buffer into an `global.npu_*` scope: a DMA load;
* a copy from an NPU scope into a global buffer: a DMA store;
* a tensorized block whose body is `call_extern("npu.<op>", ...)`: one MAC instruction;
* any other block computing into an NPU scope (the epilogue), and the zeroing of an accumulator.

Tile loops are enumerated; the loops directly around a copy or epilogue block are its *element*
loops, which give the block's region per tile. Regions are clamped to the kernel's `valid`
extents (tile padding costs nothing on the NPU), and the index expressions of each copy give the
DMA view: which DRAM axis each SRAM axis walks, where it starts, and how much halo the DMA pads.

The result is a list of `Event`s, independent of DRAM addresses, that lower.py turns into
instructions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..ir.desc import Unsupported
from ..ir.memory import ACC, SPACE_OF_SCOPE

NPU_SCOPES = tuple(SPACE_OF_SCOPE)


@dataclasses.dataclass(frozen=True)
class Event:
    """kind: "load" | "store" | "init" | "mac" | "compute".

    buffer: the SRAM (cache) buffer written (load, init, mac, compute) or read (store);
    shape: the SRAM tile, as 4-D NHWC; param: the PrimFunc parameter a DMA reads or writes;
    axes: per SRAM axis, the DRAM axis it walks (None: a unit dim); start: the DRAM index of the
    tile's first element per DRAM axis; pads: DMA halo (top, bottom, left, right);
    intrin: the extern of a MAC; operands: MAC operand -> SRAM buffer."""  # noqa: D205

    kind: str
    buffer: str
    shape: Tuple[int, int, int, int] = (1, 1, 1, 1)
    param: str = ""
    axes: Tuple[Optional[int], ...] = ()
    start: Tuple[Tuple[int, int], ...] = ()
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)
    intrin: str = ""
    operands: Tuple[Tuple[str, str], ...] = ()
    dtype: str = ""  # of the SRAM buffer
    scope: str = ""  # the SRAM buffer's storage scope (ir.memory.SCOPES): which SRAM it lives in
    slots: int = 1  # 2 when the schedule marked the buffer double_buffer_scope
    pad_value: int = 0  # what the DMA writes into the halo (the input zero point of int8 kernels)
    steps: Tuple[int, ...] = ()  # per SRAM axis, the DRAM index step between neighbours (empty: all 1; a
    #                             strided slice reads every step-th element)


def _tn(x) -> str:
    return type(x).__name__


def stage_of(buffer_name: str) -> str:
    """`xp_global.npu_act` -> `xp`: the te stage a cache buffer holds."""
    return buffer_name.split("_global")[0]


# ---- expressions -> Python ------------------------------------------------------------------------

_BIN = {"Add": "+", "Sub": "-", "Mul": "*", "FloorDiv": "//", "FloorMod": "%"}


def _py(e, names: set, subst: Optional[Dict[str, str]] = None) -> str:
    """Python source of an index expression; a variable reads `e[name]` (and goes into `names`) unless
    `subst` gives its source."""
    t = _tn(e)
    if t == "IntImm":
        return str(int(e.value))
    if t == "Var":
        if subst and e.name in subst:
            return subst[e.name]
        names.add(e.name)
        return f"e[{e.name!r}]"
    if t in _BIN:
        return f"({_py(e.a, names, subst)} {_BIN[t]} {_py(e.b, names, subst)})"
    if t in ("Min", "Max"):
        return f"{t.lower()}({_py(e.a, names, subst)}, {_py(e.b, names, subst)})"
    raise Unsupported(f"index expression {e} ({t}) in the scheduled TIR")


_COMPILED: Dict[str, Callable] = {}  # source -> function: schedules of the same structure repeat them


def _eval(src: str) -> Callable:
    fn = _COMPILED.get(src)
    if fn is None:
        if len(_COMPILED) >= 65536:
            _COMPILED.clear()
        fn = _COMPILED[src] = eval(src, {"min": min, "max": max})  # noqa: S307 - generated from TIR above
    return fn


def compile_expr(e) -> Tuple[Callable[[dict], int], frozenset]:
    names: set = set()
    src = _py(e, names)
    return _eval(f"lambda e: {src}"), frozenset(names)


def _compile_of_one(e, name: str) -> Callable[[int], int]:
    """An expression of at most the one variable `name`, as a function of its value."""
    return _eval(f"lambda x: {_py(e, set(), {name: 'x'})}")


def _loads(e, out: List[str]) -> None:
    """The buffers an expression reads, in order of first appearance."""
    t = _tn(e)
    if t == "TensorLoad":
        if e.source.name not in out:
            out.append(e.source.name)
        return
    for attr in ("a", "b", "value", "condition", "true_value", "false_value"):
        if hasattr(e, attr) and not isinstance(getattr(e, attr), (int, float, str)):
            _loads(getattr(e, attr), out)
    if t == "Call":
        for a in e.args:
            _loads(a, out)


# ---- the loop tree ------------------------------------------------------------------------------

@dataclasses.dataclass
class _Loop:
    var: str
    extent: int
    body: list


@dataclasses.dataclass
class _Leaf:
    realize: object
    elem: List[Tuple[str, int]]  # element loops: (name, extent)
    kind: str = ""
    prepared: object = None
    acc_dtype: str = ""


def _tensorized(block) -> bool:
    body = block.body
    return _tn(body) == "Evaluate" and _tn(body.value) == "Call" and body.value.op.name == "tirx.call_extern"


def _build(stmt) -> list:
    t = _tn(stmt)
    if t == "SeqStmt":
        return [n for s in stmt.seq for n in _build(s)]
    if t == "For":
        chain, s = [], stmt
        while _tn(s) == "For":
            chain.append(s)
            s = s.body
        if _tn(s) == "SBlockRealize" and not _tensorized(s.block):
            return [_Leaf(s, [(f.loop_var.name, int(f.extent)) for f in chain])]
        return [_Loop(stmt.loop_var.name, int(stmt.extent), _build(stmt.body))]
    if t == "SBlockRealize":
        if s_is_root(stmt):
            return _build(stmt.block.body)
        return [_Leaf(stmt, [])]
    raise Unsupported(f"{t} in the scheduled TIR")


def s_is_root(realize) -> bool:
    return realize.block.name_hint == "root"


# ---- per-block preparation ----------------------------------------------------------------------

class _Block:
    """A leaf block with its bindings compiled: `box(env)` gives each block iteration variable's
    [lo, hi] for the current tile-loop values in `env`, clamped to its domain.

    [lo, hi] are the bindings evaluated with the element loops at their first and at their last
    iteration; `region` generates one function that computes them for chosen variables, with the
    element loops' values written in as constants."""

    def __init__(self, leaf: _Leaf):
        blk = leaf.realize.block
        self.name = blk.name_hint
        self.block = blk
        self.slots = 2 if "double_buffer_scope" in blk.annotations else 1
        self.elem = leaf.elem
        first = {name: "0" for name, _ in leaf.elem}
        last = {name: f"({ext - 1})" for name, ext in leaf.elem}
        # name -> (lo source, whether it reads a tile loop, hi source, whether it does, domain min, max)
        self._bounds: Dict[str, Tuple[str, bool, str, bool, int, int]] = {}
        for iv, val in zip(blk.iter_vars, leaf.realize.iter_values):
            lo_d = int(iv.dom.min)
            lo_vars, hi_vars = set(), set()
            lo, hi = _py(val, lo_vars, first), _py(val, hi_vars, last)
            self._bounds[iv.var.name] = (lo, bool(lo_vars), hi, bool(hi_vars), lo_d, lo_d + int(iv.dom.extent) - 1)
        self.names = tuple(self._bounds)
        self._box = self.region(self.names)

    def region(self, names: Sequence[str], valid: Optional[Tuple[int, ...]] = None) -> Callable[[dict], list]:
        """A function of the tile-loop values: [lo, hi] of the iteration variables `names`, as box()
        gives them, then cut to the real extents `valid` as _clamped cuts them (None: not cut)."""
        pairs = []
        for k, name in enumerate(names if valid is None else names[:len(valid)]):
            lo, lo_varies, hi, hi_varies, lo_d, hi_d = self._bounds[name]
            if valid is not None:
                hi_d = min(hi_d, valid[k] - 1)
            pairs.append(f"({_folded('max', lo, lo_varies, lo_d)}, {_folded('min', hi, hi_varies, hi_d)})")
        return _eval(f"lambda e: [{', '.join(pairs)}]")

    def box(self, env: dict) -> Dict[str, Tuple[int, int]]:
        return dict(zip(self.names, self._box(env)))


def _folded(fn: str, src: str, varies: bool, bound: int) -> str:
    """Source of fn(src, bound), fn min or max; its value when src reads no tile loop."""
    if not varies:
        try:
            return str(_eval(f"lambda: {fn}({src}, {bound})")())
        except ArithmeticError:  # left to fail when a tile evaluates it, as it always did
            pass
    return f"{fn}({src}, {bound})"


def _clamped(dims: List[Tuple[int, int]], valid: Optional[Tuple[int, ...]]) -> List[Tuple[int, int]]:
    """Block regions cut to the kernel's real extents (`valid`; None: nothing to cut)."""
    if valid is None:
        return dims
    return [(lo, min(hi, ext - 1)) for (lo, hi), ext in zip(dims, valid)]


def _pad4(dims: Sequence) -> list:
    return [1] * (4 - len(dims)) + list(dims)


class Walker:
    """Enumerates the events of a scheduled PrimFunc. `valid`: stage -> real extents (Kernel.valid);
    `param_shapes`: PrimFunc parameter -> shape."""

    def __init__(self, func, valid: Dict[str, Tuple[int, ...]]):
        self.valid = valid
        self.params = {p.name: tuple(int(d) for d in p.ty.shape) for p in func.params}
        self.tree = _build(func.body)
        self._prepare(self.tree)

    # classification and compilation, once per block
    def _prepare(self, nodes) -> None:
        for n in nodes:
            if isinstance(n, _Loop):
                self._prepare(n.body)
                continue
            blk = n.realize.block
            if _tensorized(blk):
                n.kind = "mac"
                call = blk.body.value
                ops = []
                for mb in blk.match_buffers:
                    if mb.source.source.scope() == ACC:
                        n.acc_dtype = str(mb.source.source.ty.dtype)
                    ops.append((mb.buffer.name, mb.source.source.name, mb.source.source.scope(),
                                [compile_expr(r.min)[0] for r in mb.source.region],
                                [int(r.extent) for r in mb.source.region]))
                n.prepared = (_Block(n), call.args[0].value, ops, n.acc_dtype)
                continue
            store = blk.body
            if _tn(store) != "BufferStore":
                raise Unsupported(f"block {blk.name_hint}: {_tn(store)} body")
            dst = store.buffer
            if blk.name_hint.endswith("_init"):
                n.kind = "init"
                n.prepared = (_Block(n), dst.name, dst.scope())
                continue
            value = store.value
            pad_value = 0
            if _tn(value) == "Call" and value.op.name.endswith("if_then_else"):
                other = value.args[2]  # the padded region: the DMA's halo value
                if _tn(other) not in ("IntImm", "FloatImm"):
                    raise Unsupported(f"block {blk.name_hint}: padding with a non-constant {other}")
                pad_value = int(other.value)
                if pad_value != other.value:
                    raise Unsupported(f"block {blk.name_hint}: halo value {other.value} is not an integer")
                value = value.args[1]
            if _tn(value) == "TensorLoad" and (dst.scope() in NPU_SCOPES) != (value.source.scope() in NPU_SCOPES):
                src = value.source
                n.kind = "load" if dst.scope() in NPU_SCOPES else "store"
                sram, dram = (dst, src) if n.kind == "load" else (src, dst)
                sram_idx = store.indices if n.kind == "load" else value.indices
                dram_idx = value.indices if n.kind == "load" else store.indices
                sram_vars = []
                for i in sram_idx:
                    if _tn(i) != "Var":
                        raise Unsupported(f"block {blk.name_hint}: SRAM index {i} is not a plain iteration variable")
                    sram_vars.append(i.name)
                n.prepared = self._dma_prep(_Block(n), sram.name, sram_vars, dram.name, dram_idx, str(sram.ty.dtype),
                                            pad_value, sram.scope())
                continue
            if dst.scope() not in NPU_SCOPES:
                raise Unsupported(f"block {blk.name_hint} computes into {dst.scope()} memory")
            n.kind = "compute"
            reads: List[str] = []
            _loads(store.value, reads)
            blk = _Block(n)
            n.prepared = (blk, dst.name, blk.region([i.name for i in store.indices], self._valid(dst.name)),
                          str(dst.ty.dtype), tuple((str(i), r) for i, r in enumerate(reads)), dst.scope())

    def _dma_prep(self, blk: _Block, sram: str, sram_vars: List[str], param: str, dram_idx, dtype: str,
                  pad_value: int, scope: str) -> tuple:
        """What _dma needs per tile, worked out once: the SRAM region's function (_Block.region), and
        per DRAM axis (d, k, fn): the index of axis d as a function of SRAM variable k's value, or
        (d, None, fn of nothing) when it walks none, or (d, [names], None) when it mixes several."""
        pos = {v: k for k, v in enumerate(sram_vars)}
        axes = []
        for d, e in enumerate(dram_idx):
            fn, names = compile_expr(e)
            if len(names) > 1:
                axes.append((d, sorted(names), None))  # refused when a tile reaches it, as always
            elif not names:
                axes.append((d, None, fn))
            else:
                (v,) = names
                axes.append((d, pos[v], _compile_of_one(e, v)))
        return (blk, sram, blk.region(sram_vars, self._valid(sram)), 4 - len(sram_vars), param, axes, dtype,
                pad_value, scope)

    def _valid(self, buffer: str) -> Optional[Tuple[int, ...]]:
        return self.valid.get(stage_of(buffer))

    def _clamp(self, buffer: str, dims: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
        return _clamped(dims, self._valid(buffer))

    def events(self) -> List[Event]:
        out: List[Event] = []
        self._walk(self.tree, {}, out)
        return out

    def _walk(self, nodes, env: dict, out: List[Event]) -> None:
        for n in nodes:
            if isinstance(n, _Loop):
                for i in range(n.extent):
                    env[n.var] = i
                    self._walk(n.body, env, out)
                del env[n.var]
            else:
                ev = getattr(self, "_" + n.kind)(n.prepared, env)
                if ev is not None:
                    out.append(ev)

    def _init(self, prep, env) -> Event:
        return Event("init", prep[1], scope=prep[2])

    def _compute(self, prep, env) -> Optional[Event]:
        blk, buf, region, dtype, operands, scope = prep
        dims = region(env)
        for lo, hi in dims:
            if hi < lo:
                return None
        return Event("compute", buf, tuple(_pad4([hi - lo + 1 for lo, hi in dims])), intrin=blk.name, dtype=dtype,
                     slots=blk.slots, operands=operands, scope=scope)

    def _mac(self, prep, env) -> Event:
        blk, extern, ops, adt = prep
        box = blk.box(env)
        benv = {name: lo for name, (lo, _) in box.items()}
        operands, shape = [], None
        for role, src, scope, mins, exts in ops:
            dims = self._clamp(src, [(m(benv), m(benv) + e - 1) for m, e in zip(mins, exts)])
            if scope == ACC:
                shape, acc, dtype = tuple(_pad4([hi - lo + 1 for lo, hi in dims])), src, adt
            operands.append((role, src))
        return Event("mac", acc, shape, intrin=extern, operands=tuple(operands), dtype=dtype, scope=ACC)

    def _load(self, prep, env) -> Optional[Event]:
        return self._dma("load", prep, env)

    def _store(self, prep, env) -> Optional[Event]:
        return self._dma("store", prep, env)

    def _dma(self, kind: str, prep, env) -> Optional[Event]:
        blk, sram, region, rank_pad, param, dram, dtype, pad_value, scope = prep
        dims = region(env)
        for lo, hi in dims:
            if hi < lo:
                return None  # an all-padding tile
        shape = (1,) * rank_pad + tuple([hi - lo + 1 for lo, hi in dims])
        axes: List[Optional[int]] = [None] * 4
        start, pads = [], [0, 0, 0, 0]
        steps = None
        pshape = self.params[param]
        for d, k, fn in dram:
            if fn is None:
                raise Unsupported(f"block {blk.name}: DRAM index of axis {d} mixes {k}")
            if k is None:
                start.append((d, fn({})))
                continue
            lo, hi = dims[k]
            step = fn(lo + 1) - fn(lo) if hi > lo else 1
            lo, hi = fn(lo), fn(hi)
            c_lo = lo if lo > 0 else 0  # max(lo, 0) and min(hi, pshape[d] - 1)
            c_hi = hi if hi < pshape[d] else pshape[d] - 1
            a = k + rank_pad
            axes[a] = d
            start.append((d, c_lo))
            if step != 1:
                if step < 1 or c_lo != lo or c_hi != hi:
                    raise Unsupported(f"block {blk.name}: {kind} with DRAM step {step} along {param} axis {d} "
                                      "(steps of at least 1 inside the tensor only)")
                steps = steps or [1, 1, 1, 1]
                steps[a] = step
                continue
            before, after = c_lo - lo, hi - c_hi
            if before or after:
                if kind != "load" or a not in (1, 2):
                    raise Unsupported(f"block {blk.name}: {kind} outside {param} axis {d} that DMA cannot pad")
                pads[0 if a == 1 else 2] = before
                pads[1 if a == 1 else 3] = after
        return Event(kind, sram, shape, param, tuple(axes), tuple(start), tuple(pads), dtype=dtype,
                     slots=blk.slots, pad_value=pad_value if any(pads) else 0, scope=scope,
                     steps=tuple(steps) if steps else ())
