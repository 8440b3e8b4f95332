"""Fused activation ranges on the output's integer grid (tvm_npu.quant.activation)."""

from __future__ import annotations

import pytest

from tvm_npu.quant import QParams, activation_range


@pytest.mark.parametrize("act,scale,zp,want", [
    ("NONE", 0.1, 5, (-128, 127)),
    ("RELU", 0.1, 5, (5, 127)),
    ("RELU", 0.1, -128, (-128, 127)),
    ("RELU6", 6 / 255, -128, (-128, 127)),
    ("RELU6", 0.05, 10, (10, 127)),
    ("RELU6", 0.1, -100, (-100, -40)),
    ("RELU_N1_TO_1", 0.01, 0, (-100, 100)),
    ("RELU_N1_TO_1", 1 / 128, 0, (-128, 127)),
    (3, 0.1, -100, (-100, -40)),   # TFLite ActivationFunctionType RELU6
    ("RELU_0_TO_1", 0.01, -50, (-50, 50)),
])
def test_activation_range(act, scale, zp, want):
    assert activation_range(act, QParams.per_tensor(scale, zp)) == want


def test_activation_range_rejects_non_clamp_activations():
    with pytest.raises(ValueError, match="unsupported fused activation"):
        activation_range("TANH", QParams.per_tensor(0.1, 0))
