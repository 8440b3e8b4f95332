"""Constant folding of simple operators with numpy, before TVM's FoldConstant.

TVM's FoldConstant JIT-compiles every constant subexpression with LLVM (about 50 ms each);
batch-norm folding leaves a few per convolution, which made it most of the compile time of real
models, and fp16-weight TFLite models cast every weight to float32. The elementwise, cast and shape
operators here are evaluated with numpy exactly as TVM's kernels would (IEEE single precision, same
operation; float casts round to nearest even), and so are the shape computations exporters leave
around embeddings (`shape_to_tensor(shape_of(constant))`, `take` of constants); anything else is
left to FoldConstant.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .ops import Unsupported, Constant, scalar

_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
           "relax.divide": np.divide}
_FLOATS = {"float16", "float32", "float64"}
_UNARY = {"relax.sqrt": np.sqrt, "relax.rsqrt": lambda x: 1 / np.sqrt(x), "relax.negative": np.negative}


@mutator
class _NumpyFolder(PyExprMutator):
    def _const(self, expr):
        """The constant node `expr` is (or is bound to): a Constant or a scalar immediate, else None."""
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            expr = bound if bound is not None else expr
        if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
            return expr
        if isinstance(expr, Constant) and hasattr(expr.value, "numpy"):
            return expr
        return None

    def _value(self, expr):
        c = self._const(expr)
        if c is None:
            return None
        if isinstance(c, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):  # scalar immediates, e.g. an epsilon
            return np.array(c.value, dtype=str(c.ty))
        return c.value.numpy()

    def _const_shape(self, expr):
        """The static shape of `shape_of(constant)`, else None (read off the constant, not copied)."""
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.shape_of":
            c = self._const(expr.args[0])
            return None if c is None or not isinstance(c, Constant) else [int(d) for d in c.value.shape]
        return None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        name = call.op.name
        operands = [a for a in call.args if not isinstance(a, relax.ShapeExpr)]
        # every fold below needs constant operands (shape_to_tensor: a shape_of of one): decide that
        # before copying any constant to numpy (a matmul's weights, an embedding table: megabytes each)
        if name != "relax.shape_to_tensor" and not all(self._const(a) is not None for a in operands):
            return call
        args = [self._value(a) for a in operands]
        try:
            if name in _BINARY and len(args) == 2 and all(a is not None for a in args):
                if args[0].dtype != args[1].dtype or not np.issubdtype(args[0].dtype, np.floating):
                    return call
                with np.errstate(all="ignore"):
                    out = _BINARY[name](args[0], args[1]).astype(args[0].dtype)
            elif name in _UNARY and len(args) == 1 and args[0] is not None and np.issubdtype(args[0].dtype,
                                                                                           np.floating):
                with np.errstate(all="ignore"):
                    out = _UNARY[name](args[0]).astype(args[0].dtype)
            elif name == "relax.astype" and args and args[0] is not None and _FLOATS.issuperset(
                    (str(args[0].dtype), str(call.attrs.dtype))):  # exact (widening) or IEEE round-to-nearest-even
                out = args[0].astype(str(call.attrs.dtype))
            elif name == "relax.broadcast_to" and args and args[0] is not None and isinstance(call.args[1],
                                                                                              relax.ShapeExpr):
                out = np.broadcast_to(args[0], [int(scalar(d)) for d in call.args[1].values])
            elif name == "relax.expand_dims" and args and args[0] is not None:
                axes = sorted(int(a) % (args[0].ndim + len(call.attrs.axis)) for a in call.attrs.axis)
                out = np.expand_dims(args[0], axes)
            elif name == "relax.isnan" and args and args[0] is not None and np.issubdtype(args[0].dtype, np.floating):
                out = np.isnan(args[0])
            elif name == "relax.where" and len(args) == 3 and all(a is not None for a in args) and \
                    args[0].dtype == np.bool_ and args[1].dtype == args[2].dtype:
                out = np.where(args[0], args[1], args[2])
            elif name == "relax.permute_dims" and args and args[0] is not None:
                axes = call.attrs.axes
                out = np.transpose(args[0], None if axes is None else [int(a) for a in axes])
            elif name == "relax.shape_to_tensor" and self._const_shape(call.args[0]) is not None:
                out = np.array(self._const_shape(call.args[0]), dtype="int64")  # shape_of(a constant)
            elif name == "relax.take" and len(args) == 2 and all(a is not None for a in args) and \
                    np.issubdtype(args[1].dtype, np.integer):
                mode = str(call.attrs.mode)
                axis = None if call.attrs.axis is None else int(call.attrs.axis)
                out = np.take(args[0], args[1], axis=axis, mode={"wrap": "wrap", "clip": "clip"}.get(mode, "raise"))
            elif name == "relax.reshape" and args and args[0] is not None and isinstance(call.args[1],
                                                                                         relax.ShapeExpr):
                shape = [int(scalar(d)) for d in call.args[1].values]
                out = args[0].reshape(shape)
            else:
                return call
        except (Unsupported, ValueError, TypeError, IndexError):
            return call
        return relax.const(np.array(out, order="C"), str(out.dtype))  # (ascontiguousarray makes 0-d arrays 1-d)


@relax.transform.function_pass(opt_level=0, name="tvm_npu.FoldWithNumpy")
class FoldWithNumpy:
    """Folds the supported constant subexpressions of every Relax function with numpy."""

    def transform_function(self, func, mod, ctx):
        new = _NumpyFolder().visit_expr(func)
        # what the folded constants replaced (e.g. shape_of(constant)) would make FoldConstant run for nothing
        return new if new.same_as(func) else relax.analysis.remove_all_unused(new)
