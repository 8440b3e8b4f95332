"""What TVM's ONNX importer makes of a QDQ model: its quantised op sequences, weights and problems (ir_catalogue)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np


def _const_array(e) -> Optional[np.ndarray]:
    import tvm

    if not isinstance(e, tvm.ir.expr.Constant):
        return None
    v = e.value
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def _name(v) -> str:
    return getattr(v, "name_hint", None) or str(v.name)


def _fmt_num(v: float) -> str:
    return f"{v:.6g}"


def ir_catalogue(mod, func: str = "main", values: bool = True) -> Dict[str, Any]:
    """The quantised structure of an imported Relax function, grouped by op sequence.

    Every `quantize` and every function output is traced back through float operators until the
    leaves: `DQ(act<-op)` (dequantize of an int8 tensor made by a quantize of `op`'s result),
    `DQ(input)`, `DQ(w ...)`
    (dequantize of an int8/int32 constant, with its scale shape, zero points and axis), float
    constants and the graph input. Each distinct tree (operator names and a few attributes; no
    shapes) is one "sequence". Also checks that every DQ(act) uses the same scale and zero point as
    the quantize feeding it, and that every scale / zero point is a constant. With values=False,
    scalar constants outside dequantize show as `c:<dtype>` (groups folded scalars together).

    Returns {"sequences": {signature: {"count": n, "example": [bound variable names]}},
    "weights": [...per constant DQ...], "problems": [...], "ops": {op: count}}.
    """
    import tvm
    from tvm import relax

    f = mod[func]
    params = {_name(p) for p in f.params}
    bind: Dict[Any, Any] = {}
    order: List[Any] = []
    for block in f.body.blocks:
        for b in block.bindings:
            bind[b.var] = b.value
            order.append(b.var)

    def opname(call) -> str:
        return call.op.name.replace("relax.", "") if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else ""

    problems: List[str] = []
    weights: List[Dict[str, Any]] = []

    def qparams(call) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        s, z = _const_array(call.args[1]), _const_array(call.args[2])
        if s is None or z is None:
            problems.append(f"non-constant scale/zero point in {opname(call)}")
        return s, z

    def leaf_dq(var, call, used: List[Any]) -> str:
        src = call.args[0]
        axis = int(call.attrs.axis)
        s, z = qparams(call)
        arr = _const_array(src)
        if arr is not None:
            pc = s is not None and s.size > 1
            zdesc = "0" if z is not None and not np.any(z) else "nonzero"
            weights.append({"var": _name(var), "dtype": str(arr.dtype), "shape": list(arr.shape),
                            "scale_shape": list(s.shape) if s is not None else None,
                            "zp_dtype": str(z.dtype) if z is not None else None, "zp_zero": zdesc == "0",
                            "axis": axis, "per_channel": pc})
            if pc:
                gran = f"per-channel axis={axis}"
            elif s is not None and s.ndim == 1:
                gran = f"scale[1] axis={axis}"
            else:
                gran = "per-tensor"
            return f"DQ(const {arr.dtype}[{arr.ndim}d], {gran}, zp {z.dtype if z is not None else '?'} {zdesc})"
        if isinstance(src, relax.Var) and src in bind and opname(bind[src]) == "quantize":
            qs, qz = qparams(bind[src])
            if s is not None and qs is not None and (not np.array_equal(s, qs) or not np.array_equal(z, qz)):
                problems.append(f"{_name(var)}: dequantize params differ from the quantize feeding it")
            top = bind[src].args[0]
            if isinstance(top, relax.Var) and top in bind:
                val = bind[top]
                if isinstance(val, relax.TupleGetItem):
                    tv = val.tuple_value
                    top = f"{opname(bind[tv]) if tv in bind else '?'}[{val.index}]"
                else:
                    top = opname(val)
            else:
                top = "input"
            return f"DQ(act<-{top})"
        if isinstance(src, relax.Var) and _name(src) in params:
            return "DQ(input)"
        return f"DQ({describe(src, used)})"

    def attrs_of(call, op: str) -> str:
        a = call.attrs
        if op == "nn.conv2d" or op == "nn.conv2d_transpose":
            groups = int(a.groups)
            cin = int(call.args[0].ty.shape.values[1]) if str(a.data_layout) == "NCHW" else -1
            return "" if groups == 1 else ("[dw]" if groups == cin else f"[g={groups}]")
        if op == "clip":
            def num(x):
                v = getattr(x, "value", x)
                v = getattr(v, "value", v)
                return _fmt_num(float(v)) if isinstance(v, (int, float)) else str(x)
            return f"[{num(call.args[1])},{num(call.args[2])}]"
        if op == "image.resize2d":
            return f"[{a.method},{a.coordinate_transformation_mode},{a.rounding_method}]"
        return ""

    def describe(e, used: List[Any]) -> str:
        if isinstance(e, relax.Var) and e in bind:
            call = bind[e]
            op = opname(call)
            if op == "dequantize":
                used.append(e)
                return leaf_dq(e, call, used)
            if op == "quantize":
                return "Q(...)"  # only reached from outputs
            if isinstance(call, relax.TupleGetItem):
                used.append(e)
                return f"{describe(call.tuple_value, used)}[{call.index}]"
            if not op:
                return type(call).__name__
            used.append(e)
            args = [describe(a, used) for a in call.args[:1 if op == "clip" else None] if not isinstance(a, relax.ShapeExpr)]
            return f"{op}{attrs_of(call, op)}({', '.join(args)})"
        if isinstance(e, relax.Var):
            return "input" if _name(e) in params else _name(e)
        arr = _const_array(e)
        if arr is not None:
            if arr.size == 1:
                return _fmt_num(float(arr.reshape(-1)[0])) if values else f"c:{arr.dtype}"
            return f"const {arr.dtype}[{arr.ndim}d]"
        if isinstance(e, relax.Tuple):
            return "(" + ", ".join(describe(x, used) for x in e.fields) + ")"
        if isinstance(e, relax.TupleGetItem):
            return f"{describe(e.tuple_value, used)}[{e.index}]"
        return str(e) if len(str(e)) < 40 else type(e).__name__

    seqs: Dict[str, Dict[str, Any]] = {}

    def add(sig: str, used: List[Any]):
        d = seqs.setdefault(sig, {"count": 0, "example": [_name(v) for v in reversed(used)]})
        d["count"] += 1

    for v in order:
        call = bind[v]
        if opname(call) == "quantize":
            qparams(call)
            used = [v]
            src = call.args[0]
            inner = "input" if isinstance(src, relax.Var) and _name(src) in params else describe(src, used)
            add(f"Q({inner})", used)
    outs = f.body.body
    outs = list(outs.fields) if isinstance(outs, relax.Tuple) else [outs]
    for o in outs:
        used: List[Any] = []
        add(f"output <- {describe(o, used)}", used)
    ops: Dict[str, int] = {}
    for v in order:
        op = opname(bind[v])
        if op:
            ops[op] = ops.get(op, 0) + 1
    return {"sequences": seqs, "weights": weights, "problems": problems, "ops": ops}
