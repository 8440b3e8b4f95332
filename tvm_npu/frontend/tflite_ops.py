"""TFLite custom operators for TVM 0.27's Relax TFLite frontend, registered from outside TVM.

TVM's frontend (`tvm.relax.frontend.tflite.tflite_frontend.OperatorConverter`) names every operator
with `get_op_code_str` and converts it with `convert_map[name]`; a CUSTOM operator is refused
("Custom operators are currently not supported") unless it is the detection post-processing.
`install()` wraps both once: a custom operator whose custom code is in `CUSTOM` below is named
`CUSTOM:<code>` (`key`) and converted by our function, which receives the converter and the operator
as TVM's own converters do. Everything else goes to TVM unchanged, except that a quantised
RESIZE_NEAREST_NEIGHBOR (an element copy, which TVM refuses as an unsupported quantised operator) is
accepted when its output keeps its input's quantisation (`_quantized_nearest`).

* `Convolution2DTransposeBias` (MediaPipe, e.g. selfie segmentation): a transposed convolution plus
  bias; weights OHWI, bias [Cout], custom options the raw 12-byte `TfLiteTransposeConvParams`
  {padding (1 SAME, 2 VALID), stride_width, stride_height} (not a flexbuffer). SAME pads
  max(0, k - (in - 1) % s - 1) in total, half (rounded down) before: MediaPipe's
  mediapipe/util/tflite/operations/transpose_conv_bias.cc, which LiteRT's XNNPACK delegate also runs.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from tvm import relax

_INSTALLED = "_tvm_npu_tflite_ops"
_SAME, _VALID = 1, 2


def key(custom_code: str) -> str:
    """The converter-table name of a custom operator."""
    return f"CUSTOM:{custom_code}"


def _weights(conv, tensor):
    """A weight operand as a Relax expression: the constant, or what the graph computes for it (float
    models with fp16 weights feed them through DEQUANTIZE)."""
    if conv.has_expr(tensor.tensor_idx):
        return conv.get_expr(tensor.tensor_idx)
    value = conv.get_tensor_value(tensor)
    return relax.const(np.asarray(value), str(value.dtype))


def convolution2d_transpose_bias(conv, op):
    """MediaPipe's Convolution2DTransposeBias: conv2d_transpose (NHWC, IOHW weights) + bias."""
    data, weights, bias = conv.get_input_tensors(op)[:3]
    options = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
    if len(options) < 12:
        raise NotImplementedError(f"Convolution2DTransposeBias: {len(options)} bytes of options (12 expected)")
    padding, stride_w, stride_h = struct.unpack("<iii", options[:12])
    if padding not in (_SAME, _VALID) or stride_w < 1 or stride_h < 1:
        raise NotImplementedError(f"Convolution2DTransposeBias: padding {padding}, strides {stride_h, stride_w}")
    _, in_h, in_w, _ = (int(v) for v in conv.get_tensor_shape(data))
    _, kh, kw, _ = (int(v) for v in conv.get_tensor_shape(weights))
    pad_h = max(0, kh - (in_h - 1) % stride_h - 1) if padding == _SAME else 0
    pad_w = max(0, kw - (in_w - 1) % stride_w - 1) if padding == _SAME else 0
    w_ohwi = _weights(conv, weights)
    w_iohw = relax.op.permute_dims(w_ohwi, [3, 0, 1, 2])
    # NCHW between transposes: TVM 0.27 cannot build an NHWC conv2d_transpose for the CPU (no legalization);
    # tvm_npu's partitioner folds the transposes away (relay_ext/rewrites.py, ConvTransposeToConv)
    x_nchw = relax.op.permute_dims(conv.get_expr(data.tensor_idx), [0, 3, 1, 2])
    out = relax.op.nn.conv2d_transpose(x_nchw, w_iohw, strides=(stride_h, stride_w),
                                       padding=(pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2),
                                       data_layout="NCHW", kernel_layout="IOHW")
    out = relax.op.permute_dims(out, [0, 2, 3, 1])
    return relax.op.add(out, _weights(conv, bias))  # bias [Cout] broadcasts over NHWC's last axis


CUSTOM = {"Convolution2DTransposeBias": convolution2d_transpose_bias}


def _quantized_nearest(original):
    """RESIZE_NEAREST_NEIGHBOR of an int8 / uint8 tensor: TVM's converter applies resize2d to the integer
    tensor itself, which is TFLite's kernel (a copy of elements) when the output has the input's
    quantisation, as the TFLite converter makes it; any other quantisation is refused."""

    @functools.wraps(original)
    def convert(*args, **kwargs):
        conv = original.__self__
        op = kwargs["op"] if "op" in kwargs else args[0]
        x, y = conv.get_input_tensors(op)[0], conv.get_output_tensors(op)[0]
        if (x.qnn_params is None) != (y.qnn_params is None) or (
                x.qnn_params is not None and not conv.has_same_qnn_params(x, y)):
            raise NotImplementedError("quantised RESIZE_NEAREST_NEIGHBOR whose output is quantised differently "
                                      "from its input")
        return original(*args, **kwargs)

    return convert


def install() -> None:
    """Makes TVM's TFLite frontend convert the custom operators of `CUSTOM` (idempotent)."""
    from tvm.relax.frontend.tflite import tflite_frontend as F

    cls = F.OperatorConverter
    if getattr(cls.get_op_code_str, _INSTALLED, False):
        return
    original_name, original_init = cls.get_op_code_str, cls.__init__

    @functools.wraps(original_name)
    def get_op_code_str(self, op):
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        custom = oc.CustomCode()
        if custom is not None:
            name = custom.decode(errors="replace")
            if name in CUSTOM:
                return key(name)
        return original_name(self, op)

    @functools.wraps(original_init)
    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        for name, fn in CUSTOM.items():
            self.convert_map.setdefault(key(name), functools.partial(fn, self))
        nearest = self.convert_map.get("RESIZE_NEAREST_NEIGHBOR")
        if nearest is not None and hasattr(nearest, "__self__"):
            self.convert_map["RESIZE_NEAREST_NEIGHBOR"] = _quantized_nearest(nearest)

    setattr(get_op_code_str, _INSTALLED, True)
    cls.get_op_code_str = get_op_code_str
    cls.__init__ = init
    # a quantised nearest-neighbour resize copies elements: TVM's converter is right for it (_quantized_nearest)
    cls._SUPPORTED_QUANTIZED_OPS = frozenset(cls._SUPPORTED_QUANTIZED_OPS | {"RESIZE_NEAREST_NEIGHBOR"})
