"""int8 TFLite models compiled for the NPU: integer composites (conv2d, depthwise, fully connected) run
on the integer datapath and are byte-identical to LiteRT's reference kernels; what cannot be made
exact stays on the CPU with its reason."""

from __future__ import annotations

import numpy as np
import pytest
import tflite
import tvm
from tvm import relax
from tvm.relax.frontend.tflite import from_tflite

import tvm_npu
from tvm_npu.quant import QParams
from tvm_npu.testing.tflite_int8 import ModelBuilder, run_reference


def _compile_run(buf: bytes, x: np.ndarray, target="npu", offload_all=True):
    mod = from_tflite(tflite.Model.GetRootAsModel(buf, 0), shape_dict={"x": x.shape}, dtype_dict={"x": "int8"})
    with tvm_npu.compile_options(should_run=not offload_all):
        ex = tvm.compile(mod, target=target)
    report = tvm_npu.last_report()
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return out.numpy(), report


def _npu_composites(report) -> set:
    return {p.composite for p in report.placements if p.target == "npu"}


def _check(buf, shape, seed=0, expect=None):
    x = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)
    (ref,) = run_reference(buf, [x])
    got, report = _compile_run(buf, x)
    if expect is not None:
        assert expect <= _npu_composites(report), report.summary()
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    return report


CONV = [  # (in shape, cout, kernel, stride, dilation, padding, per_channel, activation)
    ((1, 9, 11, 5), 20, 3, 2, 1, "SAME", True, "RELU"),
    ((1, 8, 8, 3), 8, 3, 1, 1, "VALID", False, "NONE"),
    ((1, 12, 10, 16), 24, 3, 1, 2, "SAME", True, "RELU6"),
    ((2, 7, 7, 8), 16, 1, 1, 1, "SAME", True, "NONE"),
    ((1, 15, 13, 4), 6, 5, 2, 1, "SAME", True, "RELU_N1_TO_1"),
]


@pytest.mark.parametrize("case", CONV, ids=[f"conv{i}" for i in range(len(CONV))])
def test_conv2d_byte_exact(case):
    shape, cout, k, s, d, pad, pc, act = case
    b = ModelBuilder(seed=hash(case) % 1000)
    x = b.add_input("x", shape, QParams.per_tensor(0.05, -3))
    y = b.conv2d(x, cout, k, QParams.per_tensor(0.11, 5), stride=s, dilation=d, padding=pad, per_channel=pc,
                 activation=act)
    b.mark_output(y)
    report = _check(b.finish(), shape)
    assert any(c.startswith("npu.qconv2d") for c in _npu_composites(report))


@pytest.mark.parametrize("mult,stride,act", [(1, 1, "RELU6"), (2, 2, "NONE"), (1, 2, "RELU")])
def test_depthwise_byte_exact(mult, stride, act):
    b = ModelBuilder(seed=mult * 10 + stride)
    x = b.add_input("x", (1, 13, 11, 6), QParams.per_tensor(0.04, 7))
    y = b.depthwise_conv2d(x, 3, QParams.per_tensor(0.09, -4), depth_multiplier=mult, stride=stride, activation=act)
    b.mark_output(y)
    report = _check(b.finish(), (1, 13, 11, 6))
    assert any(c.startswith("npu.qconv2d") for c in _npu_composites(report))


def test_chain_conv_depthwise_conv_fc():
    """A MobileNet-like chain: every layer is an integer composite; intermediates stay int8."""
    b = ModelBuilder(seed=5)
    x = b.add_input("x", (1, 16, 16, 3), QParams.per_tensor(0.02, 10))
    y = b.conv2d(x, 16, 3, QParams.per_tensor(0.06, -20), stride=2, activation="RELU6")
    y = b.depthwise_conv2d(y, 3, QParams.per_tensor(0.05, -30), activation="RELU6")
    y = b.conv2d(y, 24, 1, QParams.per_tensor(0.07, 3))
    b.mark_output(y)
    report = _check(b.finish(), (1, 16, 16, 3), seed=3)
    assert report.summary().count("npu.qconv2d") >= 3


def test_fully_connected_exact_or_cpu():
    """FULLY_CONNECTED's reference rounding is double round-half-away: channels whose scale a
    multiplier/shift pair reproduces run on the NPU byte-exactly; otherwise the layer stays on the
    CPU with the reason recorded (and the CPU result is TVM's, within one step)."""
    on_npu = off_npu = 0
    for seed in range(6):
        b = ModelBuilder(seed=seed)
        x = b.add_input("x", (4, 32), QParams.per_tensor(0.03 + 0.01 * seed, seed - 3))
        y = b.fully_connected(x, 12, QParams.per_tensor(0.2 + 0.05 * seed, 2), per_channel=seed % 2 == 1)
        b.mark_output(y)
        buf = b.finish()
        xi = np.random.default_rng(seed).integers(-128, 128, (4, 32)).astype(np.int8)
        (ref,) = run_reference(buf, [xi])
        got, report = _compile_run(buf, xi)
        if any(c.startswith("npu.qmatmul") for c in _npu_composites(report)):
            on_npu += 1
            np.testing.assert_array_equal(got.reshape(ref.shape), ref)
        else:
            off_npu += 1
            assert "reference FULLY_CONNECTED rounding" in report.summary()
            assert np.abs(got.reshape(ref.shape).astype(int) - ref).max() <= 1
    assert on_npu >= 1


def test_npu_exact_where_llvm_float_emulation_is_not_required_to_be():
    """The same model on llvm (TVM's float QDQ emulation) and on the NPU: the NPU is byte-exact."""
    b = ModelBuilder(seed=9)
    x = b.add_input("x", (1, 6, 6, 4), QParams.per_tensor(0.05, 0))
    y = b.conv2d(x, 4, 3, QParams.per_tensor(0.1, 0), per_channel=True)
    b.mark_output(y)
    buf = b.finish()
    xi = np.random.default_rng(0).integers(-128, 128, (1, 6, 6, 4)).astype(np.int8)
    got_llvm, _ = _compile_run(buf, xi, target="llvm")
    got, report = _compile_run(buf, xi)
    (ref,) = run_reference(buf, [xi])
    np.testing.assert_array_equal(got, ref)  # the NPU is exact where TVM's float emulation may not be
    assert np.abs(got_llvm.astype(int) - ref).max() <= 1


def _vector_model(kind: str, seed: int):
    b = ModelBuilder(seed=seed)
    shape = (1, 6, 7, 8)
    x = b.add_input("x", shape, QParams.per_tensor(0.07, -5))
    if kind == "add":
        y = b.add(x, b.add_const("c", np.random.default_rng(seed).integers(-128, 128, (1, 1, 1, 8)).astype(np.int8),
                                 QParams.per_tensor(0.05, 3)), QParams.per_tensor(0.1, -2), "RELU")
    elif kind == "sub":
        y = b.sub(x, x, QParams.per_tensor(0.02, 1))
    elif kind == "mul":
        y = b.mul(x, x, QParams.per_tensor(0.2, -7))
    elif kind == "avg_pool":
        y = b.average_pool2d(x, 3, 2, "SAME")
    elif kind == "max_pool":
        y = b.max_pool2d(x, 3, 2, "SAME")
    elif kind == "logistic":
        y = b.logistic(x)
    elif kind == "tanh":
        y = b.tanh(x)
    elif kind == "hard_swish":
        y = b.hard_swish(x, QParams.per_tensor(0.05, -30))
    elif kind == "leaky_relu":
        y = b.leaky_relu(x, QParams.per_tensor(0.05, -30), 0.2)
    elif kind == "requantize":
        y = b.quantize(x, QParams.per_tensor(0.03, 10))
    elif kind == "concat":
        y = b.concatenation([x, b.relu(x, QParams.per_tensor(0.07, -5))], axis=3)
    elif kind == "chain":
        y = b.conv2d(x, 16, 3, QParams.per_tensor(0.1, -10), activation="RELU6")
        z = b.depthwise_conv2d(y, 3, QParams.per_tensor(0.1, -10))
        y = b.add(y, z, QParams.per_tensor(0.15, -3))
        y = b.hard_swish(y, QParams.per_tensor(0.08, -20))
        y = b.average_pool2d(y, 2, 2)
        y = b.logistic(y)
    b.mark_output(y)
    return b.finish(), shape


VECTOR = ["add", "sub", "mul", "avg_pool", "max_pool", "logistic", "tanh", "hard_swish", "leaky_relu", "requantize",
          "concat", "chain"]


@pytest.mark.parametrize("kind", VECTOR)
def test_vector_ops_byte_exact(kind):
    """Integer vector composites (and a chain mixing them with convolutions) against LiteRT."""
    buf, shape = _vector_model(kind, seed=VECTOR.index(kind))
    report = _check(buf, shape, seed=VECTOR.index(kind))
    on = _npu_composites(report)
    assert any(c.startswith("npu.q") for c in on), report.summary()
    ops = [p for p in report.placements]
    assert all(p.target == "npu" for p in ops), report.summary()  # nothing left on the CPU


def test_int32_accumulator_capacity_is_checked():
    """The constraint refuses a reduction that could overflow int32 and accepts a normal one."""
    from tvm_npu.quant import conv2d_quant
    from tvm_npu.relay_ext.constraints import int32_accumulator
    from tvm_npu.ir import OpDesc, TensorDesc

    def desc(cin):
        w = np.zeros((8, cin, 3, 3), np.int8)
        q = conv2d_quant(QParams.per_tensor(0.1, 0), QParams.per_tensor(0.01), QParams.per_tensor(0.2, 0), channels=8)
        return OpDesc("npu.qconv2d", "conv2d", [TensorDesc((1, cin, 8, 8), "int8"), TensorDesc(w.shape, "int8", w)],
                      TensorDesc((1, 8, 6, 6), "int8"), {"kernel_layout": "OIHW"}, quant=q)
    assert int32_accumulator(desc(64), None) is None
    assert "int32 accumulator" in int32_accumulator(desc(8000), None)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(3, 12), w=st.integers(3, 12), cin=st.integers(1, 20), cout=st.integers(1, 24),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), pad=st.sampled_from(["SAME", "VALID"]),
       s_in=st.floats(0.005, 0.2), zp_in=st.integers(-128, 127), s_out=st.floats(0.01, 0.5),
       zp_out=st.integers(-100, 100), per_channel=st.booleans(), depthwise=st.booleans(), seed=st.integers(0, 99))
def test_conv_property_byte_exact(h, w, cin, cout, k, stride, pad, s_in, zp_in, s_out, zp_out, per_channel,
                                  depthwise, seed):
    """Random shapes and quantisation parameters: conv / depthwise on the NPU equal LiteRT byte for byte."""
    if pad == "VALID" and (h < k or w < k):
        return
    if depthwise:  # one channel makes the per-channel scale a per-tensor one (see below)
        cin = max(cin, 2)
    b = ModelBuilder(seed=seed)
    x = b.add_input("x", (1, h, w, cin), QParams.per_tensor(s_in, zp_in))
    oq = QParams.per_tensor(s_out, zp_out)
    if depthwise:  # TVM's TFLite frontend refuses per-tensor depthwise weights with quantized_dimension 3
        y = b.depthwise_conv2d(x, k, oq, stride=stride, padding=pad, per_channel=True)
    else:
        y = b.conv2d(x, cout, k, oq, stride=stride, padding=pad, per_channel=per_channel)
    b.mark_output(y)
    report = _check(b.finish(), (1, h, w, cin), seed=seed)
    assert any(c.startswith("npu.qconv2d") for c in _npu_composites(report)), report.summary()


def test_single_rounding_multiplier_rounds_once():
    """ONNX QDQ requantisation: MBQM with the single-rounding pair equals rounding x * real once
    (away from near-ties), where TFLite's normalised pair with a right shift rounds twice."""
    from tvm_npu.quant import multiply_by_quantized_multiplier, quantize_multiplier, single_rounding_multiplier
    rng = np.random.default_rng(0)
    twice = 0
    for real in rng.uniform(1e-4, 0.45, 40):
        m, s = single_rounding_multiplier(real)
        assert s == 0
        acc = rng.integers(-2**20, 2**20, 5000)
        exact = acc * np.float64(m) / 2**31  # the multiplier as represented
        far = np.abs(np.abs(exact - np.floor(exact)) - 0.5) > 1e-6
        want = np.where(exact >= 0, np.floor(exact + 0.5), -np.floor(-exact + 0.5))
        got = multiply_by_quantized_multiplier(acc, m, s)
        np.testing.assert_array_equal(got[far], want[far])
        assert abs(m / 2**31 - real) <= 2**-32
        m2, s2 = quantize_multiplier(real)
        twice += int(np.sum(multiply_by_quantized_multiplier(acc, m2, s2)[far] != want[far]))
    assert twice > 0  # TFLite's pair does round twice: the two differ somewhere
