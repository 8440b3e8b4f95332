"""Weights as Relay params: detached from imported modules (ONNX initializers, TFLite constants), bound back by name."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import tvm
from tvm import relax


def to_tensor(value) -> tvm.runtime.Tensor:
    if isinstance(value, tvm.runtime.Tensor):
        return value
    return tvm.runtime.tensor(np.ascontiguousarray(np.asarray(value)))


def detach(mod: tvm.IRModule, names: Optional[Dict[str, str]] = None):
    """(mod without main's "params" attribute, {weight name: Tensor}) for a main whose parameters
    are the inputs (num_input of them) followed by the weights."""
    mod, detached = relax.frontend.detach_params(mod)
    fn = mod["main"]
    num_input = int(fn.attrs["num_input"]) if fn.attrs is not None and "num_input" in fn.attrs else 0
    weights = list(detached.get("main", []))
    weight_vars = list(fn.params)[num_input:]
    if len(weights) != len(weight_vars):
        raise RuntimeError(f"relay compatibility layer: the frontend gave {len(weights)} weight values for "
                           f"{len(weight_vars)} weight parameters of main")
    names = names or {}
    params: Dict[str, tvm.runtime.Tensor] = {}
    for var, value in zip(weight_vars, weights):
        params[names.get(var.name, var.name)] = value
    return mod, params


def unique_names(names: List[str]) -> List[str]:
    out, used = [], set()
    for n in names:
        cand, i = n, 1
        while cand in used:
            cand, i = f"{n}_{i}", i + 1
        used.add(cand)
        out.append(cand)
    return out


def lift_constants(mod: tvm.IRModule, consts: List[tuple]) -> tvm.IRModule:
    """main with each given Constant replaced by a new trailing parameter, its value moved to the
    "params" attribute (the layout relax.frontend.detach_params expects)."""
    fn = mod["main"]
    by_handle = {}
    for expr, name in consts:
        by_handle.setdefault(expr.__hash__(), []).append((expr, name))
    new_params, values = [], []
    lifted: Dict[int, relax.Var] = {}

    @relax.expr_functor.mutator
    class _Lift(relax.PyExprMutator):
        def visit_generic_const_(self, op):
            for expr, name in by_handle.get(op.__hash__(), []):
                if op.same_as(expr):
                    key = op.__hash__()
                    if key not in lifted:
                        var = relax.Var(name, op.ty)
                        lifted[key] = var
                        new_params.append(var)
                        values.append(op.value)
                    return lifted[key]
            return op

    body = _Lift().visit_expr(fn.body)
    attrs = {k: v for k, v in fn.attrs.items() if k != "params"} if fn.attrs is not None else {}
    if not new_params:
        has_params = fn.attrs is not None and "params" in fn.attrs
        return _with_main(mod, fn.without_attr("params") if has_params else fn)
    attrs["num_input"] = len(fn.params)
    attrs["params"] = values
    new_fn = relax.Function(list(fn.params) + new_params, body, fn.ret_ty, fn.is_pure).with_attrs(attrs)
    return _with_main(mod, new_fn)


def rename_params(mod: tvm.IRModule, names: dict[str, str]) -> tvm.IRModule:
    """main with its parameters renamed ({old name: new name}; others keep theirs): the names
    set_input and relay.build(params=...) use."""
    fn = mod["main"]
    mapping = {v: relax.Var(names[v.name], v.ty) for v in fn.params if names.get(v.name, v.name) != v.name}
    if not mapping:
        return mod

    @relax.expr_functor.mutator
    class _Rename(relax.PyExprMutator):
        def visit_var_(self, op):
            return mapping.get(op, op)

    body = _Rename().visit_expr(fn.body)
    new_fn = relax.Function([mapping.get(v, v) for v in fn.params], body, fn.ret_ty, fn.is_pure, fn.attrs)
    return _with_main(mod, new_fn)


def _with_main(mod: tvm.IRModule, fn: relax.Function) -> tvm.IRModule:
    out = copy_module(mod)
    out["main"] = fn
    return out


def copy_module(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.IRModule({gv: f for gv, f in mod.functions.items()}, attrs=mod.attrs)


def bind(mod: tvm.IRModule, params: Optional[Dict[str, Any]]) -> tvm.IRModule:
    """Relay's bind_params_by_name: bind the params whose name is a parameter of main (names not in
    main are ignored, as Relay did); names may also be given with the "onnx::" prefix."""
    if not params:
        return mod
    fn = mod["main"]
    by_name: Dict[str, List[relax.Var]] = {}
    for v in fn.params:
        by_name.setdefault(v.name, []).append(v)
    binding = {}
    for key, value in params.items():
        key = str(key)
        cands = by_name.get(key) or by_name.get(key.removeprefix("onnx::")) or []
        if not cands:
            continue
        if len(cands) > 1:
            raise ValueError(f"relay.build: several parameters of main are named {key!r}; cannot bind by name")
        binding[cands[0]] = to_tensor(value)
    if not binding:
        return mod
    return relax.transform.BindParams("main", binding)(mod)
