"""Reads a partitioned NPU function (Codegen="npu") into a FunctionDesc: its parameters, each
composite call described through the registry (the same reading the checks used), its outputs."""

from __future__ import annotations

from typing import List

from tvm import relax

from ..ir.desc import FunctionDesc, FunctionOp, OpDesc, Unsupported
from ..ir.registry import lookup
from .ops import static_shape


def composite_desc(fn: relax.Function) -> OpDesc:
    """Re-matches a composite function's body against its registered pattern and describes it."""
    spec = lookup(str(fn.attrs["Composite"]))
    var2val = relax.analysis.get_var2val(fn)
    matched = spec.pattern.extract_matched_expr(fn.body.body, var2val)
    if matched is None:
        raise Unsupported(f"composite {spec.name}: its body no longer matches the pattern")
    ann = {k: matched[p] for k, p in spec.annotations.items() if p in matched}
    return spec.describe(spec, ann)


def _bindings(fn: relax.Function):
    for block in fn.body.blocks:
        yield from block.bindings


def describe_function(fn: relax.Function) -> FunctionDesc:
    """Every composite call of `fn` in order, described; raises Unsupported for anything else."""
    # parameter names label the artifact's IO tensors and must differ; TVM names a region input that is a
    # member of a concat's tuple "lv" whatever it was called, so a region with two such inputs repeats it
    names = [p.name for p in fn.params]
    unique = [n if names[:i].count(n) == 0 else f"{n}_{names[:i].count(n)}" for i, n in enumerate(names)]
    params = [(p, name, static_shape(p), str(p.ty.dtype)) for p, name in zip(fn.params, unique)]
    ret = fn.body.body
    outputs = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
    for o in outputs:
        if not isinstance(o, relax.Var):
            raise Unsupported("function output is not a variable")
    composites, ops = {}, []
    described = {}  # one description per composite function (identical composites are called twice)
    for b in _bindings(fn):
        v = b.value
        if isinstance(v, relax.Function) and v.attrs is not None and "Composite" in v.attrs:
            composites[b.var] = v
            continue
        if not isinstance(v, relax.Call):
            raise Unsupported(f"unexpected binding {b.var.name} in an NPU function")
        comp = composites.get(v.op) if isinstance(v.op, relax.Var) else v.op
        if not isinstance(comp, relax.Function):
            raise Unsupported(f"binding {b.var.name} does not call a composite")
        if comp not in described:
            described[comp] = composite_desc(comp)
        desc = described[comp]
        arg_of = dict(zip(comp.params, v.args))
        operands: List = []
        for expr, t in zip(desc.exprs, desc.inputs):
            operands.append(None if t.is_const else arg_of.get(expr, _MISSING))
        ops.append(FunctionOp(b.var, b.var.name, desc, operands, static_shape(b.var), str(b.var.ty.dtype)))
    return FunctionDesc(params, ops, outputs)


_MISSING = object()  # an operand that is neither a function value nor a constant (refused when placed)
