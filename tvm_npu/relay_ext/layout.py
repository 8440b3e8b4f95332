"""Layout operators as NPU composites: reshape (and squeeze, expand_dims), transpose (permute_dims)
and strided slice, done by the DMA alone (tir_schedules/layout.py), so that they stop splitting NPU
regions. Their patterns, descriptions and can-run rules; relay_ext/patterns.py registers them with
the rest of the table."""

from __future__ import annotations

from typing import List, Mapping, Optional

from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import layout_geom
from ..ir.registry import OpSpec
from ..options import CompileOptions
from .ops import tensor_desc, with_exprs

LAYOUT_DTYPES = ("float32", "float16", "int8", "int16")

# relax op -> (composite short name, layout op)
OPS = {"relax.reshape": ("reshape", "reshape"), "relax.squeeze": ("squeeze", "reshape"),
       "relax.expand_dims": ("expand_dims", "reshape"), "relax.permute_dims": ("transpose", "permute"),
       "relax.strided_slice": ("strided_slice", "slice"), "relax.broadcast_to": ("broadcast_to", "broadcast")}


def _ints(expr) -> List[int]:
    """The integers of a constant tuple (strided_slice's axes, begin, end and strides: a Tuple of IntImms)."""
    items = getattr(expr, "fields", expr)
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise Unsupported(f"expected a constant tuple, got {type(expr).__name__}")
    out = []
    for v in items:
        v = getattr(v, "value", v)  # a PrimValue wraps its IntImm
        v = getattr(v, "value", v)
        if not isinstance(v, int):
            raise Unsupported(f"a non-constant index {v}")
        out.append(int(v))
    return out


def _slice_attrs(call: relax.Call, shape) -> dict:
    rank = len(shape)
    begin, steps = [0] * rank, [1] * rank
    args = list(call.args)
    axes, starts = _ints(args[1]), _ints(args[2])
    strides = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(axes)
    if not len(axes) == len(starts) == len(strides):
        raise Unsupported("strided_slice with axes, begin and strides of different lengths")
    for ax, b, s in zip(axes, starts, strides):
        ax %= rank
        if s < 1:
            raise Unsupported(f"strided_slice with step {s} (positive steps only)")
        dim = shape[ax]
        b = b + dim if b < 0 else b
        begin[ax], steps[ax] = min(max(b, 0), dim), s
    return {"op": "slice", "begin": tuple(begin), "steps": tuple(steps)}


def describe_layout(spec: OpSpec, ann: Mapping[str, relax.Expr]) -> OpDesc:
    root: relax.Call = ann["root"]
    op = root.op.name
    x = root.args[0]
    inp, out = tensor_desc(x), tensor_desc(root)
    kind = OPS[op][1]
    if kind in ("reshape", "broadcast"):
        attrs = {"op": kind}
    elif kind == "permute":
        axes = root.attrs.axes
        perm = tuple(range(len(inp.shape)))[::-1] if axes is None else tuple(int(a) for a in axes)
        attrs = {"op": "permute", "axes": tuple(a % len(inp.shape) for a in perm)}
    else:
        attrs = _slice_attrs(root, inp.shape)
    return with_exprs(OpDesc(spec.name, "layout", [inp], out, attrs, None, [op]), [x])


def table(prefix: str) -> List[OpSpec]:
    specs = []
    for op, (short, _) in OPS.items():
        x = wildcard()
        if op == "relax.strided_slice":
            root = (is_op(op)(x, wildcard(), wildcard(), wildcard(), wildcard())
                    | is_op(op)(x, wildcard(), wildcard(), wildcard()))
        elif op in ("relax.reshape", "relax.broadcast_to"):
            root = is_op(op)(x, wildcard())
        else:
            root = is_op(op)(x)
        specs.append(OpSpec(f"{prefix}.{short}", "layout", "layout", root, {"root": root, "input": x},
                            describe_layout))
    return specs


# ---- can-run rules (their docstrings are the rows of docs/SUPPORTED_OPS.md) ---------------------

def layout_dtypes(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Data movement of float32/float16 (stored as fp16), int8 or int16 tensors, the same dtype in and out."""
    if d.inputs[0].dtype not in LAYOUT_DTYPES or d.output.dtype != d.inputs[0].dtype:
        return f"dtype {d.inputs[0].dtype} -> {d.output.dtype}"
    if d.inputs[0].is_const:
        return "the input is a constant (folded at compile time instead)"
    return None


def layout_params(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """reshape / squeeze / expand_dims of any rank up to 4 on either side; transpose and strided slice
    (positive steps) of tensors of rank up to 4; broadcast_to of the same rank (up to 4), each dim kept
    or repeated from 1 (stride-0 DMA reads: nearest-neighbour upsampling)."""
    try:
        layout_geom(d)
    except Unsupported as e:
        return str(e)
    return None
