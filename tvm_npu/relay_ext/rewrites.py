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


REFUSALS_ATTR = "tvm_npu_rewrite_refusals"  # module attribute: binding name -> why an operator of
#                                            constraints.REWRITTEN was not rewritten (the CPU keeps it)


def _mutator_pass(rewriter_class, name: str, prune: bool = True) -> tvm.transform.Pass:
    """A module pass running `rewriter_class(mod)` (a PyExprMutator with a `changed` flag) over every
    Relax function; with `prune`, bindings the rewrite left unused are removed. What the rewriter
    refused (its `refused`: binding name -> reason) is added to the module's REFUSALS_ATTR."""

    def run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = rewriter_class(mod)
        for gv, fn in list(mod.functions.items()):
            if isinstance(fn, relax.Function):
                new = rewriter.visit_expr(fn)
                if not new.same_as(fn):
                    rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(new) if prune else new)
        out = rewriter.builder_.get() if rewriter.changed else mod
        refused = getattr(rewriter, "refused", None)
        if refused:
            known = dict(out.attrs[REFUSALS_ATTR]) if out.attrs is not None and REFUSALS_ATTR in out.attrs else {}
            out = out.with_attr(REFUSALS_ATTR, {**{str(k): str(v) for k, v in known.items()}, **refused})
        return out

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



# ---- transposed convolution and resize as operators the NPU runs (relay_ext/resample.py) ----------

_CONV2D_T = tvm.ir.Op.get("relax.nn.conv2d_transpose")
_RESIZE2D = tvm.ir.Op.get("relax.image.resize2d")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_FLOATS = ("float32", "float16")


def conv_transpose_attrs(call: relax.Call) -> dict:
    """relax.nn.conv2d_transpose's attributes as plain Python values (what resample.conv_transpose_plan reads)."""
    a = call.attrs
    pad = [int(v) for v in a.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    return {"strides": tuple(int(v) for v in a.strides), "padding": tuple(pad),
            "output_padding": tuple(int(v) for v in a.output_padding), "dilation": tuple(int(v) for v in a.dilation),
            "groups": int(a.groups), "data_layout": str(a.data_layout), "kernel_layout": str(a.kernel_layout),
            "out_layout": str(a.out_layout)}


def resize_attrs(call: relax.Call) -> dict:
    """relax.image.resize2d's attributes as plain Python values (what resample.resize_plan reads)."""
    a = call.attrs
    return {"layout": str(a.layout), "method": str(a.method),
            "coordinate_transformation_mode": str(a.coordinate_transformation_mode),
            "rounding_method": str(a.rounding_method), "dtype": str(getattr(call.ty, "dtype", ""))}


def _const_or_permuted(expr, lookup):
    """_const_value, also through a permute_dims (how frontends lay out transposed-convolution weights)."""
    import numpy as np

    v = _const_value(expr, lookup)
    if v is not None:
        return v
    bound = lookup(expr) if isinstance(expr, relax.Var) else expr
    if isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op) and bound.op.same_as(_PERMUTE):
        inner = _const_or_permuted(bound.args[0], lookup)
        if inner is not None:
            axes = bound.attrs.axes
            return np.transpose(inner, None if axes is None else [int(i) for i in axes])
    return None


def _vars_of(expr) -> list:
    """The variables an expression uses directly (call arguments, tuple fields, itself)."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _vars_of(f)]
    if isinstance(expr, relax.Call):
        return [v for a in expr.args for v in _vars_of(a)]
    if isinstance(expr, relax.TupleGetItem):
        return _vars_of(expr.tuple_value)
    return []


def _d2s(e, y, layout: str, dims, sh: int, sw: int, c: int):
    """Depth-to-space of y (phase-major channels: (a * sw + b) * c + o) in one 4-D transpose between
    two reshapes (aliases on the NPU). dims: y's (n, rows, cols); e emits a binding."""
    n, rows, cols = dims
    if sh * sw == 1:
        return y
    if layout == "NCHW":  # n == 1: (sh, sw, c * rows, cols) -> (c * rows, sh, cols, sw)
        t = e(relax.op.permute_dims(e(relax.op.reshape(y, (sh, sw, c * rows, cols))), [2, 0, 3, 1]))
        return e(relax.op.reshape(t, (n, c, rows * sh, cols * sw)))
    t = e(relax.op.permute_dims(e(relax.op.reshape(y, (n * rows, cols, sh, sw * c))), [0, 2, 1, 3]))
    return e(relax.op.reshape(t, (n, rows * sh, cols * sw, c)))


class _Emitting:
    """Emits each new binding of a rewrite under a fresh name (`<prefix><n>`): the frontends' own names
    (lv, lv1, ...) are not known to the mutator's builder, and NPU functions need distinct parameter names."""

    PREFIX = "npu_rw"

    def refuse(self, desc, var=None) -> None:
        """Records why the operator of `var` (default: the binding being visited) is not rewritten."""
        from .constraints import rewrite_refusal

        var = var if var is not None else getattr(self, "_var", None)
        reason = rewrite_refusal(desc)
        if var is not None and reason:
            self.refused[var.name] = reason

    def e(self, expr):
        self._count = getattr(self, "_count", 0) + 1
        return self.builder_.emit(self.traced(expr), name_hint=f"{self.PREFIX}{self._count}")

    def from_source(self, call) -> None:
        """The model operator `call` came from names the operators that replace it (tvm_npu.provenance)."""
        from ..provenance import source_name

        self._source = source_name(call)

    def traced(self, expr):
        from ..provenance import tag

        src = getattr(self, "_source", None)
        return tag(expr, src) if src else expr


@mutator
class _ConvTransposeRewriter(PyExprMutator, _Emitting):
    """`conv2d_transpose(x, w)` with constant float weights becomes conv2d (phase kernels as output
    channels) -> depth-to-space -> crop (resample.conv_transpose_plan); the rest is left alone (and stays
    on the CPU with the plan's reason, constraints.transposed_conv_rewrite)."""

    PREFIX = "npu_ct"

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False
        self.refused = {}
        self._nhwc = set()  # NHWC results emitted for an NCHW transposed convolution between transposes
        # the original bindings and how often each variable is used: a bias add is folded into the phase
        # convolution when it is the transposed convolution's only user
        self._orig, self._uses = {}, {}
        for fn in mod.functions.values():
            if isinstance(fn, relax.Function) and isinstance(fn.body, relax.SeqExpr):
                for block in fn.body.blocks:
                    for b in block.bindings:
                        self._orig[b.var] = b.value
                        for a in _vars_of(b.value):
                            self._uses[a] = self._uses.get(a, 0) + 1
                for a in _vars_of(fn.body.body):
                    self._uses[a] = self._uses.get(a, 0) + 1

    def visit_var_binding_(self, binding):
        self._var = binding.var
        super().visit_var_binding_(binding)

    def _desc(self, call, x, w):
        """The OpDesc constraints.REWRITTEN's rules read: kind is the Relax operator."""
        from ..ir.desc import OpDesc, TensorDesc

        def td(e, const=None):
            dims = _static_dims(e.ty)
            return TensorDesc(tuple(dims) if dims is not None else (), str(getattr(e.ty, "dtype", "")), const)

        return OpDesc(call.op.name, call.op.name, [td(x), td(call.args[1], w)], td(call), conv_transpose_attrs(call))

    def _binding(self, var):
        """What `var` is bound to, in the function being built or else in the original one."""
        bound = self.lookup_binding(var)
        return bound if bound is not None else self._orig.get(var)

    def _bias_of(self, call):
        """(transposed convolution, bias per output channel) when `call` is add(conv2d_transpose(...),
        constant) and the add is the convolution's only user, else None."""
        import numpy as np

        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.add" and isinstance(call.args[0], relax.Var)):
            return None
        ct = self._orig.get(call.args[0])
        if not (isinstance(ct, relax.Call) and isinstance(ct.op, tvm.ir.Op) and ct.op.same_as(_CONV2D_T)):
            return None
        out = _static_dims(ct.ty)
        bias = _const_value(call.args[1], self._orig.get)
        if self._uses.get(call.args[0], 0) != 1 or bias is None or out is None or len(out) != 4 or \
                _static_dims(call.ty) != out or str(bias.dtype) != str(ct.ty.dtype):
            return None
        axis = str(ct.attrs.out_layout).find("C")
        try:
            full = np.broadcast_to(bias, out)
        except ValueError:
            return None
        found = per_axis_slope(full, out)
        if found is None or (found[1] != axis and found[0].size != 1):
            return None
        return ct, np.broadcast_to(found[0], (out[axis],)).astype(bias.dtype)

    def _permute_of(self, expr, axes):
        """The input of `expr` when it is permute_dims(input, axes), else None."""
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if not (isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op) and bound.op.same_as(_PERMUTE)):
            return None
        got = bound.attrs.axes
        return bound.args[0] if got is not None and [int(a) for a in got] == list(axes) else None

    def visit_call_(self, call):
        folded = self._bias_of(call)
        if folded is not None:  # conv2d_transpose + bias: the bias goes into the phase convolution
            ct, bias = folded
            self.from_source(ct)
            new = self._rewrite(ct, self.visit_expr(ct.args[0]), bias)
            if new is not None:
                return self.traced(new)
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.same_as(_PERMUTE) and call.attrs.axes is not None:
            # NHWC -> NCHW -> NHWC around a rewritten transposed convolution: the two transposes cancel
            inner = self._permute_of(call.args[0], [0, 3, 1, 2])
            if [int(a) for a in call.attrs.axes] == [0, 2, 3, 1] and inner is not None and inner in self._nhwc:
                return inner
            return call
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_CONV2D_T)):
            return call
        self.from_source(call)
        new = self._rewrite(call, call.args[0])
        return call if new is None else self.traced(new)

    def _rewrite(self, call, x, bias=None):
        """The NPU form of conv2d_transpose `call` on (visited) input x, its bias added in the phase
        convolution; None when it cannot be rewritten."""
        from ..ir.desc import Unsupported
        from .resample import conv_transpose_plan

        xs, out = _static_dims(x.ty), _static_dims(call.ty)
        w = _const_or_permuted(call.args[1], self._binding)
        if xs is None or out is None or str(x.ty.dtype) not in _FLOATS or str(call.ty.dtype) != str(x.ty.dtype):
            if bias is None:
                self.refuse(self._desc(call, x, w))
            return None
        attrs = conv_transpose_attrs(call)
        nhwc = self._permute_of(x, [0, 3, 1, 2]) if attrs["data_layout"] == "NCHW" and bias is None else None
        if nhwc is not None:  # NCHW of an NHWC tensor (tvm_npu/frontend/tflite_ops.py): decompose in NHWC
            try:
                plan = conv_transpose_plan(_static_dims(nhwc.ty), w, dict(attrs, data_layout="NHWC",
                                                                       out_layout="NHWC"))
            except Unsupported:
                nhwc = None
            else:
                y = self._decompose(nhwc, _static_dims(nhwc.ty), [out[0], out[2], out[3], out[1]], plan, "NHWC")
                self._nhwc.add(y)
                self.changed = True
                return relax.op.permute_dims(y, [0, 3, 1, 2])
        try:
            plan = conv_transpose_plan(xs, w, attrs)
        except Unsupported:
            if bias is not None:
                return None
            if attrs["data_layout"] != "NHWC" or attrs["out_layout"] != "NHWC":
                self.refuse(self._desc(call, x, w))
                return None
            # TVM 0.27 has no CPU lowering of an NHWC conv2d_transpose: the CPU gets it in NCHW
            self.changed = True
            t = relax.op.nn.conv2d_transpose(self.e(relax.op.permute_dims(x, [0, 3, 1, 2])), call.args[1],
                                             strides=attrs["strides"], padding=attrs["padding"],
                                             output_padding=attrs["output_padding"], dilation=attrs["dilation"],
                                             groups=attrs["groups"], data_layout="NCHW",
                                             kernel_layout=attrs["kernel_layout"], out_layout="NCHW")
            t = self.e(t)
            self.refuse(self._desc(call, x, w), t)
            return relax.op.permute_dims(t, [0, 2, 3, 1])
        self.changed = True
        return self._decompose(x, xs, out, plan, attrs["data_layout"], bias)

    def _decompose(self, x, xs, out, plan, layout: str, bias=None):
        """The bound result of conv2d over the phases (+ the bias of every phase) -> depth-to-space -> crop."""
        import numpy as np

        h, wd = plan.h, plan.w
        y = self.e(relax.op.nn.conv2d(x, relax.const(plan.weight.astype(str(x.ty.dtype))), strides=(1, 1),
                                      padding=(h.pad_before, wd.pad_before, h.pad_after, wd.pad_after),
                                      data_layout=layout, kernel_layout="OIHW", out_layout=layout))
        if bias is not None:
            b = np.tile(bias, h.stride * wd.stride)  # channel (a * sw + b) * Cout + o has bias[o]
            b = b.reshape((1, -1, 1, 1) if layout == "NCHW" else (-1,))
            y = self.e(relax.op.add(y, relax.const(np.ascontiguousarray(b), str(bias.dtype))))
        z = _d2s(self.e, y, layout, (xs[0], h.rows, wd.rows), h.stride, wd.stride, plan.cout)
        oh, ow = (out[2], out[3]) if layout == "NCHW" else (out[1], out[2])
        if (h.rows * h.stride, wd.rows * wd.stride) != (oh, ow):
            axes = [2, 3] if layout == "NCHW" else [1, 2]
            z = self.e(relax.op.strided_slice(z, axes=axes, begin=[0, 0], end=[oh, ow]))
        return z


def ConvTransposeToConv() -> tvm.transform.Pass:
    """Rewrites transposed convolutions into conv2d + depth-to-space + crop (see _ConvTransposeRewriter)."""
    return _mutator_pass(_ConvTransposeRewriter, "ConvTransposeToConv")


def _repeat(e, x, layout: str, dims, rh: int, rw: int):
    """Nearest upsampling by whole numbers as broadcasts of a unit dim (stride-0 DMA reads) between
    reshapes: (a, 1, b, 1, c) -> (a, rh, b, rw, c), a = rows before H (with H), b = W, c = what follows W;
    unit factors merged away, and two broadcasts when all of rh, rw and c exceed 1 (NHWC)."""
    if layout == "NCHW":
        n, c, h, w = dims
        a, b, cc = n * c * h, w, 1
        final = (n, c, h * rh, w * rw)
    else:
        n, h, w, c = dims
        a, b, cc = n * h, w, c
        final = (n, h * rh, w * rw, c)
    if rh > 1 and rw > 1 and cc > 1:
        x = e(relax.op.broadcast_to(e(relax.op.reshape(x, (a * b, 1, cc))), (a * b, rw, cc)))
        b, rw = b * rw, 1
    if rw == 1:
        y = relax.op.broadcast_to(e(relax.op.reshape(x, (a, 1, b * cc))), (a, rh, b * cc))
    elif rh == 1:
        y = relax.op.broadcast_to(e(relax.op.reshape(x, (a * b, 1, cc))), (a * b, rw, cc))
    else:  # cc == 1
        y = relax.op.broadcast_to(e(relax.op.reshape(x, (a, 1, b, 1))), (a, rh, b, rw))
    return relax.op.reshape(e(y), final)


def _edge_pad(e, x, axis: int, size: int):
    """x with its first and last index along `axis` repeated once on each side (clamped edges)."""
    first = e(relax.op.strided_slice(x, axes=[axis], begin=[0], end=[1]))
    last = e(relax.op.strided_slice(x, axes=[axis], begin=[size - 1], end=[size]))
    return e(relax.op.concat([first, x, last], axis=axis))


@mutator
class _ResizeRewriter(PyExprMutator, _Emitting):
    """`resize2d` becomes operators the NPU runs (resample.resize_plan): nearest neighbour as strided
    slices and/or stride-0 broadcasts, bilinear x2 with half-pixel centres as clamped-edge padding,
    a depthwise convolution over the four phases and depth-to-space. Anything else is left alone."""

    PREFIX = "npu_rs"

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.changed = False
        self.refused = {}

    def visit_var_binding_(self, binding):
        self._var = binding.var
        super().visit_var_binding_(binding)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_RESIZE2D)):
            return call
        from ..ir.desc import Unsupported
        from .resample import bilinear_x2_weight, resize_plan

        from ..ir.desc import OpDesc, TensorDesc

        x = call.args[0]
        xs, out = _static_dims(x.ty), _static_dims(call.ty)
        attrs = resize_attrs(call)
        if xs is None or out is None or len(xs) != 4 or str(x.ty.dtype) != str(call.ty.dtype):
            return call
        try:
            kind, axes = resize_plan(xs, out, attrs)
        except Unsupported:
            self.refuse(OpDesc(call.op.name, call.op.name, [TensorDesc(tuple(xs), str(x.ty.dtype))],
                               TensorDesc(tuple(out), str(call.ty.dtype)), attrs))
            return call
        self.from_source(call)
        layout = attrs["layout"]
        hw = (2, 3) if layout == "NCHW" else (1, 2)
        if kind == "nearest":
            y, dims = x, list(xs)
            sl = [(hw[i], ax) for i, ax in enumerate(axes) if ax.repeat == 1 and (ax.begin, ax.step, ax.size) !=
                  (0, 1, xs[hw[i]])]
            if sl:
                y = relax.op.strided_slice(y, axes=[d for d, _ in sl], begin=[ax.begin for _, ax in sl],
                                           end=[ax.begin + ax.step * (ax.size - 1) + 1 for _, ax in sl],
                                           strides=[ax.step for _, ax in sl])
                y = self.e(y) if axes[0].repeat > 1 or axes[1].repeat > 1 else y
                for d, ax in sl:
                    dims[d] = ax.size
            if axes[0].repeat > 1 or axes[1].repeat > 1:
                y = _repeat(self.e, y, layout, dims, axes[0].repeat, axes[1].repeat)
            if y.same_as(x):
                return call  # an identity resize: nothing to gain
            self.changed = True
            return self.traced(y)
        # bilinear x2, half-pixel centres
        c = xs[1] if layout == "NCHW" else xs[3]
        h, w = xs[hw[0]], xs[hw[1]]
        e = self.e
        p = _edge_pad(e, _edge_pad(e, x, hw[0], h), hw[1], w)
        y = e(relax.op.nn.conv2d(p, relax.const(bilinear_x2_weight(c, str(x.ty.dtype))), groups=c,
                                 data_layout=layout, kernel_layout="OIHW", out_layout=layout))
        h, w, n = h + 1, w + 1, xs[0]  # the phase grid
        if layout == "NCHW":  # (c, 2a, 2b, h, w) -> (c, h, 2a, w, 2b) in two 4-D transposes
            t = e(relax.op.permute_dims(e(relax.op.reshape(y, (2 * c, 2, h, w))), [0, 2, 3, 1]))  # (c, a, h, w, b)
            z = e(relax.op.permute_dims(e(relax.op.reshape(t, (c, 2, h, 2 * w))), [0, 2, 1, 3]))  # (c, h, a, w, b)
            z = e(relax.op.reshape(z, (n, c, 2 * h, 2 * w)))
        else:  # (n h w, c, 2a 2b) -> (n h w, 2a 2b, c) -> (n h, 2a, w, 2b c)
            t = e(relax.op.permute_dims(e(relax.op.reshape(y, (n * h * w, c, 4))), [0, 2, 1]))
            z = e(relax.op.permute_dims(e(relax.op.reshape(t, (n * h, w, 2, 2 * c))), [0, 2, 1, 3]))
            z = e(relax.op.reshape(z, (n, 2 * h, 2 * w, c)))
        self.changed = True  # out[y] = z[y + 1]
        return self.traced(relax.op.strided_slice(z, axes=list(hw), begin=[1, 1], end=[2 * h - 1, 2 * w - 1]))


def ResizeToLayout() -> tvm.transform.Pass:
    """Rewrites supported resizes into slices, broadcasts, convolutions and transposes (_ResizeRewriter)."""
    return _mutator_pass(_ResizeRewriter, "ResizeToLayout")
