"""Quantised patterns: the QDQ form TVM's frontends produce for int8 TFLite and ONNX QDQ models,
folded into integer NPU composites.

TFLite CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED and ONNX QDQ Conv / MatMul / Gemm import as::

    dequantize(x, s_in, zp_in) -> conv2d | matmul (dequantize(W int8 const [reshaped | transposed]))
        [-> add(dequantize(bias int32 const) [reshaped])] -> quantize(s_out, zp_out) [-> clip(lo, hi)]

These patterns are matched *before* FoldConstant, which would otherwise turn the int8 weights into
float constants (docs/design/quantized_import.md). Every scale decision (multipliers, shifts, zero
points, clamps) is made by `tvm_npu.quant`; this module only reads the matched constants.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

from .. import quant as Q
from ..ir.desc import OpDesc, TensorDesc, Unsupported
from ..ir.quant import ConcatQuant, LutQuant, MeanQuant, PoolQuant, quant_record
from ..ir.registry import OpSpec
from .ops import Constant, ints, tensor_desc, with_exprs


def _dq(x):
    return is_op("relax.dequantize")(x, wildcard(), wildcard())


def _qmac(op: str, bias: bool, clip: bool):
    x = wildcard()
    dq_x = _dq(x)
    w = is_const()
    dq_w = _dq(w)
    ann = {"input": x, "dq_input": dq_x, "weight": w, "dq_weight": dq_w}
    if op == "relax.matmul":  # TFLite FC: transpose on int8, then dequantize; ONNX: dequantize only
        dq_wt = _dq(is_op("relax.permute_dims")(w))
        ann["dq_weight_t"] = dq_wt
        wv = dq_w | dq_wt | is_op("relax.permute_dims")(dq_w)
    else:  # depthwise: reshape after dequantize
        wv = dq_w | is_op("relax.reshape")(dq_w, wildcard())
    root = is_op(op)(dq_x, wv)
    ann["root"] = root
    out = root
    if bias:
        b = is_const()
        dq_b = _dq(b)
        bv = dq_b | is_op("relax.reshape")(dq_b, wildcard())
        out = is_op("relax.add")(out, bv) | is_op("relax.add")(bv, out)
        ann.update(bias=b, dq_bias=dq_b, bias_add=out)
    q = is_op("relax.quantize")(out, wildcard(), wildcard())
    ann["quantize"] = q
    top = q
    if clip:
        top = is_op("relax.clip")(q, wildcard(), wildcard())
        ann["clip"] = top
    return top, ann


def _spec(name: str, pattern, ann, kind: str, describe, region: bool = True, **params) -> OpSpec:
    return OpSpec(name, kind, f"integer {kind}", pattern, ann, describe, integer=True, quantised_region=region,
                  params=params)


def table():
    """The integer composites as OpSpecs, increasing priority."""
    out = []
    for op, short in (("relax.matmul", "qmatmul"), ("relax.nn.conv2d", "qconv2d")):
        kind = "matmul" if op == "relax.matmul" else "conv2d"
        for bias in (False, True):
            for clip in (False, True):
                name = f"npu.{short}{'_bias' if bias else ''}{'_clip' if clip else ''}"
                out.append(_spec(name, *_qmac(op, bias, clip), kind, describe_qmac))
    return vector_table() + out


def _const(e, what: str) -> np.ndarray:
    if not isinstance(e, Constant):
        raise Unsupported(f"{what} is not a constant")
    return e.value.numpy()


def _qparams(call: relax.Call, what: str) -> Q.QParams:
    """QParams of a quantize/dequantize call (scale and zero point are constant operands)."""
    scale = _const(call.args[1], f"{what} scale").astype(np.float32).reshape(-1)
    zp = _const(call.args[2], f"{what} zero point").astype(np.int64).reshape(-1)
    dtype = str(call.args[0].ty.dtype) if call.op.name == "relax.dequantize" else str(call.attrs.out_dtype)
    if scale.size == 1:
        return Q.QParams.per_tensor(float(scale[0]), int(zp[0]), dtype)
    return Q.QParams.per_channel(scale, zp if zp.size > 1 else int(zp[0]), int(call.attrs.axis), dtype)


def _refusing(describe):
    """tvm_npu.quant refuses parameters TFLite's kernels cannot represent with a ValueError: a reason."""
    def run(spec: OpSpec, ann: Mapping[str, relax.Expr]) -> OpDesc:
        try:
            return describe(spec, ann)
        except ValueError as e:
            raise Unsupported(str(e)) from e
    run.__name__ = describe.__name__
    return run


@_refusing
def describe_qmac(spec: OpSpec, ann: Mapping[str, relax.Expr]) -> OpDesc:
    """Integer conv2d / depthwise / fully connected (matmul)."""
    composite = spec.name
    root: relax.Call = ann["root"]
    q: relax.Call = ann["quantize"]
    inp = _qparams(ann["dq_input"], "input")
    wq = _qparams(ann["dq_weight"] if "dq_weight" in ann else ann["dq_weight_t"], "weight")
    out_q = _qparams(q, "output")
    for p, what in ((inp, "input"), (out_q, "output")):
        if p.dtype != "int8":
            raise Unsupported(f"{what} dtype {p.dtype}: the integer path takes int8 activations")
        if not p.is_per_tensor:
            raise Unsupported(f"per-channel {what} quantisation")
    w_int = _const(ann["weight"], "weight")
    if w_int.dtype != np.int8:
        raise Unsupported(f"weight dtype {w_int.dtype} (int8 weights only)")
    w_float_ty = root.args[1].ty  # the shape the float op sees (after reshape / transpose)
    w_shape = tuple(int(v) for v in w_float_ty.shape.values)
    bias = None
    if "bias" in ann:
        bias = _const(ann["bias"], "bias")
        if bias.dtype != np.int32:
            raise Unsupported(f"bias dtype {bias.dtype} (int32 biases only)")
        dq_b = ann["dq_bias"]
        b_scale = _const(dq_b.args[1], "bias scale").astype(np.float64).reshape(-1)
        b_zp = _const(dq_b.args[2], "bias zero point").reshape(-1)
        expect = float(inp.s) * wq.scale.astype(np.float64)
        if np.any(np.abs(b_scale - expect) > 1e-6 * np.abs(expect) + 1e-12) or np.any(b_zp != 0):
            raise Unsupported("bias scale is not input scale x weight scale (or its zero point is not 0)")
        bias = bias.reshape(-1)
    lo, hi = out_q.qmin, out_q.qmax
    if "clip" in ann:
        c = ann["clip"]
        lo, hi = max(lo, int(np.ceil(_prim(c.args[1])))), min(hi, int(np.floor(_prim(c.args[2]))))
    x_desc = tensor_desc(ann["input"])
    out = tensor_desc(ann.get("clip", q))
    sources = ["relax.dequantize", root.op.name] + (["relax.add"] if bias is not None else []) + ["relax.quantize"] + (
        ["relax.clip"] if "clip" in ann else [])
    if root.op.name == "relax.nn.conv2d":
        a = root.attrs
        kl = str(a.kernel_layout)
        # the int8 constant as the float op sees it: the same element order, reshaped (TFLite depthwise)
        if w_int.size != int(np.prod(w_shape)):
            raise Unsupported(f"quantised conv weight {list(w_int.shape)} does not reshape to {list(w_shape)}")
        w = w_int.reshape(w_shape)  # TFLite depthwise: [1, KH, KW, C] read as HWOI, same element order
        cout = int(tensor_desc(root).shape[str(a.data_layout).index("C")])
        groups = int(a.groups)
        cq = Q.depthwise_conv2d_quant if groups > 1 else Q.conv2d_quant
        quant = cq(inp, _channel_params(wq, cout), out_q, bias=bias, channels=cout)
        if not tflite_semantics(q):
            quant = Q.float_rounding(quant, inp, _channel_params(wq, cout), out_q)
        attrs = {"strides": ints(a.strides), "padding": ints(a.padding), "dilation": ints(a.dilation),
                 "groups": groups, "data_layout": str(a.data_layout), "kernel_layout": kl,
                 "out_layout": str(a.out_layout), "out_dtype": "int32"}
        kind = "conv2d"
    else:
        # TFLite FC stores W [N, K] and transposes it (before or after dequantize); ONNX stores [K, N]
        w = w_int if w_int.shape == w_shape or w_int.ndim != 2 else w_int.T
        if w.shape != w_shape:
            raise Unsupported(f"quantised matmul weight {list(w.shape)} vs {list(w_shape)}")
        cout = w_shape[-1]
        # LiteRT's reference FULLY_CONNECTED rounds double(acc) * scale half away from zero, which a
        # (multiplier, shift) pair reproduces for most scales only (quant.fully_connected_exact_quant)
        if tflite_semantics(q):
            quant = Q.fully_connected_exact_quant(inp, _channel_params(wq, cout), out_q, bias=bias, channels=cout)
        else:  # ONNX QDQ: float semantics, one rounding
            quant = Q.float_rounding(Q.fully_connected_quant(inp, _channel_params(wq, cout), out_q, bias=bias,
                                                             channels=cout), inp, _channel_params(wq, cout), out_q)
        if not quant.exact:
            bad = [int(c) for c in np.flatnonzero(~quant.exact_channels)][:4]
            raise Unsupported(f"no requantisation multiplier reproduces the reference FULLY_CONNECTED rounding for "
                              f"output channel(s) {bad}: kept on the CPU")
        attrs = {}
        kind = "matmul"
    quant = _with_clamp(quant, lo, hi)
    inputs = [x_desc, TensorDesc(w.shape, "int8", w)] + ([TensorDesc(bias.shape, "int32", bias)] if bias is not None
                                                          else [])
    exprs = [ann["input"], ann["weight"]] + ([ann["bias"]] if bias is not None else [])
    return with_exprs(OpDesc(composite, kind, inputs, TensorDesc(out.shape, "int8"), attrs, None, sources,
                              quant=quant), exprs)


def _prim(v) -> float:
    """A clip bound: a relax PrimValue holding an IntImm/FloatImm."""
    x = getattr(v, "value", v)
    return float(getattr(x, "value", x))


def tflite_semantics(quantize: relax.Call) -> bool:
    """Which arithmetic the quantised graph means. TVM's TFLite frontend gives zero points as int32
    constants (TFLite stores them as int64); ONNX QuantizeLinear's zero point has the quantised type
    (int8). An int8 TFLite model means LiteRT's reference kernels (fixed point, TFLite's multipliers);
    an ONNX QDQ graph means float arithmetic with one rounding per quantize."""
    return str(quantize.args[2].ty.dtype) == "int32"


def _channel_params(wq: Q.QParams, cout: int) -> Q.QParams:
    if wq.scale.size not in (1, cout):
        raise Unsupported(f"{wq.scale.size} weight scales for {cout} output channels")
    return wq


def _with_clamp(q: Q.ConvQuant, lo: int, hi: int) -> Q.ConvQuant:
    import dataclasses
    return dataclasses.replace(q, act_min=max(q.act_min, lo), act_max=min(q.act_max, hi))


# ---- vector-unit integer composites --------------------------------------------------------------

_QBIN = {"relax.add": "add", "relax.subtract": "sub", "relax.multiply": "mul"}


def vector_table():
    """Integer vector composites (increasing priority): table lookups (relay_ext/lut.py rewrites
    quantised functions of one tensor into `take`), binary ops, pools, concat, mean."""
    out = []
    x, t, c = wildcard(), is_const(), is_const()
    cast = is_op("relax.astype")(x)
    idx = is_op("relax.add")(cast, c)
    root = is_op("relax.take")(t, idx)
    out.append(_spec("npu.qlut", root, {"root": root, "input": x, "table": t, "offset": c, "cast": cast}, "qlut",
                     describe_qvector))
    for op, short in _QBIN.items():
        for relu in (False, True):
            for clip in (False, True):
                a, b = wildcard(), wildcard()
                da, db = _dq(a), _dq(b)
                r = is_op(op)(da, db)
                ann = {"root": r, "lhs": a, "rhs": b, "dq_lhs": da, "dq_rhs": db}
                top = is_op("relax.nn.relu")(r) if relu else r
                if relu:
                    ann["relu"] = top
                q = is_op("relax.quantize")(top, wildcard(), wildcard())
                ann["quantize"] = q
                if clip:
                    q = is_op("relax.clip")(q, wildcard(), wildcard())
                    ann["clip"] = q
                out.append(_spec(f"npu.q{short}{'_relu' if relu else ''}{'_clip' if clip else ''}", q, ann, "qbinary",
                                 describe_qvector))
    for mode in ("max", "avg"):
        x = wildcard()
        dx = _dq(x)
        p = is_op(f"relax.nn.{mode}_pool2d")(dx)
        q = is_op("relax.quantize")(p, wildcard(), wildcard())
        out.append(_spec(f"npu.q{mode}_pool2d", q, {"root": p, "input": x, "dq_input": dx, "quantize": q}, "qpool",
                         describe_qvector, mode=mode))
    x = wildcard()  # TFLite AVERAGE_POOL_2D: on the raw integers
    p = is_op("relax.nn.avg_pool2d")(is_op("relax.astype")(x))
    root = is_op("relax.astype")(p)
    out.append(_spec("npu.qavg_pool2d_int", root, {"root": p, "input": x, "cast": root}, "qpool", describe_qvector,
                     region=False, mode="avg", raw=True))
    x = wildcard()  # TFLite MAX_POOL_2D: directly on int8
    p = is_op("relax.nn.max_pool2d")(x)
    out.append(_spec("npu.qmax_pool2d_int", p, {"root": p, "input": x}, "qpool", describe_qvector, region=False,
                     mode="max", raw=True))
    x = wildcard()
    dx = _dq(x)
    m = is_op("relax.mean")(dx)
    q = is_op("relax.quantize")(m, wildcard(), wildcard())
    out.append(_spec("npu.qmean", q, {"root": m, "input": x, "dq_input": dx, "quantize": q}, "qmean",
                     describe_qvector))
    for n in (2, 3, 4, 5, 6):
        ins = [wildcard() for _ in range(n)]
        dqs = [_dq(i) for i in ins]
        cat = is_op("relax.concat")(is_tuple(dqs))
        q = is_op("relax.quantize")(cat, wildcard(), wildcard())
        ann = {"root": cat, "quantize": q, **{f"in{i}": v for i, v in enumerate(ins)},
               **{f"dq{i}": v for i, v in enumerate(dqs)}}
        out.append(_spec(f"npu.qconcat{n}", q, ann, "qconcat", describe_qvector, arity=n))
    return out


def _int8_desc(e) -> TensorDesc:
    d = tensor_desc(e)
    if d.dtype != "int8":
        raise Unsupported(f"operand dtype {d.dtype} (int8 only)")
    return d


@_refusing
def describe_qvector(spec: OpSpec, ann: Mapping[str, relax.Expr]) -> OpDesc:
    """Integer vector-unit composites: table lookups, binary ops, pools, mean, concat."""
    root: relax.Call = ann["root"]
    composite = spec.name
    if spec.kind == "qlut":
        table = _const(ann["table"], "table")
        off = _const(ann["offset"], "offset").reshape(-1)
        if table.dtype != np.int8 or table.shape != (256,) or off.size != 1 or int(off[0]) != 128:
            raise Unsupported("a take() that is not a 256-entry int8 table lookup")
        if str(ann["cast"].attrs.dtype) != "int32":
            raise Unsupported("table index is not the int32 cast of the int8 input")
        x = _int8_desc(ann["input"])
        return with_exprs(OpDesc(composite, "qlut", [x], TensorDesc(x.shape, "int8"), {}, None,
                                 ["relax.astype", "relax.add", "relax.take"], quant=LutQuant(table)),
                           [ann["input"]])
    if spec.kind == "qbinary":
        op = _QBIN[root.op.name]
        qa, qb = _qparams(ann["dq_lhs"], "lhs"), _qparams(ann["dq_rhs"], "rhs")
        out_q = _qparams(ann["quantize"], "output")
        for p, what in ((qa, "lhs"), (qb, "rhs"), (out_q, "output")):
            if not p.is_per_tensor or p.dtype != "int8":
                raise Unsupported(f"{what} is not per-tensor int8")
        fields = {"add": Q.add_quant, "sub": Q.sub_quant, "mul": Q.mul_quant}[op](
            qa, qb, out_q, "RELU" if "relu" in ann else "NONE")
        if op == "mul" and not tflite_semantics(ann["quantize"]):
            fields = Q.mul_float_rounding(fields, qa, qb, out_q)
        if "clip" in ann:
            c = ann["clip"]
            fields = dict(fields, act_min=max(fields["act_min"], int(np.ceil(_prim(c.args[1])))),
                          act_max=min(fields["act_max"], int(np.floor(_prim(c.args[2])))))
        a, b = _int8_desc(ann["lhs"]), _int8_desc(ann["rhs"])
        top = ann.get("clip", ann["quantize"])
        srcs = ["relax.dequantize", root.op.name] + (["relax.nn.relu"] if "relu" in ann else []) + ["relax.quantize"]
        return with_exprs(OpDesc(composite, "qbinary", [a, b], TensorDesc(tensor_desc(top).shape, "int8"),
                                 {"op": op}, None, srcs, quant=quant_record("qbinary", 2, fields)),
                          [ann["lhs"], ann["rhs"]])
    if spec.kind == "qpool":
        a = root.attrs
        attrs = {"mode": spec.params["mode"], "pool_size": ints(a.pool_size),
                 "strides": ints(a.strides), "padding": ints(a.padding), "dilation": ints(a.dilation),
                 "ceil_mode": bool(a.ceil_mode), "count_include_pad": bool(a.count_include_pad),
                 "layout": str(a.layout), "out_layout": str(a.out_layout)}
        x = _int8_desc(ann["input"])
        if spec.params.get("raw"):  # TFLite: raw integers, in/out parameters equal by construction
            if "cast" in ann and str(ann["cast"].attrs.dtype) != "int8":
                raise Unsupported("average pool result not cast back to int8")
            fields = PoolQuant(-128, 127)
            out_shape = tensor_desc(ann.get("cast", root)).shape
            srcs = (["relax.astype", root.op.name, "relax.astype"] if "cast" in ann else [root.op.name])
        else:
            try:
                fields = quant_record("qpool", 1, Q.pool_quant(_qparams(ann["dq_input"], "input"),
                                                                _qparams(ann["quantize"], "output"), mode=attrs["mode"]))
            except ValueError as e:
                raise Unsupported(str(e)) from e
            out_shape = tensor_desc(ann["quantize"]).shape
            srcs = ["relax.dequantize", root.op.name, "relax.quantize"]
        if attrs["count_include_pad"] and attrs["mode"] == "avg" and any(attrs["padding"]):
            raise Unsupported("average pooling that counts padding (the NPU averages in-bounds taps)")
        return with_exprs(OpDesc(composite, "qpool", [x], TensorDesc(out_shape, "int8"), attrs, None, srcs,
                                  quant=fields), [ann["input"]])
    if spec.kind == "qmean":
        axis = root.attrs.axis
        attrs = {"axis": None if axis is None else ints(axis), "keepdims": bool(root.attrs.keepdims)}
        x = _int8_desc(ann["input"])
        quant = MeanQuant(_qparams(ann["dq_input"], "input"), _qparams(ann["quantize"], "output"),
                          "tflite" if tflite_semantics(ann["quantize"]) else "float")
        return with_exprs(OpDesc(composite, "qmean", [x], TensorDesc(tensor_desc(ann["quantize"]).shape, "int8"),
                                  attrs, None, ["relax.dequantize", "relax.mean", "relax.quantize"], quant=quant),
                           [ann["input"]])
    if spec.kind == "qconcat":
        n = spec.params["arity"]
        ins = [ann[f"in{i}"] for i in range(n)]
        qs = [_qparams(ann[f"dq{i}"], f"input {i}") for i in range(n)]
        out_q = _qparams(ann["quantize"], "output")
        try:
            tables = Q.concat_quant(qs, out_q)
        except ValueError as e:
            raise Unsupported(str(e)) from e
        return with_exprs(OpDesc(composite, "qconcat", [_int8_desc(i) for i in ins],
                                  TensorDesc(tensor_desc(ann["quantize"]).shape, "int8"), {"axis": int(root.attrs.axis)},
                                  None, ["relax.dequantize", "relax.concat", "relax.quantize"],
                                 quant=ConcatQuant(tuple(tables))), ins)
    raise Unsupported(f"no integer lowering for {composite}")
