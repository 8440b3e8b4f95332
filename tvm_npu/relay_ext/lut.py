"""Quantised unary regions folded into 256-entry lookup tables.

A quantised model computes many functions of ONE int8 tensor: `quantize(f(dequantize(x)))` where f
is a chain of elementwise operators on x and scalar constants (sigmoid, tanh, hard-sigmoid /
hard-swish decompositions, scale-and-shift, leaky relu, a requantisation `quantize(dequantize(x))`
with new parameters, ...). Its int8 result depends only on the byte x, so it *is* a table of 256
entries. `FoldQuantizedLUTs` rewrites each such region into

    take(table: int8[256], astype(x, "int32") + 128, axis=0)

which is exact by construction and which the `npu.qlut` composite maps onto `vlut`. The table is
computed once here:

* a lone `sigmoid` / `tanh` uses TFLite's reference tables (`quant.logistic_lut`, `quant.tanh_lut`),
  so int8 TFLite LOGISTIC and TANH stay byte-exact;
* anything else is evaluated the way TVM's own CPU build evaluates the float graph (float32
  arithmetic, `quantize` = round half to even, clamp), so the region means the same on every target.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from .. import quant as Q
from .ops import Constant

_F32 = np.float32


def _sigmoid(v):
    return (_F32(1) / (_F32(1) + np.exp(-v))).astype(_F32)


def _erf(v):
    import math
    return np.array([math.erf(float(t)) for t in v], _F32)


def _gelu(v):
    return (_F32(0.5) * v * (_F32(1) + _erf(v * _F32(1 / np.sqrt(2))))).astype(_F32)


UNARY = {
    "relax.sigmoid": _sigmoid,
    "relax.tanh": lambda v: np.tanh(v).astype(_F32),
    "relax.nn.relu": lambda v: np.maximum(v, _F32(0)),
    "relax.nn.silu": lambda v: (v * _sigmoid(v)).astype(_F32),
    "relax.nn.gelu": _gelu,
    "relax.exp": lambda v: np.exp(v).astype(_F32),
    "relax.negative": lambda v: -v,
    "relax.abs": np.abs,
}
BINARY = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
    "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum,
}


class _NotUnary(Exception):
    pass


def _scalar_const(e) -> Optional[np.ndarray]:
    if isinstance(e, Constant):
        v = e.value.numpy()
        if v.size == 1 and v.dtype.kind == "f":
            return _F32(v.reshape(()))
    return None


def _prim(v) -> float:
    x = getattr(v, "value", v)
    return float(getattr(x, "value", x))


def _qp(call: relax.Call) -> Q.QParams:
    s, z = call.args[1], call.args[2]
    if not (isinstance(s, Constant) and isinstance(z, Constant)):
        raise _NotUnary
    s, z = s.value.numpy().reshape(-1), z.value.numpy().reshape(-1)
    if s.size != 1 or z.size != 1:
        raise _NotUnary
    dtype = str(call.args[0].ty.dtype) if call.op.name == "relax.dequantize" else str(call.attrs.out_dtype)
    if dtype != "int8":
        raise _NotUnary
    return Q.QParams.per_tensor(float(s[0]), int(z[0]))


class _Region:
    """Evaluates the float sub-graph under a quantize for all 256 values of its one int8 leaf."""

    def __init__(self, var2val, out_shape):
        self.var2val = var2val
        self.out_shape = out_shape
        self.leaf = None  # (x expr, QParams)
        self.ops: List[str] = []
        self.self_binary = False

    def eval(self, e, xs):
        if isinstance(e, relax.Var) and e in self.var2val:
            return self.eval(self.var2val[e], xs)
        c = _scalar_const(e)
        if c is not None:
            return c
        if not isinstance(e, relax.Call) or not isinstance(e.op, tvm.ir.Op):
            raise _NotUnary
        op = e.op.name
        shape = [int(v) for v in e.ty.shape.values] if hasattr(e.ty, "shape") and e.ty.shape is not None else None
        if op != "relax.dequantize" and shape != self.out_shape:
            raise _NotUnary  # broadcasting against a tensor: not a function of one byte
        if op == "relax.dequantize":
            q = _qp(e)
            x = e.args[0]
            if self.leaf is not None and not self.leaf[0].same_as(x):
                raise _NotUnary
            if [int(v) for v in x.ty.shape.values] != self.out_shape:
                raise _NotUnary
            self.leaf = (x, q)
            return ((xs.astype(np.int32) - q.zp).astype(_F32) * _F32(q.s)).astype(_F32)
        self.ops.append(op)
        if op in UNARY:
            return UNARY[op](self.eval(e.args[0], xs))
        if op in BINARY:
            a, b = self.eval(e.args[0], xs), self.eval(e.args[1], xs)
            if np.ndim(a) and np.ndim(b):
                self.self_binary = True  # x op f(x): a table only for known activations (see lut_of)
            return BINARY[op](_F32(a) if np.ndim(a) == 0 else a, b).astype(_F32)
        if op == "relax.clip":
            return np.clip(self.eval(e.args[0], xs), _F32(_prim(e.args[1])), _F32(_prim(e.args[2]))).astype(_F32)
        if op == "relax.nn.leakyrelu":
            v = self.eval(e.args[0], xs)
            return np.where(v >= 0, v, v * _F32(e.attrs.alpha)).astype(_F32)
        raise _NotUnary


def _leaky_alpha(e, var2val):
    while isinstance(e, relax.Var) and e in var2val:
        e = var2val[e]
    return e.attrs.alpha


def lut_of(quantize: relax.Call, var2val) -> Optional[tuple]:
    """(x, table, the operators the table replaces) when `quantize` is a function of one int8
    tensor, else None."""
    try:
        out_q = _qp(quantize)
        shape = [int(v) for v in quantize.ty.shape.values]
        region = _Region(var2val, shape)
        xs = np.arange(-128, 128, dtype=np.int8)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # exp overflow -> inf is intended
            v = region.eval(quantize.args[0], xs)
    except (_NotUnary, ValueError, TypeError, AttributeError):
        return None
    if region.leaf is None or np.ndim(v) == 0:
        return None
    x, in_q = region.leaf
    if region.ops == ["relax.sigmoid"] and float(out_q.s) == 1.0 / 256:
        return x, Q.logistic_lut(in_q, out_q), region.ops  # TFLite LOGISTIC's reference table
    if region.ops == ["relax.tanh"]:
        return x, Q.tanh_lut(in_q, out_q), region.ops
    if region.ops == ["relax.nn.leakyrelu"]:  # TFLite LEAKY_RELU is fixed point: its exact table
        alpha = float(_leaky_alpha(quantize.args[0], var2val))
        return x, Q.leaky_relu_lut(in_q, out_q, alpha), region.ops
    d = ((xs.astype(np.int32) - in_q.zp).astype(_F32) * _F32(in_q.s)).astype(_F32)
    if sorted(region.ops) == ["relax.add", "relax.clip", "relax.divide", "relax.multiply"] and np.allclose(
            v, d * np.clip(d + 3, 0, 6) / 6, rtol=1e-5, atol=1e-6):
        try:  # TFLite HARD_SWISH is fixed point: its exact table (also within a step of the float one)
            return x, Q.hard_swish_lut(in_q, out_q), region.ops
        except ValueError:
            pass
    if region.self_binary:  # e.g. TFLite MUL(x, x): its fixed-point kernel is the reference, not a table
        return None
    with np.errstate(all="ignore"):
        q = np.rint(v.astype(np.float64) / float(_F32(out_q.s))) + out_q.zp  # TVM quantize: half to even
    if not np.all(np.isfinite(q)):
        return None
    return x, np.clip(q, -128, 127).astype(np.int8), region.ops


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, mod, var2val):
        super().__init__(mod)
        self.var2val = var2val
        self.folded = 0
        self.described: Dict[str, str] = {}  # quantize binding -> the operators its table replaces
        self._hit = None  # (quantize call, lut_of's result) of the binding being visited

    def visit_var_binding_(self, binding):  # noqa: N802 - TVM's visitor naming
        v = binding.value
        self._hit = None
        if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name == "relax.quantize":
            hit = lut_of(v, self.var2val)
            if hit is not None:
                self._hit = (v, hit)
                self.described[binding.var.name] = " + ".join(
                    ["relax.dequantize"] + list(dict.fromkeys(reversed(hit[2]))) + ["relax.quantize"])
        return super().visit_var_binding_(binding)

    def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
        if self._hit is not None and call.same_as(self._hit[0]):
            x, table, _ = self._hit[1]
            self._hit = None
            self.folded += 1
            idx = relax.op.add(relax.op.astype(self.visit_expr(x), "int32"), relax.const(128, "int32"))
            return relax.op.take(relax.const(table, "int8"), idx, axis=0, mode="clip")
        return super().visit_call_(call)


@tvm.transform.module_pass(opt_level=0, name="FoldQuantizedLUTs")
def FoldQuantizedLUTs(mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: N802 - a pass
    """Rewrites every quantised function of one int8 tensor into a 256-entry table lookup."""
    folded = 0
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)  # never mutate the caller's module
    described: Dict[str, str] = {}
    for gv, fn in list(mod.functions.items()):
        if not isinstance(fn, relax.Function) or (fn.attrs is not None and "Composite" in fn.attrs):
            continue
        folder = _Folder(mod, relax.analysis.get_var2val(fn))
        new = folder.visit_expr(fn)
        if folder.folded:
            mod[gv] = new
            folded += folder.folded
            described.update(folder.described)
    if not folded:
        return mod
    mod = relax.transform.DeadCodeElimination()(mod)
    return mod.with_attr(LUT_ATTR, described)  # for the report: what each table replaced


LUT_ATTR = "tvm_npu.lut_folds"


@relax.expr_functor.mutator
class _DqSplitter(relax.PyExprMutator):
    def __init__(self, mod, var2val, shared):
        super().__init__(mod)
        self.var2val = var2val
        self.shared = shared

    def visit_call_(self, call):  # noqa: N802
        new = super().visit_call_(call)
        if not isinstance(new, relax.Call):
            return new
        args = []
        changed = False
        for a in new.args:
            if isinstance(a, relax.Var) and a in self.shared:
                dq = self.var2val[a]
                args.append(relax.op.dequantize(dq.args[0], dq.args[1], dq.args[2], int(dq.attrs.axis),
                                                str(dq.attrs.out_dtype)))
                changed = True
            else:
                args.append(a)
        if not changed:
            return new
        return relax.Call(new.op, args, new.attrs, new.sinfo_args) if hasattr(new, "sinfo_args") else \
            relax.Call(new.op, args, new.attrs)


@tvm.transform.module_pass(opt_level=0, name="SplitSharedDequantize")
def SplitSharedDequantize(mod: tvm.IRModule, ctx) -> tvm.IRModule:  # noqa: N802 - a pass
    """Gives every consumer of a shared `dequantize` its own copy, so each quantised region (conv,
    add, mean, ...) is self-contained and can become one integer composite; dequantize is free on
    the NPU (it is the composite's input offset) and the copies that stay on the CPU are cheap."""
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    changed = False
    for gv, fn in list(mod.functions.items()):
        if not isinstance(fn, relax.Function) or (fn.attrs is not None and "Composite" in fn.attrs):
            continue
        var2val = relax.analysis.get_var2val(fn)
        uses: Dict = {}
        for block in fn.body.blocks:
            for b in block.bindings:
                v = b.value
                if isinstance(v, relax.Call):
                    for a in v.args:
                        if isinstance(a, relax.Var):
                            uses[a] = uses.get(a, 0) + 1
        shared = {v for v, n in uses.items() if n > 1 and isinstance(var2val.get(v), relax.Call)
                  and isinstance(var2val[v].op, tvm.ir.Op) and var2val[v].op.name == "relax.dequantize"}
        if shared:
            mod[gv] = _DqSplitter(mod, var2val, shared).visit_expr(fn)
            changed = True
    return relax.transform.DeadCodeElimination()(mod) if changed else mod
