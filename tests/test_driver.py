"""The driver: one failing operator goes back to the CPU alone (with its reason) and the rest of the
model still offloads; the report travels with the compiled module; options reach every stage."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_npu
from tvm_npu.ir.plan import MacPlan

RNG = np.random.default_rng(17)
W1 = (RNG.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32)
W2 = (RNG.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)


def _model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 12, 12], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(W1), padding=1)))
            b = bb.emit(relax.op.nn.conv2d(a, relax.const(W2), padding=1))
            y = bb.emit_output(relax.op.sigmoid(b))
        bb.emit_func_output(y)
    return bb.get()


def _reference(x):
    def conv(x, w):
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((1, w.shape[0], x.shape[2], x.shape[3]), np.float64)
        for i in range(3):
            for j in range(3):
                out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + x.shape[2], j:j + x.shape[3]], w[:, :, i, j])
        return out
    return 1 / (1 + np.exp(-conv(np.maximum(conv(x, W1), 0), W2)))


def _run(ex, x):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_a_failing_operator_goes_back_alone_with_its_reason():
    x = RNG.standard_normal((1, 4, 12, 12)).astype(np.float32)
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(_model(), target="npu")
    first = tvm_npu.last_report()
    assert all(p.target == "npu" for p in first.placements), first.summary()
    conv1 = next(p for p in first.placements if p.op == "relax.nn.conv2d")
    label = f"{conv1.binding}, {first.placements[1].binding}"  # conv + relu: the composite's provenance label
    # a plan the tiling stage refuses for that one operator: its code generation fails
    with tvm_npu.compile_options(should_run=False, plan_overrides={label: MacPlan(99, 8, 4)}):
        ex = tvm.compile(_model(), target="npu")
    rep = tvm_npu.last_report()
    where = {p.binding: p for p in rep.placements}
    assert where[conv1.binding].target == "cpu"
    assert "code generation failed" in where[conv1.binding].reasons[0] and "rows 99" in where[conv1.binding].reasons[0]
    # the relu it was fused with, the second conv and its sigmoid still run on the NPU
    assert [p.target for p in rep.placements] == ["cpu", "npu", "npu", "npu"], rep.summary()
    np.testing.assert_allclose(_run(ex, x), _reference(x.astype(np.float64)), atol=3e-3)
    # the grouped summary gives one line per distinct reason
    grouped = rep.summary(verbose=False)
    assert grouped.count("code generation failed") == 1 and "cpu x1" in grouped


def test_a_legal_override_is_used_and_reported():
    with tvm_npu.compile_options(should_run=False):
        tvm.compile(_model(), target="npu")
    first = tvm_npu.last_report()
    label = f"{first.placements[0].binding}, {first.placements[1].binding}"
    with tvm_npu.compile_options(should_run=False, plan_overrides={label: MacPlan(3, 8, 4)}):
        ex = tvm.compile(_model(), target="npu")
    rep = tvm_npu.report_of(ex)
    assert rep is not None and rep.to_dict() == tvm_npu.last_report().to_dict()
    from tvm_npu.runtime_module import NPUProfile

    (symbol,) = rep.functions
    layers = NPUProfile(ex.mod, symbol).artifact.producer["layers"]
    assert layers[0]["plan"] == {"rows": 3, "cols": 8, "depth": 4} and layers[0]["binding"] == label
    assert rep.options["plan_overrides"] == {label: {"rows": 3, "cols": 8, "depth": 4}}


def test_the_report_travels_with_the_exported_library(tmp_path):
    ex = tvm.compile(_model(), target="npu-nano")
    path = tmp_path / "m.so"
    ex.export_library(str(path))
    loaded = tvm.runtime.load_module(str(path))
    rep = tvm_npu.report_of(loaded)
    assert rep is not None and rep.config == "npu-nano"
    assert [p.target for p in rep.placements] == [p.target for p in tvm_npu.last_report().placements]


def test_unknown_options_and_configurations_are_refused():
    with pytest.raises(TypeError, match="unknown compile option"):
        with tvm_npu.compile_options(tile_everything=True):
            pass
    with pytest.raises(ValueError, match="unknown NPU configuration"):
        tvm_npu.npu_target("npu-giant")
    with pytest.raises(ValueError, match="needs an NPU target"):
        tvm.compile(_model(), target="llvm", relax_pipeline="npu")


def test_a_module_the_passes_cannot_take_runs_on_the_cpu_with_the_reason(monkeypatch):
    from tvm_npu import driver

    def broken(mod, config, options):
        raise ValueError("a TVM pass refused the module")

    monkeypatch.setattr(driver, "compile_model", broken)
    x = RNG.standard_normal((1, 4, 12, 12)).astype(np.float32)
    ex = tvm.compile(_model(), target="npu")
    rep = tvm_npu.last_report()
    assert len(rep.placements) == 4 and all(p.target == "cpu" for p in rep.placements)
    assert all("partitioning failed" in p.reasons[0] and "refused the module" in p.reasons[0] for p in rep.placements)
    np.testing.assert_allclose(_run(ex, x), _reference(x.astype(np.float64)), atol=1e-4)


def test_an_override_that_matches_nothing_is_said():
    with tvm_npu.compile_options(should_run=False, plan_overrides={"no such op": MacPlan(2, 8, 4)}):
        ex = tvm.compile(_model(), target="npu")
    rep = tvm_npu.report_of(ex)
    assert len(rep.notes) == 1 and "'no such op' matches no NPU operator" in rep.notes[0]
    assert "note: plan override 'no such op'" in rep.summary()


def test_identical_regions_share_one_function_and_are_reported_at_each_place():
    """Two structurally identical NPU regions (same weights) become one NPU function called twice: every
    operator of both places is reported with its composite, the function says it has two places, and
    the result matches the CPU build."""
    import numpy as np
    import tvm
    from tvm import relax

    import tvm_npu

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 8, 8), "float32"))
    w = relax.const((np.random.default_rng(0).standard_normal((16, 16, 3, 3)) * 0.1).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.tanh(relax.op.nn.relu(relax.op.nn.conv2d(x, w, padding=1))))
            c = bb.emit(relax.op.cumsum(a, axis=1))  # no NPU pattern: splits the two regions
            d = bb.emit(relax.op.tanh(relax.op.nn.relu(relax.op.nn.conv2d(c, w, padding=1))))
            gv = bb.emit_output(d)
        bb.emit_func_output(gv)
    mod = bb.get()
    xs = np.random.default_rng(1).standard_normal((1, 16, 8, 8)).astype("float32")
    outs = []
    for target in ("llvm", "npu"):
        with tvm_npu.compile_options(should_run=False):
            ex = tvm.compile(mod, target=target)
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy())
    rep = tvm_npu.last_report()
    npu = [p for p in rep.placements if p.target == "npu"]
    assert len(npu) == 6 and all(p.composite and p.symbol for p in npu), rep.summary()
    (f,) = rep.functions.values()
    assert f["places"] == 2, rep.summary()
    assert np.abs(outs[0] - outs[1]).max() <= 2e-2 * np.abs(outs[0]).max()
