"""CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED parameters (incl. the exact-FC search) and TFLite padding."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np

from .activation import ActivationLike, activation_range
from .multiplier import (INT32_MAX, INT32_MIN, _wrap_i32, quantize_multiplier, rounding_divide_by_pot, srdhm)
from .params import ConvQuant, QParams, _as_qparams, _f32, _require_per_tensor

__all__ = [
    "conv2d_quant", "depthwise_conv2d_quant", "fully_connected_quant", "fully_connected_exact_quant",
    "exact_rounding_multiplier", "fold_input_offset", "same_padding", "conv_output_size",
]

# ---------------------------------------------------------------------------------------------
# convolution family
# ---------------------------------------------------------------------------------------------


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
