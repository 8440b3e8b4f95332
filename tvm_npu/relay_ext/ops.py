"""Uniform descriptions of matched NPU operators, read from Relax once for both the checks and codegen.

A pattern of the table annotates the roles of its matched expressions ("root", "input", "weight",
"bias", "act", "lhs", "rhs", ...). `describe_float(spec, annotations)` (the `describe` of every float
composite's OpSpec in the registry) turns them into an `OpDesc`:
plain Python values (shapes, attributes, numpy constants) that constraint checks and the lowering
read, so "can run" and "how it runs" never disagree about what was matched.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

import numpy as np
import tvm
from tvm import relax

from ..ir.desc import Activation, OpDesc, TensorDesc, Unsupported

Constant = tvm.ir.expr.Constant  # Relax constants (GenericConst) in TVM 0.27

# Activations the vector unit runs after a MAC op or alone: relax op -> activation kind.
ACTIVATIONS = {
    "relax.nn.relu": "relu",
    "relax.clip": "clip",
    "relax.sigmoid": "sigmoid",
    "relax.tanh": "tanh",
    "relax.nn.gelu": "gelu",
    "relax.nn.gelu_tanh": "gelu_tanh",
    "relax.nn.leakyrelu": "leaky_relu",
    "relax.nn.silu": "silu",
}
# Unary operators the vector unit runs alone (not fused into MAC operators): relax op -> activation kind.
UNARY = {"relax.negative": "neg", "relax.abs": "abs", "relax.exp": "exp", "relax.sqrt": "sqrt", "relax.log": "log"}
# Reductions over adjacent axes: relax op -> vector-unit reduction (mean is its own kind)
REDUCTIONS = {"relax.sum": "sum", "relax.max": "max", "relax.min": "min"}
BINARY = {"relax.add": "add", "relax.subtract": "sub", "relax.multiply": "mul", "relax.maximum": "max",
          "relax.minimum": "min"}


def static_shape(expr: relax.Expr) -> Tuple[int, ...]:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise Unsupported("operand is not a tensor of known rank")
    dims = []
    for v in ty.shape.values:
        if not isinstance(v, tvm.tirx.IntImm):
            raise Unsupported(f"dynamic shape {list(ty.shape.values)}")
        dims.append(int(v))
    return tuple(dims)


def with_exprs(desc: "OpDesc", exprs: Sequence[relax.Expr]) -> "OpDesc":
    desc.exprs = list(exprs)
    return desc


def tensor_desc(expr: relax.Expr) -> TensorDesc:
    shape = static_shape(expr)
    dtype = str(expr.ty.dtype)
    const = expr.value.numpy() if isinstance(expr, Constant) and hasattr(expr.value, "numpy") else None
    return TensorDesc(shape, dtype, const)


def scalar(value: Any) -> float:
    """A Python number from an IntImm / FloatImm (both Constants in TVM 0.27) or a 1-element Constant."""
    if isinstance(value, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return float(value.value)
    if isinstance(value, Constant) and hasattr(value.value, "numpy"):
        arr = value.value.numpy()
        if arr.size != 1:
            raise Unsupported(f"expected a scalar constant, got shape {arr.shape}")
        return float(arr.reshape(()))
    raise Unsupported(f"expected a constant scalar, got {type(value).__name__}")


def ints(xs: Sequence[Any]) -> Tuple[int, ...]:
    return tuple(int(x) for x in xs)


def hard_activation(ann: Mapping[str, relax.Expr]) -> Activation:
    """hard_sigmoid / hard_swish from the annotated add (x + 3), clamp (relax.clip(., 0, 6), or
    relax.maximum(., 0) and relax.minimum(., 6) in either order) and scale (a division by 6 or a
    multiplication by 1/6, before or after the product with x), checking every constant."""
    three = _const_arg(ann["hs_add"])
    lo, hi = _clamp_bounds(ann)
    scale = ann.get("hs_div", ann.get("hs_div_b"))
    if scale.op.name == "relax.divide":
        six = scalar(scale.args[1])
        ok_scale, what = six == 6.0, f"/ {six}"
    else:
        sixth = _const_arg(scale)
        ok_scale, what = np.float32(sixth) == np.float32(1 / 6), f"* {sixth!r}"
    if (three, lo, hi) != (3.0, 0.0, 6.0) or not ok_scale:
        raise Unsupported(f"not a hard sigmoid: clip(x + {three}, {lo}, {hi}) {what}")
    return Activation("hard_swish" if ("hs_mul" in ann or "hs_mul_b" in ann) else "hard_sigmoid")


def _const_arg(call: relax.Call) -> float:
    """The scalar constant operand of a binary call (either side; exactly one is a constant)."""
    consts = [a for a in call.args[:2] if isinstance(a, Constant)]
    if len(consts) != 1:
        raise Unsupported(f"{call.op.name} without exactly one constant operand")
    return scalar(consts[0])


def _clamp_bounds(ann: Mapping[str, relax.Expr]) -> tuple[float, float]:
    """(lo, hi) of the annotated clamp: a relax.clip, or a maximum and a minimum by constants."""
    clip = ann["hs_clip"]
    if clip.op.name == "relax.clip":
        return scalar(clip.args[1]), scalar(clip.args[2])
    pair = {clip.op.name: clip, ann["hs_inner"].op.name: ann["hs_inner"]}
    if set(pair) != {"relax.maximum", "relax.minimum"}:
        raise Unsupported(f"not a clamp: {' of '.join(pair)}")
    return _const_arg(pair["relax.maximum"]), _const_arg(pair["relax.minimum"])


def hard_sources(ann: Mapping[str, relax.Expr]) -> list[str]:
    """The Relax operators a hard sigmoid / swish match covers, in dataflow order."""
    clamp = [ann["hs_inner"].op.name, ann["hs_clip"].op.name] if "hs_inner" in ann else ["relax.clip"]
    if "hs_mul_b" in ann:  # x * clamp, then the scale
        return ["relax.add"] + clamp + ["relax.multiply", ann["hs_div_b"].op.name]
    return ["relax.add"] + clamp + [ann["hs_div"].op.name] + (["relax.multiply"] if "hs_mul" in ann else [])


def prelu_slope(x: relax.Expr, alpha: relax.Expr, axis: int) -> TensorDesc:
    """The slope of relax.nn.prelu as a constant that broadcasts to x: one value per index of `axis`
    (shape [C, 1, ...] up to x's last dimension), or a single value."""
    t = tensor_desc(alpha)
    if not t.is_const:
        raise Unsupported("the PReLU slope is not a constant")
    rank = len(static_shape(x))
    axis = axis % rank
    n = int(np.prod(t.shape)) if t.shape else 1
    if n == 1:
        return TensorDesc((1,), t.dtype, t.const.reshape((1,)))
    shape = (n,) + (1,) * (rank - 1 - axis)
    return TensorDesc(shape, t.dtype, t.const.reshape(shape))


SQRT2 = float(np.sqrt(2.0))


def _close(value: float, want: float) -> bool:
    """A constant as a frontend writes it: equal to `want` within float32 precision."""
    return abs(value - want) <= 2e-7 * abs(want)


def gelu_erf_activation(ann: Mapping[str, relax.Expr]) -> Activation:
    """gelu from x * 0.5 * (1 + erf(x / sqrt(2))) as ONNX exports it, every constant checked: the
    scale of x (a division by sqrt(2) or a multiplication by 1/sqrt(2)), the 1 added to erf and the
    factor 0.5."""
    scale = ann["ge_scale"]
    c = _const_arg(scale)
    ok_scale = _close(c, SQRT2) if scale.op.name == "relax.divide" else _close(c, 1 / SQRT2)
    half_call = ann["ge_a"] if "ge_a" in ann else ann["ge_half_x"] if "ge_b" in ann else ann["ge_half_a"]
    one, half = _const_arg(ann["ge_add"]), _const_arg(half_call)
    if not ok_scale or one != 1.0 or half != 0.5:
        what = "/" if scale.op.name == "relax.divide" else "*"
        raise Unsupported(f"not a gelu: x * {half} * ({one} + erf(x {what} {c!r}))")
    return Activation("gelu")


def power_activation(call: relax.Call) -> Activation:
    """relax.power(x, constant): exponent 2 (square) or 0.5 (square root)."""
    if not isinstance(call.args[1], Constant):
        raise Unsupported("power with an exponent that is not a constant")
    e = scalar(call.args[1])
    if e == 2.0:
        return Activation("square")
    if e == 0.5:
        return Activation("sqrt")
    return Activation("power", alpha=e)  # refused by constraints.unary_ops with the exponent


def activation_of(call: relax.Call) -> Activation:
    kind = ACTIVATIONS[call.op.name]
    if kind == "clip":
        return Activation(kind, lo=scalar(call.args[1]), hi=scalar(call.args[2]))
    if kind == "leaky_relu":
        return Activation(kind, alpha=float(call.attrs.alpha))
    return Activation(kind)


def describe_float(spec, ann: Mapping[str, relax.Expr]) -> OpDesc:
    """Reads a float pattern match (role -> matched expression) into an OpDesc; raises Unsupported."""
    composite = spec.name
    root: relax.Call = ann["root"]
    op = root.op.name
    hard = "hs_add" in ann
    swish = "swish_sig" in ann  # x * sigmoid(x), either operand order
    gelu_erf = "ge_erf" in ann  # x * 0.5 * (1 + erf(x / sqrt(2)))
    gelu_sources = ([ann["ge_scale"].op.name, "relax.erf", "relax.add", "relax.multiply", "relax.multiply"]
                    if gelu_erf else [])
    if gelu_erf and root.same_as(ann["ge_scale"]):  # standalone
        x = ann["input"]
        return with_exprs(OpDesc(composite, "activation", [tensor_desc(x)], tensor_desc(ann["act"]), {},
                                 gelu_erf_activation(ann), gelu_sources), [x])
    if op in UNARY or op == "relax.power":
        act = Activation(UNARY[op]) if op in UNARY else power_activation(root)
        x = root.args[0]
        return with_exprs(OpDesc(composite, "activation", [tensor_desc(x)], tensor_desc(root), {}, act, [op]), [x])
    if op in REDUCTIONS:
        axis = root.attrs.axis
        attrs = {"axis": None if axis is None else ints(axis), "keepdims": bool(root.attrs.keepdims),
                 "op": REDUCTIONS[op]}
        x = root.args[0]
        return with_exprs(OpDesc(composite, "reduce", [tensor_desc(x)], tensor_desc(root), attrs, None, [op]), [x])
    if op == "relax.nn.layer_norm":
        return _layer_norm(composite, root)
    if "ln_div" in ann:
        return decomposed_layer_norm(composite, ann)
    if hard:
        act = hard_activation(ann)
    elif gelu_erf:
        act = gelu_erf_activation(ann)
    elif swish:
        act = Activation("silu")
    else:
        act = activation_of(ann["act"]) if "act" in ann else None
    top = ann.get("act", ann.get("bias_add", root))
    sources = [op] + (["relax.add"] if "bias_add" in ann else [])
    if hard:
        sources += hard_sources(ann)
    elif gelu_erf:
        sources += gelu_sources
    elif swish:
        sources += ["relax.sigmoid", "relax.multiply"]
    elif "act" in ann:
        sources.append(ann["act"].op.name)
    out = tensor_desc(top)
    if hard and root.same_as(ann["hs_add"]) or swish and root.same_as(ann["swish_sig"]):
        # a standalone hard sigmoid / swish / x * sigmoid(x): the root is its first operator
        sources = sources[1:]
        x = ann["input"]
        return with_exprs(OpDesc(composite, "activation", [tensor_desc(x)], out, {}, act, sources), [x])
    if op == "relax.nn.conv2d":
        a = root.attrs
        exprs = [root.args[0], root.args[1]] + ([ann["bias"]] if "bias" in ann else [])
        inputs = [tensor_desc(e) for e in exprs]
        attrs = {"strides": ints(a.strides), "padding": ints(a.padding), "dilation": ints(a.dilation),
                 "groups": int(a.groups), "data_layout": str(a.data_layout),
                 "kernel_layout": str(a.kernel_layout), "out_layout": str(a.out_layout),
                 "out_dtype": str(a.out_dtype) if a.out_dtype is not None else ""}
        return with_exprs(OpDesc(composite, "conv2d", inputs, out, attrs, act, sources), exprs)
    if op == "relax.matmul":
        exprs = [root.args[0], root.args[1]] + ([ann["bias"]] if "bias" in ann else [])
        return with_exprs(OpDesc(composite, "matmul", [tensor_desc(e) for e in exprs], out, {}, act, sources), exprs)
    if op in BINARY:
        exprs = list(root.args[:2])
        return with_exprs(OpDesc(composite, "binary", [tensor_desc(e) for e in exprs], out, {"op": BINARY[op]},
                                  None, sources), exprs)
    if op == "relax.divide" and "numerator" in ann:  # 1 / x
        num = tensor_desc(ann["numerator"])
        if not (num.is_const and num.const.size == 1 and float(num.const.reshape(())) == 1.0):
            raise Unsupported("a reciprocal whose numerator is not the constant 1")
        x = root.args[1]
        return with_exprs(OpDesc(composite, "activation", [tensor_desc(x)], out, {}, Activation("reciprocal"),
                                 sources), [x])
    if op == "relax.divide" and not isinstance(root.args[1], Constant):  # a * reciprocal(b) on the vector unit
        exprs = list(root.args[:2])
        return with_exprs(OpDesc(composite, "binary", [tensor_desc(e) for e in exprs], out, {"op": "div"}, None,
                                 sources), exprs)
    if op == "relax.divide":  # by a constant: multiply by its reciprocal
        rhs = tensor_desc(root.args[1])
        if np.any(rhs.const == 0):
            raise Unsupported("division by a constant containing zero")
        rhs = TensorDesc(rhs.shape, rhs.dtype, (1.0 / rhs.const.astype(np.float64)).astype(rhs.const.dtype))
        return with_exprs(OpDesc(composite, "binary", [tensor_desc(root.args[0]), rhs], out, {"op": "mul"}, None,
                                  sources), list(root.args[:2]))
    if op == "relax.nn.prelu":  # max(x, 0) + slope * min(x, 0) on the vector unit, the slope per channel
        x = root.args[0]
        slope = prelu_slope(x, root.args[1], int(root.attrs.axis))
        return with_exprs(OpDesc(composite, "binary", [tensor_desc(x), slope], out, {"op": "prelu"}, None, sources),
                           [x, root.args[1]])
    if op in ACTIVATIONS:
        return with_exprs(OpDesc(composite, "activation", [tensor_desc(root.args[0])], out, {}, activation_of(root),
                                  sources), [root.args[0]])
    if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        a = root.attrs
        attrs = {"mode": "max" if op.endswith("max_pool2d") else "avg", "pool_size": ints(a.pool_size),
                 "strides": ints(a.strides), "padding": ints(a.padding), "dilation": ints(a.dilation),
                 "ceil_mode": bool(a.ceil_mode), "count_include_pad": bool(a.count_include_pad),
                 "layout": str(a.layout), "out_layout": str(a.out_layout)}
        return with_exprs(OpDesc(composite, "pool", [tensor_desc(root.args[0])], out, attrs, None, sources),
                           [root.args[0]])
    if op == "relax.nn.softmax":
        return with_exprs(OpDesc(composite, "softmax", [tensor_desc(root.args[0])], out,
                                  {"axis": int(root.attrs.axis)}, None, sources), [root.args[0]])
    if op == "relax.mean":
        axis = root.attrs.axis
        attrs = {"axis": None if axis is None else ints(axis), "keepdims": bool(root.attrs.keepdims)}
        return with_exprs(OpDesc(composite, "mean", [tensor_desc(root.args[0])], out, attrs, None, sources),
                           [root.args[0]])
    if op == "relax.concat":
        fields = root.args[0]
        if not isinstance(fields, relax.Tuple):
            raise Unsupported("concat of a tuple that is not built in place")
        return with_exprs(OpDesc(composite, "concat", [tensor_desc(f) for f in fields.fields], out,
                                  {"axis": int(root.attrs.axis)}, None, sources), list(fields.fields))
    raise Unsupported(f"no NPU lowering for {op}")


def _layer_norm(composite: str, root: relax.Call) -> OpDesc:
    """relax.nn.layer_norm over the last axis with constant gamma and beta (one value per element of
    that axis)."""
    x, gamma, beta = root.args[:3]
    xs = static_shape(x)
    axes = sorted(int(a) % len(xs) for a in root.attrs.axes)
    if axes != [len(xs) - 1]:
        raise Unsupported(f"layer norm over axes {axes} of a rank-{len(xs)} tensor (the last axis only)")
    g, b = tensor_desc(gamma), tensor_desc(beta)
    if not (g.is_const and b.is_const):
        raise Unsupported("layer norm whose gamma or beta is not a constant")
    n = xs[-1]
    if g.const.size != n or b.const.size != n:
        raise Unsupported(f"gamma {list(g.shape)} / beta {list(b.shape)} not one value per element of the last "
                          f"axis ({n})")
    g = TensorDesc((n,), g.dtype, g.const.reshape((n,)) if bool(root.attrs.scale) else np.ones((n,), g.const.dtype))
    b = TensorDesc((n,), b.dtype, b.const.reshape((n,)) if bool(root.attrs.center) else np.zeros((n,), b.const.dtype))
    attrs = {"epsilon": float(root.attrs.epsilon)}
    return with_exprs(OpDesc(composite, "layer_norm", [tensor_desc(x), g, b], tensor_desc(root), attrs, None,
                             ["relax.nn.layer_norm"]), [x, gamma, beta])


def _last_axis_mean(call: relax.Call, rank: int) -> bool:
    axis = call.attrs.axis
    return axis is not None and [int(a) % rank for a in axis] == [rank - 1] and bool(call.attrs.keepdims)


def _per_last(expr: relax.Expr, n: int, what: str) -> np.ndarray:
    """A constant with one value per element of the last axis (or one value), as an (n,) vector."""
    t = tensor_desc(expr)
    if t.const.size == 1:
        return np.full((n,), t.const.reshape(()), t.const.dtype)
    if t.const.size != n or any(d != 1 for d in t.shape[:-1]) or t.shape[-1] != n:
        raise Unsupported(f"{what} {list(t.shape)} is not one value per element of the last axis ({n})")
    return t.const.reshape((n,))


def decomposed_layer_norm(composite: str, ann: Mapping[str, relax.Expr]) -> OpDesc:
    """Layer norm from mean, x - mean, square, mean, + eps, sqrt, divide (* gamma, + beta): both means
    over the last axis keeping it, the square a power 2 (or d * d), eps a scalar, gamma and beta one
    value per element of the last axis."""
    x = ann["input"]
    xs = static_shape(x)
    rank, n = len(xs), xs[-1]
    if not (_last_axis_mean(ann["ln_mean"], rank) and _last_axis_mean(ann["ln_var"], rank)):
        raise Unsupported("not a layer norm: the means are not over the last axis (kept)")
    sq = ann["ln_sq"]
    if sq.op.name == "relax.power" and scalar(sq.args[1]) != 2.0:
        raise Unsupported(f"not a layer norm: power {scalar(sq.args[1])} of x - mean")
    eps = _const_arg(ann["ln_eps"])
    gamma = _per_last(_const_of(ann["ln_gamma"]), n, "gamma") if "ln_gamma" in ann else np.ones((n,), np.float32)
    beta = _per_last(_const_of(ann["ln_beta"]), n, "beta") if "ln_beta" in ann else np.zeros((n,), np.float32)
    sources = ["relax.mean", "relax.subtract", sq.op.name, "relax.mean", "relax.add", "relax.sqrt", "relax.divide"]
    sources += (["relax.multiply"] if "ln_gamma" in ann else []) + (["relax.add"] if "ln_beta" in ann else [])
    out = tensor_desc(ann["act"])
    return with_exprs(OpDesc(composite, "layer_norm", [tensor_desc(x), TensorDesc((n,), "float32", gamma),
                                                       TensorDesc((n,), "float32", beta)], out,
                             {"epsilon": float(eps)}, None, sources),
                      [x] + [_const_of(ann[k]) if k in ann else x for k in ("ln_gamma", "ln_beta")])


def _const_of(call: relax.Call) -> relax.Expr:
    """The constant operand of a binary call (exactly one)."""
    consts = [a for a in call.args[:2] if isinstance(a, Constant)]
    if len(consts) != 1:
        raise Unsupported(f"{call.op.name} without exactly one constant operand")
    return consts[0]
