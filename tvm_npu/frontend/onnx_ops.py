"""ONNX operator converters for TVM 0.27's Relax ONNX frontend, registered from outside TVM.

TVM's frontend (`tvm.relax.frontend.onnx.onnx_frontend`) looks every node up in the table that its
module-level function `_get_convert_map()` returns, at each import (`_check_for_unsupported_ops`
and `_convert_operator` both call it), and picks the converter class's `_impl_v<N>` with the
largest N <= the model's opset. `install()` wraps that function once so that it returns TVM's table
updated with `CONVERTERS` below: an operator TVM lacks is added, one it gets wrong is replaced. Each
class here is a small `OnnxOpConverter` in TVM's style and cites the ONNX operator specification
(https://onnx.ai/onnx/operators/) it implements. Where TVM's own converter is right for a case
(for instance a dynamic shape it keeps symbolic), ours hands that case to it.

Two generic pieces go with the table:
* every converter (ours and TVM's, but the quantisation ones) is wrapped so that a node whose
  inputs are all constants becomes the constant TVM computes for it (`fold`): shape arithmetic
  then reaches Reshape/Expand/axes inputs as constants, as after onnxslim;
* ONNX operators that the specification defines by a function body and that TVM lacks
  (`EXPANDED`, and the standard Attention) are converted through that body (`expand_function`).

Converters refuse attribute values they do not implement with `tvm.error.OpAttributeUnImplemented`
naming the node; they never guess.
"""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as _fe
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

_INSTALLED = "_tvm_npu_onnx_ops"


# ---- helpers ------------------------------------------------------------------------------------

def _node(attr) -> str:
    return str(attr.get("tvm_custom", {}).get("name", "") or "(unnamed)")


def _unimplemented(op: str, attr, what: str) -> tvm.error.OpAttributeUnImplemented:
    return tvm.error.OpAttributeUnImplemented(f"{op} node {_node(attr)!r}: {what} is not supported")


def _tensor_type(expr) -> relax.TensorType | None:
    ty = getattr(expr, "ty", None)
    return ty if isinstance(ty, relax.TensorType) else None


def _rank(expr, op: str, attr) -> int:
    ty = _tensor_type(expr)
    if ty is None or ty.ndim < 0:
        raise _unimplemented(op, attr, "an input of unknown rank")
    return int(ty.ndim)


def _static_shape(expr) -> list[int] | None:
    """The input's shape when every dimension is a known integer, else None."""
    ty = _tensor_type(expr)
    if ty is None or ty.shape is None or not hasattr(ty.shape, "values"):
        return None
    dims = []
    for d in ty.shape.values:
        if not isinstance(d, tvm.tirx.IntImm):
            return None
        dims.append(int(d))
    return dims


def _dtype(expr) -> str:
    return str(_tensor_type(expr).dtype)


def _static_shape_value(expr) -> list[int] | None:
    """The values of a ShapeExpr whose dimensions are all known integers, else None."""
    if not isinstance(expr, relax.ShapeExpr) or not all(isinstance(v, tvm.tirx.IntImm) for v in expr.values):
        return None
    return [int(v) for v in expr.values]


def _constant(expr, params) -> np.ndarray | None:
    """The value of a constant input (an initializer or a folded constant), else None."""
    if expr is None:
        return None
    value = _fe.get_constant(expr, params)
    if isinstance(value, tvm.ir.GenericConst):
        return value.value.numpy()
    return None


def _axis(axis: int, rank: int, op: str, attr) -> int:
    if not -rank <= axis < rank:
        raise tvm.error.OpAttributeInvalid(f"{op} node {_node(attr)!r}: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _float_dtype(elem_type: int, op: str, attr) -> str:
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    if dtype.kind != "f":
        raise _unimplemented(op, attr, f"stash_type {elem_type} (not a float type)")
    return str(dtype)


def _cast(x, dtype: str, from_dtype: str):
    return x if from_dtype == dtype else relax.op.astype(x, dtype)


def _symbolic(bb, expr, prefix: str):
    """A tensor whose type knows only its rank (dynamic_strided_slice's result) bound to fresh
    symbolic dimensions, so that the operators after it can be lowered."""
    expr = bb.emit(expr)
    ty = _tensor_type(expr)
    if ty is None or ty.ndim < 0 or (ty.shape is not None and hasattr(ty.shape, "values")):
        return expr
    dims = [tvm.tirx.Var(f"{prefix}_{i}", "int64") for i in range(int(ty.ndim))]
    return bb.match_cast(expr, relax.TensorType(dims, str(ty.dtype)))


def _symbolic_shape(bb, tensor, n: int, prefix: str) -> relax.ShapeExpr:
    """A 1-D int tensor of static length n as a ShapeExpr of new symbolic dimensions (bound at run
    time by match_cast), the form broadcast_to/arange need for data-dependent sizes."""
    return _fe._tensor_to_shape_expr(bb, bb.normalize(relax.op.astype(tensor, "int64")), n, prefix)


# ---- shapes and constants -----------------------------------------------------------------------

class Shape(OnnxOpConverter):
    """ONNX Shape-1/13/15/19/21/23/24: the input's shape as a 1-D int64 tensor; from opset 15 the
    slice [start, end) of it (negative values count from the end; both are clamped to [0, rank]).

    TVM returns a `ShapeExpr`, which only a dozen of its converters accept ("Node cannot handle
    ShapeExpr inputs" otherwise, e.g. for the Sub/Size/Cast of the shape arithmetic in expanded
    function bodies). When the input's shape is fully static, the value is a constant int64 tensor,
    which every converter accepts and which the frontend folds through further shape arithmetic.
    Dynamic shapes stay with TVM's converter (symbolic)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        shape = _static_shape(inputs[0])
        if shape is None:
            return _fe.Shape._impl_v13(bb, inputs, attr, params)
        return relax.const(np.array(shape, dtype=np.int64), "int64")

    @classmethod
    def _impl_v15(cls, bb, inputs, attr, params):
        shape = _static_shape(inputs[0])
        if shape is None:
            return _fe.Shape._impl_v15(bb, inputs, attr, params)
        rank = len(shape)

        def clamp(i: int) -> int:
            return min(max(i + rank if i < 0 else i, 0), rank)

        start, end = clamp(int(attr.get("start", 0))), clamp(int(attr.get("end", rank)))
        return relax.const(np.array(shape[start:end], dtype=np.int64).reshape(-1), "int64")


class Constant(OnnxOpConverter):
    """ONNX Constant-1/9/11/12/13/19/21/23/24: exactly one of `value` (a tensor), `value_float`
    (float32 scalar), `value_floats` (1-D float32), `value_int` (int64 scalar), `value_ints`
    (1-D int64). TVM's converter reads only `value`. `value_string(s)` (strings) and
    `sparse_value` are refused."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if "value" in attr:
            return _fe.Constant._impl_v13(bb, inputs, attr, params)
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                           ("value_ints", np.int64)):
            if key in attr:
                value = attr[key]
                array = np.array(list(value) if isinstance(value, (list, tuple)) else value, dtype=dtype)
                if key.endswith("s"):
                    array = array.reshape(-1)
                return relax.const(array, str(array.dtype))
        for key in ("value_string", "value_strings", "sparse_value"):
            if key in attr:
                raise _unimplemented("Constant", attr, f"attribute {key!r}")
        raise tvm.error.OpAttributeRequired(f"Constant node {_node(attr)!r} has no value attribute")


# ---- normalisations -----------------------------------------------------------------------------

class LayerNormalization(OnnxOpConverter):
    """ONNX LayerNormalization-17, with its three outputs: over the axes [axis, rank),
    Mean = ReduceMean(X) and InvStdDev = 1 / sqrt(ReduceMean((X - Mean)^2) + epsilon), both computed
    in `stash_type` (float32 by default) and of rank r with the reduced axes kept;
    Y = Cast((X - Mean) * InvStdDev, T) * Scale + B (B optional).

    TVM returns 0-d zero placeholders for Mean and InvStdDev and ignores stash_type. A node whose
    only output is Y on float32 data stays with TVM's `nn.layer_norm`."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        x, scale, bias = inputs[0], inputs[1], inputs[2]
        rank = _rank(x, "LayerNormalization", attr)
        axis = _axis(int(attr.get("axis", -1)), rank, "LayerNormalization", attr)
        eps = float(attr.get("epsilon", 1e-5))
        stash = _float_dtype(int(attr.get("stash_type", 1)), "LayerNormalization", attr)
        dtype = _dtype(x)
        if attr["tvm_custom"]["num_outputs"] == 1 and dtype == "float32" == stash:
            return _fe.LayerNormalization._impl_v17(bb, inputs, attr, params)[0]
        axes = list(range(axis, rank))
        xu = bb.emit(_cast(x, stash, _dtype(x)))
        mean = bb.emit(relax.op.mean(xu, axes, keepdims=True))
        d = bb.emit(relax.op.subtract(xu, mean))
        var = relax.op.mean(relax.op.multiply(d, d), axes, keepdims=True)
        inv = bb.emit(relax.op.divide(relax.const(1.0, stash),
                                      relax.op.sqrt(relax.op.add(var, relax.const(eps, stash)))))
        y = relax.op.multiply(_cast(relax.op.multiply(d, inv), dtype, stash), scale)
        if bias is not None:
            y = relax.op.add(y, bias)
        return relax.Tuple([bb.emit(y), mean, inv])


class RMSNormalization(OnnxOpConverter):
    """ONNX RMSNormalization-23: over the axes [axis, rank), in `stash_type` (float32 by default),
    Y = Cast(X / sqrt(ReduceMean(X^2) + epsilon), T) * Scale, Scale broadcast to X.

    TVM's `nn.rms_norm` fails to compile when Scale's rank differs from the number of normalised
    axes (axis 0 with a full-shape Scale), and it scales before casting back."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        rank = _rank(x, "RMSNormalization", attr)
        axis = _axis(int(attr.get("axis", -1)), rank, "RMSNormalization", attr)
        eps = float(attr.get("epsilon", 1e-5))
        stash = _float_dtype(int(attr.get("stash_type", 1)), "RMSNormalization", attr)
        axes = list(range(axis, rank))
        xu = bb.emit(_cast(x, stash, _dtype(x)))
        ms = relax.op.mean(relax.op.multiply(xu, xu), axes, keepdims=True)
        rms = relax.op.sqrt(relax.op.add(ms, relax.const(eps, stash)))
        norm = relax.op.multiply(xu, relax.op.divide(relax.const(1.0, stash), rms))
        return relax.op.multiply(_cast(norm, _dtype(x), stash), scale)


class LpNormalization(OnnxOpConverter):
    """ONNX LpNormalization-1/22: Y = X / ||X||_p along `axis` (default -1), p in {1, 2}
    (default 2); 0 where the norm is 0 (the reference's 0/0 = 0)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        axis = _axis(int(attr.get("axis", -1)), _rank(x, "LpNormalization", attr), "LpNormalization", attr)
        p = int(attr.get("p", 2))
        if p == 1:
            norm = relax.op.sum(relax.op.abs(x), [axis], keepdims=True)
        elif p == 2:
            norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), [axis], keepdims=True))
        else:
            raise _unimplemented("LpNormalization", attr, f"p={p} (only 1 and 2 are defined)")
        norm = bb.emit(norm)
        zero = relax.const(0, _dtype(x))
        return relax.op.where(relax.op.equal(norm, zero), zero, relax.op.divide(x, norm))


# ---- elementwise activations --------------------------------------------------------------------

class Celu(OnnxOpConverter):
    """ONNX Celu-12: Y = max(0, X) + min(0, alpha * (exp(X / alpha) - 1)), alpha default 1.0."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = _dtype(x)
        alpha = float(attr.get("alpha", 1.0))
        if alpha == 0:
            raise tvm.error.OpAttributeInvalid(f"Celu node {_node(attr)!r}: alpha must not be 0")
        a = relax.const(alpha, dtype)
        zero = relax.const(0.0, dtype)
        neg = relax.op.multiply(a, relax.op.subtract(relax.op.exp(relax.op.divide(x, a)), relax.const(1.0, dtype)))
        return relax.op.add(relax.op.maximum(x, zero), relax.op.minimum(neg, zero))


class Swish(OnnxOpConverter):
    """ONNX Swish-24: Y = X * Sigmoid(alpha * X), alpha default 1.0."""

    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        scaled = x if alpha == 1.0 else relax.op.multiply(x, relax.const(alpha, _dtype(x)))
        return relax.op.multiply(x, relax.op.sigmoid(scaled))


# ---- cumulative operators -----------------------------------------------------------------------

class _Cumulative(OnnxOpConverter):
    """Shared by CumSum and CumProd: `exclusive` leaves out the element itself (the first result is
    the identity), `reverse` accumulates from the end. The axis input may be a runtime 0-D or 1-element
    tensor: the result does not depend on it for its shape, so every axis is computed and the one
    asked for is selected (TVM accepts only a constant axis)."""

    op_name = ""
    relax_op = None

    @classmethod
    def _along(cls, bb, x, axis: int, exclusive: bool, reverse: bool):
        y = relax.op.flip(x, axis) if reverse else x
        y = cls.relax_op(y, axis, dtype=_dtype(x), exclusive=exclusive)
        return bb.emit(relax.op.flip(y, axis) if reverse else y)

    @classmethod
    def _convert(cls, bb, inputs, attr, params):
        x, axis_in = inputs[0], inputs[1]
        rank = _rank(x, cls.op_name, attr)
        exclusive = bool(attr.get("exclusive", 0))
        reverse = bool(attr.get("reverse", 0))
        axis = _constant(axis_in, params)
        if axis is not None:
            if axis.size != 1:
                raise tvm.error.OpAttributeInvalid(f"{cls.op_name} node {_node(attr)!r}: axis must be one value")
            return cls._along(bb, x, _axis(int(axis.reshape(-1)[0]), rank, cls.op_name, attr), exclusive, reverse)
        if _tensor_type(axis_in) is None or _static_shape(axis_in) not in ([], [1]):
            raise _unimplemented(cls.op_name, attr, "an axis input that is not a 0-D or 1-element tensor")
        a = relax.op.reshape(axis_in, [])
        a = bb.emit(relax.op.where(relax.op.less(a, relax.const(0, _dtype(axis_in))),
                                   relax.op.add(a, relax.const(rank, _dtype(axis_in))), a))
        out = cls._along(bb, x, rank - 1, exclusive, reverse)
        for i in range(rank - 1):
            hit = relax.op.equal(a, relax.const(i, _dtype(axis_in)))
            out = bb.emit(relax.op.where(hit, cls._along(bb, x, i, exclusive, reverse), out))
        return out


class CumSum(_Cumulative):
    """ONNX CumSum-11/14: cumulative sum of x along the axis input (see _Cumulative)."""

    op_name = "CumSum"
    relax_op = staticmethod(relax.op.cumsum)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params)


class CumProd(_Cumulative):
    """ONNX CumProd-26: cumulative product of x along the axis input (see _Cumulative)."""

    op_name = "CumProd"
    relax_op = staticmethod(relax.op.cumprod)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params)


# ---- losses -------------------------------------------------------------------------------------

def _nll(bb, op: str, attr, logp, target, weight):
    """The negative log-likelihood loss of ONNX NegativeLogLikelihoodLoss (and of
    SoftmaxCrossEntropyLoss on its log-probabilities): with t = target[n, d1..dk] (N, d1..dk),
    loss[n, d] = -logp[n, t, d] * w[t], w = weight (all ones by default), and loss 0 / w 0 where
    t == ignore_index. reduction "none" keeps loss, "sum" sums it, "mean" divides the sum by the sum
    of the w used."""
    reduction = attr.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
    if reduction not in ("none", "sum", "mean"):
        raise _unimplemented(op, attr, f"reduction {reduction!r}")
    dtype = _dtype(logp)
    tdt = _dtype(target)
    ignore = attr.get("ignore_index")
    t = target
    mask = None
    if ignore is not None:
        mask = bb.emit(relax.op.not_equal(target, relax.const(int(ignore), tdt)))
        t = bb.emit(relax.op.where(mask, target, relax.const(0, tdt)))
    picked = relax.op.gather_elements(logp, relax.op.expand_dims(t, 1), axis=1)
    loss = relax.op.negative(relax.op.squeeze(picked, [1]))
    w = None
    if weight is not None:
        w = relax.op.take(weight, t, axis=0)
    if mask is not None:
        w = relax.op.where(mask, w if w is not None else relax.const(1.0, dtype), relax.const(0.0, dtype))
    if w is not None:
        w = bb.emit(w)
        loss = relax.op.multiply(loss, w)
    loss = bb.emit(loss)
    if reduction == "none":
        return loss
    total = relax.op.sum(loss)
    if reduction == "sum":
        return total
    if w is None:
        return relax.op.mean(loss)
    return relax.op.divide(total, relax.op.sum(w))


class NegativeLogLikelihoodLoss(OnnxOpConverter):
    """ONNX NegativeLogLikelihoodLoss-12/13/22: input (N, C, d1..dk) of log-probabilities, target
    (N, d1..dk) class indices, optional weight (C); `reduction` none/sum/mean (default mean),
    optional `ignore_index` (see _nll)."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        return _nll(bb, "NegativeLogLikelihoodLoss", attr, inputs[0], inputs[1], inputs[2])


class SoftmaxCrossEntropyLoss(OnnxOpConverter):
    """ONNX SoftmaxCrossEntropyLoss-12/13: log_prob = LogSoftmax(scores, axis=1) for scores
    (N, C, d1..dk); the loss is the negative log-likelihood of log_prob at labels (see _nll), with
    optional weights, `reduction` and `ignore_index`. Outputs: the loss and, optionally, log_prob."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        log_prob = bb.emit(relax.op.nn.log_softmax(inputs[0], axis=1))
        loss = _nll(bb, "SoftmaxCrossEntropyLoss", attr, log_prob, inputs[1], inputs[2])
        if attr["tvm_custom"]["num_outputs"] > 1:
            return relax.Tuple([bb.emit(loss), log_prob])
        return loss



# ---- reductions over axes given at run time -----------------------------------------------------

def _masked_reduce(bb, y, mask, dims: list[int], kernel):
    """y (static shape `dims`) with every axis i where mask[i] reduced by `kernel` and the result
    broadcast back over that axis: the reductions of one axis after another, selected by the mask."""
    for i in range(len(dims)):
        hit = relax.op.take(mask, relax.const(i, "int64"), axis=0)
        red = relax.op.broadcast_to(kernel(y, [i], keepdims=True), dims)
        y = bb.emit(relax.op.where(hit, red, y))
    return y


class _RuntimeAxesReduce(OnnxOpConverter):
    """ONNX Reduce*-18 (ReduceSum-13) whose `axes` input is not a constant: reduce over the axes the
    tensor holds at run time (negative ones count from the end), keeping them as 1s with
    keepdims=1 (the default) or removing them with keepdims=0; an empty axes tensor means every axis
    (or none with noop_with_empty_axes=1). The result shape depends on the data, so it is symbolic.
    TVM accepts constant axes only ("Only constant axes currently supported"); constant or absent
    axes stay with TVM's converter. Needs a static input shape and a static length of axes.

    The reduction is `post(kernel(pre(X)))` with kernel sum/max/min/prod; ReduceLogSumExp subtracts
    the (finite) maximum first, as TVM does."""

    base: type = OnnxOpConverter
    op_name = ""
    kernel = None
    pre = None
    post = None
    mean = False

    @classmethod
    def _reduce(cls, bb, x, mask, dims):
        kernel = getattr(relax.op, cls.kernel)
        if cls.op_name == "ReduceLogSumExp":
            m = _masked_reduce(bb, x, mask, dims, relax.op.max)
            m = bb.emit(relax.op.where(relax.op.isfinite(m), m, relax.op.zeros_like(m)))
            s = _masked_reduce(bb, relax.op.exp(relax.op.subtract(x, m)), mask, dims, relax.op.sum)
            return relax.op.add(relax.op.log(s), m)
        if _dtype(x) == "bool":  # (TVM has no max/min of bool) as int8 and back, exact for 0/1
            y = _masked_reduce(bb, relax.op.astype(x, "int8"), mask, dims, kernel)
            return relax.op.astype(y, "bool")
        y = x if cls.pre is None else cls.pre(x)
        y = _masked_reduce(bb, y, mask, dims, kernel)
        if cls.mean:
            counts = relax.op.where(mask, relax.const(np.array(dims, np.int64), "int64"), relax.const(1, "int64"))
            y = relax.op.divide(y, relax.op.astype(relax.op.prod(counts), _dtype(x)))
        return y if cls.post is None else cls.post(y)

    @classmethod
    def _convert(cls, bb, inputs, attr, params, opset):
        x, axes = inputs[0], inputs[1]
        impl = cls.base.get_converter(opset)
        if axes is None or _constant(axes, params) is not None:
            return impl(bb, inputs, attr, params)
        axes_ty = _tensor_type(axes)
        if axes_ty is None or axes_ty.ndim != 1:
            raise _unimplemented(cls.op_name, attr, "a runtime axes input that is not 1-D")
        axes_shape = _static_shape(axes)
        k = axes_shape[0] if axes_shape is not None else None  # None: a length known at run time only
        if k == 0:
            return impl(bb, [x, None], attr, params)
        dims = _static_shape(x)
        if dims is None:
            raise _unimplemented(cls.op_name, attr, "runtime axes on an input of dynamic shape")
        rank = len(dims)
        keepdims = bool(attr.get("keepdims", 1))
        if k is not None and k > rank:
            raise tvm.error.OpAttributeInvalid(f"{cls.op_name} node {_node(attr)!r}: {k} axes for rank {rank}")
        if k is None and not keepdims:
            raise _unimplemented(cls.op_name, attr, "keepdims=0 with runtime axes of unknown length (the rank "
                                 "of the result would depend on it)")
        a = relax.op.astype(axes, "int64")
        a = relax.op.where(relax.op.less(a, relax.const(0, "int64")), relax.op.add(a, relax.const(rank, "int64")), a)
        hits = relax.op.equal(relax.op.expand_dims(a, 1), relax.const(np.arange(rank, dtype=np.int64), "int64"))
        mask = bb.emit(relax.op.greater(relax.op.sum(relax.op.astype(hits, "int32"), [0]), relax.const(0, "int32")))
        if k is None:  # empty axes: every axis, or none with noop_with_empty_axes
            # (from the shape: a reduction over the empty axes tensor is not reliably 0 in TVM 0.27)
            length = relax.op.take(relax.op.shape_to_tensor(relax.op.shape_of(axes)), relax.const(0, "int64"), axis=0)
            empty = relax.op.equal(length, relax.const(0, "int64"))
            every = relax.const(np.full(rank, not attr.get("noop_with_empty_axes", 0), bool), "bool")
            mask = bb.emit(relax.op.where(empty, every, mask))
        full = bb.emit(cls._reduce(bb, x, mask, dims))
        dims_t = relax.const(np.array(dims, np.int64), "int64")
        end = relax.op.where(mask, relax.const(1, "int64"), dims_t)
        zeros = relax.const(np.zeros(rank, np.int64), "int64")
        ones = relax.const(np.ones(rank, np.int64), "int64")
        out = _symbolic(bb, relax.op.dynamic_strided_slice(full, zeros, end, ones), "reduced_dim")
        if keepdims:
            return out
        # the kept dimensions in order: sort the axes by (reduced, index) and take the first rank - k
        key = relax.op.add(relax.op.multiply(relax.op.astype(mask, "int64"), relax.const(rank, "int64")),
                           relax.const(np.arange(rank, dtype=np.int64), "int64"))
        order = relax.op.strided_slice(relax.op.argsort(key, dtype="int64"), [0], [0], [rank - k])
        kept = bb.emit(relax.op.take(dims_t, order, axis=0))
        return relax.op.reshape(out, _symbolic_shape(bb, kept, rank - k, "kept_dim"))


def _runtime_axes_reduce(name: str, since: int, kernel: str, pre=None, post=None, mean: bool = False) -> type:
    def impl(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params, since)

    def older(cls, bb, inputs, attr, params):  # axes is an attribute before `since`: TVM's converter
        return getattr(_fe, name).get_converter(since - 1)(bb, inputs, attr, params)

    body = {"base": getattr(_fe, name), "op_name": name, "kernel": kernel, "pre": staticmethod(pre) if pre else None,
            "post": staticmethod(post) if post else None, "mean": mean, f"_impl_v{since}": classmethod(impl),
            "_impl_v1": classmethod(older),
            "__doc__": f"ONNX {name}-{since} with runtime axes (see _RuntimeAxesReduce)."}
    return type(name, (_RuntimeAxesReduce,), body)


def _square(x):
    return relax.op.multiply(x, x)


REDUCE_CONVERTERS = {
    "ReduceSum": _runtime_axes_reduce("ReduceSum", 13, "sum"),
    "ReduceMean": _runtime_axes_reduce("ReduceMean", 18, "sum", mean=True),
    "ReduceMax": _runtime_axes_reduce("ReduceMax", 18, "max"),
    "ReduceMin": _runtime_axes_reduce("ReduceMin", 18, "min"),
    "ReduceProd": _runtime_axes_reduce("ReduceProd", 18, "prod"),
    "ReduceSumSquare": _runtime_axes_reduce("ReduceSumSquare", 18, "sum", pre=_square),
    "ReduceL1": _runtime_axes_reduce("ReduceL1", 18, "sum", pre=relax.op.abs),
    "ReduceL2": _runtime_axes_reduce("ReduceL2", 18, "sum", pre=_square, post=relax.op.sqrt),
    "ReduceLogSum": _runtime_axes_reduce("ReduceLogSum", 18, "sum", post=relax.op.log),
    "ReduceLogSumExp": _runtime_axes_reduce("ReduceLogSumExp", 18, "sum"),
}


# ---- smaller gaps -------------------------------------------------------------------------------

class Reshape(OnnxOpConverter):
    """ONNX Reshape-5/13/14/19/21 with a shape input that is not a constant: the target shape is
    computed at run time (0 copies the input's dimension unless allowzero=1, one -1 is inferred from
    the element count) and the result has a symbolic shape of the shape input's static length.
    TVM refuses a runtime shape ("Reshape requires the input new shape to be Shape"); a constant (or
    ShapeExpr) shape stays with TVM's converter."""

    @classmethod
    def _impl_v5(cls, bb, inputs, attr, params):
        x, shape = inputs[0], inputs[1]
        if not isinstance(shape, relax.Expr) or _constant(shape, params) is not None \
                or not isinstance(getattr(shape, "ty", None), relax.TensorType) or _static_shape(x) is None:
            return _fe.Reshape._impl_v13(bb, inputs, attr, params)
        dims = _static_shape(x)
        k = _static_shape(shape)
        if k is None or len(k) != 1:
            raise _unimplemented("Reshape", attr, "a runtime shape input of unknown length")
        k = k[0]
        s = relax.op.astype(shape, "int64")
        if not int(attr.get("allowzero", 0)):
            padded = np.array((dims + [0] * k)[:k], np.int64)  # a 0 beyond the input's rank is invalid
            s = relax.op.where(relax.op.equal(s, relax.const(0, "int64")), relax.const(padded, "int64"), s)
        s = bb.emit(s)
        minus = relax.op.equal(s, relax.const(-1, "int64"))
        known = relax.op.prod(relax.op.where(minus, relax.const(1, "int64"), s))
        total = relax.const(int(np.prod(dims, dtype=np.int64)), "int64")
        inferred = relax.op.floor_divide(total, relax.op.maximum(known, relax.const(1, "int64")))
        s = bb.emit(relax.op.where(minus, inferred, s))
        return relax.op.reshape(x, _symbolic_shape(bb, s, k, "reshape_dim"))


class Pow(OnnxOpConverter):
    """ONNX Pow-7/12/13/15: Z = X ^ Y with the type of X; Y may have another numeric type
    (float X with integer Y, integer X with float or integer Y). TVM requires one dtype and a float
    X ("Binary operators must have the same datatype", "power only applies to float"): an integer
    X is raised in float64 and the result cast back (truncated, as the reference's cast)."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        x, y = inputs[0], inputs[1]
        tx, ty_ = _tensor_type(x), _tensor_type(y)
        if tx is None or ty_ is None:
            return _fe.Pow._impl_v7(bb, inputs, attr, params)
        dx, dy = str(tx.dtype), str(ty_.dtype)
        if np.dtype(dx).kind == "f":
            if dx == dy:
                return _fe.Pow._impl_v7(bb, inputs, attr, params)
            return relax.op.power(x, relax.op.astype(y, dx))
        z = relax.op.power(relax.op.astype(x, "float64"), relax.op.astype(y, "float64"))
        return relax.op.astype(relax.op.round(z) if np.dtype(dy).kind != "f" else z, dx)


class IsInf(OnnxOpConverter):
    """ONNX IsInf-10/20: true where X is +inf (if detect_positive, default 1) or -inf (if
    detect_negative, default 1). TVM ignores both attributes."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x = inputs[0]
        pos, neg = int(attr.get("detect_positive", 1)), int(attr.get("detect_negative", 1))
        if pos and neg:
            return relax.op.isinf(x)
        dtype = _dtype(x)
        hits = [relax.op.equal(x, relax.const(v, dtype)) for v, on in ((np.inf, pos), (-np.inf, neg)) if on]
        return hits[0] if hits else relax.op.zeros(_static_shape(x) or relax.op.shape_of(x), "bool")


class EyeLike(OnnxOpConverter):
    """ONNX EyeLike-9/22: a 2-D tensor of the input's shape with ones on the k-th diagonal, of type
    `dtype` (default: the input's). TVM refuses a dtype different from the input's."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        dtype = _fe.get_type(attr["dtype"]) if "dtype" in attr else _dtype(inputs[0])
        eye = relax.op.eye_like(inputs[0], int(attr.get("k", 0)), _dtype(inputs[0]))
        # (TVM's legalisation of eye_like ignores its dtype: build in the input's, then cast 0/1)
        return eye if dtype == _dtype(inputs[0]) else relax.op.astype(eye, dtype)


class Dropout(OnnxOpConverter):
    """ONNX Dropout-1/6/7/10/12/13/22 in inference: Y = X and the optional mask (bool from opset
    10) all true. In training mode (training_mode input true, opset 12+) with a ratio > 0 the output
    is random: refused. TVM's mask has X's float type."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        if len(inputs) > 2 and inputs[2] is not None:
            training = _constant(inputs[2], params)
            ratio = _constant(inputs[1], params) if len(inputs) > 1 and inputs[1] is not None else np.array(0.5)
            if training is None or ratio is None:
                raise _unimplemented("Dropout", attr, "a training_mode or ratio input that is not a constant")
            if bool(training) and float(ratio) > 0:
                raise _unimplemented("Dropout", attr, "training mode with ratio > 0 (random output)")
        if attr["tvm_custom"]["num_outputs"] == 1:
            return x
        shape = _static_shape(x)
        mask = relax.op.ones(shape if shape is not None else relax.op.shape_of(x), "bool")
        return relax.Tuple([x, mask])


class ReverseSequence(OnnxOpConverter):
    """ONNX ReverseSequence-10: for each batch b along batch_axis (default 1), the first
    sequence_lens[b] elements along time_axis (default 0) are reversed, the rest copied. Built as a
    gather along the time axis with index where(t < len[b], len[b] - 1 - t, t)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, lens = inputs[0], inputs[1]
        dims = _static_shape(x)
        if dims is None:
            raise _unimplemented("ReverseSequence", attr, "an input of dynamic shape")
        rank = len(dims)
        b = _axis(int(attr.get("batch_axis", 1)), rank, "ReverseSequence", attr)
        t = _axis(int(attr.get("time_axis", 0)), rank, "ReverseSequence", attr)
        if {b, t} != {0, 1}:
            raise tvm.error.OpAttributeInvalid(f"ReverseSequence node {_node(attr)!r}: batch_axis and time_axis "
                                               "must be 0 and 1")
        tshape = [1] * rank
        tshape[t] = dims[t]
        steps = relax.const(np.arange(dims[t], dtype=np.int64).reshape(tshape), "int64")
        lshape = [1] * rank
        lshape[b] = dims[b]
        n = relax.op.reshape(relax.op.astype(lens, "int64"), lshape)
        idx = relax.op.where(relax.op.less(steps, n), relax.op.subtract(relax.op.subtract(n, relax.const(1, "int64")),
                                                                         steps), steps)
        idx = bb.emit(relax.op.broadcast_to(idx, dims))
        return relax.op.gather_elements(x, idx, axis=t)


class ConstantOfShape(OnnxOpConverter):
    """ONNX ConstantOfShape-9/20/21/23/24 whose shape input is a runtime tensor: a tensor of that
    (symbolic) shape filled with `value` (default float32 0). TVM broadcasts to a `tensor_to_shape`
    the VM cannot lower ("CodeGenVM cannot emit this Relax operator"); here the shape is bound to
    symbolic dimensions first. Constant shapes stay with TVM's converter."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        shape = inputs[0]
        n = _static_shape(shape) if isinstance(getattr(shape, "ty", None), relax.TensorType) else None
        if _constant(shape, params) is not None or n is None or len(n) != 1:
            return _fe.ConstantOfShape._impl_v9(bb, inputs, attr, params)
        value = attr.get("value")
        array = _fe.get_numpy(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
        fill = relax.const(array[0], str(array.dtype))
        return relax.op.broadcast_to(fill, _symbolic_shape(bb, shape, n[0], "fill_dim"))


class OneHot(OnnxOpConverter):
    """ONNX OneHot-9/11 with a runtime depth or values: out[..., j, ...] = on if j == index (a
    negative index counts from depth) else off, j in [0, depth) inserted at `axis` (default -1);
    depth is cast to int64, values = [off, on]. The depth axis is symbolic. TVM needs both constant."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        indices, depth, values = inputs[0], inputs[1], inputs[2]
        if _constant(depth, params) is not None and _constant(values, params) is not None:
            return _fe.OneHot._impl_v11(bb, inputs, attr, params)
        rank = _rank(indices, "OneHot", attr) + 1
        axis = _axis(int(attr.get("axis", -1)), rank, "OneHot", attr)
        d = bb.emit(relax.op.astype(relax.op.reshape(depth, [1]), "int64"))
        (n,) = _symbolic_shape(bb, d, 1, "depth").values
        shape = [1] * rank
        shape[axis] = n
        steps = relax.op.reshape(relax.op.arange(0, n, 1, "int64"), shape)
        idx = relax.op.astype(indices, "int64")
        d0 = relax.op.reshape(d, [])
        idx = relax.op.where(relax.op.less(idx, relax.const(0, "int64")), relax.op.add(idx, d0), idx)
        hit = relax.op.equal(relax.op.expand_dims(idx, [axis]), steps)
        off = relax.op.take(values, relax.const(0, "int64"), axis=0)
        on = relax.op.take(values, relax.const(1, "int64"), axis=0)
        return relax.op.where(hit, on, off)


class Split(OnnxOpConverter):
    """ONNX Split-13/18 with a runtime `split` input: output i is the slice [sum(split[:i]),
    sum(split[:i+1])) along `axis` (default 0), of symbolic length. TVM refuses it ("Dynamic Split not
    yet supported"); constant or absent splits stay with TVM's converter."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        x, split = inputs[0], inputs[1] if len(inputs) > 1 else None
        if split is None or _constant(split, params) is not None or _static_shape(x) is None:
            return _fe.Split._impl_v13(bb, inputs, attr, params)
        dims = _static_shape(x)
        rank = len(dims)
        axis = _axis(int(attr.get("axis", 0)), rank, "Split", attr)
        n_out = int(attr["tvm_custom"]["num_outputs"])
        sizes = bb.emit(relax.op.astype(split, "int64"))
        ends = bb.emit(relax.op.cumsum(sizes, 0))
        onehot = np.eye(rank, dtype=np.int64)[axis]
        outs = []
        for i in range(n_out):
            end_i = relax.op.take(ends, relax.const(i, "int64"), axis=0)
            begin_i = relax.op.subtract(end_i, relax.op.take(sizes, relax.const(i, "int64"), axis=0))
            begin = relax.op.multiply(relax.const(onehot, "int64"), begin_i)
            end = relax.op.add(relax.op.multiply(relax.const(onehot, "int64"), end_i),
                               relax.const(np.array(dims, np.int64) * (1 - onehot), "int64"))
            ones = relax.const(np.ones(rank, np.int64), "int64")
            outs.append(_symbolic(bb, relax.op.dynamic_strided_slice(x, begin, end, ones), f"split{i}_dim"))
        return relax.Tuple(outs)


class Binarizer(OnnxOpConverter):
    """ai.onnx.ml Binarizer-1: Y = 1 where X > threshold (default 0.0), else 0, in X's type."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = _dtype(x)
        above = relax.op.greater(x, relax.const(float(attr.get("threshold", 0.0)), dtype))
        return relax.op.where(above, relax.const(1, dtype), relax.const(0, dtype))


# ---- training optimisers (ai.onnx.preview.training) ---------------------------------------------

def _scalar(x, dtype: str):
    return relax.op.astype(relax.op.reshape(x, []), dtype)


class _Optimizer(OnnxOpConverter):
    """Shared by Adagrad, Adam and Momentum (ai.onnx.preview.training-1): inputs R (learning rate),
    T (update count), then n tensors X, n gradients G and n of each state tensor; outputs the n new
    X, then the n of each new state. Elementwise, in each X's type."""

    states = 1

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        r, t = inputs[0], inputs[1]
        rest = list(inputs)[2:]
        k = 2 + cls.states
        if len(rest) % k:
            raise tvm.error.OpAttributeInvalid(f"{cls.__name__} node {_node(attr)!r}: {len(rest)} tensor inputs")
        n = len(rest) // k
        outs = [[] for _ in range(1 + cls.states)]
        for i in range(n):
            x, g = rest[i], rest[n + i]
            st = [rest[(2 + j) * n + i] for j in range(cls.states)]
            dtype = _dtype(x)
            new = cls._update(_scalar(r, dtype), _scalar(t, dtype), x, g, st, attr,
                              functools.partial(relax.const, dtype=dtype))
            for j, v in enumerate(new):
                outs[j].append(bb.emit(v))
        return relax.Tuple([v for group in outs for v in group])


class Adagrad(_Optimizer):
    """Adagrad-1: r' = R / (1 + T decay_factor); g = norm_coefficient X + G; H' = H + g^2;
    X' = X - r' g / (sqrt(H') + epsilon). Defaults 0."""

    states = 1

    @classmethod
    def _update(cls, r, t, x, g, st, attr, c):
        rr = relax.op.divide(r, relax.op.add(c(1.0), relax.op.multiply(t, c(float(attr.get("decay_factor", 0.0))))))
        gr = relax.op.add(relax.op.multiply(c(float(attr.get("norm_coefficient", 0.0))), x), g)
        h = relax.op.add(st[0], relax.op.multiply(gr, gr))
        den = relax.op.add(relax.op.sqrt(h), c(float(attr.get("epsilon", 0.0))))
        return [relax.op.subtract(x, relax.op.divide(relax.op.multiply(rr, gr), den)), h]


class Adam(_Optimizer):
    """Adam-1: g = norm_coefficient X + G; V' = alpha V + (1 - alpha) g; H' = beta H + (1 - beta) g^2;
    r' = R sqrt(1 - beta^T) / (1 - alpha^T) if T > 0 else R; X' = (1 - norm_coefficient_post)
    (X - r' V' / (sqrt(H') + epsilon)). alpha 0.9, beta 0.999, the rest 0 by default."""

    states = 2

    @classmethod
    def _update(cls, r, t, x, g, st, attr, c):
        alpha, beta = float(attr.get("alpha", 0.9)), float(attr.get("beta", 0.999))
        gr = relax.op.add(relax.op.multiply(c(float(attr.get("norm_coefficient", 0.0))), x), g)
        v = relax.op.add(relax.op.multiply(c(alpha), st[0]), relax.op.multiply(c(1 - alpha), gr))
        h = relax.op.add(relax.op.multiply(c(beta), st[1]), relax.op.multiply(c(1 - beta), relax.op.multiply(gr, gr)))
        corrected = relax.op.divide(relax.op.multiply(r, relax.op.sqrt(relax.op.subtract(c(1.0), relax.op.power(c(beta), t)))),
                                    relax.op.subtract(c(1.0), relax.op.power(c(alpha), t)))
        rr = relax.op.where(relax.op.greater(t, c(0.0)), corrected, r)
        den = relax.op.add(relax.op.sqrt(h), c(float(attr.get("epsilon", 0.0))))
        xn = relax.op.subtract(x, relax.op.multiply(rr, relax.op.divide(v, den)))
        return [relax.op.multiply(c(1 - float(attr.get("norm_coefficient_post", 0.0))), xn), v, h]


class Momentum(_Optimizer):
    """Momentum-1: g = norm_coefficient X + G; V' = alpha V + (beta if T > 0 else 1) g; X' = X - R V'
    (mode "standard") or X - R (g + alpha V') (mode "nesterov")."""

    states = 1

    @classmethod
    def _update(cls, r, t, x, g, st, attr, c):
        mode = attr.get("mode", b"standard")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode not in ("standard", "nesterov"):
            raise _unimplemented("Momentum", attr, f"mode {mode!r}")
        alpha = float(attr["alpha"])
        gr = relax.op.add(relax.op.multiply(c(float(attr["norm_coefficient"])), x), g)
        b = relax.op.where(relax.op.greater(t, c(0.0)), c(float(attr["beta"])), c(1.0))
        v = relax.op.add(relax.op.multiply(c(alpha), st[0]), relax.op.multiply(b, gr))
        step = v if mode == "standard" else relax.op.add(gr, relax.op.multiply(c(alpha), v))
        return [relax.op.subtract(x, relax.op.multiply(r, step)), v]


# ---- recurrent networks -------------------------------------------------------------------------

def _activation(name: str, alpha: float | None, beta: float | None, dtype: str, op: str, attr):
    """The ONNX RNN activation functions (RNN/GRU/LSTM `activations`), as x -> expr."""
    c = lambda v: relax.const(float(v), dtype)
    table = {
        "Relu": (lambda x: relax.op.nn.relu(x), None, None),
        "Tanh": (lambda x: relax.op.tanh(x), None, None),
        "Sigmoid": (lambda x: relax.op.sigmoid(x), None, None),
        "Softsign": (lambda x: relax.op.divide(x, relax.op.add(c(1), relax.op.abs(x))), None, None),
        "Softplus": (lambda x: relax.op.log(relax.op.add(c(1), relax.op.exp(x))), None, None),
        "Affine": (lambda x, a, b: relax.op.add(relax.op.multiply(c(a), x), c(b)), 1.0, 0.0),
        "LeakyRelu": (lambda x, a: relax.op.where(relax.op.less(x, c(0)), relax.op.multiply(c(a), x), x), 0.01, None),
        "ThresholdedRelu": (lambda x, a: relax.op.where(relax.op.greater(x, c(a)), x, c(0)), 1.0, None),
        "ScaledTanh": (lambda x, a, b: relax.op.multiply(c(a), relax.op.tanh(relax.op.multiply(c(b), x))), 1.0, 1.0),
        "HardSigmoid": (lambda x, a, b: relax.op.clip(relax.op.add(relax.op.multiply(c(a), x), c(b)), 0.0, 1.0),
                        0.2, 0.5),
        "Elu": (lambda x, a: relax.op.where(relax.op.less(x, c(0)),
                                            relax.op.multiply(c(a), relax.op.subtract(relax.op.exp(x), c(1))), x),
                1.0, None),
    }
    key = next((k for k in table if k.lower() == name.lower()), None)
    if key is None:
        raise _unimplemented(op, attr, f"activation {name!r}")
    fn, a0, b0 = table[key]
    if a0 is None:
        return fn
    a = a0 if alpha is None else alpha
    if b0 is None:
        return lambda x: fn(x, a)
    b = b0 if beta is None else beta
    return lambda x: fn(x, a, b)


def _activations(attr, op: str, defaults: tuple[str, ...], num_dir: int, dtype: str):
    """Per direction, the activation functions of `activations` (default `defaults`), with their
    alpha/beta taken in order from activation_alpha/activation_beta for the functions that use them."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in attr.get("activations", ())]
    if not names:
        names = list(defaults) * num_dir
    if len(names) != len(defaults) * num_dir:
        raise tvm.error.OpAttributeInvalid(f"{op} node {_node(attr)!r}: {len(names)} activations for {num_dir} "
                                           f"direction(s), expected {len(defaults) * num_dir}")
    alphas, betas = list(attr.get("activation_alpha", ())), list(attr.get("activation_beta", ()))
    uses = {"affine": (1, 1), "leakyrelu": (1, 0), "thresholdedrelu": (1, 0), "scaledtanh": (1, 1),
            "hardsigmoid": (1, 1), "elu": (1, 0)}
    fns = []
    for n in names:
        ua, ub = uses.get(n.lower(), (0, 0))
        a = alphas.pop(0) if ua and alphas else None
        b = betas.pop(0) if ub and betas else None
        fns.append(_activation(n, a, b, dtype, op, attr))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(num_dir)]


class _Recurrent(OnnxOpConverter):
    """Shared by RNN, GRU and LSTM (ONNX RNN-7/14/22, GRU-7/14/22, LSTM-7/14/22), unrolled over the
    static sequence length: X (seq, batch, input) or with layout=1 (batch, seq, input); W (dirs,
    G*hidden, input), R (dirs, G*hidden, hidden), optional B (dirs, 2*G*hidden), sequence_lens
    (batch), initial_h (dirs, batch, hidden) (and LSTM's initial_c, P); direction forward, reverse
    or bidirectional; `clip` bounds every gate pre-activation. With sequence_lens, a batch entry's
    state stops at its length, its later outputs are 0, and the reverse direction starts from its
    last valid step. Outputs Y (seq, dirs, batch, hidden) or (batch, seq, dirs, hidden), Y_h (and
    LSTM's Y_c) (dirs, batch, hidden), or batch-first with layout=1. TVM has no converter."""

    op_name = ""
    gates = 1
    defaults: tuple[str, ...] = ()

    @classmethod
    def _cell(cls, bb, d, xw, h, c, r_t, rb, p, acts, clip, attr):  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        op = cls.op_name
        x, w, r = inputs[0], inputs[1], inputs[2]
        b, lens, h0 = inputs[3], inputs[4], inputs[5]
        c0 = inputs[6] if op == "LSTM" else None
        peep = inputs[7] if op == "LSTM" else None
        dims = _static_shape(x)
        if dims is None or len(dims) != 3:
            raise _unimplemented(op, attr, "an X of dynamic shape")
        layout = int(attr.get("layout", 0))
        if layout not in (0, 1):
            raise _unimplemented(op, attr, f"layout {layout}")
        if int(attr.get("input_forget", 0)):
            raise _unimplemented(op, attr, "input_forget=1")
        direction = attr.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        if direction not in ("forward", "reverse", "bidirectional"):
            raise _unimplemented(op, attr, f"direction {direction!r}")
        num_dir = 2 if direction == "bidirectional" else 1
        wdims = _static_shape(w)
        hidden = int(attr.get("hidden_size", wdims[1] // cls.gates if wdims else 0))
        if layout:
            x = relax.op.permute_dims(x, [1, 0, 2])
            h0 = relax.op.permute_dims(h0, [1, 0, 2]) if h0 is not None else None
            c0 = relax.op.permute_dims(c0, [1, 0, 2]) if c0 is not None else None
        seq, batch = (dims[1], dims[0]) if layout else (dims[0], dims[1])
        dtype = _dtype(inputs[0])
        acts = _activations(attr, op, cls.defaults, num_dir, dtype)
        clip = attr.get("clip")
        zeros = relax.const(np.zeros((batch, hidden), dtype), dtype)
        if lens is not None:
            lens = bb.emit(relax.op.reshape(relax.op.astype(lens, "int64"), [batch, 1]))
        ys, hs, cs = [], [], []
        for d in range(num_dir):
            reverse = direction == "reverse" or d == 1
            xd = x
            if reverse:
                xd = cls._reverse(bb, x, lens, seq, batch)
            w_t = relax.op.permute_dims(relax.op.squeeze(relax.op.strided_slice(w, [0], [d], [d + 1]), [0]))
            r_t = bb.emit(relax.op.permute_dims(relax.op.squeeze(relax.op.strided_slice(r, [0], [d], [d + 1]), [0])))
            xw = relax.op.matmul(xd, w_t)  # (seq, batch, G*hidden)
            rb = None
            if b is not None:
                bd = relax.op.squeeze(relax.op.strided_slice(b, [0], [d], [d + 1]), [0])
                g = cls.gates * hidden
                wb = relax.op.strided_slice(bd, [0], [0], [g])
                rb = relax.op.strided_slice(bd, [0], [g], [2 * g])
                if op == "GRU" and int(attr.get("linear_before_reset", 0)):
                    rb = bb.emit(rb)  # the recurrent bias of the h gate stays inside r * (...)
                else:
                    xw = relax.op.add(xw, relax.op.add(wb, rb))
                    wb = None
                if wb is not None:
                    xw = relax.op.add(xw, wb)
            xw = bb.emit(xw)
            p = None
            if peep is not None:
                p = bb.emit(relax.op.squeeze(relax.op.strided_slice(peep, [0], [d], [d + 1]), [0]))
            h = zeros if h0 is None else bb.emit(relax.op.squeeze(relax.op.strided_slice(h0, [0], [d], [d + 1]), [0]))
            c = None
            if op == "LSTM":
                c = zeros if c0 is None else bb.emit(relax.op.squeeze(relax.op.strided_slice(c0, [0], [d], [d + 1]),
                                                                      [0]))
            outs = []
            for t in range(seq):
                xt = relax.op.squeeze(relax.op.strided_slice(xw, [0], [t], [t + 1]), [0])
                h_new, c_new = cls._cell(bb, d, xt, h, c, r_t, rb, p, acts[d], clip, attr)
                if lens is not None:
                    valid = relax.op.less(relax.const(t, "int64"), lens)
                    h = bb.emit(relax.op.where(valid, h_new, h))
                    c = bb.emit(relax.op.where(valid, c_new, c)) if c is not None else None
                    outs.append(bb.emit(relax.op.where(valid, h_new, zeros)))
                else:
                    h, c = h_new, c_new
                    outs.append(h)
            y = bb.emit(relax.op.stack(outs, axis=0))  # (seq, batch, hidden)
            if reverse:
                y = cls._reverse(bb, y, lens, seq, batch)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y = relax.op.stack(ys, axis=1)  # (seq, dirs, batch, hidden)
        yh = relax.op.stack(hs, axis=0)
        yc = relax.op.stack(cs, axis=0) if op == "LSTM" else None
        if layout:
            y = relax.op.permute_dims(y, [2, 0, 1, 3])
            yh = relax.op.permute_dims(yh, [1, 0, 2])
            yc = relax.op.permute_dims(yc, [1, 0, 2]) if yc is not None else None
        outs = [bb.emit(y), bb.emit(yh)] + ([bb.emit(yc)] if yc is not None else [])
        return relax.Tuple(outs)

    @staticmethod
    def _reverse(bb, x, lens, seq, batch):
        """x (seq, batch, ...) reversed along seq, per batch entry within its length when given."""
        if lens is None:
            return bb.emit(relax.op.flip(x, 0))
        steps = relax.const(np.arange(seq, dtype=np.int64).reshape(seq, 1), "int64")
        n = relax.op.reshape(lens, [1, batch])
        idx = relax.op.where(relax.op.less(steps, n), relax.op.subtract(relax.op.subtract(n, relax.const(1, "int64")),
                                                                         steps), steps)
        rest = _static_shape(x)[2:]
        idx = relax.op.broadcast_to(relax.op.reshape(idx, [seq, batch] + [1] * len(rest)), [seq, batch] + rest)
        return bb.emit(relax.op.gather_elements(x, bb.emit(idx), axis=0))

    @staticmethod
    def _gate(z, k, hidden):
        return relax.op.strided_slice(z, [1], [k * hidden], [(k + 1) * hidden])

    @staticmethod
    def _clip(z, clip):
        return z if clip is None else relax.op.clip(z, -float(clip), float(clip))


class RNN(_Recurrent):
    """ONNX RNN-7/14/22: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb), f default Tanh (see _Recurrent)."""

    op_name, gates, defaults = "RNN", 1, ("Tanh",)

    @classmethod
    def _cell(cls, bb, d, xw, h, c, r_t, rb, p, acts, clip, attr):
        return bb.emit(acts[0](cls._clip(relax.op.add(xw, relax.op.matmul(h, r_t)), clip))), None


class GRU(_Recurrent):
    """ONNX GRU-7/14/22, gates z, r, h (f default Sigmoid, g Tanh): z = f(X Wz + H Rz + b),
    r = f(X Wr + H Rr + b), h = g(X Wh + (r * H) Rh + Rbh + Wbh), or with linear_before_reset
    g(X Wh + r * (H Rh + Rbh) + Wbh); H' = (1 - z) * h + z * H (see _Recurrent)."""

    op_name, gates, defaults = "GRU", 3, ("Sigmoid", "Tanh")

    @classmethod
    def _cell(cls, bb, d, xw, h, c, r_t, rb, p, acts, clip, attr):
        f, g = acts
        hidden = _static_shape(h)[1]
        rz = relax.op.strided_slice(r_t, [1], [0], [2 * hidden])
        rh = relax.op.strided_slice(r_t, [1], [2 * hidden], [3 * hidden])
        hr = relax.op.matmul(h, rz)
        if rb is not None and int(attr.get("linear_before_reset", 0)):
            hr = relax.op.add(hr, relax.op.strided_slice(rb, [0], [0], [2 * hidden]))
        zr = bb.emit(f(cls._clip(relax.op.add(relax.op.strided_slice(xw, [1], [0], [2 * hidden]), hr), clip)))
        z, r = cls._gate(zr, 0, hidden), cls._gate(zr, 1, hidden)
        xh = cls._gate(xw, 2, hidden)
        if int(attr.get("linear_before_reset", 0)):
            hh = relax.op.matmul(h, rh)
            if rb is not None:
                hh = relax.op.add(hh, relax.op.strided_slice(rb, [0], [2 * hidden], [3 * hidden]))
            pre = relax.op.add(xh, relax.op.multiply(r, hh))
        else:
            pre = relax.op.add(xh, relax.op.matmul(relax.op.multiply(r, h), rh))
        hn = bb.emit(g(cls._clip(pre, clip)))
        one = relax.const(1.0, _dtype(h) if _tensor_type(h) else "float32")
        return bb.emit(relax.op.add(relax.op.multiply(relax.op.subtract(one, z), hn), relax.op.multiply(z, h))), None


class LSTM(_Recurrent):
    """ONNX LSTM-7/14/22, gates i, o, f, c (f default Sigmoid, g Tanh, h Tanh), peepholes P (i, o, f):
    i = f(X Wi + H Ri + Pi * C + b), f = f(X Wf + H Rf + Pf * C + b), c = g(X Wc + H Rc + b),
    C' = f * C + i * c, o = f(X Wo + H Ro + Po * C' + b), H' = o * h(C') (see _Recurrent;
    input_forget=1 is refused)."""

    op_name, gates, defaults = "LSTM", 4, ("Sigmoid", "Tanh", "Tanh")

    @classmethod
    def _cell(cls, bb, d, xw, h, c, r_t, rb, p, acts, clip, attr):
        f, g, hf = acts
        hidden = _static_shape(c)[1] if _tensor_type(c) is not None else _static_shape(h)[1]
        z = bb.emit(relax.op.add(xw, relax.op.matmul(h, r_t)))
        zi, zo, zf, zc = (cls._gate(z, k, hidden) for k in range(4))
        if p is not None:
            pi, po, pf = (relax.op.strided_slice(p, [0], [k * hidden], [(k + 1) * hidden]) for k in range(3))
            zi = relax.op.add(zi, relax.op.multiply(pi, c))
            zf = relax.op.add(zf, relax.op.multiply(pf, c))
        i = f(cls._clip(zi, clip))
        fg = f(cls._clip(zf, clip))
        cc = g(cls._clip(zc, clip))
        c_new = bb.emit(relax.op.add(relax.op.multiply(fg, c), relax.op.multiply(i, cc)))
        if p is not None:
            zo = relax.op.add(zo, relax.op.multiply(po, c_new))
        o = f(cls._clip(zo, clip))
        return bb.emit(relax.op.multiply(o, hf(c_new))), c_new


# ---- integer (quantised) operators --------------------------------------------------------------

def _minus_zero_point(bb, x, zp, per_axis_shape=None):
    """int32(x) - int32(zero point); a 1-D zero point is reshaped to `per_axis_shape` to broadcast."""
    x32 = relax.op.astype(x, "int32")
    if zp is None:
        return bb.emit(x32)
    z = bb.normalize(relax.op.astype(zp, "int32"))
    zs = _static_shape(zp)
    if per_axis_shape is not None and zs is not None and len(zs) == 1 and zs[0] > 1:
        z = relax.op.reshape(z, per_axis_shape)
    return bb.emit(relax.op.subtract(x32, z))


def _requantize(acc, multiplier, zp, out_dtype: str):
    """The reference's requantisation: rint(float64(acc) * float64(multiplier) + zp), saturated to
    out_dtype (multiplier computed in the scales' own type, as the reference does)."""
    d = relax.op.multiply(relax.op.astype(acc, "float64"), relax.op.astype(multiplier, "float64"))
    if zp is not None:
        d = relax.op.add(d, relax.op.astype(zp, "float64"))
    info = np.iinfo(np.dtype(out_dtype))
    return relax.op.astype(relax.op.clip(relax.op.round(d), float(info.min), float(info.max)), out_dtype)


class QLinearMatMul(OnnxOpConverter):
    """ONNX QLinearMatMul-10/21: Y = saturate(rint((A - a_zp) @ (B - b_zp) * a_scale * b_scale / y_scale
    + y_zp)), the product in int32; a_scale/a_zp per tensor or per row of a 2-D A, b_scale/b_zp per
    tensor or per column; Y has y_zp's type (A's without it)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = (inputs[i] for i in range(8))
        rank_a = _rank(a, "QLinearMatMul", attr)
        row = [-1, 1] if rank_a == 2 else None
        a_s = relax.op.reshape(a_s, row) if row and (_static_shape(a_s) or [1])[0] > 1 else a_s
        acc = relax.op.matmul(_minus_zero_point(bb, a, a_zp, row), _minus_zero_point(bb, b, b_zp), out_dtype="int32")
        multiplier = relax.op.divide(relax.op.multiply(a_s, b_s), y_s)
        return _requantize(acc, multiplier, y_zp, _dtype(y_zp) if y_zp is not None else _dtype(a))


class ConvInteger(OnnxOpConverter):
    """ONNX ConvInteger-10: int32 convolution of (X - x_zero_point) by (W - w_zero_point), w's zero
    point per tensor or per output channel; the convolution attributes (auto_pad, dilations, group,
    kernel_shape, pads, strides) are TVM's Conv converter's."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w, x_zp, w_zp = (inputs[i] for i in range(4))
        rank = _rank(w, "ConvInteger", attr)
        xi = _minus_zero_point(bb, x, x_zp)
        wi = _minus_zero_point(bb, w, w_zp, [-1] + [1] * (rank - 1))
        return _fe.Conv._impl_v11(bb, _fe.onnx_input([xi, wi]), attr, params)


class QLinearConv(OnnxOpConverter):
    """ONNX QLinearConv-10: Y = saturate(rint(conv(X - x_zp, W - w_zp) + B) * x_scale * w_scale /
    y_scale + y_zp)), the convolution and the int32 bias B in int32, w_scale/w_zp per tensor or per
    output channel; Y has y_zp's type (X's without it); attributes as Conv."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_s, x_zp, w, w_s, w_zp, y_s, y_zp, bias = (inputs[i] for i in range(9))
        rank = _rank(w, "QLinearConv", attr)
        xi = _minus_zero_point(bb, x, x_zp)
        wi = _minus_zero_point(bb, w, w_zp, [-1] + [1] * (rank - 1))
        acc = _fe.Conv._impl_v11(bb, _fe.onnx_input([xi, wi, bias]), attr, params)
        if (_static_shape(w_s) or [1])[0] > 1:
            w_s = relax.op.reshape(w_s, [1, -1] + [1] * (rank - 2))
        multiplier = relax.op.divide(relax.op.multiply(x_s, w_s), y_s)
        return _requantize(acc, multiplier, y_zp, _dtype(y_zp) if y_zp is not None else _dtype(x))


# ---- spectral -----------------------------------------------------------------------------------

class DFT(OnnxOpConverter):
    """ONNX DFT-17/20: the discrete Fourier transform along `axis` of a real (last dimension 1) or
    complex (last dimension 2: real, imaginary) signal, as matrix products with cos/sin tables:
    Y_k = sum_n x_n exp(-+2 pi i k n / N) (the inverse with + and a 1/N factor). `dft_length` zero-pads
    or truncates the signal to N; onesided=1 keeps the bins 0..N/2 of a forward transform, and
    with inverse=1 reads such bins as a Hermitian spectrum and returns the real signal (length
    dft_length, or 2 (bins - 1)). axis is an attribute (default 1) up to opset 19, an input (default
    -2) from 20; a runtime axis is accepted when the result has the same shape for every axis it may
    name (every candidate is computed and the asked one selected). dft_length must be a constant."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        return cls._convert(bb, inputs, attr, params, attr.get("axis", 1))

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        axis = -2
        if len(inputs) > 2 and inputs[2] is not None:
            value = _constant(inputs[2], params)
            axis = int(value.reshape(-1)[0]) if value is not None else inputs[2]
        return cls._convert(bb, inputs, attr, params, axis)

    @classmethod
    def _convert(cls, bb, inputs, attr, params, axis):
        x = inputs[0]
        dims = _static_shape(x)
        if dims is None or dims[-1] not in (1, 2):
            raise _unimplemented("DFT", attr, "an input of dynamic shape or whose last dimension is not 1 or 2")
        rank = len(dims)
        length = None
        if len(inputs) > 1 and inputs[1] is not None:
            value = _constant(inputs[1], params)
            if value is None:
                raise _unimplemented("DFT", attr, "a dft_length input that is not a constant")
            length = int(value.reshape(-1)[0])
        if isinstance(axis, int):
            a = axis + rank if axis < 0 else axis
            if not 0 <= a <= rank - 2:
                raise tvm.error.OpAttributeInvalid(f"DFT node {_node(attr)!r}: axis {axis} for rank {rank}")
            return cls._along(bb, x, dims, a, length, attr)
        results = [cls._along(bb, x, dims, a, length, attr) for a in range(rank - 1)]
        shapes = {tuple(_static_shape(r)) for r in results}
        if len(shapes) != 1:
            raise _unimplemented("DFT", attr, "a runtime axis with a result shape that depends on it")
        ad = _dtype(axis)
        sel = relax.op.reshape(axis, [])
        sel = bb.emit(relax.op.where(relax.op.less(sel, relax.const(0, ad)), relax.op.add(sel, relax.const(rank, ad)),
                                     sel))
        out = results[-1]
        for a in range(rank - 2):
            out = bb.emit(relax.op.where(relax.op.equal(sel, relax.const(a, ad)), results[a], out))
        return out

    @classmethod
    def _along(cls, bb, x, dims, axis, length, attr):
        dtype = _dtype(x)
        inverse, onesided = bool(attr.get("inverse", 0)), bool(attr.get("onesided", 0))
        rank = len(dims)
        perm = [i for i in range(rank - 1) if i != axis] + [axis]
        back = list(np.argsort(perm))
        parts = []
        for c in range(dims[-1]):
            part = relax.op.squeeze(relax.op.strided_slice(x, [rank - 1], [c], [c + 1]), [rank - 1])
            parts.append(bb.emit(relax.op.permute_dims(part, perm)))  # (..., n_in)
        n_in = dims[axis]
        if inverse and onesided:
            n = length if length is not None else 2 * (n_in - 1)
            k = np.arange(n_in)[:, None]
            t = 2 * np.pi * k * np.arange(n)[None, :] / n
            w = np.where((k == 0) | (2 * k == n), 1.0, 2.0) * (k <= n // 2)
            # y_n = sum_k w_k (Re X_k cos - Im X_k sin) / n, w_k = 2 but for the DC and Nyquist bins
            out = relax.op.matmul(parts[0], relax.const((w * np.cos(t) / n).astype(dtype), dtype))
            if len(parts) == 2:
                out = relax.op.add(out, relax.op.matmul(parts[1], relax.const((-w * np.sin(t) / n).astype(dtype), dtype)))
            out = relax.op.expand_dims(relax.op.permute_dims(out, back), [rank - 1])
            return bb.emit(out)
        n = length if length is not None else n_in
        if n != n_in:  # zero-pad or truncate the signal
            cut = min(n, n_in)
            parts = [relax.op.strided_slice(p, [rank - 2], [0], [cut]) for p in parts]
            if n > n_in:
                pad = [(0, 0)] * (rank - 2) + [(0, n - n_in)]
                parts = [relax.op.nn.pad(p, [v for pr in pad for v in pr]) for p in parts]
            parts = [bb.emit(p) for p in parts]
        bins = n // 2 + 1 if onesided and not inverse else n
        t = 2 * np.pi * np.arange(n)[:, None] * np.arange(bins)[None, :] / n
        scale = 1.0 / n if inverse else 1.0
        sign = 1.0 if inverse else -1.0
        cos = relax.const((np.cos(t) * scale).astype(dtype), dtype)
        sin = relax.const((sign * np.sin(t) * scale).astype(dtype), dtype)
        re = relax.op.matmul(parts[0], cos)
        im = relax.op.matmul(parts[0], sin)
        if len(parts) == 2:  # (a + ib)(cos + i sin) = a cos - b sin + i (a sin + b cos)
            re = relax.op.subtract(re, relax.op.matmul(parts[1], sin))
            im = relax.op.add(im, relax.op.matmul(parts[1], cos))
        out = relax.op.stack([relax.op.permute_dims(re, back), relax.op.permute_dims(im, back)], axis=rank - 1)
        return bb.emit(out)


# ---- operators defined by an ONNX function body -------------------------------------------------

# Inputs that may be a ShapeExpr in TVM's frontend (`_construct_nodes`); other operators get a tensor.
_SHAPE_INPUT_OPS = frozenset({"Reshape", "Resize", "ConstantOfShape", "Gather", "Slice", "Shape", "Expand", "Concat",
                              "Equal", "Where", "Cast", "CastLike", "Squeeze"})


def _type_proto(expr):
    from onnx import TypeProto, helper

    ty = _tensor_type(expr)
    if ty is None:
        return TypeProto()
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(str(ty.dtype)))
    shape = None
    if ty.ndim >= 0:
        dims = _static_shape(expr)
        shape = dims if dims is not None else [None] * int(ty.ndim)
    return helper.make_tensor_type_proto(elem, shape)


def expand_function(bb, op: str, inputs, attr, params, opset: int):
    """Converts a node of an ONNX operator through the function body the ONNX specification
    defines it by (`onnx.defs` schema of the model's opset, context-dependent bodies included), node
    by node with the frontend's converters (ours included): what the onnx test suite's "_expanded"
    cases and onnxruntime's function inlining do."""
    from onnx import FunctionProto, defs, helper
    from onnx.backend.test.case.node import function_expand_helper

    name = _node(attr)
    given = {k: v for k, v in attr.items() if k != "tvm_custom"}
    in_names = [f"{op}_in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    while in_names and not in_names[-1]:
        in_names.pop()
    n_out = int(attr["tvm_custom"]["num_outputs"])
    out_names = [f"{op}_out{i}" for i in range(n_out)]
    node = helper.make_node(op, in_names, out_names, name=name, **given)
    schema = defs.get_schema(op, opset, "")
    for a, spec in schema.attributes.items():
        if a not in given and spec.default_value and spec.default_value.type:
            node.attribute.append(spec.default_value)
    versions = sorted(schema.function_opset_versions)
    ctx_versions = sorted(schema.context_dependent_function_opset_versions)
    pick = lambda vs: (max([v for v in vs if v <= opset], default=min(vs)) if vs else None)
    fproto = FunctionProto()
    if versions:
        fproto.ParseFromString(schema.get_function_with_opset_version(pick(versions)))
    elif ctx_versions:
        types = [_type_proto(x).SerializeToString() for x in inputs[:len(in_names)] if x is not None]
        fproto.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            pick(ctx_versions), node.SerializeToString(), types))
    else:
        raise tvm.error.OpNotImplemented(f"{op} node {name!r}: no function body in the ONNX schema of opset {opset}")
    body_opset = next((o.version for o in fproto.opset_import if o.domain in ("", "ai.onnx")), opset)
    values = {n: x for n, x in zip(in_names, inputs) if n}
    table = _fe._get_convert_map()
    for inner in function_expand_helper(node, fproto, f"{name}/"):
        if inner.op_type not in table or inner.domain not in ("", "ai.onnx"):
            raise tvm.error.OpNotImplemented(f"{op} node {name!r}: its function body uses {inner.op_type}, "
                                             "which the frontend does not support")
        ins = _fe.onnx_input()
        for i in inner.input:
            x = values[i] if i else None
            if isinstance(x, relax.Expr) and isinstance(getattr(x, "ty", None), relax.ShapeType) \
                    and inner.op_type not in _SHAPE_INPUT_OPS:
                static = _static_shape_value(x)
                x = bb.normalize(relax.op.shape_to_tensor(x)) if static is None else \
                    relax.const(np.array(static, np.int64).reshape(-1), "int64")
            ins.append(x)
        a = _fe.ONNXGraphImporter._parse_attr(None, inner.attribute)
        a["tvm_custom"] = {"name": inner.name or f"{name}/{inner.op_type}", "num_outputs": len(inner.output)}
        out = table[inner.op_type].get_converter(body_opset)(bb, ins, a, params)
        if isinstance(out, relax.Expr):
            out = bb.normalize(out)
        if len(inner.output) == 1:
            values[inner.output[0]] = out
            continue
        if not isinstance(out, relax.Tuple):
            out = relax.Tuple([bb.emit(relax.TupleGetItem(out, i)) for i in range(len(out.ty.fields))])
        for i, o in enumerate(inner.output):
            if o:
                values[o] = out[i]
    outs = [values.get(o) for o in out_names]
    if any(o is None for o in outs):
        raise tvm.error.OpNotImplemented(f"{op} node {name!r}: its function body does not compute every output")
    return outs[0] if n_out == 1 else relax.Tuple(outs)


class _Expanded(OnnxOpConverter):
    """An ONNX operator TVM lacks that the ONNX specification defines by a function body: converted
    through that body (expand_function)."""

    op_name = ""

    @classmethod
    def get_converter(cls, opset):
        def convert(bb, inputs, attr, params):
            return expand_function(bb, cls.op_name, inputs, attr, params, opset)

        return convert


def _expanded(op: str) -> type:
    return type(op, (_Expanded,), {"op_name": op, "__doc__": f"ONNX {op}, through its function body."})


class Attention(_Expanded):
    """ONNX Attention-23/24 (ai.onnx: Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen;
    is_causal, q_num_heads, kv_num_heads, scale, softcap, qk_matmul_output_mode, ...): through its
    function body. TVM's "Attention" converter is com.microsoft's (num_heads, packed QKV weights) and
    fails on the standard operator ("KeyError: 'num_heads'"); nodes with num_heads stay with it."""

    op_name = "Attention"

    @classmethod
    def get_converter(cls, opset):
        expanded = super().get_converter(opset)

        def convert(bb, inputs, attr, params):
            if "num_heads" in attr:
                return _fe.Attention.get_converter(opset)(bb, inputs, attr, params)
            return expanded(bb, inputs, attr, params)

        return convert


EXPANDED = ("BlackmanWindow", "HammingWindow", "HannWindow", "CenterCropPad", "RotaryEmbedding", "SwiGLU",
            "CausalConvWithState")


# ---- constant folding of shape computations ------------------------------------------------------

# Largest result folded (elements): shape arithmetic is tiny; weights are left to the pipeline.
FOLD_MAX_ELEMENTS = 4096
# Never folded: quantisation nodes on constant weights are patterns the NPU compiler matches.
NOT_FOLDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Constant", "Shape",
                        "If", "Loop", "Scan"})


def _inline(bb, expr, depth: int = 0):
    """expr with the variables it uses replaced by their bound values (bindings of the block being
    built), or None when it depends on anything else than operators applied to constants."""
    if depth > 64:
        return None
    if isinstance(expr, (tvm.ir.GenericConst, relax.ShapeExpr, tvm.ir.StringImm)) or tvm.ir.is_prim_expr(expr):
        return expr
    if isinstance(expr, relax.Var):
        value = bb.lookup_binding(expr)
        return None if value is None else _inline(bb, value, depth + 1)
    if isinstance(expr, relax.Tuple):
        fields = [_inline(bb, f, depth + 1) for f in expr.fields]
        return None if any(f is None for f in fields) else relax.Tuple(fields)
    if isinstance(expr, relax.TupleGetItem):
        value = _inline(bb, expr.tuple_value, depth + 1)
        return None if value is None else relax.TupleGetItem(value, expr.index)
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        args = [_inline(bb, a, depth + 1) for a in expr.args]
        if any(a is None for a in args):
            return None
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    return None


def fold(bb, expr):
    """The constant value of `expr` when it is computed from constants only (a tensor of at most
    FOLD_MAX_ELEMENTS elements), evaluated by TVM itself (LegalizeOps + FoldConstant, the same
    kernels llvm runs); else `expr` unchanged."""
    expr = bb.normalize(expr)
    if isinstance(expr, tvm.ir.GenericConst):
        return expr
    shape = _static_shape(expr)
    if shape is None or int(np.prod(shape, dtype=np.int64)) > FOLD_MAX_ELEMENTS:
        return expr
    inlined = _inline(bb, expr)
    if inlined is None:
        return expr
    fb = relax.BlockBuilder()
    with fb.function("main", []):
        out = fb.emit(inlined)
        fb.emit_func_output(out)
    try:
        mod = relax.transform.FoldConstant()(relax.transform.LegalizeOps()(fb.get()))
    except Exception:  # noqa: BLE001 - an operator TVM cannot evaluate stays a runtime computation
        return expr
    body = mod["main"].body
    value = body.body
    for block in body.blocks:
        for binding in block.bindings:
            if binding.var.same_as(value):
                value = binding.value
    return value if isinstance(value, tvm.ir.GenericConst) else expr


class _Folded(OnnxOpConverter):
    """Wraps a converter: a node whose inputs are all constants gets the constant its conversion
    computes (ONNX constant folding, as onnxslim or onnxruntime's graph optimiser do). TVM folds
    only a few operators on constants (the elementwise binary ones), so shape arithmetic through
    Slice/Concat/ConstantOfShape/Cast... reached Reshape, Expand or a Reduce's axes as a runtime
    tensor, which they refuse ("Reshape requires the input new shape to be Shape")."""

    base: type = OnnxOpConverter

    @classmethod
    def get_converter(cls, opset):
        impl = cls.base.get_converter(opset)

        def convert(bb, inputs, attr, params):
            out = impl(bb, inputs, attr, params)
            given = [i for i in inputs if i is not None]
            if given and all(isinstance(i, tvm.ir.GenericConst) or _static_shape_value(i) is not None for i in given):
                # TVM turns constant int64 vectors into a ShapeExpr (Concat) and their elements into
                # PrimExprs (Gather), which Range and the arithmetic converters then make symbolic
                if _static_shape_value(out) is not None:
                    return relax.const(np.array(_static_shape_value(out), np.int64).reshape(-1), "int64")
                if isinstance(out, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
                    return relax.const(out.value, str(out.dtype))
            if given and all(isinstance(i, tvm.ir.GenericConst) or _static_shape_value(i) is not None for i in given) \
                    and isinstance(out, relax.Expr) \
                    and not isinstance(out, relax.Tuple):
                out = fold(bb, out)
            return out

        return convert


def _folded(name: str, base: type) -> type:
    return type(f"Folded{name}", (_Folded,), {"base": base, "__doc__": f"{name}, folded on constant inputs."})


# ---- registration -------------------------------------------------------------------------------

# ---- elementwise Max / Min / Sum / Mean, and constant Pad as Relax operators -----------------------

def _pairwise(base: type) -> type:
    """ONNX Max / Min / Sum / Mean (opset 1-13): elementwise over N inputs with multidirectional
    broadcasting. TVM stacks broadcast copies and reduces them (broadcast_to, stack, max: three
    operators per input, none a pattern can take); the same function folded pairwise with the binary
    operator (maximum, minimum, add; Mean divides by N) is one broadcasting operator per input."""

    class Pairwise(base):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            if len(inputs) == 1 or all(isinstance(i, tvm.ir.GenericConst) for i in inputs):
                return super()._impl_v1(bb, inputs, attr, params)  # TVM folds constants / copies one input
            return cls._impl_dynamic(bb, inputs)

    Pairwise.__name__ = Pairwise.__qualname__ = base.__name__
    Pairwise.__doc__ = _pairwise.__doc__
    return Pairwise


class Pad(_fe.Pad):
    """ONNX Pad-11/13/18/19 in constant mode with constant pads as `relax.nn.pad` (TVM emits a TE
    PrimFunc, which no pattern can match, so a zero pad could not become a convolution's halo).
    Negative pads (cropping), other modes and runtime pads are left to TVM's converter."""

    @classmethod
    def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):
        mode = attr.get("mode", b"constant")
        mode = mode.decode("utf-8") if isinstance(mode, bytes) else str(mode)
        if mode == "constant" and _tensor_type(inputs[0]) is not None:
            try:
                before, after, value = cls._parse_pads_and_axes(inputs, params)
            except ValueError:
                before = None
            if before is not None and min(list(before) + list(after)) >= 0:
                width = [int(v) for pair in zip(before, after) for v in pair]
                return relax.op.nn.pad(inputs[0], width, "constant", float(value))
        return super()._lower_pad(bb, inputs, attr, params, allowed_modes)


CONVERTERS: dict[str, type] = {
    "Pad": Pad,
    "Max": _pairwise(_fe.Max),
    "Min": _pairwise(_fe.Min),
    "Sum": _pairwise(_fe.Sum),
    "Mean": _pairwise(_fe.Mean),
    "Shape": Shape,
    "Constant": Constant,
    "LayerNormalization": LayerNormalization,
    "RMSNormalization": RMSNormalization,
    "LpNormalization": LpNormalization,
    "Celu": Celu,
    "Swish": Swish,
    "CumSum": CumSum,
    "CumProd": CumProd,
    "NegativeLogLikelihoodLoss": NegativeLogLikelihoodLoss,
    "SoftmaxCrossEntropyLoss": SoftmaxCrossEntropyLoss,
    **REDUCE_CONVERTERS,
    "Attention": Attention,
    "Reshape": Reshape,
    "Pow": Pow,
    "IsInf": IsInf,
    "EyeLike": EyeLike,
    "Dropout": Dropout,
    "ReverseSequence": ReverseSequence,
    "RNN": RNN,
    "GRU": GRU,
    "LSTM": LSTM,
    "QLinearMatMul": QLinearMatMul,
    "ConvInteger": ConvInteger,
    "QLinearConv": QLinearConv,
    "DFT": DFT,
    "ConstantOfShape": ConstantOfShape,
    "OneHot": OneHot,
    "Split": Split,
    "Binarizer": Binarizer,
    "Adagrad": Adagrad,
    "Adam": Adam,
    "Momentum": Momentum,
    **{op: _expanded(op) for op in EXPANDED},
}


@functools.cache
def _folded_class(name: str, base: type) -> type:
    return _folded(name, base)


def install() -> None:
    """Makes TVM's ONNX frontend use CONVERTERS (idempotent): its `_get_convert_map` returns TVM's
    table updated with ours, read at each import."""
    original = _fe._get_convert_map
    if getattr(original, _INSTALLED, False):
        return

    @functools.wraps(original)
    def _get_convert_map():
        table = original()
        table.update(CONVERTERS)
        return {name: conv if name in NOT_FOLDED else _folded_class(name, conv) for name, conv in table.items()}

    setattr(_get_convert_map, _INSTALLED, True)
    _fe._get_convert_map = _get_convert_map
