"""SOFTMAX: why int8 softmax stays on the CPU (:data:`SOFTMAX_NOTE`)."""

from __future__ import annotations

__all__ = ["SOFTMAX_NOTE"]

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
