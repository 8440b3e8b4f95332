"""A small int8 TFLite flatbuffer writer (no TensorFlow) and the LiteRT reference runner.

Models are written with the ``tflite`` package's generated flatbuffer builder functions (the
``Start`` / ``Add*`` / ``End`` functions live in the *modules* ``tflite.<Table>``) and run with
``ai_edge_litert``'s interpreter on ``OpResolverType.BUILTIN_REF``, the reference kernels the NPU's
integer path must match byte for byte (docs/design/quantized_import.md).

Single-op and chained models::

    b = ModelBuilder(seed=0)                       # weights not given are drawn from this seed
    x = b.add_input("x", (1, 8, 8, 3), QParams.per_tensor(0.05, -3))
    y = b.conv2d(x, out_channels=4, kernel=3, out_q=QParams.per_tensor(0.1, 5), activation="RELU")
    y = b.average_pool2d(y, 2, stride=2, padding="VALID")
    b.mark_output(y)
    buf = b.finish()
    (out,) = run_reference(buf, [x_int8])

``b.data(t)`` / ``b.qparams(t)`` / ``b.shape(t)`` give back what went into a tensor (weights in TFLite
layout: CONV_2D ``[O, KH, KW, I]``, DEPTHWISE_CONV_2D ``[1, KH, KW, C*M]``, FULLY_CONNECTED ``[N, K]``;
int32 biases). Everything random comes from ``numpy.random.default_rng(seed)``, so a seed fixes the model.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..quant import QParams, conv_output_size

__all__ = ["ModelBuilder", "run_reference", "rand_qparams", "rand_weight_qparams", "rand_int8", "ACTIVATIONS"]

ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4, "SIGN_BIT": 5}
_TENSOR_TYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "int16": 7, "int8": 9}
_PADDING = {"SAME": 0, "VALID": 1}


def _mod(name: str):
    return importlib.import_module(f"tflite.{name}")


def _builtin_code(op: str) -> int:
    code = getattr(_mod("BuiltinOperator").BuiltinOperator, op, None)
    if code is None:
        raise ValueError(f"unknown TFLite builtin operator {op!r}")
    return int(code)


def _act(activation: Union[None, str, int]) -> int:
    if activation is None:
        return 0
    if isinstance(activation, (int, np.integer)):
        return int(activation)
    return ACTIVATIONS[str(activation).upper()]


# ---- random parameters -------------------------------------------------------------------------


def rand_int8(rng: np.random.Generator, shape, lo: int = -128, hi: int = 127) -> np.ndarray:
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int8)


def rand_qparams(rng: np.random.Generator, scale_range: Tuple[float, float] = (0.005, 0.2),
                 zp_range: Tuple[int, int] = (-128, 127), dtype: str = "int8") -> QParams:
    """A per-tensor QParams with a log-uniform scale and a uniform zero point."""
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    scale = float(np.exp(rng.uniform(lo, hi)))
    zp = int(rng.integers(zp_range[0], zp_range[1], endpoint=True)) if dtype == "int8" else 0
    return QParams.per_tensor(scale, zp, dtype)


def rand_weight_qparams(rng: np.random.Generator, channels: int, per_channel: bool = True, axis: int = 0,
                        scale_range: Tuple[float, float] = (0.002, 0.05)) -> QParams:
    """Symmetric weight parameters: per-channel (``axis`` = TFLite's quantized_dimension) or per-tensor."""
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    if per_channel:
        return QParams.per_channel(np.exp(rng.uniform(lo, hi, size=channels)), 0, axis)
    return QParams.per_tensor(float(np.exp(rng.uniform(lo, hi))), 0)


# ---- the builder -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tensor:
    name: str
    shape: Tuple[int, ...]
    dtype: str
    q: Optional[QParams]
    buffer: int
    raw_q: Optional[Tuple[np.ndarray, np.ndarray, int]] = None  # (scales, zero points, axis) without a QParams


@dataclasses.dataclass
class _Op:
    code: int
    inputs: List[int]
    outputs: List[int]
    options: Optional[Tuple[str, Dict[str, Any]]]


class ModelBuilder:
    """Builds one-subgraph int8 TFLite models. Ops append to the graph and return output tensor ids."""

    def __init__(self, seed: int = 0, description: str = "tvm_npu.testing.tflite_int8"):
        self.rng = np.random.default_rng(seed)
        self.description = description
        self._tensors: List[_Tensor] = []
        self._buffers: List[bytes] = [b""]  # buffer 0 is the empty sentinel
        self._data: Dict[int, np.ndarray] = {}
        self._ops: List[_Op] = []
        self.inputs: List[int] = []
        self.outputs: List[int] = []

    # ---- tensors ----------------------------------------------------------------------------
    def add_tensor(self, name: str, shape: Sequence[int], dtype: str = "int8", q: Optional[QParams] = None,
                   data: Optional[np.ndarray] = None) -> int:
        dtype = str(np.dtype(dtype))
        buf = 0
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(tuple(shape)))
            self._buffers.append(arr.tobytes())
            buf = len(self._buffers) - 1
            self._data[len(self._tensors)] = arr
        self._tensors.append(_Tensor(name, tuple(int(s) for s in shape), dtype, q, buf))
        return len(self._tensors) - 1

    def add_input(self, name: str, shape: Sequence[int], q: QParams, dtype: Optional[str] = None) -> int:
        t = self.add_tensor(name, shape, dtype or q.dtype, q)
        self.inputs.append(t)
        return t

    def add_const(self, name: str, data: np.ndarray, q: Optional[QParams] = None) -> int:
        data = np.asarray(data)
        return self.add_tensor(name, data.shape, str(data.dtype), q, data)

    def mark_output(self, t: int) -> int:
        self.outputs.append(t)
        return t

    def shape(self, t: int) -> Tuple[int, ...]:
        return self._tensors[t].shape

    def qparams(self, t: int) -> QParams:
        q = self._tensors[t].q
        if q is None:
            raise ValueError(f"tensor {self._tensors[t].name} has no quantisation parameters")
        return q

    def data(self, t: int) -> np.ndarray:
        return self._data[t]

    def _out(self, name: str, shape, q: QParams) -> int:
        return self.add_tensor(f"{name}_{len(self._tensors)}", shape, q.dtype, q)

    def add_op(self, op: str, inputs: Sequence[int], outputs: Sequence[int],
               options: Optional[Tuple[str, Dict[str, Any]]] = None) -> None:
        """Appends a builtin operator; ``options`` is ``(OptionsTableName, {Field: value})``."""
        self._ops.append(_Op(_builtin_code(op), list(inputs), list(outputs), options))

    # ---- convolution family -------------------------------------------------------------------
    def conv2d(self, x: int, out_channels: int, kernel: Union[int, Tuple[int, int]], out_q: QParams, *,
               stride: Union[int, Tuple[int, int]] = 1, dilation: Union[int, Tuple[int, int]] = 1,
               padding: str = "SAME", activation: Union[None, str, int] = "NONE", per_channel: bool = True,
               weights: Optional[np.ndarray] = None, w_q: Optional[QParams] = None, bias: Optional[np.ndarray] = None,
               use_bias: bool = True) -> int:
        """CONV_2D. Weights ``[O, KH, KW, I]`` int8 (random if None), bias int32 ``[O]`` with scale
        ``s_in * s_w[o]`` (random if None)."""
        n, h, w, c = self.shape(x)
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if w_q is None:
            w_q = rand_weight_qparams(self.rng, out_channels, per_channel, axis=0)
        if weights is None:
            weights = rand_int8(self.rng, (out_channels, kh, kw, c), -127, 127)
        x_q = self.qparams(x)
        wt = self.add_const(f"conv_w_{len(self._tensors)}", np.asarray(weights, np.int8), w_q)
        ins = [x, wt]
        if use_bias:
            if bias is None:
                bias = self.rng.integers(-3000, 3000, size=out_channels, endpoint=True)
            ins.append(self._bias_tensor(bias, x_q, w_q))
        oh = conv_output_size(h, kh, sh, dh, padding)
        ow = conv_output_size(w, kw, sw, dw, padding)
        y = self._out("conv", (n, oh, ow, out_channels), out_q)
        self.add_op("CONV_2D", ins, [y], ("Conv2DOptions", dict(
            Padding=_PADDING[padding.upper()], StrideW=sw, StrideH=sh, FusedActivationFunction=_act(activation),
            DilationWFactor=dw, DilationHFactor=dh)))
        return y

    def depthwise_conv2d(self, x: int, kernel: Union[int, Tuple[int, int]], out_q: QParams, *,
                         depth_multiplier: int = 1, stride: Union[int, Tuple[int, int]] = 1,
                         dilation: Union[int, Tuple[int, int]] = 1, padding: str = "SAME",
                         activation: Union[None, str, int] = "NONE", per_channel: bool = True,
                         weights: Optional[np.ndarray] = None, w_q: Optional[QParams] = None,
                         bias: Optional[np.ndarray] = None, use_bias: bool = True) -> int:
        """DEPTHWISE_CONV_2D. Weights ``[1, KH, KW, C*M]`` int8, per-channel along axis 3."""
        n, h, w, c = self.shape(x)
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        cout = c * depth_multiplier
        if w_q is None:
            w_q = rand_weight_qparams(self.rng, cout, per_channel, axis=3)
        if weights is None:
            weights = rand_int8(self.rng, (1, kh, kw, cout), -127, 127)
        x_q = self.qparams(x)
        wt = self.add_const(f"dw_w_{len(self._tensors)}", np.asarray(weights, np.int8), w_q)
        ins = [x, wt]
        if use_bias:
            if bias is None:
                bias = self.rng.integers(-3000, 3000, size=cout, endpoint=True)
            ins.append(self._bias_tensor(bias, x_q, w_q))
        oh = conv_output_size(h, kh, sh, dh, padding)
        ow = conv_output_size(w, kw, sw, dw, padding)
        y = self._out("dwconv", (n, oh, ow, cout), out_q)
        self.add_op("DEPTHWISE_CONV_2D", ins, [y], ("DepthwiseConv2DOptions", dict(
            Padding=_PADDING[padding.upper()], StrideW=sw, StrideH=sh, DepthMultiplier=depth_multiplier,
            FusedActivationFunction=_act(activation), DilationWFactor=dw, DilationHFactor=dh)))
        return y

    def fully_connected(self, x: int, units: int, out_q: QParams, *, activation: Union[None, str, int] = "NONE",
                        per_channel: bool = False, weights: Optional[np.ndarray] = None,
                        w_q: Optional[QParams] = None, bias: Optional[np.ndarray] = None, use_bias: bool = True,
                        keep_num_dims: bool = False) -> int:
        """FULLY_CONNECTED. Weights ``[N, K]`` int8 (per-tensor by default; per-channel along axis 0)."""
        shape = self.shape(x)
        k = shape[-1]
        if w_q is None:
            w_q = rand_weight_qparams(self.rng, units, per_channel, axis=0)
        if weights is None:
            weights = rand_int8(self.rng, (units, k), -127, 127)
        x_q = self.qparams(x)
        wt = self.add_const(f"fc_w_{len(self._tensors)}", np.asarray(weights, np.int8), w_q)
        ins = [x, wt]
        if use_bias:
            if bias is None:
                bias = self.rng.integers(-3000, 3000, size=units, endpoint=True)
            ins.append(self._bias_tensor(bias, x_q, w_q))
        rows = int(np.prod(shape)) // k
        out_shape = tuple(shape[:-1]) + (units,) if keep_num_dims else (rows, units)
        y = self._out("fc", out_shape, out_q)
        self.add_op("FULLY_CONNECTED", ins, [y], ("FullyConnectedOptions", dict(
            FusedActivationFunction=_act(activation), KeepNumDims=bool(keep_num_dims))))
        return y

    def _bias_tensor(self, bias, x_q: QParams, w_q: QParams) -> int:
        """An int32 bias with TFLite's scale ``s_in * s_w[c]`` (per channel iff the weights are)."""
        bias = np.asarray(bias, np.int64).reshape(-1)
        scales = (np.float64(x_q.s) * w_q.scale.astype(np.float64)).astype(np.float32)
        t = self.add_tensor(f"bias_{len(self._tensors)}", bias.shape, "int32", None, bias.astype(np.int32))
        self._tensors[t].raw_q = (scales, np.zeros(scales.size, np.int64), 0)
        return t

    # ---- elementwise ----------------------------------------------------------------------------
    def _binary(self, op: str, options: str, a: int, b: int, out_q: QParams, activation) -> int:
        shape = tuple(np.broadcast_shapes(self.shape(a), self.shape(b)))
        y = self._out(op.lower(), shape, out_q)
        self.add_op(op, [a, b], [y], (options, dict(FusedActivationFunction=_act(activation))))
        return y

    def add(self, a: int, b: int, out_q: QParams, activation: Union[None, str, int] = "NONE") -> int:
        return self._binary("ADD", "AddOptions", a, b, out_q, activation)

    def sub(self, a: int, b: int, out_q: QParams, activation: Union[None, str, int] = "NONE") -> int:
        return self._binary("SUB", "SubOptions", a, b, out_q, activation)

    def mul(self, a: int, b: int, out_q: QParams, activation: Union[None, str, int] = "NONE") -> int:
        return self._binary("MUL", "MulOptions", a, b, out_q, activation)

    # ---- pooling / concatenation ------------------------------------------------------------------
    def _pool(self, op: str, x: int, kernel, stride, padding: str, activation, out_q: Optional[QParams]) -> int:
        n, h, w, c = self.shape(x)
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        oh, ow = conv_output_size(h, kh, sh, 1, padding), conv_output_size(w, kw, sw, 1, padding)
        y = self._out(op.lower(), (n, oh, ow, c), out_q or self.qparams(x))
        self.add_op(op, [x], [y], ("Pool2DOptions", dict(
            Padding=_PADDING[padding.upper()], StrideW=sw, StrideH=sh, FilterWidth=kw, FilterHeight=kh,
            FusedActivationFunction=_act(activation))))
        return y

    def average_pool2d(self, x: int, kernel, stride=1, padding: str = "VALID",
                       activation: Union[None, str, int] = "NONE", out_q: Optional[QParams] = None) -> int:
        return self._pool("AVERAGE_POOL_2D", x, kernel, stride, padding, activation, out_q)

    def max_pool2d(self, x: int, kernel, stride=1, padding: str = "VALID",
                   activation: Union[None, str, int] = "NONE", out_q: Optional[QParams] = None) -> int:
        return self._pool("MAX_POOL_2D", x, kernel, stride, padding, activation, out_q)

    def concatenation(self, xs: Sequence[int], axis: int = -1, out_q: Optional[QParams] = None) -> int:
        shapes = [self.shape(t) for t in xs]
        ax = axis % len(shapes[0])
        out_shape = list(shapes[0])
        out_shape[ax] = sum(s[ax] for s in shapes)
        y = self._out("concat", tuple(out_shape), out_q or self.qparams(xs[0]))
        self.add_op("CONCATENATION", list(xs), [y], ("ConcatenationOptions", dict(Axis=axis,
                                                                                   FusedActivationFunction=0)))
        return y

    # ---- unary --------------------------------------------------------------------------------------
    def unary(self, op: str, x: int, out_q: QParams, options: Optional[Tuple[str, Dict[str, Any]]] = None) -> int:
        y = self._out(op.lower(), self.shape(x), out_q)
        self.add_op(op, [x], [y], options)
        return y

    def logistic(self, x: int, out_q: Optional[QParams] = None) -> int:
        return self.unary("LOGISTIC", x, out_q or QParams.per_tensor(1 / 256, -128))

    def tanh(self, x: int, out_q: Optional[QParams] = None) -> int:
        return self.unary("TANH", x, out_q or QParams.per_tensor(1 / 128, 0))

    def hard_swish(self, x: int, out_q: QParams) -> int:
        return self.unary("HARD_SWISH", x, out_q)

    def elu(self, x: int, out_q: QParams) -> int:
        return self.unary("ELU", x, out_q)

    def gelu(self, x: int, out_q: QParams, approximate: bool = False) -> int:
        return self.unary("GELU", x, out_q, ("GeluOptions", dict(Approximate=bool(approximate))))

    def leaky_relu(self, x: int, out_q: QParams, alpha: float = 0.2) -> int:
        return self.unary("LEAKY_RELU", x, out_q, ("LeakyReluOptions", dict(Alpha=float(alpha))))

    def relu(self, x: int, out_q: Optional[QParams] = None, kind: str = "RELU") -> int:
        return self.unary(kind.upper(), x, out_q or self.qparams(x))

    def relu6(self, x: int, out_q: Optional[QParams] = None) -> int:
        return self.relu(x, out_q, "RELU6")

    def quantize(self, x: int, out_q: QParams) -> int:
        return self.unary("QUANTIZE", x, out_q)

    def softmax(self, x: int, beta: float = 1.0, out_q: Optional[QParams] = None) -> int:
        return self.unary("SOFTMAX", x, out_q or QParams.per_tensor(1 / 256, -128),
                          ("SoftmaxOptions", dict(Beta=float(beta))))

    # ---- serialisation --------------------------------------------------------------------------------
    def finish(self) -> bytes:
        """The .tflite flatbuffer (file identifier ``TFL3``, schema version 3)."""
        import flatbuffers

        if not self.inputs or not self.outputs:
            raise ValueError("a model needs at least one input and one output")
        b = flatbuffers.Builder(1024)

        def ivec(values, dtype=np.int32):
            return b.CreateNumpyVector(np.asarray(values, dtype))

        buffer_offs = []
        B = _mod("Buffer")
        for data in self._buffers:
            data_off = b.CreateByteVector(data) if data else None
            B.BufferStart(b)
            if data_off is not None:
                B.BufferAddData(b, data_off)
            buffer_offs.append(B.BufferEnd(b))

        T, Q = _mod("Tensor"), _mod("QuantizationParameters")
        tensor_offs = []
        for t in self._tensors:
            name = b.CreateString(t.name)
            shape = ivec(t.shape)
            q_off = None
            raw = t.raw_q if t.q is None else (t.q.scale, t.q.zero_point, int(t.q.axis or 0))
            if raw is not None:
                scale = b.CreateNumpyVector(np.asarray(raw[0], np.float32))
                zp = b.CreateNumpyVector(np.asarray(raw[1], np.int64))
                Q.QuantizationParametersStart(b)
                Q.QuantizationParametersAddScale(b, scale)
                Q.QuantizationParametersAddZeroPoint(b, zp)
                Q.QuantizationParametersAddQuantizedDimension(b, int(raw[2]))
                q_off = Q.QuantizationParametersEnd(b)
            T.TensorStart(b)
            T.TensorAddShape(b, shape)
            T.TensorAddType(b, _TENSOR_TYPES[t.dtype])
            T.TensorAddBuffer(b, t.buffer)
            T.TensorAddName(b, name)
            if q_off is not None:
                T.TensorAddQuantization(b, q_off)
            tensor_offs.append(T.TensorEnd(b))

        codes: List[int] = []
        O, BO = _mod("Operator"), _mod("BuiltinOptions").BuiltinOptions
        op_offs = []
        for op in self._ops:
            if op.code not in codes:
                codes.append(op.code)
            opt_off, opt_type = None, 0
            if op.options is not None:
                table, fields = op.options
                m = _mod(table)
                getattr(m, f"{table}Start")(b)
                for field, value in fields.items():
                    getattr(m, f"{table}Add{field}")(b, value)
                opt_off = getattr(m, f"{table}End")(b)
                opt_type = getattr(BO, table)
            ins, outs = ivec(op.inputs), ivec(op.outputs)
            O.OperatorStart(b)
            O.OperatorAddOpcodeIndex(b, codes.index(op.code))
            O.OperatorAddInputs(b, ins)
            O.OperatorAddOutputs(b, outs)
            if opt_off is not None:
                O.OperatorAddBuiltinOptionsType(b, opt_type)
                O.OperatorAddBuiltinOptions(b, opt_off)
            op_offs.append(O.OperatorEnd(b))

        def offvec(start_fn, offs):
            start_fn(b, len(offs))
            for off in reversed(offs):
                b.PrependUOffsetTRelative(off)
            return b.EndVector()

        S = _mod("SubGraph")
        tensors_vec = offvec(S.SubGraphStartTensorsVector, tensor_offs)
        ops_vec = offvec(S.SubGraphStartOperatorsVector, op_offs)
        in_vec, out_vec = ivec(self.inputs), ivec(self.outputs)
        sg_name = b.CreateString("main")
        S.SubGraphStart(b)
        S.SubGraphAddTensors(b, tensors_vec)
        S.SubGraphAddInputs(b, in_vec)
        S.SubGraphAddOutputs(b, out_vec)
        S.SubGraphAddOperators(b, ops_vec)
        S.SubGraphAddName(b, sg_name)
        subgraph = S.SubGraphEnd(b)

        OC = _mod("OperatorCode")
        code_offs = []
        for code in codes:
            OC.OperatorCodeStart(b)
            OC.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            OC.OperatorCodeAddBuiltinCode(b, code)
            OC.OperatorCodeAddVersion(b, 1)
            code_offs.append(OC.OperatorCodeEnd(b))

        M = _mod("Model")
        codes_vec = offvec(M.ModelStartOperatorCodesVector, code_offs)
        subgraphs_vec = offvec(M.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = offvec(M.ModelStartBuffersVector, buffer_offs)
        desc = b.CreateString(self.description)
        M.ModelStart(b)
        M.ModelAddVersion(b, 3)
        M.ModelAddOperatorCodes(b, codes_vec)
        M.ModelAddSubgraphs(b, subgraphs_vec)
        M.ModelAddDescription(b, desc)
        M.ModelAddBuffers(b, buffers_vec)
        model = M.ModelEnd(b)
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


# ---- the reference -------------------------------------------------------------------------------


def run_reference(buf: bytes, inputs: Union[Sequence[np.ndarray], Dict[str, np.ndarray]],
                  resolver: str = "ref") -> List[np.ndarray]:
    """Runs a .tflite model on LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``).

    ``inputs`` in the model's input order, or by tensor name. Returns the outputs in the model's output
    order, as copies. ``resolver="builtin"`` uses the default builtin kernels without any delegate
    (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): needed for ops the reference resolver does not register,
    such as ELU, whose only kernel is shared by both resolvers. Needs ``ai-edge-litert`` (a dev dependency).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = {"ref": OpResolverType.BUILTIN_REF, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}[resolver]
    interp = Interpreter(model_content=bytes(buf), experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    details = interp.get_input_details()
    if isinstance(inputs, dict):
        by_name = {d["name"]: d for d in details}
        for name, value in inputs.items():
            d = by_name[name]
            interp.set_tensor(d["index"], np.asarray(value, d["dtype"]).reshape(d["shape"]))
    else:
        if len(inputs) != len(details):
            raise ValueError(f"the model has {len(details)} inputs, got {len(inputs)}")
        for d, value in zip(details, inputs):
            interp.set_tensor(d["index"], np.asarray(value, d["dtype"]).reshape(d["shape"]))
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
