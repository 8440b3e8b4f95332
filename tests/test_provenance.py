"""Provenance names the user's model: ONNX node names and TFLite operator types and indices reach
the report, the artifacts' provenance and the per-layer profile; importing is otherwise unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_npu
from tvm_npu.importer import load
from tvm_npu.quant import QParams
from tvm_npu.testing.tflite_int8 import ModelBuilder

RNG = np.random.default_rng(23)


def _onnx(path):
    w = numpy_helper.from_array((RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="/backbone/stem/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/backbone/stem/Relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="/backbone/pool", kernel_shape=[2, 2], strides=[2, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w, b])
    import onnx

    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_onnx_node_names_reach_report_artifact_and_profile(tmp_path):
    mod = load(_onnx(tmp_path / "m.onnx")).mod
    plain = tvm.relax.frontend.onnx.from_onnx(__import__("onnx").load(str(tmp_path / "m.onnx")),
                                              keep_params_in_input=False)
    tvm.ir.assert_structural_equal(mod, plain)  # spans only: the imported module is the same
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target="npu")
    rep = tvm_npu.last_report()
    assert [p.binding for p in rep.placements] == ["/backbone/stem/Conv", "/backbone/stem/Conv#1",
                                                    "/backbone/stem/Relu", "/backbone/pool"]
    vm = relax.VirtualMachine(ex, tvm.cpu())
    tvm_npu.enable_trace(vm.module)
    vm["main"](tvm.runtime.tensor(RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)))
    layers = tvm_npu.profile(vm.module).layers
    sources = [r.source for r in layers]
    assert any(s.endswith(": /backbone/stem/Conv, /backbone/stem/Relu") for s in sources), sources
    assert any(s.endswith(": /backbone/pool") for s in sources), sources


def test_tflite_operator_type_and_index(tmp_path):
    b = ModelBuilder(seed=3)
    x = b.add_input("x", (1, 8, 8, 3), QParams.per_tensor(0.05, -3))
    y = b.conv2d(x, 8, 3, QParams.per_tensor(0.1, 2), activation="RELU6")
    y = b.average_pool2d(y, 2, 2)
    b.mark_output(y)
    path = tmp_path / "m.tflite"
    path.write_bytes(b.finish())
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(load(path).mod, target="npu")
    rep = tvm_npu.last_report()
    names = {p.binding.split("#")[0] + "#" + p.binding.split("#")[1] for p in rep.placements}
    assert names == {"CONV_2D#0", "AVERAGE_POOL_2D#1"}, [p.binding for p in rep.placements]
    covers = [c for f in rep.functions.values() for c in f["covers"]]
    assert covers and all(c.startswith(("CONV_2D#0", "AVERAGE_POOL_2D#1")) for c in covers)


def test_tflite_converters_bound_with_partial_still_import():
    """TFLite MEAN / SUM / REDUCE_* converters are partials that the frontend calls with op=...: the
    provenance wrapper passes the call through unchanged (it used to call fn(op) and break them)."""
    import numpy as np
    import tvm
    from tvm import relax

    from tvm_npu.importer import load
    from tvm_npu.quant import QParams
    from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

    b = ModelBuilder(1)
    x = b.add_input("x", (1, 4, 6, 8), QParams.per_tensor(0.05, -3))
    y = b.add_tensor("mean", (1, 1, 1, 8), "int8", QParams.per_tensor(0.03, 2))
    b.add_op("MEAN", [x, b.add_const("axes", np.array([1, 2], np.int32))], [y], ("ReducerOptions", {"KeepDims": True}))
    b.mark_output(y)
    buf = b.finish()
    xs = rand_int8(np.random.default_rng(0), (1, 4, 6, 8))
    (want,) = run_reference(buf, [xs])
    loaded = load(buf, format="tflite")
    ex = tvm.compile(loaded.mod, target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # TVM's llvm rounding, not the NPU's
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(loaded.mod, target="npu")
    assert any(p.binding.startswith("MEAN#0") for p in tvm_npu.last_report().placements), \
        [p.binding for p in tvm_npu.last_report().placements]


def test_torch_export_nodes_name_their_modules():
    """A torch.export program's operators are reported by the module they ran in and their node."""
    torch = pytest.importorskip("torch")
    import tvm

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, x):
            y = torch.relu(self.stem(x)).mean(dim=(2, 3))
            return self.head(y)

    ep = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),))
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(load(ep).mod, target="npu")
    labels = [p.binding for p in tvm_npu.last_report().placements]
    assert any(b.startswith("stem:convolution") for b in labels), labels  # the aten node, in module `stem`
    assert any(b.startswith("head:") for b in labels), labels
