"""ADD / SUB / MUL fields, pooling, concatenation, QUANTIZE int8->int8 requantisation and MEAN."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .activation import ActivationLike, activation_range
from .multiplier import (INT32_MAX, multiply_by_quantized_multiplier, quantize_multiplier,
                         quantize_multiplier_smaller_than_one, single_rounding_multiplier)
from .params import QParams, _as_qparams, _f32, _require_per_tensor

__all__ = [
    "add_quant", "sub_quant", "mul_quant", "pool_quant", "concat_quant", "requantize_quant", "requantize_lut",
    "mean_quant",
]

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
