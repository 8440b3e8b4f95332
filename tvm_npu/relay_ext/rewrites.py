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


# ---- split -> strided slices ----------------------------------------------------------------------

_SPLIT = tvm.ir.Op.get("relax.split")


def _static_dims(ty):
    try:
        return [int(v.value) for v in ty.shape.values]
    except (AttributeError, TypeError):
        return None


@mutator
class _SplitRewriter(PyExprMutator):
    """Each `split(x)[i]` becomes `strided_slice(x, [axis], [begin_i], [end_i])` (boundaries read off
    the split's static output shapes), so every part is one operator a pattern can match; the split
    itself is left unused and removed."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False

    def visit_tuple_getitem_(self, op):
        tup = op.tuple_value
        call = self.lookup_binding(tup) if isinstance(tup, relax.Var) else None
        if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.same_as(_SPLIT)):
            return super().visit_tuple_getitem_(op)
        fields = getattr(call.ty, "fields", None)
        x = call.args[0]
        xdims = _static_dims(x.ty)
        parts = [_static_dims(f) for f in fields] if fields is not None else None
        if xdims is None or parts is None or any(p is None for p in parts):
            return super().visit_tuple_getitem_(op)
        axis = int(call.attrs.axis) % len(xdims)
        begin = sum(p[axis] for p in parts[:op.index])
        end = begin + parts[op.index][axis]
        self.changed = True
        return relax.op.strided_slice(self.visit_expr(x), axes=[axis], begin=[begin], end=[end])


def SplitToSlices() -> tvm.transform.Pass:
    """Rewrites the parts of static splits into strided slices (layout operators the NPU runs)."""
    return tvm.transform.module_pass(_split_to_slices, opt_level=0, name="tvm_npu.SplitToSlices")


def _split_to_slices(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rewriter = _SplitRewriter(mod)
    for gv, fn in list(mod.functions.items()):
        if isinstance(fn, relax.Function):
            new = rewriter.visit_expr(fn)
            if not new.same_as(fn):
                rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(new))
    return rewriter.builder_.get() if rewriter.changed else mod


# ---- a zero pad folded into the convolution that reads it ------------------------------------------

_PAD = tvm.ir.Op.get("relax.nn.pad")
_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}


@mutator
class _PadConvRewriter(PyExprMutator):
    """`conv2d(pad(x, constant 0 on the spatial axes), w, padding=p)` becomes `conv2d(x, w, padding=p + pad)`:
    the convolution's DMA writes the halo (the NPU loads padded tiles for free) instead of a pad
    operator copying the whole tensor. Other users of the pad keep it."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_CONV2D)):
            return call
        data = call.args[0]
        pad = self.lookup_binding(data) if isinstance(data, relax.Var) else None
        if not (isinstance(pad, relax.Call) and isinstance(pad.op, tvm.ir.Op) and pad.op.same_as(_PAD)):
            return call
        a, pa = call.attrs, pad.attrs
        layout = str(a.data_layout)
        if layout not in _SPATIAL or str(pa.pad_mode) != "constant" or float(pa.pad_value) != 0.0:
            return call
        if not str(getattr(pad.ty, "dtype", "")).startswith("float"):
            return call  # integer data: the halo would have to be the zero point
        pw = [int(v) for v in pa.pad_width]
        h, w = _SPATIAL[layout]
        if any(pw[2 * d] or pw[2 * d + 1] for d in range(len(pw) // 2) if d not in (h, w)) or min(pw) < 0:
            return call
        top, left, bottom, right = (int(v) for v in a.padding)
        padding = (top + pw[2 * h], left + pw[2 * w], bottom + pw[2 * h + 1], right + pw[2 * w + 1])
        self.changed = True
        return relax.op.nn.conv2d(pad.args[0], call.args[1], strides=a.strides, padding=padding,
                                  dilation=a.dilation, groups=int(a.groups), data_layout=layout,
                                  kernel_layout=str(a.kernel_layout), out_layout=str(a.out_layout),
                                  out_dtype=str(a.out_dtype) if a.out_dtype is not None else None)


def FoldPadIntoConv() -> tvm.transform.Pass:
    """Folds zero pads on the spatial axes into the padding of the convolutions that read them."""
    return tvm.transform.module_pass(_fold_pad, opt_level=0, name="tvm_npu.FoldPadIntoConv")


def _fold_pad(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rewriter = _PadConvRewriter(mod)
    for gv, fn in list(mod.functions.items()):
        if isinstance(fn, relax.Function):
            new = rewriter.visit_expr(fn)
            if not new.same_as(fn):
                rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(new))
    return rewriter.builder_.get() if rewriter.changed else mod
