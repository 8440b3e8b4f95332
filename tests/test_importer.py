"""The one model loader (tvm_npu/importer.py): one clear error per bad input, and the same loader
behind the command line, the model zoo and the Relay layer."""

from __future__ import annotations

import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_npu import importer


def _model(path=None, batch="N"):
    w = numpy_helper.from_array(np.full((4, 3, 1, 1), 0.5, np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        onnx.save(m, str(path))
    return m


@pytest.mark.parametrize("name,content,reason", [
    ("missing.onnx", None, "no such file"),
    ("notes.onnx", b"these are notes, not a model\n" * 20, "not an ONNX model"),
    ("empty.onnx", b"", "not an ONNX model"),
    ("notes.tflite", b"these are notes, not a model\n" * 20, "not a TFLite model"),
    ("model.pb", b"\x08\x07", "unsupported model format '.pb'"),
])
def test_a_bad_file_is_one_error_naming_it(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(importer.ModelLoadError) as info:
        importer.load(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert str(path) in msg and reason in msg, msg
    if content is None:
        assert isinstance(info.value, FileNotFoundError)  # as opening the file would have raised


def test_shapes_are_fixed_in_the_graph_and_named_inputs_checked(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path)
    with pytest.raises(importer.ModelLoadError, match="dynamic dims.*--shape x=N,3,8,8"):
        importer.load(path)
    loaded = importer.load(path, {"x": (2, 3, 8, 8)})
    assert loaded.format == "onnx" and loaded.input_names == ["x"] and loaded.output_names == ["y"]
    assert loaded.inputs == [("x", (2, 3, 8, 8), "float32")] and loaded.outputs == [("y", (2, 4, 8, 8), "float32")]
    with pytest.raises(importer.ModelLoadError, match="no input 'z'"):
        importer.load(path, {"x": (2, 3, 8, 8), "z": (1,)})
    with pytest.raises(importer.ModelLoadError, match="rank 4"):
        importer.load(path, {"x": (2, 3)})
    # Relay's leniency: unknown names ignored, dynamic inputs kept; the caller's ModelProto untouched
    m = _model()
    before = m.SerializeToString()
    lenient = importer.load(m, {"z": (1,)}, static=False, strict_shapes=False)
    assert lenient.inputs[0].shape == (None, 3, 8, 8) and m.SerializeToString() == before
    importer.load(m, {"x": (1, 3, 8, 8)})
    assert m.SerializeToString() == before


def test_cli_zoo_and_relay_layer_use_the_one_loader(tmp_path, monkeypatch, capsys):
    from tvm import relay

    from model_zoo.runner import load_relax
    from tvm_npu.cli import main

    path = tmp_path / "m.onnx"
    _model(path)
    calls = []
    real = importer.load

    def spy(source, *args, **kw):
        calls.append(source)
        return real(source, *args, **kw)

    monkeypatch.setattr(importer, "load", spy)
    assert main(["explain", str(path), "--shape", "x=1,3,8,8"]) == 0
    zoo_model = types.SimpleNamespace(input_name="x", input_shape=(1, 3, 8, 8), format="onnx", onnxslim=False)
    mod, outputs = load_relax(zoo_model, path)
    assert outputs == ["y"]
    relay.frontend.from_onnx(str(path), {"x": (1, 3, 8, 8)})
    assert calls == [str(path), path, str(path)]


def test_pt2_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
    """A .pt2 file (torch.export.save) needs the [torch] extra: without torch, one error says so."""
    import sys

    path = tmp_path / "model.pt2"
    path.write_bytes(b"PK\x03\x04 not read without torch")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, installed or not
    for source, what in ((path, str(path)), (path.read_bytes(), "bytes of pt2")):
        with pytest.raises(importer.ModelLoadError) as info:
            importer.load(source)
        msg = str(info.value)
        assert what in msg and "needs PyTorch" in msg and "pip install 'tvm_npu[torch]'" in msg, msg
        assert "\n" not in msg
    (tmp_path / "model.pb").write_bytes(b"\x08\x07")
    with pytest.raises(importer.ModelLoadError, match=r"'\.pb'.*\.onnx, \.tflite, \.pt2 files are supported"):
        importer.load(tmp_path / "model.pb")


def test_relay_from_pytorch_uses_the_one_loader(monkeypatch):
    torch = pytest.importorskip("torch")
    from tvm import relay

    calls = []
    real = importer.load

    def spy(source, *args, **kw):
        calls.append(type(source).__name__)
        return real(source, *args, **kw)

    monkeypatch.setattr(importer, "load", spy)
    relay.frontend.from_pytorch(torch.nn.Conv2d(3, 4, 1).eval(), [("x", (1, 3, 8, 8))])
    assert calls == ["ExportedProgram"]


def test_dynamic_dims_fixed_by_shapes_get_their_shape_computations_folded(tmp_path):
    """Fixed-shape preparation: an ONNX model whose dynamic batch feeds a Shape -> Gather -> Concat ->
    Reshape chain is slimmed automatically once --shape fixes the dim (TVM 0.27 cannot follow some such
    chains), and computes what onnxruntime computes; slim=False keeps the graph as it is."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tvm
    from onnx import TensorProto, helper, numpy_helper
    from tvm import relax

    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["nu"]), helper.make_node("Concat", ["nu", "m1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(0, np.int64), "i0"),
                           numpy_helper.from_array(np.array([0], np.int64), "ax"),
                           numpy_helper.from_array(np.array([-1], np.int64), "m1")])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    auto = importer.load(str(path), {"x": (2, 4, 6)})
    assert "Shape" not in [n.op_type for n in auto.model.graph.node]
    plain = importer.load(str(path), {"x": (2, 4, 6)}, slim=False)
    assert "Shape" in [n.op_type for n in plain.model.graph.node]
    x = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = relax.VirtualMachine(tvm.compile(auto.mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---- issue 11: the same typed errors from the Python API ---------------------------------------------

def _seeds():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fuzz"))
    import seeds

    return seeds


def test_malformed_files_and_unsupported_operators_are_typed_errors_naming_them():
    from tvm_npu import errors

    seeds = _seeds()
    onnx_seed, tflite_seed = seeds.onnx_conv(), seeds.tflite_int8_conv()
    with pytest.raises(errors.ModelFileError, match=r"not an ONNX model \(DecodeError"):
        importer.load(onnx_seed[:300], format="onnx")
    with pytest.raises(errors.ModelFileError, match="malformed TFLite flatbuffer") as info:
        importer.load(tflite_seed[:len(tflite_seed) - 100], format="tflite")
    assert info.value.exit_code == 3 and info.value.fix
    with pytest.raises(errors.UnsupportedOperatorError) as info:
        importer.load(seeds.onnx_conv("FooBar"))
    assert info.value.operator == "node 'act1' (FooBar)" and "no converter for FooBar" in info.value.reason
    with pytest.raises(errors.UnsupportedOperatorError) as info:
        importer.load(seeds.tflite_custom_op("MyCustomOp"))
    assert info.value.operator == "operator #0 (CUSTOM 'MyCustomOp')" and info.value.exit_code == 4


def test_tflite_tables_pointing_outside_the_file_are_refused_before_the_frontend():
    """A constant buffer that does not match its tensor, and an operator input index out of range: the
    flatbuffer check names the tensor / operator (TVM's frontend would fail with a reshape or an
    IndexError, or read past the tables)."""
    import tflite

    from tvm_npu import errors

    buf = bytearray(_seeds().tflite_int8_conv())
    model = tflite.Model.GetRootAsModel(bytes(buf), 0)
    graph = model.Subgraphs(0)
    weights = next(graph.Tensors(i) for i in range(graph.TensorsLength())
                   if model.Buffers(graph.Tensors(i).Buffer()).DataLength() == 4 * 3 * 3 * 3)
    # the weight buffer's length word (the u32 before its bytes) says one byte fewer
    tab = model.Buffers(weights.Buffer())._tab
    start = tab.Vector(tab.Offset(4))  # Buffer.data
    shorter = bytearray(buf)
    shorter[start - 4:start] = (4 * 3 * 3 * 3 - 1).to_bytes(4, "little")
    with pytest.raises(errors.ModelFileError, match=r"constant buffer #\d+ holds 107 bytes, its shape \[4, 3, 3, 3\] "
                                                    r"of INT8 needs 108"):
        importer.load(bytes(shorter))
    tab = graph.Operators(0)._tab
    pos = tab.Vector(tab.Offset(6))  # Operator.inputs
    wild = bytearray(buf)
    wild[pos:pos + 4] = (1000).to_bytes(4, "little")
    with pytest.raises(errors.ModelFileError, match=r"operator #0: malformed TFLite flatbuffer: its input 0 is tensor "
                                                    r"#1000, of \d+"):
        importer.load(bytes(wild))


def test_shapes_are_checked_before_anything_is_allocated(tmp_path):
    from tvm_npu import errors

    path = tmp_path / "m.onnx"
    _model(path)
    with pytest.raises(errors.ShapeError, match=r"is 4096.0 GiB, above the 4 GiB") as info:
        importer.load(path, {"x": (1 << 20, 4, 512, 512)})
    assert info.value.exit_code == 2 and isinstance(info.value, importer.ModelLoadError)
    with pytest.raises(errors.ShapeError, match="dimension <= 0"):
        importer.load(path, {"x": (-1, 3, 8, 8)})


def test_profile_before_any_run_and_unknown_zoo_models_are_clear_errors(tmp_path):
    import tvm
    from tvm import relax

    import tvm_npu
    from model_zoo import get_model

    with pytest.raises(tvm_npu.errors.UnknownZooModelError, match="no zoo model 'nope'") as info:
        get_model("nope")
    assert isinstance(info.value, KeyError) and str(info.value).startswith("no zoo model")  # (not KeyError's quotes)
    loaded = importer.load(_seeds().onnx_conv())
    with tvm_npu.compile_options(should_run=False):
        vm = relax.VirtualMachine(tvm.compile(loaded.mod, target="npu"), tvm.cpu())
    with pytest.raises(tvm_npu.ProfileError, match=r"none of the module's 1 NPU function\(s\) has run yet") as info:
        tvm_npu.profile(vm.module)
    assert "run the model first" in info.value.fix
    vm["main"](tvm.runtime.tensor(np.ones((1, 3, 8, 8), np.float32)))
    assert tvm_npu.profile(vm.module).total_cycles > 0
    cpu_only = relax.VirtualMachine(tvm.compile(loaded.mod, target="llvm"), tvm.cpu())
    assert tvm_npu.profile(cpu_only.module).table() == "NPU profile: no NPU function in this module"
