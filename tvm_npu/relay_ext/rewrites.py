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


def _mutator_pass(rewriter_class, name: str, prune: bool = True) -> tvm.transform.Pass:
    """A module pass running `rewriter_class(mod)` (a PyExprMutator with a `changed` flag) over every
    Relax function; with `prune`, bindings the rewrite left unused are removed."""

    def run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = rewriter_class(mod)
        for gv, fn in list(mod.functions.items()):
            if isinstance(fn, relax.Function):
                new = rewriter.visit_expr(fn)
                if not new.same_as(fn):
                    rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(new) if prune else new)
        return rewriter.builder_.get() if rewriter.changed else mod

    return tvm.transform.module_pass(run, opt_level=0, name=f"tvm_npu.{name}")


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
    return _mutator_pass(_SplitRewriter, "SplitToSlices")



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
    return _mutator_pass(_PadConvRewriter, "FoldPadIntoConv")



# ---- TFLite's flattened PReLU back on the tensor it works on ---------------------------------------

_RESHAPE = tvm.ir.Op.get("relax.reshape")
_PRELU = tvm.ir.Op.get("relax.nn.prelu")
_ASTYPE = tvm.ir.Op.get("relax.astype")
_BROADCAST = tvm.ir.Op.get("relax.broadcast_to")
_EXPAND = tvm.ir.Op.get("relax.expand_dims")


def _const_value(expr, lookup, depth: int = 0):
    """The numpy value of a constant expression built from a Constant by astype / reshape /
    broadcast_to / expand_dims (what TVM's TFLite frontend makes of PRELU's alpha), else None."""
    import numpy as np

    if depth > 8:
        return None
    if isinstance(expr, relax.Var):
        bound = lookup(expr)
        return None if bound is None else _const_value(bound, lookup, depth + 1)
    if isinstance(expr, tvm.ir.expr.Constant):  # Relax constants (GenericConst) in TVM 0.27
        return expr.value.numpy() if hasattr(expr.value, "numpy") else None
    if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
        return None
    if not any(expr.op.same_as(op) for op in (_ASTYPE, _RESHAPE, _BROADCAST, _EXPAND)):
        return None
    v = _const_value(expr.args[0], lookup, depth + 1)
    shape = _static_dims(expr.ty)
    if v is None or shape is None:
        return None
    try:
        if expr.op.same_as(_ASTYPE):
            return v.astype(str(expr.attrs.dtype))
        if expr.op.same_as(_BROADCAST):
            return np.broadcast_to(v, shape)
        return v.reshape(shape)
    except (ValueError, TypeError):
        return None


def per_axis_slope(alpha, shape):
    """(slope, axis) when `alpha` (any shape, as many elements as `shape`) seen in `shape` varies only
    along one axis (the last tried first), or is one value (axis -1, a 1-element slope); else None."""
    import numpy as np

    a = np.asarray(alpha).reshape(shape)
    flat = a.reshape(-1)
    if np.all(flat == flat[0]):
        return flat[:1].copy(), len(shape) - 1
    for axis in reversed(range(len(shape))):
        index = tuple(slice(None) if d == axis else slice(0, 1) for d in range(len(shape)))
        line = a[index]
        if np.array_equal(np.broadcast_to(line, shape), a):
            return line.reshape(-1).copy(), axis
    return None


@mutator
class _PreluRewriter(PyExprMutator):
    """`reshape(prelu(reshape(x, [n]), alpha[n], axis=0), x.shape)` (TVM's TFLite PRELU: x flattened,
    alpha broadcast to x and flattened) becomes `prelu(x, slope, axis)` when alpha, seen in x's shape,
    is a constant that varies along one axis only (checked element by element)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False

    def _bound(self, e):
        return self.lookup_binding(e) if isinstance(e, relax.Var) else None

    def _is(self, call, op) -> bool:
        return isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.same_as(op)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not self._is(call, _RESHAPE):
            return call
        prelu = self._bound(call.args[0])
        if not self._is(prelu, _PRELU):
            return call
        flat = self._bound(prelu.args[0])
        if not self._is(flat, _RESHAPE):
            return call
        x = flat.args[0]
        out, xs, fs = _static_dims(call.ty), _static_dims(x.ty), _static_dims(prelu.ty)
        if out is None or xs != out or fs is None or len(fs) != 1 or not 1 <= len(xs) <= 4:
            return call
        alpha = _const_value(prelu.args[1], self._bound)
        if alpha is None or alpha.size != fs[0]:
            return call
        found = per_axis_slope(alpha, xs)
        if found is None:
            return call
        slope, axis = found
        self.changed = True
        return relax.op.nn.prelu(x, relax.const(slope.astype(str(prelu.ty.dtype))), axis=axis)


def UnflattenPrelu() -> tvm.transform.Pass:
    """Puts TFLite's flattened PReLU back on the tensor it works on, with a per-axis constant slope."""
    return _mutator_pass(_PreluRewriter, "UnflattenPrelu")



# ---- reductions over non-adjacent axes as one reduction per run of adjacent axes ------------------

_REDUCE_OPS = {"relax.sum": relax.op.sum, "relax.max": relax.op.max, "relax.min": relax.op.min}


def adjacent_runs(axes):
    """Sorted axes split into runs of adjacent ones: (1, 3, 4) -> [(1,), (3, 4)]."""
    runs = []
    for a in sorted(axes):
        if runs and runs[-1][-1] == a - 1:
            runs[-1] = runs[-1] + (a,)
        else:
            runs.append((a,))
    return runs


@mutator
class _ReductionSplitter(PyExprMutator):
    """`sum / max / min(x, axes)` over axes that are not one adjacent run becomes one reduction per run,
    the last run first, each keeping its dims (then a reshape drops them when the original did not
    keep them): every pass is a reduction over adjacent axes, which the vector unit does in one pass.
    max and min stay exact; a sum is rounded once more on the NPU (fp16 partial sums)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name in _REDUCE_OPS) or call.attrs.axis is None:
            return call
        dims = _static_dims(call.args[0].ty)
        out = _static_dims(call.ty)
        if dims is None or out is None:
            return call
        runs = adjacent_runs({int(a) % len(dims) for a in call.attrs.axis})
        if len(runs) < 2:
            return call
        op = _REDUCE_OPS[call.op.name]
        y = call.args[0]
        for run in reversed(runs):
            y = op(y, axis=list(run), keepdims=True)
        self.changed = True
        return y if bool(call.attrs.keepdims) else relax.op.reshape(y, out)


def SplitReductions() -> tvm.transform.Pass:
    """Reductions (sum / max / min) over non-adjacent axes as one reduction per run of adjacent axes."""
    return _mutator_pass(_ReductionSplitter, "SplitReductions", prune=False)



# ---- softmax and log-softmax written out ------------------------------------------------------------

_OPS = {n: tvm.ir.Op.get(f"relax.{n}") for n in ("max", "subtract", "exp", "sum", "divide", "log")}


@mutator
class _SoftmaxRewriter(PyExprMutator):
    """`exp(x - max(x)) / sum(exp(x - max(x)))` becomes `softmax(x)` and `(x - max(x)) - log(sum(exp(x -
    max(x))))` becomes `log_softmax(x)` (one axis, kept dims): the same function, as ONNX's expanded
    Softmax / LogSoftmax bodies write it. The fused operator subtracts the row maximum before anything
    is rounded to fp16 (npu.softmax reads float32); written out, the maximum of values around 1e4
    would be rounded to fp16 first."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False

    def _call(self, expr, name):
        v = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        return v if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.same_as(_OPS[name]) else None

    def _axis(self, call):
        axis = call.attrs.axis
        if axis is None or len(axis) != 1 or not call.attrs.keepdims:
            return None
        rank = len(call.args[0].ty.shape.values) if getattr(call.args[0].ty, "shape", None) is not None else None
        return None if rank is None else int(axis[0]) % rank

    def _shifted(self, sub_expr):
        """x and the axis when sub_expr is x - max(x, axis, keepdims)."""
        sub = self._call(sub_expr, "subtract")
        mx = self._call(sub.args[1], "max") if sub is not None else None
        if mx is None or not mx.args[0].same_as(sub.args[0]):
            return None, None
        return sub.args[0], self._axis(mx)

    def _exp_sum(self, sum_expr, exp_expr=None):
        """(x, axis) when sum_expr is sum(exp(x - max(x))) over the max's axis (and, given, exp_expr that exp)."""
        s = self._call(sum_expr, "sum")
        e = self._call(s.args[0], "exp") if s is not None else None
        if e is None or (exp_expr is not None and self._call(exp_expr, "exp") is None):
            return None, None
        if exp_expr is not None and not (exp_expr.same_as(s.args[0]) or self._call(exp_expr, "exp").same_as(e)):
            return None, None
        x, axis = self._shifted(e.args[0])
        return (x, axis) if axis is not None and axis == self._axis(s) else (None, None)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.same_as(_OPS["divide"]) and self._call(call.args[0], "exp") is not None:
            x, axis = self._exp_sum(call.args[1], call.args[0])
            if x is not None:
                self.changed = True
                return relax.op.nn.softmax(x, axis=axis)
        if call.op.same_as(_OPS["subtract"]):
            lg = self._call(call.args[1], "log")
            x1, axis1 = self._shifted(call.args[0])
            if lg is not None and x1 is not None:
                x, axis = self._exp_sum(lg.args[0])
                if x is not None and x.same_as(x1) and axis == axis1:
                    self.changed = True
                    return relax.op.nn.log_softmax(x, axis=axis)
        return call


def SoftmaxFromParts() -> tvm.transform.Pass:
    """Rewrites written-out softmax / log-softmax into the operators (see _SoftmaxRewriter)."""
    return _mutator_pass(_SoftmaxRewriter, "SoftmaxFromParts")

