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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "QParams", "quantize_multiplier", "quantize_multiplier_smaller_than_one", "quantize_multiplier_greater_than_one",
    "srdhm", "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "dtype_range", "activation_range",
    "ConvQuant", "conv2d_quant", "depthwise_conv2d_quant", "fully_connected_quant", "fully_connected_exact_quant",
    "exact_rounding_multiplier", "fold_input_offset",
    "add_quant", "sub_quant", "mul_quant", "pool_quant", "same_padding", "conv_output_size",
    "concat_quant", "requantize_quant", "requantize_lut",
    "lut_from_float_fn", "logistic_lut", "tanh_lut", "elu_lut", "gelu_lut", "hard_swish_lut",
    "leaky_relu_lut", "relu_lut", "npu_lut_order", "apply_lut", "SOFTMAX_NOTE",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_DTYPE_RANGE = {"int8": (-128, 127), "int16": (-32768, 32767)}

ActivationLike = Union[None, str, int]

# ---------------------------------------------------------------------------------------------
# quantisation parameters
# ---------------------------------------------------------------------------------------------


def dtype_range(dtype: str) -> Tuple[int, int]:
    """(min, max) of an integer activation dtype, ``"int8"`` or ``"int16"``."""
    try:
        return _DTYPE_RANGE[str(np.dtype(dtype))]
    except (KeyError, TypeError):
        raise ValueError(f"unsupported quantised dtype {dtype!r}; expected int8 or int16") from None


@dataclasses.dataclass(frozen=True, eq=False)
class QParams:
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``.

    ``scale`` is a float32 array and ``zero_point`` an int32 array (both 1-D); ``axis`` is None for
    per-tensor parameters (one scale) or the quantised dimension of a per-channel tensor (TFLite's
    ``quantized_dimension``). ``dtype`` is the storage type, ``"int8"`` or ``"int16"``. Scales are
    rounded to float32 on construction because that is what a .tflite file stores and every TFLite
    kernel computes from.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: Optional[int] = None
    dtype: str = "int8"

    def __post_init__(self) -> None:
        scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float64)).astype(np.float32).reshape(-1)
        zp = np.atleast_1d(np.asarray(self.zero_point))
        if zp.dtype.kind not in "iu" and not np.all(zp == np.round(zp)):
            raise ValueError(f"zero points must be integers, got {zp}")
        zp = zp.astype(np.int64).reshape(-1)
        dtype = str(np.dtype(self.dtype))
        lo, hi = dtype_range(dtype)
        if scale.size == 0:
            raise ValueError("QParams needs at least one scale")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"scales must be finite and > 0, got {scale}")
        if zp.size == 1 and scale.size > 1:
            zp = np.repeat(zp, scale.size)
        if zp.size != scale.size:
            raise ValueError(f"{scale.size} scales but {zp.size} zero points")
        if np.any(zp < lo) or np.any(zp > hi):
            raise ValueError(f"zero points {zp} outside the {dtype} range [{lo}, {hi}]")
        if self.axis is None and scale.size != 1:
            raise ValueError(f"{scale.size} scales need an axis (per-channel quantisation)")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp.astype(np.int32))
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "axis", None if self.axis is None else int(self.axis))

    # ---- constructors ---------------------------------------------------------------------
    @classmethod
    def per_tensor(cls, scale: float, zero_point: int = 0, dtype: str = "int8") -> "QParams":
        return cls(np.array([scale]), np.array([zero_point]), None, dtype)

    @classmethod
    def per_channel(cls, scales: Sequence[float], zero_points=0, axis: int = 0, dtype: str = "int8") -> "QParams":
        return cls(np.asarray(scales), np.asarray(zero_points), axis, dtype)

    # ---- views ------------------------------------------------------------------------------
    @property
    def is_per_tensor(self) -> bool:
        return self.axis is None

    @property
    def s(self) -> np.float32:
        """The float32 scale of a per-tensor QParams."""
        if not self.is_per_tensor:
            raise ValueError("QParams.s is only defined for per-tensor parameters")
        return self.scale[0]

    @property
    def zp(self) -> int:
        """The zero point of a per-tensor QParams."""
        if not self.is_per_tensor:
            raise ValueError("QParams.zp is only defined for per-tensor parameters")
        return int(self.zero_point[0])

    @property
    def qmin(self) -> int:
        return dtype_range(self.dtype)[0]

    @property
    def qmax(self) -> int:
        return dtype_range(self.dtype)[1]

    def channel_scales(self, channels: int) -> np.ndarray:
        """float32 scale of each of ``channels`` output channels (a per-tensor scale broadcasts)."""
        if self.scale.size == 1:
            return np.repeat(self.scale, channels)
        if self.scale.size != channels:
            raise ValueError(f"{self.scale.size} per-channel scales for {channels} channels")
        return self.scale

    def equals(self, other: "QParams") -> bool:
        """Bit-identical scales and zero points (the comparison TFLite's Prepare functions make)."""
        return (self.dtype == other.dtype and self.scale.shape == other.scale.shape
                and bool(np.all(self.scale == other.scale)) and bool(np.all(self.zero_point == other.zero_point)))

    def quantize(self, x) -> np.ndarray:
        """Float values to this dtype: round half away from zero of ``x / scale`` plus the zero point."""
        if not self.is_per_tensor:
            raise ValueError("quantize() is only defined for per-tensor parameters")
        q = np.asarray(x, np.float32) / self.s
        q = np.sign(q) * np.floor(np.abs(q.astype(np.float64)) + 0.5) + self.zp
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)

    def dequantize(self, q) -> np.ndarray:
        if not self.is_per_tensor:
            raise ValueError("dequantize() is only defined for per-tensor parameters")
        return (np.asarray(q, np.float64) - self.zp) * float(self.s)

    def __repr__(self) -> str:
        if self.is_per_tensor:
            return f"QParams({float(self.s)!r}, zp={self.zp}, {self.dtype})"
        return f"QParams(scales[{self.scale.size}], axis={self.axis}, {self.dtype})"


def _as_qparams(q, what: str) -> QParams:
    if not isinstance(q, QParams):
        raise TypeError(f"{what} must be a QParams, got {type(q).__name__}")
    return q


def _require_per_tensor(q: QParams, what: str) -> None:
    if not q.is_per_tensor:
        raise ValueError(f"{what} must be quantised per tensor, got {q!r}")


def _f32(x) -> np.float32:
    return np.float32(x)


# ---------------------------------------------------------------------------------------------
# fixed point (tflite/kernels/internal/quantization_util.cc, common.h, gemmlowp fixedpoint.h)
# ---------------------------------------------------------------------------------------------


def _tflite_round(x: float) -> float:
    """TfLiteRound / std::round: half away from zero (exact for float32 or double inputs)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def quantize_multiplier(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplier`` (quantization_util.cc): ``real ~= m * 2^(shift - 31)``.

    Returns ``(m, shift)`` with ``m`` an int32 in ``[2^30, 2^31)`` (or 0) and ``shift > 0`` meaning a left
    shift, computed as TFLite does: ``q = frexp(real)``, ``m = round_half_away(q * 2^31)``, the
    ``m == 2^31`` carry into the exponent, and a flush to ``(0, 0)`` when ``shift < -31`` (TFLite's
    behaviour for multipliers below about 2^-32; the MBQM of anything by it is 0).

    Raises ValueError, naming the value, for NaN, infinity, negative values (no TFLite scale ratio is
    negative) and values of 2^31 or more (``shift > 31``, which no ISA shift field can hold and whose
    left shift would overflow int32 for every nonzero input).
    """
    real = float(real)
    if math.isnan(real) or math.isinf(real):
        raise ValueError(f"cannot quantize multiplier {real!r}: not finite")
    if real < 0:
        raise ValueError(f"cannot quantize multiplier {real!r}: negative")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(_tflite_round(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 31:
        raise ValueError(f"cannot quantize multiplier {real!r}: shift {shift} > 31 is not representable")
    return q_fixed, shift


def quantize_multiplier_smaller_than_one(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: as :func:`quantize_multiplier` for ``0 <= real < 1``
    (so ``shift <= 0``); raises ValueError outside that range, where TFLite's CHECK aborts."""
    real = float(real)
    if not 0.0 <= real < 1.0:
        raise ValueError(f"multiplier {real!r} must be in [0, 1) (TFLite QuantizeMultiplierSmallerThanOneExp)")
    m, s = quantize_multiplier(real)
    if s > 0:
        raise ValueError(f"multiplier {real!r} rounds to shift {s} > 0")
    return m, s


def quantize_multiplier_greater_than_one(real: float) -> Tuple[int, int]:
    """TFLite ``QuantizeMultiplierGreaterThanOne``: as :func:`quantize_multiplier` for ``real > 1``."""
    real = float(real)
    if not real > 1.0:
        raise ValueError(f"multiplier {real!r} must be > 1 (TFLite QuantizeMultiplierGreaterThanOne)")
    return quantize_multiplier(real)


def _wrap_i32(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32 - 2**31).astype(np.int64)


def srdhm(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (numpy int64 arrays in and out)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    high = np.where(t < 0, -((-t) >> 31), t >> 31)  # C division by 2^31 truncates toward zero
    return np.where(overflow, INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2^exponent`` rounded half away from zero, 0 <= exponent <= 31."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError(f"RoundingDivideByPOT exponent {exponent} outside [0, 31]")
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding, common.h) on int32 values.

    ``x * 2^max(shift, 0)`` must fit in int32 (TFLite's C++ has undefined behaviour otherwise): checked.
    """
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    shifted = x * (np.int64(1) << np.maximum(shift, 0))
    if np.any((shifted < INT32_MIN) | (shifted > INT32_MAX)):
        raise ValueError("MultiplyByQuantizedMultiplier: x << shift overflows int32")
    return rounding_divide_by_pot(srdhm(shifted, multiplier), np.maximum(-shift, 0))


# ---------------------------------------------------------------------------------------------
# activation ranges (kernel_util.cc CalculateActivationRangeQuantized)
# ---------------------------------------------------------------------------------------------

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_ACT_BOUNDS = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0),
               "RELU_0_TO_1": (0.0, 1.0)}


def _activation_name(activation: ActivationLike) -> str:
    if activation is None:
        return "NONE"
    if isinstance(activation, (int, np.integer)) and not isinstance(activation, bool):
        name = _ACTIVATIONS.get(int(activation))
    else:
        name = str(activation).upper()
    if name not in _ACT_BOUNDS:
        raise ValueError(f"unsupported fused activation {activation!r}; expected NONE, RELU, RELU6, RELU_N1_TO_1 "
                         "(TFLite ActivationFunctionType 0..3) or RELU_0_TO_1")
    return name


def _quantize_bound(value: float, out: QParams) -> int:
    # kernel_util.cc Quantize(): TfLiteRound(f / scale) in float32, then + zero_point.
    tmp = _tflite_round(float(_f32(value) / out.s))
    if not -(2.0**31) <= tmp <= 2.0**31 - 1:
        raise ValueError(f"activation bound {value} / scale {float(out.s)!r} overflows int32")
    return out.zp + int(tmp)


def activation_range(activation: ActivationLike, output: QParams) -> Tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized`` (kernel_util.cc): the ``[act_min, act_max]`` of a fused
    activation on the output's integer grid, intersected with the output dtype's range.

    ``activation`` is ``"NONE"``, ``"RELU"``, ``"RELU6"``, ``"RELU_N1_TO_1"`` (or TFLite's
    ActivationFunctionType 0..3), or ``"RELU_0_TO_1"``. Bounds are ``zp + TfLiteRound(v / scale)`` in
    float32, as TFLite computes them.
    """
    out = _as_qparams(output, "output")
    _require_per_tensor(out, "the output")
    qmin, qmax = out.qmin, out.qmax
    lo, hi = _ACT_BOUNDS[_activation_name(activation)]
    act_min = qmin if lo is None else max(qmin, _quantize_bound(lo, out))
    act_max = qmax if hi is None else min(qmax, _quantize_bound(hi, out))
    if act_min > act_max:
        raise ValueError(f"activation {activation!r} on {out!r} gives an empty range [{act_min}, {act_max}]")
    return act_min, act_max


# ---------------------------------------------------------------------------------------------
# convolution family
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ConvQuant:
    """NPU parameters of one quantised CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED.

    The NPU sequence is: ``dma.load`` of the input with halo ``pad_value``; ``conv2d`` / ``dwconv2d`` /
    ``gemm`` with ``a_offset``; the int32 ``bias`` (length C) added with ``vadd.i32`` (operand
    ``[1,1,1,C]``) or preloaded into ACC and accumulated onto; then ``vrequant`` with
    :meth:`vrequant_fields`, reading :meth:`param_table` from ACC when ``per_channel``.
    """

    multiplier: np.ndarray  # int32 [C]
    shift: np.ndarray  # int32 [C], > 0 = left shift
    a_offset: int  # MAC a_offset = -zp_in (0 when the offset is folded into the bias)
    pad_value: int  # DMA halo value = zp_in (a padded tap then contributes exactly 0)
    o_offset: int  # zp_out
    act_min: int
    act_max: int
    bias: np.ndarray  # int32 [C] (zeros without a bias; includes the folded input offset if requested)
    per_channel: bool  # the weights have per-channel scales
    out_dtype: str = "int8"
    # channels whose (multiplier, shift) reproduce the reference kernel for every int32 accumulator;
    # all True except for fully_connected_exact_quant channels for which no such pair exists
    exact_channels: Optional[np.ndarray] = None

    @property
    def exact(self) -> bool:
        """True when every channel is bit-exact with the reference kernel."""
        return self.exact_channels is None or bool(np.all(self.exact_channels))

    @property
    def channels(self) -> int:
        return int(self.multiplier.size)

    @property
    def uniform(self) -> bool:
        """True when every channel has the same (multiplier, shift): ``vrequant`` needs no table."""
        return bool(np.all(self.multiplier == self.multiplier[0]) and np.all(self.shift == self.shift[0]))

    def param_table(self) -> np.ndarray:
        """int32 ``[C, 2]``: row c = (multiplier[c], shift[c]), the 8-byte pair ``vrequant per_channel=1``
        reads at ``params_addr + 8*c`` in ACC (load it as an int32 tensor ``[1, 1, 1, 2*C]``)."""
        return np.stack([self.multiplier, self.shift], axis=1).astype(np.int32)

    def vrequant_fields(self, params_addr: int = 0, force_table: bool = False) -> dict:
        """The integer fields of ``vrequant`` (all but the tensors). Uses the per-channel table at
        ``params_addr`` unless every channel shares one (multiplier, shift) and ``force_table`` is False."""
        table = force_table or not self.uniform
        return dict(per_channel=int(table), mult=0 if table else int(self.multiplier[0]),
                    shift=0 if table else int(self.shift[0]), params_addr=int(params_addr) if table else 0,
                    o_offset=int(self.o_offset), act_min=int(self.act_min), act_max=int(self.act_max))

    def requantize(self, acc) -> np.ndarray:
        """numpy model of ``vrequant``: int32 accumulators (bias already added, channels last) -> outputs."""
        y = multiply_by_quantized_multiplier(acc, self.multiplier, self.shift) + self.o_offset
        return np.clip(y, self.act_min, self.act_max).astype(self.out_dtype)


def _bias_array(bias, channels: int) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, np.int32)
    b = np.asarray(bias)
    if b.dtype.kind not in "iu":
        raise ValueError(f"bias must be integer (int32), got {b.dtype}")
    b = b.astype(np.int64).reshape(-1)
    if b.size != channels:
        raise ValueError(f"bias has {b.size} values for {channels} output channels")
    if np.any((b < INT32_MIN) | (b > INT32_MAX)):
        raise ValueError("bias values outside int32")
    return b.astype(np.int32)


def fold_input_offset(bias, weights, input_zero_point: int) -> np.ndarray:
    """``bias[c] - zp_in * sum(weights[..., c])`` wrapped to int32: lets the MAC run with ``a_offset = 0``.

    ``weights`` is in the NPU layout with the output channel last (conv2d HWIO ``[KH,KW,Cin,Cout]``,
    dwconv2d ``[KH,KW,1,C]``, gemm ``[K,N]``). Exact (modulo 2^32, like the int32 accumulator) as long as
    halo taps are loaded with ``pad_value = zp_in``, because then every tap, padded or not, contributes
    ``x * w`` and the folded term removes ``zp_in * w`` from each. For grouped conv2d, pass the
    ``[KH,KW,Cin/groups,Cout]`` weight tensor the instruction reads.
    """
    w = np.asarray(weights, np.int64)
    sums = w.reshape(-1, w.shape[-1]).sum(axis=0)
    b = np.zeros(w.shape[-1], np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    return _wrap_i32(b - int(input_zero_point) * sums).astype(np.int32)


def _conv_like(inp: QParams, weight: QParams, out: QParams, activation: ActivationLike, bias, channels,
               weights, fold, per_tensor_float_product: bool) -> ConvQuant:
    inp, weight, out = (_as_qparams(inp, "input"), _as_qparams(weight, "weight"), _as_qparams(out, "output"))
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    if np.any(weight.zero_point != 0):
        raise ValueError(f"weights must be symmetric (zero point 0), got zero points {weight.zero_point}")
    if inp.dtype != "int8" or out.dtype != "int8":
        # int16x8 kernels accumulate in int64 with their own requantisation; not the int32 MAC path.
        raise ValueError(f"only int8 activations are supported here, got {inp.dtype} -> {out.dtype}")
    if channels is None:
        if weight.scale.size == 1 and bias is None and weights is None:
            raise ValueError("pass channels= (or bias / weights) for per-tensor weights")
        channels = weight.scale.size if weight.scale.size > 1 else (
            np.asarray(bias).size if bias is not None else np.asarray(weights).shape[-1])
    channels = int(channels)
    w_scales = weight.channel_scales(channels)
    mult = np.zeros(channels, np.int32)
    shift = np.zeros(channels, np.int32)
    for c in range(channels):
        if weight.scale.size == 1 and per_tensor_float_product:
            # GetQuantizedConvolutionMultipler: the float32 product input_scale * filter_scale, widened.
            real = float(_f32(inp.s * w_scales[c])) / float(out.s)
        else:
            # PopulateConvolutionQuantizationParams: double(input) * double(filter) / double(output).
            real = float(inp.s) * float(w_scales[c]) / float(out.s)
        m, s = quantize_multiplier(real)
        mult[c], shift[c] = m, s
    act_min, act_max = activation_range(activation, out)
    b = _bias_array(bias, channels)
    a_offset = -inp.zp
    if fold:
        if weights is None:
            raise ValueError("fold_input_offset=True needs the weights")
        b = fold_input_offset(b, weights, inp.zp)
        a_offset = 0
    return ConvQuant(mult, shift, a_offset, inp.zp, out.zp, act_min, act_max, b, weight.scale.size > 1, out.dtype)


def conv2d_quant(input: QParams, weight: QParams, output: QParams, activation: ActivationLike = "NONE", *,
                 bias=None, channels: Optional[int] = None, weights=None,
                 fold_input_offset: bool = False) -> ConvQuant:
    """CONV_2D int8: mirrors ``conv.cc`` Prepare -> ``PopulateConvolutionQuantizationParams``
    (kernel_util.cc) and the ``reference_integer_ops::ConvPerChannel`` arithmetic.

    For every output channel c: ``real = double(s_in) * double(s_w[c]) / double(s_out)`` (a per-tensor
    weight scale is broadcast to every channel, exactly as TFLite does), ``(m[c], shift[c]) =
    QuantizeMultiplier(real)``; ``acc = sum (x - zp_in) * w + bias[c]``; ``y = clamp(MBQM(acc, m[c],
    shift[c]) + zp_out, act_min, act_max)``. Padding taps are skipped by TFLite, which the NPU gets by
    loading the halo with ``pad_value = zp_in`` and running the MAC with ``a_offset = -zp_in``.

    ``bias`` is the int32 bias tensor as stored (TFLite does not rescale it; its scale should be
    ``s_in * s_w[c]``). With ``fold_input_offset=True`` (and ``weights`` in NPU layout) the input offset
    is folded into the bias and ``a_offset`` is 0 (:func:`fold_input_offset`). Weights must have zero
    point 0; int8 activations only.
    """
    return _conv_like(input, weight, output, activation, bias, channels, weights, fold_input_offset, False)


def depthwise_conv2d_quant(input: QParams, weight: QParams, output: QParams, activation: ActivationLike = "NONE",
                           *, bias=None, channels: Optional[int] = None, weights=None,
                           fold_input_offset: bool = False) -> ConvQuant:
    """DEPTHWISE_CONV_2D int8: mirrors ``depthwise_conv.cc`` Prepare (``PopulateConvolutionQuantizationParams``)
    and ``reference_integer_ops::DepthwiseConvPerChannel``. Output channel ``oc = ic * depth_multiplier + m``
    uses ``(m[oc], shift[oc])``; everything else is as :func:`conv2d_quant` (``dwconv2d`` on the NPU)."""
    return _conv_like(input, weight, output, activation, bias, channels, weights, fold_input_offset, False)


def fully_connected_quant(input: QParams, weight: QParams, output: QParams, activation: ActivationLike = "NONE",
                          *, bias=None, channels: Optional[int] = None, weights=None,
                          fold_input_offset: bool = False, bias_scale: Optional[float] = None) -> ConvQuant:
    """FULLY_CONNECTED int8 with the (multiplier, shift) of ``fully_connected.cc`` PrepareImpl, i.e. the
    MBQM arithmetic of TFLite's optimized kernels (``gemm`` on the NPU, weights transposed to ``[K, N]``).
    LiteRT's *reference* FULLY_CONNECTED rescales in double precision instead; use
    :func:`fully_connected_exact_quant` to match BUILTIN_REF.

    Per-tensor weights use ``GetQuantizedConvolutionMultipler``: the product ``s_in * s_w`` is taken in
    **float32** and then widened (unlike CONV_2D, which multiplies in double); per-channel weights use
    ``double(s_in) * double(s_w[c]) / double(s_out)``. When ``bias_scale`` is given, TFLite's check
    ``|s_in*s_w - s_bias| / s_out <= 0.02`` (per-tensor path) is applied and a violation raises.
    """
    q = _conv_like(input, weight, output, activation, bias, channels, weights, fold_input_offset, True)
    if bias_scale is not None and weight.scale.size == 1:
        product = float(input.s) * float(weight.s)
        if abs(product - float(_f32(bias_scale))) / float(output.s) > 0.02:
            raise ValueError(f"bias scale {bias_scale!r} differs from input*filter scale {product!r} by more than "
                             "0.02 output steps (TFLite GetQuantizedConvolutionMultipler rejects the model)")
    return q


def _round_half_away_product(acc, scale: float) -> np.ndarray:
    """C ``round(double(acc) * scale)``: the double product (IEEE rounding, as numpy computes it), then
    round half away from zero, computed without the ``floor(x + 0.5)`` double-rounding trap."""
    v = np.asarray(acc, np.float64) * scale
    a = np.abs(v)
    f = np.floor(a)
    return (np.sign(v) * (f + (a - f >= 0.5))).astype(np.int64)


def _mbqm_sat(x, multiplier, shift: int) -> np.ndarray:
    """MBQM with the NPU's saturating left shift (monotonic in x and, for a fixed sign of x, in multiplier)."""
    x = np.asarray(x, np.int64)
    shifted = np.clip(x * (np.int64(1) << max(shift, 0)), INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(srdhm(shifted, multiplier), max(-shift, 0))


def exact_rounding_multiplier(scale: float, lo: int, hi: int) -> Optional[Tuple[int, int]]:
    """A ``(multiplier, shift)`` for which ``clamp(MBQM(acc, m, shift), lo, hi)`` equals
    ``clamp(round_half_away(double(acc) * scale), lo, hi)`` for **every** int32 ``acc``, or None.

    This is how the NPU can reproduce reference kernels that rescale in double precision (LiteRT's
    ``reference_integer_ops::FullyConnected``) with ``vrequant``. Both sides are monotonic step functions of
    ``acc``, so they agree everywhere iff the first accumulator of every output level ``t`` in
    ``(lo, hi]`` is the same; those ``hi - lo`` boundary accumulators are computed exactly, and for each
    candidate shift (TFLite's own, up to 0: fewer fractional bits but no double rounding) every boundary
    constrains the multiplier to a half-line, found by bisection. Any multiplier in the intersection is
    exact; the one closest to ``scale * 2^(31 - shift)`` is returned. ``lo``/``hi`` are output levels before
    the zero point is added (``act_min - zp_out``, ``act_max - zp_out``).
    """
    scale = float(scale)
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    t = np.arange(lo + 1, hi + 1, dtype=np.int64)
    if t.size == 0:
        return quantize_multiplier(scale)
    # first accumulator of level t: smallest a with round(a * scale) >= t
    a = np.clip(np.ceil((t - 0.5) / scale), INT32_MIN - 1.0, INT32_MAX + 1.0).astype(np.int64)
    for _ in range(8):
        a = np.where(_round_half_away_product(a - 1, scale) >= t, a - 1, a)
        a = np.where(_round_half_away_product(a, scale) < t, a + 1, a)
    if not (np.all(_round_half_away_product(a, scale) >= t) and np.all(_round_half_away_product(a - 1, scale) < t)):
        raise AssertionError("level boundaries did not converge")  # pragma: no cover
    # constraints: g(a) >= t and g(a - 1) <= t - 1, for accumulators inside int32
    xs = np.concatenate([a, a - 1])
    ts = np.concatenate([t, t - 1])
    ge = np.concatenate([np.ones(t.size, bool), np.zeros(t.size, bool)])
    inside = (xs >= INT32_MIN) & (xs <= INT32_MAX)
    xs, ts, ge = xs[inside], ts[inside], ge[inside]
    if np.any((xs == 0) & ((ge & (ts > 0)) | (~ge & (ts < 0)))):
        return None
    nz = xs != 0
    xs, ts, ge = xs[nz], ts[nz], ge[nz]
    m0, s0 = quantize_multiplier(scale)
    shifts = list(range(max(s0, 0), s0 - 1, -1)) if s0 <= 0 else [s0]
    top = np.int64(INT32_MAX)
    for shift in shifts:
        def ok(m):
            v = _mbqm_sat(xs, m, shift)
            return np.where(ge, v >= ts, v <= ts)

        # each constraint holds for m >= bound (rising) or m <= bound (falling); g rises with m iff x > 0
        rising = (xs > 0) == ge
        lo_m = np.where(rising, 0, 0).astype(np.int64)
        hi_m = np.full(xs.size, top, np.int64)
        if not np.all(ok(np.where(rising, hi_m, lo_m))):
            continue
        # bisection for the boundary of each half-line: invariant ok(inner) true, ok(outer) false
        inner = np.where(rising, hi_m, lo_m)
        outer = np.where(rising, np.int64(-1), top + 1)
        while np.any(np.abs(inner - outer) > 1):
            mid = (inner + outer) // 2
            good = ok(np.clip(mid, 0, top))
            inner = np.where(good, mid, inner)
            outer = np.where(good, outer, mid)
        low = int(np.max(np.where(rising, inner, 0)))
        high = int(np.min(np.where(rising, top, inner)))
        if low <= high:
            target = scale * 2.0 ** (31 - shift)
            return int(min(max(int(round(target)), low), high)), shift
    return None


def fully_connected_exact_quant(input: QParams, weight: QParams, output: QParams, activation: ActivationLike = "NONE",
                                *, bias=None, channels: Optional[int] = None, weights=None,
                                fold_input_offset: bool = False) -> ConvQuant:
    """FULLY_CONNECTED int8 as LiteRT's **reference** kernel computes it, as far as ``vrequant`` can.

    ``fully_connected.cc`` ``FullyConnectedInt8<kReference>`` / ``FullyConnectedPerChannelInt8<kReference>``
    call the ``reference_integer_ops::FullyConnected(..., input_scale, output_scale, filter_scale)``
    overloads, which do not use the (multiplier, shift) of Prepare: they compute
    ``round(double(acc) * (double(s_in) * double(s_w[c]) / double(s_out)))`` (C ``round``: half away from
    zero), add ``zp_out`` and clamp. (The optimized kernels of the default resolver use MBQM instead, so
    the two TFLite resolvers differ on FULLY_CONNECTED; :func:`fully_connected_quant` gives the MBQM one.)

    For each channel :func:`exact_rounding_multiplier` searches a (multiplier, shift) whose MBQM equals
    that rounding for every int32 accumulator within the clamp window. Such a pair exists for roughly 70% of
    random scale ratios; channels without one keep TFLite's ``QuantizeMultiplier`` pair (off by one step
    on a few accumulators near rounding ties) and are marked False in ``exact_channels``, so the compiler
    can decide (run the layer on the CPU, or accept the rare one-step differences).
    """
    q = _conv_like(input, weight, output, activation, bias, channels, weights, fold_input_offset, True)
    mult, shift = q.multiplier.copy(), q.shift.copy()
    exact = np.zeros(q.channels, bool)
    cache = {}
    w_scales = weight.channel_scales(q.channels)
    lo, hi = q.act_min - q.o_offset, q.act_max - q.o_offset
    for c in range(q.channels):
        real = float(input.s) * float(w_scales[c]) / float(output.s)
        if real not in cache:
            cache[real] = exact_rounding_multiplier(real, lo, hi)
        found = cache[real]
        if found is not None:
            mult[c], shift[c] = found
            exact[c] = True
    return dataclasses.replace(q, multiplier=mult, shift=shift, exact_channels=exact)


def conv_output_size(in_size: int, kernel: int, stride: int = 1, dilation: int = 1, padding: str = "SAME") -> int:
    """TFLite ``ComputeOutSize`` for one spatial dimension, padding ``"SAME"`` or ``"VALID"``."""
    eff = (kernel - 1) * dilation + 1
    padding = padding.upper()
    if padding == "SAME":
        return (in_size + stride - 1) // stride
    if padding == "VALID":
        return (in_size - eff + stride) // stride
    raise ValueError(f"padding must be SAME or VALID, got {padding!r}")


def same_padding(in_size: int, kernel: int, stride: int = 1, dilation: int = 1,
                 padding: str = "SAME") -> Tuple[int, int, int]:
    """TFLite ``ComputePaddingHeightWidth`` for one dimension: ``(out_size, pad_before, pad_after)``.

    ``pad_before = total // 2`` and the odd pixel goes after (TFLite's ``offset``). For the NPU these
    are the DMA halo rows / columns (``pad_value = zp_in`` for convolutions); ``vpool`` takes
    ``pad_top`` / ``pad_left`` directly and clips the window instead.
    """
    out = conv_output_size(in_size, kernel, stride, dilation, padding)
    eff = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2, total - total // 2


# ---------------------------------------------------------------------------------------------
# elementwise binary ops
# ---------------------------------------------------------------------------------------------


def _add_sub_quant(a: QParams, b: QParams, out: QParams, activation: ActivationLike, kernel: str) -> dict:
    a, b, out = _as_qparams(a, "input1"), _as_qparams(b, "input2"), _as_qparams(out, "output")
    for q, what in ((a, "input1"), (b, "input2"), (out, "the output")):
        _require_per_tensor(q, what)
    if not a.dtype == b.dtype == out.dtype:
        raise ValueError(f"{kernel}: input and output dtypes differ ({a.dtype}, {b.dtype}, {out.dtype})")
    if out.dtype == "int16":
        if a.zp or b.zp or out.zp:
            raise ValueError(f"{kernel} int16 needs zero points 0")
        left_shift = 15
    else:
        left_shift = 20
    # twice_max_input_scale = 2 * (double) max(float s1, float s2); the rest in double.
    twice_max = 2.0 * float(max(a.s, b.s))
    real1 = float(a.s) / twice_max
    real2 = float(b.s) / twice_max
    real_out = twice_max / (float(1 << left_shift) * float(out.s))
    m1, s1 = quantize_multiplier_smaller_than_one(real1)
    m2, s2 = quantize_multiplier_smaller_than_one(real2)
    if real_out >= 1.0:
        raise ValueError(f"{kernel}: output multiplier {real_out!r} >= 1 (output scale {float(out.s)!r} is tiny "
                         f"next to the input scales); TFLite's int8 kernel cannot represent it either")
    mo, so = quantize_multiplier_smaller_than_one(real_out)
    act_min, act_max = activation_range(activation, out)
    return dict(a_offset=-a.zp, a_mult=m1, a_shift=s1, b_offset=-b.zp, b_mult=m2, b_shift=s2,
                left_shift=left_shift, o_mult=mo, o_shift=so, o_offset=out.zp, act_min=act_min, act_max=act_max)


def add_quant(input1: QParams, input2: QParams, output: QParams, activation: ActivationLike = "NONE") -> dict:
    """ADD int8/int16: mirrors ``add.cc`` Prepare (general quantised path) and
    ``reference_integer_ops::Add`` / ``BroadcastAdd6DSlow``. Returns the ``vadd`` fields.

    ``left_shift = 20`` (15 for int16, zero points 0); ``twice_max = 2 * max(s1, s2)``;
    ``(a_mult, a_shift) = QuantizeMultiplierSmallerThanOneExp(s1 / twice_max)``, likewise b;
    ``(o_mult, o_shift) = QuantizeMultiplierSmallerThanOneExp(twice_max / (2^left_shift * s_out))``;
    offsets ``-zp1, -zp2``, ``o_offset = zp_out``, fused activation range. The NPU's
    ``MBQM(x, m, s)`` with ``s <= 0`` is exactly TFLite's ``MultiplyByQuantizedMultiplierSmallerThanOneExp``.
    """
    return _add_sub_quant(input1, input2, output, activation, "ADD")


def sub_quant(input1: QParams, input2: QParams, output: QParams, activation: ActivationLike = "NONE") -> dict:
    """SUB int8/int16: mirrors ``sub.cc`` ``PrepareGeneralSubOp`` and ``reference_ops::Sub`` /
    ``BroadcastQuantSubSlow`` (``SubElementwise``). Same fields as :func:`add_quant`, for ``vsub``.

    TFLite switches to ``QuantizeMultiplierGreaterThanOne`` when the output multiplier exceeds 1 and then
    feeds a positive shift to ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (undefined); such
    parameters raise ValueError here.
    """
    return _add_sub_quant(input1, input2, output, activation, "SUB")


def mul_quant(input1: QParams, input2: QParams, output: QParams, activation: ActivationLike = "NONE") -> dict:
    """MUL int8/int16: mirrors ``mul.cc`` Prepare and ``reference_integer_ops::Mul`` (``MulElementwise``).
    Returns the ``vmul`` fields.

    ``real = s1 * s2 / s_out`` computed in **float32** (the C++ expression multiplies the float scales
    before widening to double), ``(o_mult, o_shift) = QuantizeMultiplier(real)``; per element
    ``clamp(MBQM((x - zp1) * (y - zp2), o_mult, o_shift) + zp_out)``. int16 needs zero points 0.
    """
    a, b, out = _as_qparams(input1, "input1"), _as_qparams(input2, "input2"), _as_qparams(output, "output")
    for q, what in ((a, "input1"), (b, "input2"), (out, "the output")):
        _require_per_tensor(q, what)
    if not a.dtype == b.dtype == out.dtype:
        raise ValueError(f"MUL: input and output dtypes differ ({a.dtype}, {b.dtype}, {out.dtype})")
    if out.dtype == "int16" and (a.zp or b.zp or out.zp):
        raise ValueError("MUL int16 needs zero points 0")
    real = float(_f32(_f32(a.s * b.s) / out.s))
    m, s = quantize_multiplier(real)
    # the product (x - zp1)(y - zp2) is at most 256*256 = 2^16 for int8: the left shift must keep it in int32
    max_prod = (a.qmax - a.qmin) ** 2 if out.dtype == "int8" else 2**30
    if s > 0 and max_prod * (1 << s) > INT32_MAX:
        raise ValueError(f"MUL: multiplier {real!r} needs left shift {s}, which overflows int32")
    act_min, act_max = activation_range(activation, out)
    return dict(a_offset=-a.zp, a_mult=0, a_shift=0, b_offset=-b.zp, b_mult=0, b_shift=0, left_shift=0,
                o_mult=m, o_shift=s, o_offset=out.zp, act_min=act_min, act_max=act_max)


# ---------------------------------------------------------------------------------------------
# pooling, concatenation, requantisation
# ---------------------------------------------------------------------------------------------


def pool_quant(input: QParams, output: QParams, activation: ActivationLike = "NONE", mode: str = "avg") -> dict:
    """AVERAGE_POOL_2D / MAX_POOL_2D int8: mirrors ``pooling.cc`` and ``reference_integer_ops::AveragePool`` /
    ``MaxPool``. Returns the ``vpool`` fields ``act_min`` / ``act_max``.

    The kernels work on raw int8 values (no zero point is subtracted; the average rounds half away from
    zero over the in-bounds taps only, which is ``vpool``'s definition), so the result is only
    meaningful when input and output share scale and zero point. TFLite merely DCHECKs that (a release
    build silently computes with the input's grid); here a mismatch raises ValueError so that the
    compiler inserts a requantisation instead of producing wrong values.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    if inp.dtype != out.dtype or abs(float(inp.s) - float(out.s)) > 1e-6 or inp.zp != out.zp:
        raise ValueError(f"{'AVERAGE' if mode == 'avg' else 'MAX'}_POOL_2D needs equal input and output "
                         f"quantisation, got {inp!r} -> {out!r}")
    act_min, act_max = activation_range(activation, out)
    return dict(act_min=act_min, act_max=act_max)


def requantize_quant(input: QParams, output: QParams) -> Tuple[int, int]:
    """QUANTIZE int8 -> int8 (``quantize.cc`` Prepare, ``reference_ops::Requantize``): ``(m, shift) =
    QuantizeMultiplier(double(s_in) / double(s_out))``; per element
    ``clamp(MBQM(x - zp_in, m, shift) + zp_out)``. :func:`requantize_lut` is the same as a table."""
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    return quantize_multiplier(float(inp.s) / float(out.s))


def requantize_lut(input: QParams, output: QParams) -> np.ndarray:
    """256-entry ``vlut`` table of QUANTIZE int8 -> int8 (``reference_ops::Requantize``; exact)."""
    m, s = requantize_quant(input, output)
    x = np.arange(-128, 128, dtype=np.int64)
    y = multiply_by_quantized_multiplier(x - input.zp, m, s) + output.zp
    return np.clip(y, -128, 127).astype(np.int8)


def concat_quant(inputs: Sequence[QParams], output: QParams) -> List[Optional[np.ndarray]]:
    """CONCATENATION int8 (``concatenation.cc``): one entry per input, None for a plain copy.

    TFLite's Prepare requires every int8 input to have exactly the output's scale and zero point
    (``TF_LITE_ENSURE_EQ``), and then the reference kernel is a byte copy, so for a TFLite model every
    entry is None. Inputs whose parameters differ (possible in models from other importers) get a
    256-entry ``vlut`` table with TFLite QUANTIZE int8->int8 semantics (:func:`requantize_lut`), which
    is what the TFLite converter inserts in front of such a concatenation.
    """
    out = _as_qparams(output, "output")
    _require_per_tensor(out, "the output")
    res: List[Optional[np.ndarray]] = []
    for i, q in enumerate(inputs):
        q = _as_qparams(q, f"input {i}")
        _require_per_tensor(q, f"input {i}")
        res.append(None if q.equals(out) else requantize_lut(q, out))
    return res


# ---------------------------------------------------------------------------------------------
# 256-entry tables for unary int8 kernels
# ---------------------------------------------------------------------------------------------


def npu_lut_order(tflite_lut) -> np.ndarray:
    """TFLite's int8 LUT layout (``lut[(uint8)x]``) -> the NPU's (``lut[x + 128]``)."""
    t = np.asarray(tflite_lut).astype(np.int8).reshape(256)
    return t[np.arange(-128, 128).astype(np.uint8)]


def apply_lut(table, x) -> np.ndarray:
    """numpy model of ``vlut``: ``table[x + 128]``."""
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]


class _LibM:
    """The float32 libm functions TFLite's LUT builders call (expf, tanhf, expm1f, erfcf).

    TFLite evaluates ``std::exp(float)`` etc. with the C library's float functions; the LiteRT wheel links
    libm dynamically, so on the same machine the same functions give the same bits. Without a loadable
    libm the double-precision function rounded to float32 is used (correctly rounded in practice, and
    equal to glibc's results except in rare last-bit cases).
    """

    def __init__(self) -> None:
        self.funcs = {}
        path = ctypes.util.find_library("m")
        try:
            lib = ctypes.CDLL(path) if path else None
        except OSError:
            lib = None
        for name in ("expf", "tanhf", "expm1f", "erfcf"):
            fn = getattr(lib, name, None) if lib is not None else None
            if fn is not None:
                fn.restype = ctypes.c_float
                fn.argtypes = [ctypes.c_float]
                self.funcs[name] = fn

    def call(self, name: str, x: np.float32) -> np.float32:
        fn = self.funcs.get(name)
        if fn is not None:
            return np.float32(fn(float(x)))
        fallback = {"expf": _safe_exp, "tanhf": math.tanh, "expm1f": _safe_expm1, "erfcf": math.erfc}[name]
        return np.float32(fallback(float(x)))


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _safe_expm1(x: float) -> float:
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


_LIBM: Optional[_LibM] = None


def _libm() -> _LibM:
    global _LIBM
    if _LIBM is None:
        _LIBM = _LibM()
    return _LIBM


def lut_from_float_fn(fn: Callable[[np.float32], np.float32], input: QParams, output: QParams) -> np.ndarray:
    """TFLite ``LUTPopulateInt8`` (common.h) for a float32 transform: the int8 LUT of LOGISTIC, TANH, ELU
    and GELU in the reference kernels (activations.cc Prepare), in NPU order.

    For every ``v`` in -128..127, all in float32: ``d = s_in * (float)(v - zp_in)``, ``t = fn(d)``,
    ``r = roundf(t * (1 / s_out))`` (the reciprocal is a float32), ``q = (int)(r + zp_out)``,
    clamped to int8. ``fn`` must reproduce the kernel's float32 transform bit for bit (use
    ``np.float32`` arithmetic; the :func:`logistic_lut` etc. wrappers do). A non-finite ``t * (1/s_out)``
    raises ValueError (TFLite's float-to-int conversion is undefined there).
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    if inp.dtype != "int8" or out.dtype != "int8":
        raise ValueError("LUT activations are int8 -> int8")
    inverse_scale = _f32(_f32(1.0) / out.s)
    table = np.empty(256, np.int8)
    for v in range(-128, 128):
        dequantized = _f32(inp.s * _f32(v - inp.zp))
        transformed = _f32(fn(dequantized))
        scaled = _f32(transformed * inverse_scale)
        if not np.isfinite(scaled):
            raise ValueError(f"transform gives {transformed!r} at input {v}: not representable")
        rescaled = _f32(_tflite_round(float(scaled)))
        quantized = int(_f32(rescaled + _f32(out.zp)))  # static_cast<int32_t> truncates (value is integral)
        table[v + 128] = min(127, max(-128, quantized))
    return table


def _sigmoid_f32(x: np.float32) -> np.float32:
    # activations.cc: [](float value) { return 1.0f / (1.0f + std::exp(-value)); }
    e = _libm().call("expf", -x)
    return _f32(_f32(1.0) / _f32(_f32(1.0) + e))


def logistic_lut(input: QParams, output: QParams) -> np.ndarray:
    """LOGISTIC int8: the table ``activations.cc`` ``SigmoidPrepare<kReference>`` builds with
    ``LUTPopulate<int8_t>`` and ``1.0f / (1.0f + std::exp(-value))``; ``SigmoidEval`` then only looks up.
    TFLite requires ``s_out == 1/256`` (checked here too); the output zero point is not checked by the
    reference path (the converter always uses -128)."""
    out = _as_qparams(output, "output")
    if float(out.s) != 1.0 / 256:
        raise ValueError(f"LOGISTIC int8 needs output scale 1/256, got {float(out.s)!r}")
    return lut_from_float_fn(_sigmoid_f32, input, output)


def tanh_lut(input: QParams, output: QParams) -> np.ndarray:
    """TANH int8: the table of ``activations.cc`` ``TanhPrepare<kReference>`` (``LUTPopulate<int8_t>`` with
    ``std::tanh(float)``). The reference Prepare checks no output parameters (the converter uses 1/128, 0)."""
    return lut_from_float_fn(lambda x: _libm().call("tanhf", x), input, output)


def elu_lut(input: QParams, output: QParams) -> np.ndarray:
    """ELU int8: ``activations.cc`` ``EluPrepare`` (``LUTPopulate<int8_t>`` with
    ``value < 0 ? std::expm1(value) : value``). ELU has one kernel, registered by the builtin resolver
    but not by BUILTIN_REF (LiteRT 2.3), so its reference is the builtin resolver without delegates."""
    def elu(x: np.float32) -> np.float32:
        return _libm().call("expm1f", x) if x < 0 else x
    return lut_from_float_fn(elu, input, output)


_SQRT1_2 = 0.70710678118654752440  # M_SQRT1_2
_2_SQRTPI = 1.12837916709551257390  # M_2_SQRTPI


def gelu_lut(input: QParams, output: QParams, approximate: bool = False) -> np.ndarray:
    """GELU int8: ``activations.cc`` ``GeluPrepare`` (``LUTPopulate<int8_t>`` with
    ``reference_ops::GeluTransform`` = ``0.5f * x * std::erfc(x * (float)(-M_SQRT1_2))``, or
    ``GeluTransformApproximate`` = ``0.5f * x * (1.f + std::tanh(kSqrt2dPi * (x + 0.044715f * x*x*x)))``
    with ``kSqrt2dPi = (float)(M_2_SQRTPI * M_SQRT1_2)``), in float32 in the C++ evaluation order."""
    libm = _libm()
    if approximate:
        k = _f32(_2_SQRTPI * _SQRT1_2)
        c = _f32(0.044715)

        def gelu(x: np.float32) -> np.float32:
            cube = _f32(_f32(_f32(c * x) * x) * x)
            th = libm.call("tanhf", _f32(k * _f32(x + cube)))
            return _f32(_f32(_f32(0.5) * x) * _f32(_f32(1.0) + th))
    else:
        neg = _f32(-_SQRT1_2)

        def gelu(x: np.float32) -> np.float32:
            return _f32(_f32(_f32(0.5) * x) * libm.call("erfcf", _f32(x * neg)))
    return lut_from_float_fn(gelu, input, output)


def leaky_relu_lut(input: QParams, output: QParams, alpha: float) -> np.ndarray:
    """LEAKY_RELU int8: ``activations.cc`` ``LeakyReluPrepare`` + ``reference_ops::QuantizeLeakyRelu``,
    evaluated for all 256 inputs.

    ``(m_id, s_id) = QuantizeMultiplier(s_in / s_out)`` and ``(m_a, s_a) = QuantizeMultiplier(s_in * alpha /
    s_out)``, both ratios in float32 as the C++ expressions are; ``d = x - zp_in``;
    ``y = zp_out + MBQM(d, d >= 0 ? m_id : m_a, ...)``, clamped to int8.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    m_a, s_a = quantize_multiplier(float(_f32(_f32(inp.s * _f32(alpha)) / out.s)))
    m_i, s_i = quantize_multiplier(float(_f32(inp.s / out.s)))
    d = np.arange(-128, 128, dtype=np.int64) - inp.zp
    pos = multiply_by_quantized_multiplier(np.maximum(d, 0), m_i, s_i)
    neg = multiply_by_quantized_multiplier(np.minimum(d, 0), m_a, s_a)
    y = np.where(d >= 0, pos, neg) + out.zp
    return np.clip(y, -128, 127).astype(np.int8)


def relu_lut(input: QParams, output: QParams, kind: str = "RELU") -> np.ndarray:
    """Standalone RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 int8: ``activations.cc`` ``ReluPrepare``
    (``QuantizeMultiplier(s_in / s_out)``, float32 ratio) and ``QuantizedReluX`` / ``ReluX``:
    ``y = clamp(zp_out + MBQM(x - zp_in, m, s), act_min, act_max)`` with the bounds
    ``max(-128, zp_out + roundf(lo / s_out))`` and ``min(127, zp_out + roundf(hi / s_out))`` (no upper
    bound for RELU). Unlike a fused activation this requantises, so it is a table, not a clamp.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    kind = _activation_name(kind)
    if kind == "NONE":
        raise ValueError("relu_lut needs RELU, RELU6, RELU_N1_TO_1 or RELU_0_TO_1")
    act_min, act_max = activation_range(kind, out)
    m, s = quantize_multiplier(float(_f32(inp.s / out.s)))
    y = multiply_by_quantized_multiplier(np.arange(-128, 128, dtype=np.int64) - inp.zp, m, s) + out.zp
    return np.clip(y, act_min, act_max).astype(np.int8)


# ---- HARD_SWISH: reference_ops::HardSwish (hard_swish.h), 16-bit fixed point -------------------

def _i16(x) -> np.ndarray:
    x = np.asarray(x, np.int64)
    return (x + 2**15) % 2**16 - 2**15


def _srdhm16(a, b) -> np.ndarray:
    # gemmlowp SaturatingRoundingDoublingHighMul<int16_t>
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    t = ab + nudge
    q = np.where(t < 0, -((-t) // (1 << 15)), t // (1 << 15))
    return np.where((a == b) & (a == -32768), 32767, _i16(q))


def _sdhm16(a, b) -> np.ndarray:
    # hard_swish.h SaturatingDoublingHighMul: truncating division, no rounding
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    ab = a * b
    q = np.where(ab < 0, -((-ab) // (1 << 15)), ab // (1 << 15))
    return np.where((a == b) & (a == -32768), 32767, _i16(q))


def _sat_left_shift16(x, amount: int) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64) * (1 << amount), -32768, 32767)


def _downscale_to_int16(m: int) -> int:
    # quantization_util / activations.cc DownScaleInt32ToInt16Multiplier
    if m >= INT32_MAX - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def hard_swish_lut(input: QParams, output: QParams) -> np.ndarray:
    """HARD_SWISH int8: ``activations.cc`` ``HardSwishPrepare`` and the fixed-point
    ``reference_ops::HardSwish`` (hard_swish.h) evaluated for all 256 inputs -- the reference kernel is not
    a LUT, but it is a function of one byte, so its table is exact.

    Prepare (float32): ``hires = (1/128) * s_in``; ``QuantizeMultiplier(hires / s_out)`` and
    ``QuantizeMultiplier(hires / (3/32768))``, each multiplier rounded to int16 by
    ``DownScaleInt32ToInt16Multiplier``; the output exponent must be <= 0 (TFLite's ENSURE; ValueError here).
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    hires = _f32(_f32(1.0 / 128.0) * inp.s)
    reluish_scale = _f32(3.0 / 32768.0)
    out_m32, out_exp = quantize_multiplier(float(_f32(hires / out.s)))
    if out_exp > 0:
        raise ValueError(f"HARD_SWISH: output multiplier exponent {out_exp} > 0 (s_in {float(inp.s)!r} is more than "
                         f"128 x s_out {float(out.s)!r}); TFLite's Prepare rejects it")
    rel_m32, rel_exp = quantize_multiplier(float(_f32(hires / reluish_scale)))
    out_m16, rel_m16 = _downscale_to_int16(out_m32), _downscale_to_int16(rel_m32)

    x = np.arange(-128, 128, dtype=np.int64)
    value = _i16(x - inp.zp)
    hires_value = _i16(value * 128)
    preshift_out = _srdhm16(hires_value, out_m16)
    reluish = hires_value
    if rel_exp > 0:
        reluish = _sat_left_shift16(reluish, rel_exp - 1)
    reluish = _srdhm16(reluish, rel_m16)
    if rel_exp > 0:
        reluish = _sat_left_shift16(reluish, 1)
    if rel_exp < 0:
        reluish = _i16(rounding_divide_by_pot(reluish, -rel_exp))
    reluish = _i16((reluish + (1 << 15)) >> 1)
    preshift = _sdhm16(reluish, preshift_out)
    y = _i16(rounding_divide_by_pot(preshift, -out_exp))
    y = _i16(y + out.zp)
    return np.clip(y, -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# SOFTMAX
# ---------------------------------------------------------------------------------------------

SOFTMAX_NOTE = """\
int8 SOFTMAX cannot be run bit-exactly with ISA v1; keep it on the CPU.

The BUILTIN_REF kernel (activations.cc SoftmaxPrepare<kReference> -> reference_ops::Softmax in
reference/softmax.h) is gemmlowp fixed point, not a LUT: per row it takes max_in_row, and for every
element with diff = x - max >= diff_min computes exp_on_negative_values(MBQM-GreaterThanOne(diff,
input_multiplier, input_left_shift)) in Q5.26 -> Q0.31, sums Rescale<12>(exp) in Q12.19, takes
GetReciprocal(sum) (CountLeadingZeros, a data-dependent shift and a fixed-point Newton-Raphson
one_over_one_plus_x_for_x_in_0_1), and outputs RoundingDivideByPOT(SRDHM(shifted_scale, exp),
num_bits_over_unit + 23) - 128. The per-element exp is a function of diff in [-255, 0] and could be
gathered from a 256-entry int32 table (4 byte-wise vlut lookups on two clamped int8 indices, recombined
with int32 vmul/vadd), and the row max/sum map onto vreduce. What has no ISA v1 equivalent is the
per-row reciprocal: it needs count-leading-zeros, a per-row variable shift and int32 SRDHM steps
(vrequant only produces int8/int16, vmul.i32 is a plain wrapping product), and the final
RoundingDivideByPOT uses a per-row exponent. A bit-exact NPU softmax would need an ISA extension
(e.g. a fixed-point reciprocal instruction and a vrequant whose (multiplier, shift) come per row from
ACC at run time)."""


# ---------------------------------------------------------------------------------------------
# MEAN (appended: used by tvm_npu.codegen.lower_int for "qmean")
# ---------------------------------------------------------------------------------------------


def mean_quant(input: QParams, output: QParams, count: int, rounding: str = "real") -> dict:
    """int8 MEAN over ``count`` elements as one ``vrequant`` after an int32 sum.

    The NPU sequence: ``vreduce`` SUM (int8 -> int32), ``vadd.i32`` of the scalar ``offset =
    -count * zp_in`` (so the accumulator is ``sum(x - zp_in)``), then ``vrequant`` with ``mult``,
    ``shift``, ``o_offset = zp_out`` and the int8 range: ``y = clamp(MBQM(sum - count*zp_in, mult, shift)
    + zp_out, -128, 127)``. Returns those fields as a dict (``offset``, ``mult``, ``shift``, ``o_offset``,
    ``act_min``, ``act_max``). Two choices of ``(mult, shift)``:

    * ``rounding="real"``: ``QuantizeMultiplier(double(s_in) / (double(s_out) * count))``, the rescale of
      the real-valued mean ``mean(x - zp_in) * s_in / s_out`` in one step.
    * ``rounding="tflite"``: what LiteRT's int8 MEAN computes (``reduce.cc`` PrepareMeanOrSum and
      ``reference_ops::QuantizedMeanOrSum``, the kernel BUILTIN_REF runs, also for 4-D H,W means):
      ``(m0, s0) = QuantizeMultiplier(double(s_in) / double(s_out))``; ``k = min(floor(log2(count)), 32,
      31 + s0)``; ``mult = (int64(m0) << k) / count`` (truncating), ``shift = s0 - k``. Byte-exact with
      LiteRT; it differs from ``"real"`` by one step on about 1% of outputs.

    A multiplier needing a left shift saturates on the NPU where TFLite's int32 shift would overflow; the
    output then clamps either way. ``count * 255`` must fit in int32.
    """
    inp, out = _as_qparams(input, "input"), _as_qparams(output, "output")
    _require_per_tensor(inp, "the input")
    _require_per_tensor(out, "the output")
    if inp.dtype != "int8" or out.dtype != "int8":
        raise ValueError(f"MEAN: int8 only, got {inp.dtype} -> {out.dtype}")
    count = int(count)
    if count < 1 or count * 255 > INT32_MAX:
        raise ValueError(f"MEAN over {count} elements: the int32 sum could overflow")
    if rounding == "real":
        m, s = quantize_multiplier(float(inp.s) / (float(out.s) * count))
    elif rounding == "float":
        m, s = single_rounding_multiplier(float(inp.s) / (float(out.s) * count))
    elif rounding == "tflite":
        m0, s0 = quantize_multiplier(float(inp.s) / float(out.s))
        k = min(count.bit_length() - 1, 32, 31 + s0)
        m, s = (m0 << k) // count, s0 - k
    else:
        raise ValueError(f"rounding must be 'real', 'float' or 'tflite', got {rounding!r}")
    return dict(offset=-count * inp.zp, mult=int(m), shift=int(s), o_offset=out.zp, act_min=-128, act_max=127)


__all__ += ["mean_quant"]


# ---------------------------------------------------------------------------------------------
# float QDQ semantics (ONNX): one rounding instead of TFLite's two
# ---------------------------------------------------------------------------------------------

def single_rounding_multiplier(real: float) -> Tuple[int, int]:
    """``(m, shift)`` such that ``MultiplyByQuantizedMultiplier(x, m, shift)`` rounds ``x * real`` ONCE.

    TFLite's pair for ``real < 0.5`` is a normalised ``m`` with a right shift: SaturatingRoundingDoublingHighMul
    rounds, then RoundingDivideByPOT rounds again, and the double rounding moves results that land
    within ``2^-k`` (``k`` = the shift) of a half step, which the float definition of a quantised graph
    (``quantize(dequantize(...))``: one round-half-to-even of the real value) does not. With
    ``m = round(real * 2^31)`` and ``shift = 0`` only the high-multiply rounds (``real`` keeps
    ``log2(real * 2^31)`` significant bits, 21 for ``real = 1e-3``); ``real >= 0.5`` keeps TFLite's pair,
    whose shift is a left shift (exact). Ties still round away from zero where the float definition
    rounds to even. A ``real`` below 2^-32 gives (0, 0), like TFLite's flush: ``x * real`` rounds to 0
    for every int32 ``x`` (dead channels of real models have such scales).
    """
    if not (real >= 0.0) or real != real or real == float("inf"):
        raise ValueError(f"requantisation multiplier {real!r} must be non-negative and finite")
    if real >= 0.5:
        return quantize_multiplier(real)
    return int(round(real * (1 << 31))), 0


def float_rounding(cq: ConvQuant, input: QParams, weight: QParams, output: QParams) -> ConvQuant:
    """A ConvQuant whose per-channel multipliers round once (:func:`single_rounding_multiplier`):
    ``real[c] = double(s_in) * double(s_w[c]) / double(s_out)``. For ONNX QDQ graphs, whose definition
    is float arithmetic with one quantize, rather than TFLite's reference kernels."""
    w_scales = weight.channel_scales(cq.channels)
    mult = np.zeros(cq.channels, np.int32)
    shift = np.zeros(cq.channels, np.int32)
    for c in range(cq.channels):
        mult[c], shift[c] = single_rounding_multiplier(float(input.s) * float(w_scales[c]) / float(output.s))
    return dataclasses.replace(cq, multiplier=mult, shift=shift, exact_channels=None)


def mul_float_rounding(fields: dict, input1: QParams, input2: QParams, output: QParams) -> dict:
    """:func:`mul_quant` fields with a single-rounding output multiplier (float QDQ semantics)."""
    m, s = single_rounding_multiplier(float(input1.s) * float(input2.s) / float(output.s))
    return dict(fields, o_mult=m, o_shift=s)


__all__ += ["single_rounding_multiplier", "float_rounding", "mul_float_rounding"]
