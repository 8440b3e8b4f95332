"""The tvm_npu.quant package keeps the public names of the former single module tvm_npu/quant.py."""

from __future__ import annotations

import importlib

import tvm_npu.quant as Q

# __all__ of tvm_npu/quant.py before the split, in its order
OLD_ALL = [
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
SUBMODULES = ["multiplier", "params", "activation", "conv", "elementwise", "lut", "softmax", "qdq"]


def test_public_names_are_reexported():
    assert Q.__all__ == OLD_ALL
    for name in OLD_ALL + ["INT32_MIN", "INT32_MAX", "ActivationLike"]:  # the last three: public, not in __all__
        assert getattr(Q, name) is not None, name
    assert (Q.INT32_MIN, Q.INT32_MAX) == (-(2**31), 2**31 - 1)


def test_each_name_lives_in_one_submodule_with_a_purpose_line():
    homes = {}
    for sub in SUBMODULES:
        mod = importlib.import_module(f"tvm_npu.quant.{sub}")
        doc = mod.__doc__ or ""
        assert doc.strip() and "\n" not in doc.strip(), sub  # a one-line purpose docstring
        for name in mod.__all__:
            assert getattr(Q, name) is getattr(mod, name), (sub, name)
            homes.setdefault(name, []).append(sub)
    assert all(len(v) == 1 for v in homes.values()), homes
    assert set(OLD_ALL) <= set(homes)
