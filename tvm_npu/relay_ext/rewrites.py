"""Rewrites that give the pattern table what frontends express another way.

TVM's ONNX frontend imports `Clip` whose bounds are inputs as `call_tir` of generated `maximum` /
`minimum` PrimFuncs instead of Relax operators, which no pattern can match. `ElementwiseTIRToRelax`
recognises such a PrimFunc by its structure (one store of max/min of two loads over the output's
full index space; its name is not used) and puts `R.maximum` / `R.minimum` back.
"""

from __future__ import annotations

from typing import Optional

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_BINARY = {"Max": relax.op.maximum, "Min": relax.op.minimum}
_LOADS = ("TensorLoad", "BufferLoad")


def _kind(node) -> str:
    """The TIR node's class name (some of tvm.tirx's names are factory functions, not classes)."""
    return type(node).__name__


def _single_store(stmt) -> Optional[object]:
    """The only BufferStore of a nest of blocks and loops, or None if there is anything else."""
    while True:
        if _kind(stmt) == "BufferStore":
            return stmt
        if _kind(stmt) == "SBlockRealize":
            stmt = stmt.block
        elif _kind(stmt) in ("For", "SBlock"):
            if getattr(stmt, "init", None) is not None:
                return None
            stmt = stmt.body
        else:
            return None


def elementwise_binary(func):
    """relax.op.maximum / minimum when func computes out[i] = max/min(a[i...], b[j...]) of its two
    inputs, else None."""
    if _kind(func) != "PrimFunc" or len(func.params) != 3:
        return None
    store = _single_store(func.body)
    if store is None or _kind(store.value) not in _BINARY:
        return None
    a, b = store.value.a, store.value.b
    if not (_kind(a) in _LOADS and _kind(b) in _LOADS):
        return None
    # TVM 0.27: loads read the parameters themselves (`source`); older TIR read buffers
    x, y, out = (getattr(e, "source", getattr(e, "buffer", None)) for e in (a, b, store))
    p = func.params
    if not all(v is not None and v.same_as(q) for v, q in ((x, p[0]), (y, p[1]), (out, p[2]))):
        return None
    # elementwise, as Relax's broadcasting operator means it: a and the output at the same index, b at
    # the same index or a scalar
    same = lambda u, v: len(u) == len(v) and all(i.same_as(j) for i, j in zip(u, v))  # noqa: E731
    if not same(a.indices, store.indices) or not (len(b.indices) == 0 or same(b.indices, store.indices)):
        return None
    return _BINARY[_kind(store.value)]


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_CALL_TIR)):
            return call
        gv, args = call.args[0], call.args[1]
        if not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        op = elementwise_binary(self.mod_[gv])
        if op is None:
            return call
        new = op(args.fields[0], args.fields[1])
        out_ty = call.ty
        if not (isinstance(out_ty, relax.TensorType) and out_ty.dtype == args.fields[0].ty.dtype):
            return call
        return new


def ElementwiseTIRToRelax() -> tvm.transform.Pass:
    """Replaces call_tir of recognised elementwise max/min PrimFuncs by Relax operators."""
    return tvm.transform.module_pass(_rewrite, opt_level=0, name="tvm_npu.ElementwiseTIRToRelax")


def _rewrite(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rewriter = _Rewriter(mod)
    changed = False
    for gv, fn in list(mod.functions.items()):
        if isinstance(fn, relax.Function):
            new = rewriter.visit_expr(fn)
            if not new.same_as(fn):
                rewriter.builder_.update_func(gv, new)
                changed = True
    # the replaced PrimFuncs stay in the module (harmless): removing "unused" functions here would
    # also drop ones referenced in ways the pass cannot see (e.g. shape functions)
    return rewriter.builder_.get() if changed else mod
