"""The `npu.*` pattern table, registered with TVM's pattern registry.

Naming contract: the pattern name (`npu.<op>[_bias][_act|_hard_swish|_hard_sigmoid|_swish]`) is the composite
name; everything later stages need to know about it is data in its `OpSpec` (tvm_npu/ir/registry.py:
lowering family, integer or float, quantised region, docs row), so no code parses a name. Roles of matched expressions are
annotated ("root", "input", "weight", "bias", "bias_add", "act") and read by the spec's `describe` (relay_ext/ops.py, qpatterns.py), the
same way for the checks here and for code generation. Later registrations have higher priority, so
the most fused forms come last.

Every check explains a refusal: the reasons go to the active `PartitionState` (diagnostics) and
the expression falls through to lower-priority patterns or to the CPU.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Dict, List, Optional, Tuple

from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.backend.utils import has_leaking_intermediate_variables
from tvm.relax.dpl import is_const, is_op, wildcard

from ..config import NPUConfig
from ..ir import registry
from ..ir.desc import Unsupported
from ..ir.registry import OpSpec
from ..options import CompileOptions
from . import constraints
from .ops import ACTIVATIONS, BINARY, REDUCTIONS, UNARY, describe_float
from .layout import table as layout_table
from .qpatterns import table as quant_table

PREFIX = "npu"


@dataclasses.dataclass
class PartitionState:
    """What the checks of one partitioning run see and record (handed to the checks through a
    context variable: TVM calls them from inside FuseOpsByPattern)."""

    config: NPUConfig
    options: CompileOptions = CompileOptions()
    # root binding (Var) -> [(pattern name, reasons)] for every pattern that was tried on it
    attempts: Dict[object, List[Tuple[str, List[str]]]] = dataclasses.field(default_factory=dict)
    # bindings (Vars) a later stage sent back to the CPU -> why (the should-run decision, a failed
    # code generation): their checks refuse them on the next fusion
    refused: Dict[object, str] = dataclasses.field(default_factory=dict)
    # accepted matches in the order the checks saw them: (pattern, the main-function Vars it covers)
    groups: List[Tuple[str, list]] = dataclasses.field(default_factory=list)
    roots: List[object] = dataclasses.field(default_factory=list)  # the root binding of each accepted match
    # bindings of quantised regions the integer path refused -> why: they stay on the CPU with the
    # model's semantics rather than running dequantised in fp16
    quant_refused: Dict[object, str] = dataclasses.field(default_factory=dict)

    def again(self, refused: Dict[object, str]) -> "PartitionState":
        """A fresh state for the next fusion, refusing `refused` besides what was refused before."""
        return PartitionState(self.config, self.options, refused={**self.refused, **refused},
                              quant_refused=self.quant_refused)


ACTIVE: contextvars.ContextVar[Optional[PartitionState]] = contextvars.ContextVar("tvm_npu_partition", default=None)


def _act(x):
    pats = [is_op(op)(x) for op in ACTIVATIONS if op != "relax.clip"]
    pat = is_op("relax.clip")(x, wildcard(), wildcard())
    for p in pats:
        pat = pat | p
    return pat


def _commuted(op: str, a, b):
    """op(a, b) | op(b, a): a commutative binary in either operand order."""
    return is_op(op)(a, b) | is_op(op)(b, a)


def _hard(x, swish: bool):
    """hard_sigmoid(x) = clip(x + 3, 0, 6) / 6 and hard_swish(x) = x * hard_sigmoid(x), as TVM's
    frontends decompose them: the clamp as relax.clip or as maximum(., 0) and minimum(., 6) in either
    order (ONNX Clip with bound inputs, PyTorch's relu6), the scale as a division by 6 or a
    multiplication by 1/6, and for hard_swish the product with x before or after the scale
    (x * relu6(x + 3) / 6). The constants are verified by ops.hard_activation, not assumed."""
    plus = _commuted("relax.add", x, is_const())
    inner = is_op("relax.maximum")(plus, is_const()) | is_op("relax.minimum")(plus, is_const())
    clip = (is_op("relax.clip")(plus, wildcard(), wildcard()) | is_op("relax.minimum")(inner, is_const())
            | is_op("relax.maximum")(inner, is_const()))

    def scaled(t):
        return is_op("relax.divide")(t, is_const()) | _commuted("relax.multiply", t, is_const())

    div = scaled(clip)
    ann = {"hs_add": plus, "hs_clip": clip, "hs_inner": inner, "hs_div": div}
    if not swish:
        return div, ann
    mul = _commuted("relax.multiply", x, div)  # x * (clamp / 6)
    prod = _commuted("relax.multiply", x, clip)  # (x * clamp) / 6
    after = scaled(prod)
    ann.update(hs_mul=mul, hs_mul_b=prod, hs_div_b=after)
    return mul | after, ann


def _swish(x):
    """x * sigmoid(x) (SiLU / Swish as ONNX exports it), either operand order; the sigmoid and the
    product are both inside the match, so x feeds nothing else of it."""
    sig = is_op("relax.sigmoid")(x)
    return _commuted("relax.multiply", x, sig), {"swish_sig": sig}


def _gelu_erf(x):
    """x * 0.5 * (1 + erf(x / sqrt(2))) as ONNX exports GELU, in any order of its products: the scale
    of x as a division by sqrt(2) or a multiplication by 1/sqrt(2), 1 + erf either way round, and the
    0.5 applied to x * (1 + erf), to x, or to (1 + erf). Constants are verified by
    ops.gelu_erf_activation."""
    scale = is_op("relax.divide")(x, is_const()) | _commuted("relax.multiply", x, is_const())
    erf = is_op("relax.erf")(scale)
    plus = _commuted("relax.add", erf, is_const())
    xa = _commuted("relax.multiply", x, plus)
    half_x = _commuted("relax.multiply", x, is_const())
    half_a = _commuted("relax.multiply", plus, is_const())
    a = _commuted("relax.multiply", xa, is_const())  # (x * (1 + erf)) * 0.5
    b = _commuted("relax.multiply", half_x, plus)  # (x * 0.5) * (1 + erf)
    c = _commuted("relax.multiply", x, half_a)  # x * ((1 + erf) * 0.5)
    return a | b | c, {"ge_scale": scale, "ge_erf": erf, "ge_add": plus, "ge_xa": xa, "ge_half_x": half_x,
                       "ge_half_a": half_a, "ge_a": a, "ge_b": b, "ge_c": c}


def _layer_norm_parts(scale: bool, shift: bool):
    """Layer norm as exporters decompose it: mean, x - mean, its square (power 2 or d * d), mean, + eps,
    sqrt, (x - mean) / sqrt, then * gamma and + beta when present. Axes and constants are verified by
    ops.decomposed_layer_norm."""
    x = wildcard()
    m = is_op("relax.mean")(x)
    d = is_op("relax.subtract")(x, m)
    sq = is_op("relax.power")(d, is_const()) | is_op("relax.multiply")(d, d)
    v = is_op("relax.mean")(sq)
    ve = _commuted("relax.add", v, is_const())
    sd = is_op("relax.sqrt")(ve)
    out = is_op("relax.divide")(d, sd)
    ann = {"root": m, "input": x, "ln_mean": m, "ln_sub": d, "ln_sq": sq, "ln_var": v, "ln_eps": ve, "ln_sqrt": sd,
           "ln_div": out}
    if scale:
        out = ann["ln_gamma"] = _commuted("relax.multiply", out, is_const())
    if shift:
        out = ann["ln_beta"] = _commuted("relax.add", out, is_const())
    ann["act"] = out
    return out, ann


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
    elif act == "swish":
        out, extra = _swish(out)
        ann.update(extra, act=out)
    elif act == "gelu_erf":
        out, extra = _gelu_erf(out)
        ann.update(extra, act=out)
    return out, ann


def _root_var(ctx):
    """The Var the matched root call is bound to (the key of diagnostics and vetoes)."""
    root = ctx.annotated_expr["root"]
    var = ctx.value_to_bound_var.get(root)
    return var if var is not None else str(root.op.name)


def _checker(spec: OpSpec):
    def check(ctx) -> bool:
        state = ACTIVE.get()
        if state is None:
            raise RuntimeError("npu.* checks run only inside tvm_npu's partitioning (no configuration is active)")
        root = _root_var(ctx)
        try:
            if len(ctx.matched_bindings) > 1 and has_leaking_intermediate_variables(ctx):
                raise Unsupported("an intermediate result of the composite is also used outside it")
            desc = spec.describe(spec, dict(ctx.annotated_expr))
            reasons = constraints.check(desc, state.config, state.options)
        except Unsupported as e:
            reasons = [str(e)]
        except Exception as e:  # a check must never abort partitioning: report and keep on CPU
            reasons = [f"internal error while checking: {type(e).__name__}: {e}"]
        if spec.quantised_region and reasons:
            for v in ctx.matched_bindings.keys():
                state.quant_refused.setdefault(v, reasons[0])
        elif not reasons and root in state.quant_refused:
            reasons = [f"part of a quantised region kept on the CPU ({state.quant_refused[root]})"]
        if not reasons and root in state.refused:
            reasons = [state.refused[root]]
        state.attempts.setdefault(root, []).append((spec.name, reasons))
        if not reasons:
            state.groups.append((spec.name, list(ctx.matched_bindings.keys())))
            state.roots.append(root)
        return not reasons

    return check


def _float(name: str, pattern, ann, kind: str) -> OpSpec:
    return OpSpec(name, kind, kind, pattern, ann, describe_float)


_BINARY_NAMES = {"add": "add", "sub": "subtract", "mul": "multiply", "max": "maximum", "min": "minimum"}


def table() -> List[OpSpec]:
    """Every npu.* composite as an OpSpec, in increasing priority."""
    table = []
    for op, short in ACTIVATIONS.items():
        x = wildcard()
        root = is_op(op)(x, wildcard(), wildcard()) if short == "clip" else is_op(op)(x)
        table.append(_float(f"{PREFIX}.{short}", root, {"root": root, "input": x}, "activation"))
    for op, short in BINARY.items():
        a, b = wildcard(), wildcard()
        root = is_op(op)(a, b)
        table.append(_float(f"{PREFIX}.{_BINARY_NAMES[short]}", root, {"root": root, "lhs": a, "rhs": b}, "binary"))
    a, b = wildcard(), wildcard()
    div = is_op("relax.divide")(a, b)
    table.append(_float(f"{PREFIX}.divide", div, {"root": div, "lhs": a, "rhs": b}, "binary"))
    for op, short, kind in (("relax.nn.max_pool2d", "max_pool2d", "pool"), ("relax.nn.avg_pool2d", "avg_pool2d", "pool"),
                            ("relax.nn.softmax", "softmax", "softmax"), ("relax.mean", "mean", "mean")):
        x = wildcard()
        root = is_op(op)(x)
        table.append(_float(f"{PREFIX}.{short}", root, {"root": root, "input": x}, kind))
    t = wildcard()
    cat = is_op("relax.concat")(t)
    table.append(_float(f"{PREFIX}.concat", cat, {"root": cat, "input": t}, "concat"))
    for swish in (False, True):
        x = wildcard()
        root, ann = _hard(x, swish)
        table.append(_float(f"{PREFIX}.{'hard_swish' if swish else 'hard_sigmoid'}", root,
                            dict(ann, root=ann["hs_add"], act=root, input=x), "activation"))
    x = wildcard()
    root, ann = _swish(x)
    table.append(_float(f"{PREFIX}.swish", root, dict(ann, root=ann["swish_sig"], act=root, input=x), "activation"))
    for op, short in UNARY.items():
        x = wildcard()
        root = is_op(op)(x)
        table.append(_float(f"{PREFIX}.{short}", root, {"root": root, "input": x}, "activation"))
    x = wildcard()
    root = is_op("relax.power")(x, is_const())
    table.append(_float(f"{PREFIX}.power", root, {"root": root, "input": x}, "activation"))
    x, one = wildcard(), is_const()
    root = is_op("relax.divide")(one, x)
    table.append(_float(f"{PREFIX}.reciprocal", root, {"root": root, "input": x, "numerator": one}, "activation"))
    for op, short in REDUCTIONS.items():
        x = wildcard()
        root = is_op(op)(x)
        table.append(_float(f"{PREFIX}.{short}", root, {"root": root, "input": x}, "reduce"))
    for scale, shift in ((False, False), (True, False), (True, True)):
        root, ann = _layer_norm_parts(scale, shift)
        table.append(_float(f"{PREFIX}.layer_norm_decomposed{'_scale' if scale else ''}{'_shift' if shift else ''}",
                            root, ann, "layer_norm"))
    x, g, b = wildcard(), wildcard(), wildcard()
    root = is_op("relax.nn.layer_norm")(x, g, b)
    table.append(_float(f"{PREFIX}.layer_norm", root, {"root": root, "input": x, "gamma": g, "beta": b},
                        "layer_norm"))
    x = wildcard()
    root, ann = _gelu_erf(x)
    table.append(_float(f"{PREFIX}.gelu_erf", root, dict(ann, root=ann["ge_scale"], act=root, input=x), "activation"))
    x, slope = wildcard(), wildcard()
    root = is_op("relax.nn.prelu")(x, slope)
    table.append(OpSpec(f"{PREFIX}.prelu", "binary", "prelu", root, {"root": root, "input": x, "slope": slope},
                        describe_float))
    for op, short in (("relax.matmul", "matmul"), ("relax.nn.conv2d", "conv2d")):
        for bias in (False, True):
            for act in ("", "act", "hard_sigmoid", "hard_swish", "swish", "gelu_erf"):
                suffix = ("_bias" if bias else "") + (f"_{act}" if act else "")
                table.append(_float(f"{PREFIX}.{short}{suffix}", *_mac(op, bias, act), short))
    return table + layout_table(PREFIX) + quant_table()


def register() -> None:
    """Fills the NPU registry and TVM's pattern registry (idempotent; called by `import tvm_npu`)."""
    specs = table()
    registry.register(specs)
    register_patterns([(s.name, s.pattern, dict(s.annotations), _checker(s)) for s in specs])


def quant_patterns():
    """The quantised-region composites only: matched before FoldConstant dequantises the int8 weights."""
    return [p for p in patterns() if registry.lookup(p.name).integer]


def patterns():
    """The registered npu.* patterns, highest priority first (the order FuseOpsByPattern wants)."""
    return get_patterns_with_prefix(PREFIX)


def pattern_names() -> List[str]:
    return [s.name for s in registry.specs()]
