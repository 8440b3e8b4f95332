"""Float QDQ (ONNX) semantics: conv-family and MUL parameters re-derived with single-rounding multipliers."""

from __future__ import annotations

import dataclasses

import numpy as np

from .multiplier import single_rounding_multiplier
from .params import ConvQuant, QParams

__all__ = ["float_rounding", "mul_float_rounding"]

# ---------------------------------------------------------------------------------------------
# float QDQ semantics (ONNX): one rounding instead of TFLite's two
# ---------------------------------------------------------------------------------------------

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
