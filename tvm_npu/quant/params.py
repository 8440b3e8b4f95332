"""Typed records: QParams (a tensor's scales, zero points) and ConvQuant (one conv-family layer's NPU fields)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from .multiplier import multiply_by_quantized_multiplier

__all__ = ["dtype_range", "QParams", "ConvQuant"]

_DTYPE_RANGE = {"int8": (-128, 127), "int16": (-32768, 32767)}

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
# convolution family: the record (the rules that fill it are in conv.py)
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
