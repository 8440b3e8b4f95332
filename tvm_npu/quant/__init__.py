"""Integer quantisation arithmetic for the NPU: the one place where scales become instruction fields.

Every int8 operator the NPU runs must give the same bytes as the TFLite reference kernels
(``ai_edge_litert`` with ``OpResolverType.BUILTIN_REF``; docs/design/quantized_import.md and
../shared/NPU_SPEC.md "Data types and numerics"). This module turns float32 scales and integer zero
points into the integer fields of the ISA instructions (docs/ISA.md) by reproducing, step by step,
what each TFLite kernel's ``Prepare`` computes: the same float32 or double arithmetic in the same order,
the same ``QuantizeMultiplier`` and the same checks. Each function names the kernel it mirrors; the
kernel sources are LiteRT's ``tflite/kernels/*.cc`` and ``tflite/kernels/internal/reference/*.h``.

Scales are float32 in a .tflite file, so they are rounded to float32 on entry (:class:`QParams`)
and widened to double exactly where TFLite widens them. Only numpy and the standard library are used.

What the NPU runs, per operator family (tests/quant checks each against LiteRT, byte for byte):

* CONV_2D / DEPTHWISE_CONV_2D (:func:`conv2d_quant`, :func:`depthwise_conv2d_quant`): ``dma.load`` with
  halo ``pad_value = zp_in``; ``conv2d`` / ``dwconv2d`` with ``a_offset = -zp_in`` (a halo tap then
  contributes ``(zp_in - zp_in) * w = 0``, exactly TFLite's skipped taps; or fold the offset into the bias
  with :func:`fold_input_offset` and run ``a_offset = 0``, still with ``pad_value = zp_in``); the int32
  bias added with ``vadd.i32`` (operand ``[1,1,1,C]``) or preloaded into ACC by a stride-0 DMA with
  ``accumulate=1``; then ``vrequant`` with :meth:`ConvQuant.vrequant_fields`. Per-channel
  (multiplier, shift) pairs are :meth:`ConvQuant.param_table`, an int32 ``[C, 2]`` array that
  ``vrequant per_channel=1`` reads at ``params_addr + 8*c``: load it into ACC as ONE row
  ``[1, 1, 1, 2*C]`` (a ``[1, 1, C, 2]`` tensor would pad every pair to 16 bytes).
* FULLY_CONNECTED: LiteRT's *reference* kernel rescales with ``round(double(acc) * scale)``, not with
  MBQM. :func:`fully_connected_exact_quant` searches per channel a (multiplier, shift) whose MBQM equals
  that rounding for every int32 accumulator; one exists for about 70% of scale ratios, the others are
  flagged in ``exact_channels`` (bit-exact FC needs the CPU or an ISA extension there).
  :func:`fully_connected_quant` gives TFLite's Prepare pair (the optimized kernels' arithmetic).
* ADD / SUB / MUL (int8, and symmetric int16): one ``vadd`` / ``vsub`` / ``vmul`` whose fields are
  :func:`add_quant`, :func:`sub_quant`, :func:`mul_quant`; broadcasting is the instruction's.
* AVERAGE_POOL_2D / MAX_POOL_2D: ``vpool`` on the raw int8 values with TFLite's ``pad_top`` /
  ``pad_left`` (no halo, the window is clipped); input and output params must be equal
  (:func:`pool_quant` checks it).
* CONCATENATION: strided ``dma.store`` copies (:func:`concat_quant`; TFLite requires equal params).
* Unary int8 ops -- LOGISTIC, TANH, ELU, GELU (exact and tanh-approximate), HARD_SWISH, LEAKY_RELU,
  standalone RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1, QUANTIZE int8->int8: one ``vlut`` with a
  256-entry table built on the host from the reference kernel's own arithmetic (:func:`logistic_lut`
  and friends). A unary int8 kernel is a function of one byte, so a table that reproduces the kernel
  over all 256 inputs is exact by construction, whether the kernel is a float LUT built at Prepare
  (LOGISTIC, TANH, ELU, GELU: float32 + libm, reproduced with the same libm calls) or fixed point
  (HARD_SWISH, LEAKY_RELU, RELU*, QUANTIZE: reproduced in integer arithmetic).
* SOFTMAX: not expressible bit-exactly in ISA v1 (:data:`SOFTMAX_NOTE`).

Which float arithmetic TFLite uses matters for the multipliers and is reproduced per kernel: CONV_2D /
DEPTHWISE multiply the scales in double, MUL / LEAKY_RELU / RELU / HARD_SWISH in float32, ADD / SUB
divide in double. Do not recompute multipliers elsewhere.

Tables for ``vlut`` are returned in NPU order: ``table[x + 128]`` is the output for input ``x``
(TFLite itself stores its int8 LUTs in ``uint8`` cast order; :func:`npu_lut_order` converts).

The package splits this by job (each module imports only the ones above it):

* :mod:`.multiplier`: ``QuantizeMultiplier`` and variants, SRDHM / RoundingDivideByPOT / MBQM, the
  single-rounding multiplier;
* :mod:`.params`: the records :class:`QParams` and :class:`ConvQuant`, :func:`dtype_range`;
* :mod:`.activation`: fused activation clamps (:func:`activation_range`);
* :mod:`.conv`: CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (incl. the exact-FC search), padding;
* :mod:`.elementwise`: ADD / SUB / MUL, pooling, concatenation, QUANTIZE, MEAN;
* :mod:`.lut`: the 256-entry ``vlut`` tables of unary int8 kernels;
* :mod:`.softmax`: :data:`SOFTMAX_NOTE`;
* :mod:`.qdq`: float QDQ (ONNX) single-rounding variants of the conv-family and MUL parameters.
"""

from .multiplier import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, quantize_multiplier,
                         quantize_multiplier_greater_than_one, quantize_multiplier_smaller_than_one,
                         rounding_divide_by_pot, single_rounding_multiplier, srdhm)
from .params import ConvQuant, QParams, dtype_range
from .activation import ActivationLike, activation_range
from .conv import (conv2d_quant, conv_output_size, depthwise_conv2d_quant, exact_rounding_multiplier,
                   fold_input_offset, fully_connected_exact_quant, fully_connected_quant, same_padding)
from .elementwise import (add_quant, concat_quant, mean_quant, mul_quant, pool_quant, requantize_lut,
                          requantize_quant, sub_quant)
from .lut import (apply_lut, elu_lut, gelu_lut, hard_swish_lut, leaky_relu_lut, logistic_lut, lut_from_float_fn,
                  npu_lut_order, relu_lut, tanh_lut)
from .softmax import SOFTMAX_NOTE
from .qdq import float_rounding, mul_float_rounding

# the names of the former single module tvm_npu/quant.py, in its order (INT32_MIN, INT32_MAX and
# ActivationLike were public there too, but not in __all__)
__all__ = [
    "QParams", "quantize_multiplier", "quantize_multiplier_smaller_than_one", "quantize_multiplier_greater_than_one",
    "srdhm", "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "dtype_range", "activation_range",
    "ConvQuant", "conv2d_quant", "depthwise_conv2d_quant", "fully_connected_quant", "fully_connected_exact_quant",
    "exact_rounding_multiplier", "fold_input_offset",
    "add_quant", "sub_quant", "mul_quant", "pool_quant", "same_padding", "conv_output_size",
    "concat_quant", "requantize_quant", "requantize_lut",
    "lut_from_float_fn", "logistic_lut", "tanh_lut", "elu_lut", "gelu_lut", "hard_swish_lut",
    "leaky_relu_lut", "relu_lut", "npu_lut_order", "apply_lut", "SOFTMAX_NOTE",
    "mean_quant",
    "single_rounding_multiplier", "float_rounding", "mul_float_rounding",
]
