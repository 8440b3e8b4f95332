"""Compile progress: the driver reports its stages and every NPU operator it lowers to the sink set
around the compilation (tvm_npu/progress.py), which the command line's bar shows."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

import tvm_npu  # noqa: E402
from tvm_npu.progress import compile_bar, report, reporting  # noqa: E402


def _model(n=3):
    nodes, inits, x = [], [], "x"
    for i in range(n):
        w = (np.random.default_rng(i).standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_driver_reports_stages_and_every_operator_in_order():
    events = []
    with reporting(lambda stage, done, total: events.append((stage, done, total))), \
            tvm_npu.compile_options(should_run=False):
        tvm.compile(from_onnx(_model(), keep_params_in_input=False), target="npu-edge")
    stages = [e[0].split()[0] for e in events]
    assert stages[0] == "preparing" and "partitioning" in stages and stages[-1] == "packaging;"
    lowering = [e for e in events if e[0].startswith("lowering")]
    npu_ops = sum(p.target == "npu" for p in tvm_npu.last_report().placements)
    assert lowering and all(t == npu_ops for _, _, t in lowering)  # the total is the NPU operators
    dones = [d for _, d, _ in lowering]
    assert dones == sorted(dones) and dones[-1] == npu_ops  # monotone, ending at every operator


def test_no_sink_no_effect_and_bar_off_the_terminal(capsys):
    report("nothing listens")  # no sink: nothing happens
    with compile_bar("compiling", enabled=False):
        report("still nothing", 1, 2)
    assert capsys.readouterr().err == ""
    with compile_bar("compiling", enabled=True):
        report("lowering f", 1, 2)
    err = capsys.readouterr().err
    assert "compiling" in err and "lowering f" in err and "1/2" in err
