"""Partitioning: every constraint says yes and no with its reason; CPU fallback never crashes or
changes results; the should-run decision; other targets are untouched."""

from __future__ import annotations

import numpy as np
import tvm
from onnx import helper
from tvm import relax

import tvm_npu
from onnx_graphs import RNG, compile_run, const, model, on_npu, reference
from tvm_npu.relay_ext import constraints
from tvm_npu.options import CompileOptions, CpuModel


def _relax_fn(build, *params):
    bb = relax.BlockBuilder()
    with bb.function("main", list(params)):
        with bb.dataflow():
            y = bb.emit_output(build(bb, *params))
        bb.emit_func_output(y)
    return bb.get()


def _x(shape, dtype="float32", name="x"):
    return relax.Var(name, relax.TensorType(shape, dtype))


def _partition(mod, config="npu-edge"):
    tvm_npu.partition_for_npu(mod, tvm_npu.get_config(config), CompileOptions(False))
    return tvm_npu.last_report()


def _cpu_reasons(report, op):
    return [r for p in report.placements if p.op == op and p.target == "cpu" for r in p.reasons]


def _w(shape):
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def test_conv_yes_then_no_for_each_rule():
    ok = _relax_fn(lambda bb, x: relax.op.nn.conv2d(x, _w((8, 4, 3, 3)), padding=1), _x([1, 4, 8, 8]))
    rep = _partition(ok)
    assert [p.composite for p in on_npu(rep)] == ["npu.conv2d"]

    w = _x([8, 4, 3, 3], name="w")
    rep = _partition(_relax_fn(lambda bb, x, w: relax.op.nn.conv2d(x, w, padding=1), _x([1, 4, 8, 8]), w))
    assert any("constant_weights" in r for r in _cpu_reasons(rep, "relax.nn.conv2d")), rep.summary()

    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.conv2d(x, relax.const(np.ones((8, 4, 3, 3), "int8")),
                                                                  out_dtype="int32"), _x([1, 4, 8, 8], "int8")))
    assert any("float_tensors" in r and "int8" in r for r in _cpu_reasons(rep, "relax.nn.conv2d")), rep.summary()

    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.conv2d(x, _w((8, 4, 3, 3)), strides=300),
                               _x([1, 4, 700, 700])))
    assert any("conv_params" in r and "stride" in r for r in _cpu_reasons(rep, "relax.nn.conv2d")), rep.summary()


def test_tiles_fit_refuses_with_the_sram_numbers():
    nano = tvm_npu.get_config("npu-nano")
    big = nano.replace(name="npu-cramped", wgt_sram_bytes=128)
    mod = _relax_fn(lambda bb, x: relax.op.nn.conv2d(x, _w((64, 64, 3, 3)), padding=1), _x([1, 64, 8, 8]))
    tvm_npu.partition_for_npu(mod, big, CompileOptions(False))
    reasons = _cpu_reasons(tvm_npu.last_report(), "relax.nn.conv2d")
    assert any("tiles_fit" in r and "WGT needs" in r for r in reasons), reasons


def test_pool_softmax_activation_rules():
    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.max_pool2d(x, 3, 2, ceil_mode=True), _x([1, 4, 9, 9])))
    assert any("ceil_mode" in r for r in _cpu_reasons(rep, "relax.nn.max_pool2d")), rep.summary()
    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.avg_pool2d(x, 3, 1, 1, count_include_pad=True),
                               _x([1, 4, 9, 9])))
    assert any("counts padding" in r for r in _cpu_reasons(rep, "relax.nn.avg_pool2d")), rep.summary()
    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.softmax(x, axis=1), _x([2, 5, 3])))
    assert any("softmax_last_axis" in r for r in _cpu_reasons(rep, "relax.nn.softmax")), rep.summary()
    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.leakyrelu(x, 1.5), _x([2, 5])))
    assert any("slope 1.5" in r for r in _cpu_reasons(rep, "relax.nn.leakyrelu")), rep.summary()
    rep = _partition(_relax_fn(lambda bb, x: relax.op.mean(x, axis=[0, 2]), _x([2, 5, 3])))
    assert any("non-adjacent" in r for r in _cpu_reasons(rep, "relax.mean")), rep.summary()
    rep = _partition(_relax_fn(lambda bb, x: relax.op.nn.softmax(x, axis=-1), _x([2, 5, 3])))
    assert [p.composite for p in on_npu(rep)] == ["npu.softmax"]


def test_rank_and_broadcast_rules():
    rep = _partition(_relax_fn(lambda bb, x, y: relax.op.add(x, y), _x([1, 2, 3, 4, 5]), _x([1, 2, 3, 4, 5], name="y")))
    assert any("rank 5" in r for r in _cpu_reasons(rep, "relax.add")), rep.summary()


def test_every_constraint_has_a_rule_docstring_and_can_refuse():
    """The docs table is generated from these docstrings; each constraint must state its rule."""
    for kind, cs in constraints.BY_KIND.items():
        for c in cs:
            assert c.__doc__ and len(c.__doc__.strip()) > 20, c.__name__


def test_dynamic_shapes_fall_back_and_run():
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 16], "float32"))
    mod = _relax_fn(lambda bb, x: relax.op.nn.relu(relax.op.matmul(x, _w((16, 8)))), x)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target="npu")
    rep = tvm_npu.last_report()
    assert not on_npu(rep)
    assert any("dynamic shape" in r for p in rep.placements for r in p.reasons), rep.summary()
    xv = RNG.standard_normal((3, 16)).astype(np.float32)
    w = mod["main"].body.blocks[0].bindings[0].value.args[1].value.numpy()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    np.testing.assert_allclose(got, np.maximum(xv @ w, 0), rtol=1e-5, atol=1e-5)


def test_model_without_supported_operators_runs_on_cpu_exactly():
    m = model([helper.make_node("Sign", ["x"], ["t"]),
               helper.make_node("Floor", ["t"], ["y"])], [("x", (2, 3, 4))], [("y", (2, 3, 4))])
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    got, rep = compile_run(m, {"x": x}, "npu")
    np.testing.assert_allclose(got[0], reference(m, {"x": x})[0], rtol=1e-6)
    assert not on_npu(rep) and all(p.reasons for p in rep.placements)


def test_integer_graph_runs_on_cpu_with_the_model_semantics():
    a = _x([4, 6], "int32")
    b = _x([4, 6], "int32", "b")
    mod = _relax_fn(lambda bb, a, b: relax.op.multiply(relax.op.add(a, b), b), a, b)
    av = RNG.integers(-1000, 1000, (4, 6)).astype(np.int32)
    bv = RNG.integers(-1000, 1000, (4, 6)).astype(np.int32)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target="npu")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(av), tvm.runtime.tensor(bv)).numpy()
    np.testing.assert_array_equal(got, (av + bv) * bv)
    assert not on_npu(tvm_npu.last_report())


def test_should_run_keeps_tiny_work_on_cpu_and_offloads_big_work():
    small = _relax_fn(lambda bb, x: relax.op.nn.relu(x), _x([1, 8]))
    tvm_npu.partition_for_npu(small, tvm_npu.get_config())
    rep = tvm_npu.last_report()
    assert not on_npu(rep) and rep.vetoed
    assert any("performance model" in r for r in _cpu_reasons(rep, "relax.nn.relu"))
    (fn,) = rep.functions.values()
    assert not fn["offloaded"] and fn["predicted_npu_us"] > fn["predicted_cpu_us"]

    big = _relax_fn(lambda bb, x: relax.op.nn.conv2d(x, _w((64, 32, 3, 3)), padding=1), _x([1, 32, 56, 56]))
    tvm_npu.partition_for_npu(big, tvm_npu.get_config())
    rep = tvm_npu.last_report()
    assert [p.composite for p in on_npu(rep)] == ["npu.conv2d"]
    (fn,) = rep.functions.values()
    assert fn["offloaded"] and fn["predicted_npu_us"] < fn["predicted_cpu_us"]
    # a host as fast as the NPU would keep it
    tvm_npu.partition_for_npu(big, tvm_npu.get_config(), CompileOptions(
        True, CpuModel(macs_per_s=1e15, elems_per_s=1e15)))
    assert not on_npu(tvm_npu.last_report())


def test_other_targets_are_untouched():
    mod = _relax_fn(lambda bb, x: relax.op.nn.conv2d(x, _w((8, 4, 3, 3)), padding=1), _x([1, 4, 8, 8]))
    before = tvm_npu.last_report()
    ex = tvm.compile(mod, target="llvm")
    assert tvm_npu.last_report() is before  # no partitioning ran
    assert "npu" not in [m.kind for m in ex.mod.imports]
    pipeline = relax.get_pipeline("default")
    with tvm.target.Target("llvm"):
        out = pipeline(mod)
    assert out.attrs is None or "external_mods" not in out.attrs


def test_report_json_and_summary_name_every_operator():
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
               helper.make_node("Sin", ["c"], ["y"])], [("x", (1, 3, 8, 8))], [("y", (1, 4, 8, 8))],
              [const("w", (4, 3, 3, 3))])
    _, rep = compile_run(m, {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}, "npu")
    d = rep.to_dict()
    ops = {p["op"]: p["target"] for p in d["placements"]}
    assert ops == {"relax.nn.conv2d": "npu", "relax.sin": "cpu"}
    text = rep.summary()
    assert "npu.conv2d" in text and "no npu.* pattern covers relax.sin" in text


def test_supported_ops_doc_is_generated_from_the_checks():
    from tvm_npu.relay_ext import doc

    assert doc.main(["--check"]) == 0, "run python -m tvm_npu.relay_ext.doc"


def test_vector_ops_that_cannot_fit_are_refused_at_partition_time_not_in_codegen():
    """A softmax row larger than ACT must be refused by its check (with the reason) and run on the CPU."""
    tiny = tvm_npu.NPUConfig("npu-tiny", 4, 4, 8 * 1024, 4 * 1024, 4 * 1024, 4, 16, 4, 100)
    mod = _relax_fn(lambda bb, x: relax.op.nn.softmax(x), _x([2, 10000]))
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target=tvm_npu.npu_target(tiny))
    reasons = _cpu_reasons(tvm_npu.last_report(), "relax.nn.softmax")
    assert any("tiles_fit" in r and "does not fit ACT" in r for r in reasons), reasons
    x = RNG.standard_normal((2, 10000)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_onnx_clip_with_bound_inputs_reaches_the_npu():
    """TVM's ONNX frontend imports Clip(min, max inputs) as call_tir(maximum/minimum); the rewrite puts
    Relax operators back so the NPU takes them, and the values stay those of onnxruntime."""
    from onnx import numpy_helper

    m = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [("x", (1, 4, 6, 6))], [("y", (1, 4, 6, 6))],
              [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
               numpy_helper.from_array(np.array(0.75, np.float32), "hi")])
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    got, rep = compile_run(m, {"x": x}, "npu")
    np.testing.assert_allclose(got[0], reference(m, {"x": x})[0], atol=1e-3)
    assert {p.op for p in on_npu(rep)} == {"relax.maximum", "relax.minimum"}, rep.summary()


def test_elementwise_rewrite_leaves_other_primfuncs_alone():
    from tvm.script import tirx as T

    from tvm_npu.relay_ext.rewrites import elementwise_binary

    @T.prim_func(s_tir=True)
    def transposed_max(a: T.Buffer((4, 4), "float32"), b: T.Buffer((), "float32"), o: T.Buffer((4, 4), "float32")):
        for i, j in T.grid(4, 4):
            with T.sblock("m"):
                vi, vj = T.axis.remap("SS", [i, j])
                o[vi, vj] = T.max(a[vj, vi], b[()])

    assert elementwise_binary(transposed_max) is None


def test_ir_the_partitioner_cannot_handle_runs_on_cpu_with_the_reason():
    """MergeCompositeFunctions fails on match_cast / If / tensor_to_shape; compiling must still work."""
    x = _x([4, 3])
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            r = bb.emit(relax.op.nn.relu(x))
            n = bb.emit(relax.op.nonzero(r))  # data-dependent output shape
            y = bb.emit_output(n)
        bb.emit_func_output(y)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(bb.get(), target="npu")
    xv = np.array([[1, -1, 2], [0, 3, -4], [5, 0, 0], [-1, -2, 6]], np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    np.testing.assert_array_equal(got, np.array(np.nonzero(np.maximum(xv, 0))))


def test_repeated_composites_are_all_named_in_the_report():
    rep = _partition(_relax_fn(lambda bb, x: relax.op.add(relax.op.nn.relu(x), relax.op.nn.relu(relax.op.negative(x))),
                               _x([2, 8])))
    assert [p.composite for p in on_npu(rep)].count("npu.relu") == 2, rep.summary()
    assert all(p.composite for p in on_npu(rep))


def test_softmax_of_large_offsets_subtracts_the_maximum_before_rounding_to_fp16():
    mod = _relax_fn(lambda bb, x: relax.op.nn.softmax(x), _x([2, 4]))
    xv = np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003]], np.float32)
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target="npu")
    assert on_npu(tvm_npu.last_report())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    e = np.exp(xv - xv.max(1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), atol=1e-3)
