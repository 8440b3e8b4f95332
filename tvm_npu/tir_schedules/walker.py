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


def _tn(x) -> str:
    return type(x).__name__


def stage_of(buffer_name: str) -> str:
    """`xp_global.npu_act` -> `xp`: the te stage a cache buffer holds."""
    return buffer_name.split("_global")[0]


# ---- expressions -> Python ------------------------------------------------------------------------

_BIN = {"Add": "+", "Sub": "-", "Mul": "*", "FloorDiv": "//", "FloorMod": "%"}


def _py(e, names: set) -> str:
    t = _tn(e)
    if t == "IntImm":
        return str(int(e.value))
    if t == "Var":
        names.add(e.name)
        return f"e[{e.name!r}]"
    if t in _BIN:
        return f"({_py(e.a, names)} {_BIN[t]} {_py(e.b, names)})"
    if t in ("Min", "Max"):
        return f"{t.lower()}({_py(e.a, names)}, {_py(e.b, names)})"
    raise Unsupported(f"index expression {e} ({t}) in the scheduled TIR")


def compile_expr(e) -> Tuple[Callable[[dict], int], frozenset]:
    names: set = set()
    src = _py(e, names)
    return eval(f"lambda e: {src}", {"min": min, "max": max}), frozenset(names)  # noqa: S307 - generated


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
    [lo, hi] for the current tile-loop values in `env`, clamped to its domain."""

    def __init__(self, leaf: _Leaf):
        blk = leaf.realize.block
        self.name = blk.name_hint
        self.block = blk
        self.slots = 2 if "double_buffer_scope" in blk.annotations else 1
        self.elem = leaf.elem
        self.iv = []
        for iv, val in zip(blk.iter_vars, leaf.realize.iter_values):
            fn, _ = compile_expr(val)
            lo_d = int(iv.dom.min)
            self.iv.append((iv.var.name, fn, lo_d, lo_d + int(iv.dom.extent) - 1))

    def box(self, env: dict) -> Dict[str, Tuple[int, int]]:
        lo_env, hi_env = dict(env), dict(env)
        for name, ext in self.elem:
            lo_env[name] = 0
            hi_env[name] = ext - 1
        return {name: (max(fn(lo_env), dmin), min(fn(hi_env), dmax)) for name, fn, dmin, dmax in self.iv}


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
                n.prepared = (_Block(n), sram.name, sram_vars, dram.name, [compile_expr(i) for i in dram_idx],
                              str(sram.ty.dtype), pad_value, sram.scope())
                continue
            if dst.scope() not in NPU_SCOPES:
                raise Unsupported(f"block {blk.name_hint} computes into {dst.scope()} memory")
            n.kind = "compute"
            reads: List[str] = []
            _loads(store.value, reads)
            n.prepared = (_Block(n), dst.name, [i.name for i in store.indices], str(dst.ty.dtype), tuple(reads),
                          dst.scope())

    def _valid(self, buffer: str) -> Optional[Tuple[int, ...]]:
        return self.valid.get(stage_of(buffer))

    def _clamp(self, buffer: str, dims: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
        v = self._valid(buffer)
        if v is None:
            return dims
        return [(lo, min(hi, ext - 1)) for (lo, hi), ext in zip(dims, v)]

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
        blk, buf, idx_vars, dtype, reads, scope = prep
        box = blk.box(env)
        dims = self._clamp(buf, [box[v] for v in idx_vars])
        if any(hi < lo for lo, hi in dims):
            return None
        return Event("compute", buf, tuple(_pad4([hi - lo + 1 for lo, hi in dims])), intrin=blk.name, dtype=dtype,
                     slots=blk.slots, operands=tuple((str(i), r) for i, r in enumerate(reads)), scope=scope)

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
        blk, sram, sram_vars, param, dram, dtype, pad_value, scope = prep
        box = blk.box(env)
        dims = self._clamp(sram, [box[v] for v in sram_vars])
        if any(hi < lo for lo, hi in dims):
            return None  # an all-padding tile
        clamped = dict(zip(sram_vars, dims))
        rank_pad = 4 - len(sram_vars)
        pos = {v: i + rank_pad for i, v in enumerate(sram_vars)}
        shape = [1] * rank_pad + [hi - lo + 1 for lo, hi in dims]
        axes: List[Optional[int]] = [None] * 4
        start, pads = [], [0, 0, 0, 0]
        pshape = self.params[param]
        for d, (fn, names) in enumerate(dram):
            if len(names) > 1:
                raise Unsupported(f"block {blk.name}: DRAM index of axis {d} mixes {sorted(names)}")
            if not names:
                start.append((d, fn({})))
                continue
            (v,) = names
            lo, hi = fn({v: clamped[v][0]}), fn({v: clamped[v][1]})
            c_lo, c_hi = max(lo, 0), min(hi, pshape[d] - 1)
            a = pos[v]
            axes[a] = d
            start.append((d, c_lo))
            before, after = c_lo - lo, hi - c_hi
            if before or after:
                if kind != "load" or a not in (1, 2):
                    raise Unsupported(f"block {blk.name}: {kind} outside {param} axis {d} that DMA cannot pad")
                pads[0 if a == 1 else 2] = before
                pads[1 if a == 1 else 3] = after
        return Event(kind, sram, tuple(shape), param, tuple(axes), tuple(start), tuple(pads), dtype=dtype,
                     slots=blk.slots, pad_value=pad_value if any(pads) else 0, scope=scope)
