"""Small ONNX graphs for compiler tests, with onnxruntime as the independent reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import tvm_npu

RNG = np.random.default_rng(7)


def const(name, shape, scale=0.3, dtype=np.float32):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(dtype), name)


def model(nodes, inputs, outputs, inits=(), opset=17):
    """inputs/outputs: [(name, shape)] float32."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def reference(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def compile_run(m, feeds, target="npu", force=True):
    """(outputs, report) of the model compiled with tvm.compile for target."""
    mod = from_onnx(m, keep_params_in_input=False)
    if force:
        with tvm_npu.compile_options(should_run=False):
            ex = tvm.compile(mod, target=target)
    else:
        ex = tvm.compile(mod, target=target)
    report = tvm_npu.last_report() if str(target).startswith("npu") or not isinstance(target, str) else None
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input])
    outs = [o.numpy() for o in out] if isinstance(out, (list, tuple)) or hasattr(out, "__len__") and not hasattr(
        out, "numpy") else [out.numpy()]
    return outs, report


def fp16_close(got, want, depth=1):
    """fp16 storage with fp32 accumulation: relative to the output's magnitude, a few fp16 ulps
    (2^-11 = 4.9e-4) per rounding step on the path, growing with sqrt of the accumulation depth."""
    scale = max(float(np.max(np.abs(want))), 1e-3)
    tol = scale * 4.9e-4 * (6 + 2 * np.sqrt(depth))
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert err <= tol, f"max |npu - ref| = {err:.3g} > tolerance {tol:.3g} (ref max {scale:.3g})"
    return err


def on_npu(report):
    return [p for p in report.placements if p.target == "npu"]
