"""Unary int8 activations as 256-entry vlut tables: LOGISTIC, TANH, ELU, GELU, HARD_SWISH, LEAKY_RELU and
standalone RELU / RELU6 / RELU_N1_TO_1. Each table is built by tvm_npu.quant from the reference kernel's own
arithmetic and must equal LiteRT BUILTIN_REF on all 256 inputs; the NPU's vlut then applies it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qprog import npu_lut
from tvm_npu.quant import (QParams, apply_lut, elu_lut, gelu_lut, hard_swish_lut, leaky_relu_lut, logistic_lut,
                           npu_lut_order, relu_lut, tanh_lut)
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

ALL = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16)
zps = st.integers(-128, 127)


def _reference_table(build, q_in: QParams, resolver: str = "ref") -> np.ndarray:
    """The reference kernel's output for every int8 input, in NPU table order."""
    b = ModelBuilder(0)
    x = b.add_input("x", ALL.shape, q_in)
    b.mark_output(build(b, x))
    (out,) = run_reference(b.finish(), [ALL], resolver)
    return out.reshape(256)


def _check(npu_emulator, table: np.ndarray, want: np.ndarray, seed: int = 0) -> None:
    assert table.dtype == np.int8 and table.shape == (256,)
    assert np.array_equal(table, want), f"{int((table != want).sum())} of 256 entries differ"
    # and the NPU applies it: every input once plus random data
    data = np.concatenate([ALL.reshape(1, 4, 4, 16), rand_int8(np.random.default_rng(seed), (1, 3, 4, 16))], 1)
    assert np.array_equal(npu_lut(npu_emulator, data, table), apply_lut(want, data))


@settings(max_examples=25)
@given(s_in=st.floats(0.002, 0.5), zp=zps, zp_out=st.sampled_from([-128, -100, 0]))
def test_logistic(npu_emulator, s_in, zp, zp_out):
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(1 / 256, zp_out)
    want = _reference_table(lambda b, x: b.logistic(x, q_out), q_in)
    _check(npu_emulator, logistic_lut(q_in, q_out), want)


@settings(max_examples=25)
@given(s_in=st.floats(0.002, 0.5), zp=zps, s_out=st.sampled_from([1 / 128, 1 / 100, 0.013]), zp_out=zps)
def test_tanh(npu_emulator, s_in, zp, s_out, zp_out):
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_out, zp_out)
    want = _reference_table(lambda b, x: b.tanh(x, q_out), q_in)
    _check(npu_emulator, tanh_lut(q_in, q_out), want)


@settings(max_examples=20)
@given(s_in=st.floats(0.005, 0.3), zp=zps, s_out=st.floats(0.005, 0.3), zp_out=zps)
def test_elu(npu_emulator, s_in, zp, s_out, zp_out):
    """BUILTIN_REF does not register ELU; its one kernel (EluPrepare's LUT) runs under the builtin resolver."""
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_out, zp_out)
    want = _reference_table(lambda b, x: b.elu(x, q_out), q_in, "builtin")
    _check(npu_emulator, elu_lut(q_in, q_out), want)


@settings(max_examples=20)
@given(s_in=st.floats(0.005, 0.3), zp=zps, s_out=st.floats(0.005, 0.3), zp_out=zps, approximate=st.booleans())
def test_gelu(npu_emulator, s_in, zp, s_out, zp_out, approximate):
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_out, zp_out)
    want = _reference_table(lambda b, x: b.gelu(x, q_out, approximate), q_in)
    _check(npu_emulator, gelu_lut(q_in, q_out, approximate), want)


@settings(max_examples=30)
@given(s_in=st.floats(0.003, 0.3), zp=zps, ratio=st.floats(0.05, 4.0), zp_out=zps)
def test_hard_swish(npu_emulator, s_in, zp, ratio, zp_out):
    """The reference HARD_SWISH is 16-bit fixed point (not a LUT); its table is still exact."""
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_in * ratio, zp_out)
    want = _reference_table(lambda b, x: b.hard_swish(x, q_out), q_in)
    _check(npu_emulator, hard_swish_lut(q_in, q_out), want)


@settings(max_examples=20)
@given(s_in=st.floats(0.003, 0.3), zp=zps, ratio=st.floats(0.1, 3.0), zp_out=zps,
       alpha=st.sampled_from([0.01, 0.1, 0.2, 0.3333, 1.5]))
def test_leaky_relu(npu_emulator, s_in, zp, ratio, zp_out, alpha):
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_in * ratio, zp_out)
    want = _reference_table(lambda b, x: b.leaky_relu(x, q_out, alpha), q_in)
    _check(npu_emulator, leaky_relu_lut(q_in, q_out, alpha), want)


@settings(max_examples=25)
@given(kind=st.sampled_from(["RELU", "RELU6", "RELU_N1_TO_1"]), s_in=st.floats(0.003, 0.3), zp=zps,
       ratio=st.sampled_from([1.0, 0.5, 0.77, 1.9, 3.0]), zp_out=zps)
def test_standalone_relu(npu_emulator, kind, s_in, zp, ratio, zp_out):
    """Standalone RELU ops requantise from the input to the output grid before clamping."""
    q_in, q_out = QParams.per_tensor(s_in, zp), QParams.per_tensor(s_in * ratio, zp_out)
    try:
        table = relu_lut(q_in, q_out, kind)
    except ValueError:  # an empty activation range: TFLite would produce a constant; skip
        return
    want = _reference_table(lambda b, x: b.relu(x, q_out, kind), q_in)
    _check(npu_emulator, table, want)


def test_converter_style_parameters(npu_emulator):
    """The parameters the TFLite converter emits: LOGISTIC -> (1/256, -128), TANH -> (1/128, 0)."""
    for s_in, zp in [(0.0235, -128), (0.1, 0), (0.05, 17)]:
        q_in = QParams.per_tensor(s_in, zp)
        q_log, q_tanh = QParams.per_tensor(1 / 256, -128), QParams.per_tensor(1 / 128, 0)
        _check(npu_emulator, logistic_lut(q_in, q_log), _reference_table(lambda b, x: b.logistic(x), q_in))
        _check(npu_emulator, tanh_lut(q_in, q_tanh), _reference_table(lambda b, x: b.tanh(x), q_in))


def test_table_checks():
    with pytest.raises(ValueError, match="1/256"):
        logistic_lut(QParams.per_tensor(0.1, 0), QParams.per_tensor(1 / 128, -128))
    with pytest.raises(ValueError, match="exponent"):
        hard_swish_lut(QParams.per_tensor(1.0, 0), QParams.per_tensor(0.001, 0))
    # TFLite stores int8 tables in uint8 cast order; the NPU wants table[x + 128]
    tfl = np.arange(256).astype(np.uint8).astype(np.int8)  # entry i holds (int8)i
    assert np.array_equal(npu_lut_order(tfl), np.arange(-128, 128))
