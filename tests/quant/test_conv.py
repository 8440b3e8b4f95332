"""CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED int8: LiteRT reference vs the NPU emulator, byte for byte.

Each case writes a one-op int8 .tflite model (tvm_npu.testing.tflite_int8), runs it on LiteRT's
BUILTIN_REF kernels, and runs the same layer as a hand-built NPU program whose integer parameters
come only from tvm_npu.quant. The checks at the end (padding, the per-tensor broadcast and ConvQuant's
per-channel table) need no emulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qprog import npu_conv2d, npu_depthwise_conv2d, npu_fully_connected
from tvm_npu.quant import (QParams, conv2d_quant, depthwise_conv2d_quant, fully_connected_exact_quant,
                           fully_connected_quant, multiply_by_quantized_multiplier, quantize_multiplier, same_padding)
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, rand_qparams, run_reference

ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


def _qp(scale, zp):
    return QParams.per_tensor(scale, zp)


scales_in = st.floats(0.004, 0.25)
scales_out = st.floats(0.01, 0.6)
zps = st.integers(-128, 127)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31), cin=st.integers(1, 8), cout=st.integers(1, 20), k=st.integers(1, 3),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.sampled_from(["SAME", "VALID"]),
       per_channel=st.booleans(), act=st.sampled_from(ACTS), s_in=scales_in, zp_in=zps, s_out=scales_out,
       zp_out=zps, bias_mode=st.sampled_from(["vadd", "preload"]), h=st.integers(0, 6))
def test_conv2d_matches_tflite(npu_emulator, seed, cin, cout, k, stride, dilation, padding, per_channel, act,
                               s_in, zp_in, s_out, zp_out, bias_mode, h):
    size = (k - 1) * dilation + 1 + h
    xq, oq = _qp(s_in, zp_in), _qp(s_out, zp_out)
    b = ModelBuilder(seed)
    x = b.add_input("x", (1, size, size + 1, cin), xq)
    y = b.conv2d(x, cout, k, oq, stride=stride, dilation=dilation, padding=padding, activation=act,
                 per_channel=per_channel)
    b.mark_output(y)
    xin = rand_int8(b.rng, b.shape(x))
    (want,) = run_reference(b.finish(), [xin])
    cq = conv2d_quant(xq, b.qparams(1), oq, act, bias=b.data(2), channels=cout)
    got = npu_conv2d(npu_emulator, xin, b.data(1), cq, (stride, stride), (dilation, dilation), padding, bias_mode,
                     per_channel_table=per_channel)
    assert np.array_equal(got, want), np.abs(got.astype(int) - want).max()


def test_conv2d_larger_layer(npu_emulator):
    """16x16x32 -> 64, 3x3 SAME: the case where TVM's float emulation is off by one step."""
    b = ModelBuilder(7)
    xq, oq = _qp(0.0371, -17), _qp(0.0912, 9)
    x = b.add_input("x", (1, 16, 16, 32), xq)
    y = b.conv2d(x, 64, 3, oq, activation="RELU6")
    b.mark_output(y)
    xin = rand_int8(b.rng, b.shape(x))
    (want,) = run_reference(b.finish(), [xin])
    cq = conv2d_quant(xq, b.qparams(1), oq, "RELU6", bias=b.data(2))
    got = npu_conv2d(npu_emulator, xin, b.data(1), cq, (1, 1), (1, 1), "SAME")
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 20  # not saturated


def test_conv2d_folded_input_offset(npu_emulator):
    """The input zero point folded into the bias (MAC a_offset 0) gives the same bytes, halo included."""
    b = ModelBuilder(11)
    xq, oq = _qp(0.05, 77), _qp(0.2, -5)
    x = b.add_input("x", (1, 7, 9, 5), xq)
    y = b.conv2d(x, 6, 3, oq, stride=2, padding="SAME")
    b.mark_output(y)
    xin = rand_int8(b.rng, b.shape(x))
    (want,) = run_reference(b.finish(), [xin])
    w = b.data(1)
    cq = conv2d_quant(xq, b.qparams(1), oq, bias=b.data(2), weights=w.transpose(1, 2, 3, 0), fold_input_offset=True)
    assert cq.a_offset == 0 and cq.pad_value == 77
    got = npu_conv2d(npu_emulator, xin, w, cq, (2, 2), (1, 1), "SAME")
    assert np.array_equal(got, want)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), cin=st.integers(1, 12), mult=st.integers(1, 3), k=st.integers(1, 3),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.sampled_from(["SAME", "VALID"]),
       per_channel=st.booleans(), act=st.sampled_from(ACTS), s_in=scales_in, zp_in=zps, s_out=scales_out,
       zp_out=zps, bias_mode=st.sampled_from(["vadd", "preload"]), h=st.integers(0, 5))
def test_depthwise_conv2d_matches_tflite(npu_emulator, seed, cin, mult, k, stride, dilation, padding, per_channel,
                                         act, s_in, zp_in, s_out, zp_out, bias_mode, h):
    size = (k - 1) * dilation + 1 + h
    xq, oq = _qp(s_in, zp_in), _qp(s_out, zp_out)
    b = ModelBuilder(seed)
    x = b.add_input("x", (1, size + 1, size, cin), xq)
    y = b.depthwise_conv2d(x, k, oq, depth_multiplier=mult, stride=stride, dilation=dilation, padding=padding,
                           activation=act, per_channel=per_channel)
    b.mark_output(y)
    xin = rand_int8(b.rng, b.shape(x))
    (want,) = run_reference(b.finish(), [xin])
    cq = depthwise_conv2d_quant(xq, b.qparams(1), oq, act, bias=b.data(2), channels=cin * mult)
    got = npu_depthwise_conv2d(npu_emulator, xin, b.data(1), cq, (stride, stride), (dilation, dilation), padding,
                               bias_mode)
    assert np.array_equal(got, want), np.abs(got.astype(int) - want).max()


# ---- FULLY_CONNECTED ---------------------------------------------------------------------------------


def _fc_case(seed, batch, k, units, per_channel, act, xq, oq):
    b = ModelBuilder(seed)
    x = b.add_input("x", (batch, k), xq)
    y = b.fully_connected(x, units, oq, activation=act, per_channel=per_channel)
    b.mark_output(y)
    xin = rand_int8(b.rng, (batch, k))
    (want,) = run_reference(b.finish(), [xin])
    return b, xin, want


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31), batch=st.integers(1, 4), k=st.integers(1, 80), units=st.integers(1, 24),
       act=st.sampled_from(ACTS), s_in=scales_in, zp_in=zps, s_out=scales_out, zp_out=zps)
def test_fully_connected_exact_parameters_match_tflite(npu_emulator, seed, batch, k, units, act, s_in, zp_in,
                                                       s_out, zp_out):
    """BUILTIN_REF's int8 FULLY_CONNECTED rescales with round(double(acc) * s_in*s_w/s_out), not MBQM.
    When fully_connected_exact_quant finds (multiplier, shift) pairs that equal that rounding for every
    int32 accumulator, the NPU program must match byte for byte."""
    xq, oq = _qp(s_in, zp_in), _qp(s_out, zp_out)
    b, xin, want = _fc_case(seed, batch, k, units, False, act, xq, oq)
    cq = fully_connected_exact_quant(xq, b.qparams(1), oq, act, bias=b.data(2), channels=units)
    if not cq.exact:
        return  # no exact (M, shift) exists for this scale ratio: covered by the next tests
    got = npu_fully_connected(npu_emulator, xin, b.data(1), cq)
    assert np.array_equal(got, want)


def test_fully_connected_per_channel_exact(npu_emulator):
    b = ModelBuilder(3)
    xq, oq = _qp(0.07, -20), _qp(0.15, 4)
    x = b.add_input("x", (3, 40), xq)
    y = b.fully_connected(x, 16, oq, activation="RELU", per_channel=True)
    b.mark_output(y)
    xin = rand_int8(b.rng, (3, 40))
    (want,) = run_reference(b.finish(), [xin])
    cq = fully_connected_exact_quant(xq, b.qparams(1), oq, "RELU", bias=b.data(2))
    got = npu_fully_connected(npu_emulator, xin, b.data(1), cq)
    exact = cq.exact_channels
    assert exact.sum() >= 8  # most channels have an exact pair
    assert np.array_equal(got[:, exact], want[:, exact])


def test_fully_connected_rounding_is_not_mbqm():
    """Documents why FULLY_CONNECTED needs fully_connected_exact_quant: with TFLite's own QuantizeMultiplier
    pair, MBQM differs from the reference's double rounding for some accumulators of almost every scale."""
    rng = np.random.default_rng(5)
    differing = 0
    for _ in range(20):
        xq, oq = rand_qparams(rng), rand_qparams(rng, (0.02, 0.5))
        wq = QParams.per_tensor(float(np.exp(rng.uniform(np.log(0.002), np.log(0.05)))), 0)
        cq = fully_connected_quant(xq, wq, oq, channels=1)
        eff = float(xq.s) * float(wq.s) / float(oq.s)
        acc = np.arange(-int(130 / eff), int(130 / eff), dtype=np.int64)
        v = acc * eff
        exact = np.sign(v) * np.floor(np.abs(v) + 0.5)
        mbqm = multiply_by_quantized_multiplier(acc, cq.multiplier[0], cq.shift[0])
        differing += int(np.any(mbqm != exact))
    assert differing >= 15


@pytest.mark.parametrize("seed", range(6))
def test_fully_connected_exact_search_is_verified(seed):
    """Every pair the search returns reproduces round(acc * eff) on all accumulators of the output window."""
    rng = np.random.default_rng(100 + seed)
    xq, oq = rand_qparams(rng), rand_qparams(rng, (0.02, 0.5))
    wq = QParams.per_tensor(float(np.exp(rng.uniform(np.log(0.002), np.log(0.05)))), 0)
    cq = fully_connected_exact_quant(xq, wq, oq, "RELU6", channels=1)
    eff = float(xq.s) * float(wq.s) / float(oq.s)
    acc = np.arange(-int(300 / eff), int(300 / eff), dtype=np.int64)
    v = acc * eff
    exact = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + oq.zp, cq.act_min, cq.act_max)
    got = np.clip(multiply_by_quantized_multiplier(acc, cq.multiplier[0], cq.shift[0]) + oq.zp, cq.act_min,
                  cq.act_max)
    assert np.array_equal(got, exact) == bool(cq.exact)


# ---- parameter records and padding (no emulator) ------------------------------------------------


@pytest.mark.parametrize("size,k,s,d,pad,want", [
    (8, 3, 1, 1, "SAME", (8, 1, 1)), (8, 3, 2, 1, "SAME", (4, 0, 1)), (7, 3, 2, 1, "SAME", (4, 1, 1)),
    (8, 2, 2, 1, "SAME", (4, 0, 0)), (8, 3, 1, 2, "SAME", (8, 2, 2)), (8, 3, 1, 1, "VALID", (6, 0, 0)),
    (9, 3, 2, 2, "VALID", (3, 0, 0)),
])
def test_padding(size, k, s, d, pad, want):
    assert same_padding(size, k, s, d, pad) == want


def test_conv_per_tensor_weights_broadcast_and_param_table():
    xq, oq = QParams.per_tensor(0.02, -5), QParams.per_tensor(0.1, 3)
    cq = conv2d_quant(xq, QParams.per_tensor(0.004), oq, "RELU", bias=np.arange(6), channels=6)
    assert cq.uniform and not cq.per_channel and cq.channels == 6
    assert cq.a_offset == 5 and cq.pad_value == -5 and (cq.act_min, cq.act_max) == (3, 127)
    f = cq.vrequant_fields()
    f32 = [float(np.float32(v)) for v in (0.02, 0.004, 0.1)]  # TFLite computes from the float32 scales
    assert f["per_channel"] == 0 and (f["mult"], f["shift"]) == quantize_multiplier(f32[0] * f32[1] / f32[2])
    pc = conv2d_quant(xq, QParams.per_channel([0.004, 0.008], 0, 0), oq)
    table = pc.param_table()
    assert table.dtype == np.int32 and table.shape == (2, 2)
    assert table[1, 0] == table[0, 0] and table[1, 1] == table[0, 1] + 1  # twice the scale: shift + 1
    assert pc.vrequant_fields(params_addr=64, force_table=True)["params_addr"] == 64
    with pytest.raises(ValueError, match="symmetric"):
        conv2d_quant(xq, QParams.per_channel([0.1, 0.1], [0, 1], 0), oq)
