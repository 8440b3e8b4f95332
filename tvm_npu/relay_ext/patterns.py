"""The `npu.*` pattern table, registered with TVM's pattern registry.

Naming contract: the pattern name (`npu.<op>[_bias][_act|_hard_swish|_hard_sigmoid]`) is the composite name, the key of the
lowering in codegen and the row of the supported-operator table. Roles of matched expressions are
annotated ("root", "input", "weight", "bias", "bias_add", "act") and read by `ops.describe`, the
same way for the checks here and for code generation. Later registrations have higher priority, so
the most fused forms come last.

Every check explains a refusal: the reasons go to the active `PartitionState` (diagnostics) and
the expression falls through to lower-priority patterns or to the CPU.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Dict, List, Optional, Set, Tuple

from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.backend.utils import has_leaking_intermediate_variables
from tvm.relax.dpl import is_op, wildcard

from ..config import NPUConfig, get_config
from . import constraints
from .ops import ACTIVATIONS, BINARY, Unsupported, describe

PREFIX = "npu"


@dataclasses.dataclass
class PartitionState:
    """What the checks of one partitioning run see and record."""

    config: NPUConfig
    # root binding (Var) -> [(pattern name, reasons)] for every pattern that was tried on it
    attempts: Dict[object, List[Tuple[str, List[str]]]] = dataclasses.field(default_factory=dict)
    vetoed: Set[object] = dataclasses.field(default_factory=set)  # root bindings (Vars) kept on the CPU
    # accepted matches in the order the checks saw them: (pattern, the main-function Vars it covers)
    groups: List[Tuple[str, list]] = dataclasses.field(default_factory=list)
    # bindings of quantised regions the integer path refused -> why: they stay on the CPU with the
    # model's semantics rather than running dequantised in fp16
    quant_refused: Dict[object, str] = dataclasses.field(default_factory=dict)


ACTIVE: contextvars.ContextVar[Optional[PartitionState]] = contextvars.ContextVar("tvm_npu_partition", default=None)


def _act(x):
    pats = [is_op(op)(x) for op in ACTIVATIONS if op != "relax.clip"]
    pat = is_op("relax.clip")(x, wildcard(), wildcard())
    for p in pats:
        pat = pat | p
    return pat


def _hard(x, swish: bool):
    """hard_sigmoid(x) = clip(x + 3, 0, 6) / 6 and hard_swish(x) = x * hard_sigmoid(x), as TVM's
    frontends decompose them; the constants are verified by ops.describe, not assumed."""
    plus = is_op("relax.add")(x, wildcard())
    clip = is_op("relax.clip")(plus, wildcard(), wildcard())
    div = is_op("relax.divide")(clip, wildcard())
    ann = {"hs_add": plus, "hs_clip": clip, "hs_div": div}
    if not swish:
        return div, ann
    mul = is_op("relax.multiply")(x, div) | is_op("relax.multiply")(div, x)
    return mul, ann


def _mac(op: str, bias: bool, act: str):
    x, w = wildcard(), wildcard()
    root = is_op(op)(x, w)
    ann = {"root": root, "input": x, "weight": w}
    out = root
    if bias:
        b = wildcard()
        out = is_op("relax.add")(out, b)
        ann.update(bias=b, bias_add=out)
    if act == "act":
        out = _act(out)
        ann["act"] = out
    elif act in ("hard_swish", "hard_sigmoid"):
        out, extra = _hard(out, act == "hard_swish")
        ann.update(extra, act=out)
    return out, ann


def _root_var(ctx):
    """The Var the matched root call is bound to (the key of diagnostics and vetoes)."""
    root = ctx.annotated_expr["root"]
    var = ctx.value_to_bound_var.get(root)
    return var if var is not None else str(root.op.name)


def _checker(name: str):
    def check(ctx) -> bool:
        state = ACTIVE.get()
        cfg = state.config if state is not None else get_config()
        root = _root_var(ctx)
        try:
            if name.startswith(f"{PREFIX}.q") and has_leaking_intermediate_variables(ctx):
                raise Unsupported("an intermediate result of the quantised region is also used outside it")
            desc = describe(name, dict(ctx.annotated_expr))
            reasons = constraints.check(desc, cfg)
        except Unsupported as e:
            reasons = [str(e)]
        except Exception as e:  # a check must never abort partitioning: report and keep on CPU
            reasons = [f"internal error while checking: {type(e).__name__}: {e}"]
        if state is not None:
            if name.startswith(f"{PREFIX}.q") and not name.endswith("_int") and reasons:  # a QDQ region
                for v in ctx.matched_bindings.keys():
                    state.quant_refused.setdefault(v, reasons[0])
            elif not reasons and root in state.quant_refused:
                reasons = [f"part of a quantised region kept on the CPU ({state.quant_refused[root]})"]
            if not reasons and root in state.vetoed:
                reasons = ["kept on the CPU by the performance model (see the should-run decision)"]
            state.attempts.setdefault(root, []).append((name, reasons))
            if not reasons:
                state.groups.append((name, list(ctx.matched_bindings.keys())))
        return not reasons

    return check


def _table():
    """(name, pattern, annotations) in increasing priority."""
    table = []
    for op, short in ACTIVATIONS.items():
        x = wildcard()
        root = is_op(op)(x, wildcard(), wildcard()) if short == "clip" else is_op(op)(x)
        table.append((f"{PREFIX}.{short}", root, {"root": root, "input": x}))
    for op, short in BINARY.items():
        a, b = wildcard(), wildcard()
        root = is_op(op)(a, b)
        name = {"add": "add", "sub": "subtract", "mul": "multiply", "max": "maximum", "min": "minimum"}[short]
        table.append((f"{PREFIX}.{name}", root, {"root": root, "lhs": a, "rhs": b}))
    a, b = wildcard(), wildcard()
    div = is_op("relax.divide")(a, b)
    table.append((f"{PREFIX}.divide", div, {"root": div, "lhs": a, "rhs": b}))
    for op, short in (("relax.nn.max_pool2d", "max_pool2d"), ("relax.nn.avg_pool2d", "avg_pool2d"),
                      ("relax.nn.softmax", "softmax"), ("relax.mean", "mean")):
        x = wildcard()
        root = is_op(op)(x)
        table.append((f"{PREFIX}.{short}", root, {"root": root, "input": x}))
    t = wildcard()
    cat = is_op("relax.concat")(t)
    table.append((f"{PREFIX}.concat", cat, {"root": cat, "input": t}))
    for swish in (False, True):
        x = wildcard()
        root, ann = _hard(x, swish)
        table.append((f"{PREFIX}.{'hard_swish' if swish else 'hard_sigmoid'}", root,
                      dict(ann, root=ann["hs_add"], act=root, input=x)))
    for op, short in (("relax.matmul", "matmul"), ("relax.nn.conv2d", "conv2d")):
        for bias in (False, True):
            for act in ("", "act", "hard_sigmoid", "hard_swish"):
                suffix = ("_bias" if bias else "") + (f"_{act}" if act else "")
                table.append((f"{PREFIX}.{short}{suffix}", *_mac(op, bias, act)))
    from .qpatterns import table as quant_table
    return table + quant_table()


def register() -> None:
    register_patterns([(name, pat, ann, _checker(name)) for name, pat, ann in _table()])


def quant_patterns():
    """The integer composites only: matched before FoldConstant dequantises the int8 weights."""
    return [p for p in patterns() if p.name.startswith(f"{PREFIX}.q")]


def patterns():
    """The registered npu.* patterns, highest priority first (the order FuseOpsByPattern wants)."""
    return get_patterns_with_prefix(PREFIX)


def pattern_names() -> List[str]:
    return [name for name, _, _ in _table()]
