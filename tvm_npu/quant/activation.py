"""Fused activations: the ``[act_min, act_max]`` clamp of TFLite ``CalculateActivationRangeQuantized``."""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from .multiplier import _tflite_round
from .params import QParams, _as_qparams, _f32, _require_per_tensor

__all__ = ["ActivationLike", "activation_range"]

ActivationLike = Union[None, str, int]

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
