"""fp16 range safety at run time: the emulator counts the float results that overflow to inf, become
NaN or flush to zero per instruction; the runtime maps them to the layer (the user's operator) and
warns, raises or ignores by policy (compile_options(fp16_overflow=...)). The reference is numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")

import tvm  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

import tvm_npu  # noqa: E402



def model(nodes, inputs, outputs, inits=()):
    """A float32 ONNX model (opset 17) of `nodes`; inputs/outputs: [(name, shape)]."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, sh) for n, sh in inputs],
                          [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, sh) for n, sh in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def _square_model():
    """y = conv(x) * conv(x): node "big_square" squares a convolution; an input of ~300 takes it past
    fp16's 65,504 while every input and weight is an ordinary fp16 value."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="small_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "c"], ["y"], name="big_square")]
    w = (np.random.default_rng(11).standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32)  # the same every call
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])], [numpy_helper.from_array(w, "w")])


def _run(policy, x):
    with tvm_npu.compile_options(should_run=False, fp16_overflow=policy):
        ex = tvm.compile(from_onnx(_square_model(), keep_params_in_input=False), target="npu-edge")
    report = tvm_npu.last_report()
    assert all(p.target == "npu" for p in report.placements), report.summary() if hasattr(report, "summary") else ""
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return lambda: vm["main"](tvm.runtime.tensor(x)).numpy()


def _numpy(x):
    import onnxruntime as ort

    m = _square_model()
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


X_BIG = (np.random.default_rng(3).standard_normal((1, 4, 8, 8)) * 300).astype(np.float32)
X_SMALL = X_BIG / 300


def test_overflow_warns_by_default_naming_the_layer():
    ref = _numpy(X_BIG)
    assert np.all(np.isfinite(ref)) and np.abs(ref).max() > 65504  # the reference is finite, fp16 is not
    run = _run("warn", X_BIG)
    with pytest.warns(tvm_npu.NumericsWarning, match=r"big_square.*beyond the float16 range") as rec:
        y = run()
    msg = str(rec[0].message)
    got_inf = int(np.sum(np.isinf(y)))  # every inf of the output is counted, and named
    assert f"produced {got_inf} value(s)" in msg and "first at instruction" in msg
    want_inf = int(np.sum(np.abs(ref) > 65519))  # fp16 rounds to inf from 65,520 up
    assert abs(got_inf - want_inf) <= 0.1 * want_inf  # near the edge the fp16-rounded conv output decides
    assert "small_conv" not in msg  # the convolution itself stays in range


def test_overflow_raises_with_error_policy():
    run = _run("error", X_BIG)
    with pytest.raises(tvm_npu.NumericsError, match=r"big_square"):
        run()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _run("error", X_SMALL)()  # in range: no error, no warning
    np.testing.assert_allclose(y, _numpy(X_SMALL), rtol=2e-2, atol=2e-2)


def test_ignore_policy_and_in_range_inputs_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _run("ignore", X_BIG)()
        assert np.isinf(y).any()
        _run("warn", X_SMALL)()


def test_tiny_results_beside_large_ones_do_not_warn():
    """A sigmoid over a wide range writes 1.0 beside values below 6e-8 that flush to zero (a
    segmentation mask's background): harmless, so no warning."""
    x = np.linspace(-60, 10, 256, dtype=np.float32).reshape(1, 4, 8, 8)
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"], name="mask")]
    m = model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])])
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(from_onnx(m, keep_params_in_input=False), target="npu-edge")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    flushed = int(np.sum((y == 0) & (1 / (1 + np.exp(-x.astype(np.float64))) > 0)))
    assert flushed > 128 and y.max() > 0.99  # most flushed, yet the layer's range is fine


def test_underflow_of_most_results_warns():
    """x * x for |x| ~ 1e-5 is ~1e-10, below fp16's smallest subnormal (6e-8): all flushed to zero."""
    x = (np.random.default_rng(4).standard_normal((1, 4, 8, 8)) * 1e-5).astype(np.float32)
    x[np.abs(x) < 1e-6] = 1e-5
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"], name="tiny_square")]
    m = model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])])
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(from_onnx(m, keep_params_in_input=False), target="npu-edge")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with pytest.warns(tvm_npu.NumericsWarning, match=r"tiny_square.*256 of 256 nonzero results flushed to zero"):
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert np.all(y == 0) and np.all(x * x > 0)


def test_policy_is_validated():
    with pytest.raises(ValueError, match="fp16_overflow must be one of"):
        tvm_npu.CompileOptions(fp16_overflow="maybe")


# ---- compile time: constants that do not fit float16 keep their operator on the CPU -------------------

def _conv_with_weights(w):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="odd_conv", pads=[1, 1, 1, 1])]
    return model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])], [numpy_helper.from_array(w, "w")])


@pytest.mark.parametrize("scale,reason", [(1e5, "beyond the float16 range"), (1e-9, "loses")])
def test_constants_beyond_float16_keep_the_operator_on_the_cpu(scale, reason):
    """The issue's case: a weight of 1e5 gave inf in 256 of 2,048 outputs. Now the convolution stays
    on the CPU with the reason, and the result is onnxruntime's."""
    w = (np.random.default_rng(5).standard_normal((4, 4, 3, 3)) * scale).astype(np.float32)
    m = _conv_with_weights(w)
    x = np.random.default_rng(6).standard_normal((1, 4, 8, 8)).astype(np.float32)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(from_onnx(m, keep_params_in_input=False), target="npu-edge")
    (conv,) = [p for p in tvm_npu.last_report().placements if "odd_conv" in p.binding]
    assert conv.target == "cpu" and any("fp16_constants" in r and reason in r for r in conv.reasons), conv.reasons
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing ran on the NPU, so nothing overflowed there
        y = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    import onnxruntime as ort

    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_ordinary_weights_stay_on_the_npu():
    w = (np.random.default_rng(5).standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(from_onnx(_conv_with_weights(w), keep_params_in_input=False), target="npu-edge")
    (conv,) = [p for p in tvm_npu.last_report().placements if "odd_conv" in p.binding]
    assert conv.target == "npu", conv.reasons


def test_overflow_at_the_npu_boundary_is_reported_too():
    """A CPU operator's float32 result beyond fp16 (the 1e5-weight convolution stays on the CPU) that
    an NPU operator reads is rounded to inf at the boundary: reported like a layer's overflow (a fuzz
    finding: before, the NPU's ReLU silently returned inf)."""
    w = (np.random.default_rng(5).standard_normal((4, 4, 3, 3)) * 1e5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="odd_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="npu_relu")]
    m = model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 4, 8, 8])], [numpy_helper.from_array(w, "w")])
    x = np.random.default_rng(6).standard_normal((1, 4, 8, 8)).astype(np.float32)
    for policy in ("error", "warn"):
        with tvm_npu.compile_options(should_run=False, fp16_overflow=policy):
            ex = tvm.compile(from_onnx(m, keep_params_in_input=False), target="npu-edge")
        placed = {p.binding.split(":")[-1].strip(): p.target for p in tvm_npu.last_report().placements}
        assert any("npu_relu" in k and v == "npu" for k, v in placed.items()), placed
        run = relax.VirtualMachine(ex, tvm.cpu())["main"]
        if policy == "error":
            with pytest.raises(tvm_npu.NumericsError, match=r"float32 from the CPU, stored as float16.*beyond"):
                run(tvm.runtime.tensor(x))
        else:
            with pytest.warns(tvm_npu.NumericsWarning, match="float32 from the CPU"):
                y = run(tvm.runtime.tensor(x)).numpy()
            assert np.isinf(y).any()
