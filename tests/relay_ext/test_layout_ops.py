"""Layout operators on the NPU (reshape, flatten, squeeze/unsqueeze, transpose, slice): DMA and a copy,
no arithmetic, so a graph Relu -> layout op -> Relu on fp16-representable inputs must give exactly
onnxruntime's bytes; and every operator must land on the NPU (no region split)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvm_npu
from onnx_graphs import compile_run, model, reference

TINY = tvm_npu.npu_target(tvm_npu.NPUConfig("npu-tiny", 4, 4, 8 * 1024, 4 * 1024, 4 * 1024, 4, 16, 4, 100))
RNG = np.random.default_rng(11)


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _case(node, shape, out_shape, inits=()):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), node, helper.make_node("Relu", ["b"], ["y"])]
    return model(nodes, [("x", shape)], [("y", out_shape)], inits)


CASES = {
    "transpose_nchw_to_nhwc": (helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 3, 1]), (1, 8, 6, 10), (1, 6, 10, 8)),
    "transpose_nhwc_to_nchw": (helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]), (1, 6, 10, 8), (1, 8, 6, 10)),
    "transpose_heads": (helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3]), (1, 16, 4, 24), (1, 4, 16, 24)),
    "transpose_reverse": (helper.make_node("Transpose", ["a"], ["b"], perm=[3, 2, 1, 0]), (2, 3, 5, 7), (7, 5, 3, 2)),
    "transpose_3d": (helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]), (1, 20, 36), (1, 36, 20)),
    "transpose_2d": (helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0]), (33, 17), (17, 33)),
    "reshape_merge": (helper.make_node("Reshape", ["a", "s"], ["b"]), (1, 8, 6, 10), (1, 48, 10), [_ints("s", [1, 48, 10])]),
    "reshape_split_heads": (helper.make_node("Reshape", ["a", "s"], ["b"]), (1, 16, 96), (1, 16, 4, 24),
                            [_ints("s", [1, 16, 4, 24])]),
    "reshape_odd_count": (helper.make_node("Reshape", ["a", "s"], ["b"]), (1, 7, 11, 13), (1, 1001),
                          [_ints("s", [1, -1])]),
    "flatten": (helper.make_node("Flatten", ["a"], ["b"], axis=1), (1, 8, 6, 10), (1, 480)),
    "unsqueeze": (helper.make_node("Unsqueeze", ["a", "ax"], ["b"]), (1, 8, 60), (1, 8, 1, 60), [_ints("ax", [2])]),
    "squeeze": (helper.make_node("Squeeze", ["a", "ax"], ["b"]), (1, 8, 1, 60), (1, 8, 60), [_ints("ax", [2])]),
    "slice_focus_stem": (helper.make_node("Slice", ["a", "st", "en", "ax", "sp"], ["b"]), (1, 3, 16, 20), (1, 3, 8, 10),
                         [_ints("st", [1, 0]), _ints("en", [16, 20]), _ints("ax", [2, 3]), _ints("sp", [2, 2])]),
    "slice_channels": (helper.make_node("Slice", ["a", "st", "en", "ax"], ["b"]), (1, 24, 6, 10), (1, 8, 6, 10),
                       [_ints("st", [8]), _ints("en", [16]), _ints("ax", [1])]),
    "slice_negative_start": (helper.make_node("Slice", ["a", "st", "en", "ax"], ["b"]), (1, 4, 9, 12), (1, 4, 9, 5),
                             [_ints("st", [-5]), _ints("en", [100]), _ints("ax", [3])]),
}


def _fp16_exact_input(shape):
    return RNG.standard_normal(shape).astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_op_is_exact_on_the_npu(name, target):
    node, shape, out_shape, *inits = CASES[name]
    m = _case(node, shape, out_shape, inits[0] if inits else ())
    x = _fp16_exact_input(shape)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x}, target)
    assert got[0].shape == want.shape
    np.testing.assert_array_equal(got[0], want)  # a copy: the same bytes (relu and fp16 storage are exact here)
    placed = {p.op: p for p in report.placements}
    assert all(p.target == "npu" for p in report.placements), report.summary()
    assert len(report.functions) == 1, report.summary()  # one NPU region: the layout op no longer splits it
    layout = [p for p in report.placements if p.composite not in ("npu.relu",)]
    assert layout and all(p.composite.startswith("npu.") for p in layout), placed


def test_large_transpose_tiles_on_a_tiny_npu():
    """A transpose larger than the tiny configuration's ACT: many row tiles, each a strided DMA."""
    node = helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 3, 1])
    m = _case(node, (1, 32, 40, 24), (1, 40, 24, 32))
    x = _fp16_exact_input((1, 32, 40, 24))
    got, report = compile_run(m, {"x": x}, TINY)
    np.testing.assert_array_equal(got[0], reference(m, {"x": x})[0])
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_layout_ops_refuse_what_they_cannot_move():
    """A 5-D transpose (channel shuffle's middle step) stays on the CPU with the reason; the reshapes
    around it still run on the NPU, and the result is exact."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Reshape", ["a", "s1"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    m = model(nodes, [("x", (1, 8, 6, 10))], [("y", (1, 8, 6, 10))],
              [_ints("s1", [1, 2, 4, 6, 10]), _ints("s2", [1, 8, 6, 10])])
    x = _fp16_exact_input((1, 8, 6, 10))
    got, report = compile_run(m, {"x": x}, "npu")
    np.testing.assert_array_equal(got[0], reference(m, {"x": x})[0])
    by_op = {}
    for p in report.placements:
        by_op.setdefault(p.op, []).append(p)
    (t,) = by_op["relax.permute_dims"]
    assert t.target == "cpu" and any("rank 5" in r for r in t.reasons), t.reasons
    assert all(p.target == "npu" for p in by_op["relax.reshape"]), report.summary()


def test_int8_reshape_moves_bytes_on_the_npu():
    """An int8 TFLite graph conv -> RESHAPE -> conv: the reshape moves the int8 bytes on the NPU between
    the integer convolutions, and the result is LiteRT's reference bytes. (TVM 0.27's TFLite frontend
    refuses a quantised TRANSPOSE, so this graph has none.)"""
    import tvm
    from tvm import relax

    from tvm_npu.importer import load
    from tvm_npu.quant import QParams
    from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

    rng = np.random.default_rng(3)
    b = ModelBuilder(3)
    x = b.add_input("x", (1, 6, 8, 4), QParams.per_tensor(0.05, -3))
    c = b.conv2d(x, 8, 3, QParams.per_tensor(0.1, 5), activation="RELU")
    r = b.add_tensor("r", (1, 8, 6, 8), "int8", b.qparams(c))
    b.add_op("RESHAPE", [c, b.add_const("shape", np.array([1, 8, 6, 8], np.int32))], [r])
    y = b.conv2d(r, 4, 1, QParams.per_tensor(0.08, -2))
    b.mark_output(y)
    buf = b.finish()
    xs = rand_int8(rng, (1, 6, 8, 4))
    (want,) = run_reference(buf, [xs])
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(load(buf, format="tflite").mod, target="npu")
    report = tvm_npu.last_report()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
    np.testing.assert_array_equal(got, want)
    ops = {p.op: p.target for p in report.placements}
    assert ops.get("relax.reshape") == "npu", report.summary()
    assert len(report.functions) == 1, report.summary()


def test_a_reshape_inside_a_region_is_an_alias_not_a_copy():
    """Between two NPU operators a reshape costs nothing: the memory plan gives its result the input's
    bytes (another shape over the same DRAM), so it emits no instruction; the artifact lists it."""
    import tvm

    from tvm_npu.artifact import Artifact
    from tvm_npu.runtime_module import find_npu_modules

    node, shape, out_shape, inits = CASES["reshape_merge"]
    m = _case(node, shape, out_shape, inits)
    x = _fp16_exact_input(shape)
    from tvm.relax.frontend.onnx import from_onnx

    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(from_onnx(m, keep_params_in_input=False), target="npu")
    (mod,) = find_npu_modules(ex.mod)
    (sym,) = [str(s) for s in mod["npu_symbols"]()]
    art = Artifact.deserialize(bytes(mod["npu_artifact"](sym)))
    assert len(art.producer["aliases"]) == 1, art.producer["aliases"]
    assert [r.op for r in art.provenance] == ["npu.relu", "npu.relu"]  # nothing emitted for the reshape
    got, _ = compile_run(m, {"x": x})
    np.testing.assert_array_equal(got[0], reference(m, {"x": x})[0])
