"""Reading the NPU artifacts back out of what `tvm.compile` and `export_library` write
(tvm_npu/library.py): symbols, the artifacts' bytes, golden data that verify replays, extraction."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")

import tvm  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

import tvm_npu  # noqa: E402
from tvm_npu.artifact import Artifact  # noqa: E402
from tvm_npu.library import LibraryError, extract, read_artifacts, with_golden  # noqa: E402


def _conv_model():
    w = (np.random.default_rng(2).standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(from_onnx(_conv_model(), keep_params_in_input=False), target="npu-edge")
    path = tmp_path_factory.mktemp("lib") / "model.so"
    ex.export_library(str(path))
    return ex, path


def test_artifacts_of_an_exported_library_are_the_compiled_ones(exported):
    ex, path = exported
    from_memory = read_artifacts(ex)
    from_file = read_artifacts(path)
    assert list(from_file) == list(from_memory) and len(from_file) == 1
    (sym,) = from_file
    assert from_file[sym].serialize() == from_memory[sym].serialize()
    art = from_file[sym]
    assert [t.name for t in art.inputs] and [t.name for t in art.outputs]
    assert any("conv" in p.source for p in art.provenance)
    # the artifact alone computes what the library computes: run both on one input
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    (tin,), (tout,) = art.inputs, art.outputs
    assert tuple(tin.shape) == x.shape and tuple(tout.shape) == y.shape  # DRAM keeps the model's layout
    outs, _ = art.run({tin.name: x.astype(tin.dtype)})  # fp16 on the NPU; the runtime converts float32
    np.testing.assert_array_equal(outs[tout.name].astype(np.float32), y)


def test_golden_data_replays_byte_exact_and_catches_a_changed_program(exported):
    _, path = exported
    (art,) = read_artifacts(path).values()
    gold = with_golden(art, seed=3)
    again = Artifact.deserialize(gold.serialize())
    assert set(again.golden) == {t.name for t in art.io}
    assert all(v == 0.0 for v in again.verify().values())
    # a different constant pool (all weights zero) no longer reproduces the golden outputs
    broken = Artifact.deserialize(again.serialize())
    broken.constants = bytes(len(again.constants))
    assert max(broken.verify().values()) > 0.0


def test_extract_writes_loadable_artifacts(exported, tmp_path):
    _, path = exported
    written = extract(path, tmp_path / "out")
    assert len(written) == 1 and written[0].suffix == ".npua"
    assert read_artifacts(written[0])  # an artifact file reads back as itself
    assert Artifact.deserialize(written[0].read_bytes()).serialize() == written[0].read_bytes()


def test_files_that_hold_no_artifact_are_refused_with_the_file_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LibraryError, match="notes.txt.*neither an NPU artifact nor a compiled library"):
        read_artifacts(text)
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(LibraryError, match="fake.so.*TVM cannot load it"):
        read_artifacts(fake)
    with pytest.raises(LibraryError, match="missing.so.*cannot read"):
        read_artifacts(tmp_path / "missing.so")


def test_compile_with_golden_stores_replayable_golden_data(tmp_path):
    with tvm_npu.compile_options(should_run=False, golden=True):
        ex = tvm.compile(from_onnx(_conv_model(), keep_params_in_input=False), target="npu-edge")
    path = tmp_path / "gold.so"
    ex.export_library(str(path))
    (art,) = read_artifacts(path).values()
    assert art.golden is not None and set(art.golden) == {t.name for t in art.io}
    assert all(v == 0.0 for v in art.verify().values())
    outs, _ = art.run({t.name: art.golden[t.name] for t in art.inputs})  # the golden outputs are the emulator's
    for t in art.outputs:
        np.testing.assert_array_equal(outs[t.name], art.golden[t.name])


def test_cli_reads_compiled_libraries(tmp_path):
    """`tvm-npu compile --golden` then inspect / disasm / verify / extract on the .so it wrote."""
    import json
    import subprocess
    import sys

    import onnx as _onnx

    model = tmp_path / "conv.onnx"
    _onnx.save(_conv_model(), str(model))
    lib = tmp_path / "conv.so"
    tvm_npu_cli = [sys.executable, "-m", "tvm_npu.cli"]

    def cli(*args):
        return subprocess.run([*tvm_npu_cli, *map(str, args)], capture_output=True, text=True)

    r = cli("compile", model, "--target", "npu-edge", "--force-offload", "--golden", "-o", lib)
    assert r.returncode == 0, r.stderr
    (sym,) = read_artifacts(lib)
    r = cli("inspect", lib, "--json", "-")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert list(meta) == [sym] and meta[sym]["golden"] and meta[sym]["instructions"] > 0
    r = cli("disasm", lib, "-n")
    assert r.returncode == 0 and "end" in r.stdout.splitlines()[-1], r.stderr
    r = cli("verify", lib)
    assert r.returncode == 0 and "byte-exact" in r.stdout, r.stdout + r.stderr
    r = cli("extract", lib, "-o", tmp_path / "arts")
    assert r.returncode == 0 and (tmp_path / "arts" / f"{sym}.npua").is_file(), r.stderr
    r = cli("verify", tmp_path / "arts" / f"{sym}.npua")
    assert r.returncode == 0 and "byte-exact" in r.stdout
    plain = tmp_path / "plain.so"
    assert cli("compile", model, "--target", "npu-edge", "--force-offload", "-o", plain).returncode == 0
    r = cli("verify", plain)
    assert r.returncode == 2 and "no golden data" in r.stderr and "--golden" in r.stderr, r.stderr
    r = cli("inspect", lib, "--symbol", "nope")
    assert r.returncode == 2 and "no NPU function 'nope'" in r.stderr
