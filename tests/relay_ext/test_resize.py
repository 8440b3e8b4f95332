"""Resize on the NPU (relay_ext/resample.py): nearest neighbour as strided slices and stride-0 DMA
broadcasts (copies: exact on fp16-representable inputs), bilinear x2 with half-pixel centres as
clamped-edge padding, a depthwise convolution over the phases and depth-to-space. Values against
onnxruntime's Resize for each coordinate and rounding mode, on npu-edge and on a tiny configuration
that forces tiling; refused modes stay on the CPU with their reason and are still right."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnx_graphs import compile_run, fp16_close, model, reference

import tvm_npu
from tvm_npu.relay_ext.resample import source_index

TINY = tvm_npu.npu_target(tvm_npu.NPUConfig("npu-tiny", 4, 4, 8 * 1024, 4 * 1024, 4 * 1024, 4, 16, 4, 100))
RNG = np.random.default_rng(17)


def _resize(shape, scales=None, sizes=None, **attrs):
    """Relu -> Resize -> Relu (the resize between NPU operators, as in a decoder)."""
    if sizes is not None:
        out = list(sizes)
        inits = [numpy_helper.from_array(np.array(sizes, np.int64), "sz")]
        ins = ["a", "", "", "sz"]
    else:
        out = [round(d * s) for d, s in zip(shape, scales)]
        inits = [numpy_helper.from_array(np.array(scales, np.float32), "sc")]
        ins = ["a", "", "sc"]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Resize", ins, ["b"], **attrs),
             helper.make_node("Relu", ["b"], ["y"])]
    return model(nodes, [("x", shape)], [("y", out)], inits, opset=13)


def _x(shape):
    return RNG.standard_normal(shape).astype(np.float16).astype(np.float32)


NEAREST = {
    "x2_asymmetric_floor": ((1, 3, 5, 6), [1, 1, 2, 2], {"coordinate_transformation_mode": "asymmetric",
                                                              "nearest_mode": "floor"}),
    "x2_half_pixel_round_prefer_floor": ((1, 4, 6, 5), [1, 1, 2, 2], {}),  # ONNX's defaults
    "x3x2_half_pixel_round_prefer_ceil": ((1, 2, 4, 5), [1, 1, 3, 2], {"nearest_mode": "round_prefer_ceil"}),
    "x2_align_corners": ((1, 3, 4, 7), [1, 1, 2, 2], {"coordinate_transformation_mode": "align_corners"}),
    "x4_pytorch_half_pixel": ((1, 2, 3, 4), [1, 1, 4, 4], {"coordinate_transformation_mode": "pytorch_half_pixel"}),
    "x2_rows_only": ((1, 5, 4, 9), [1, 1, 2, 1], {"coordinate_transformation_mode": "asymmetric",
                                                      "nearest_mode": "floor"}),
    "x2_cols_only": ((1, 5, 4, 9), [1, 1, 1, 2], {"coordinate_transformation_mode": "asymmetric",
                                                      "nearest_mode": "floor"}),
    "half_asymmetric_floor": ((1, 3, 8, 10), [1, 1, 0.5, 0.5], {"coordinate_transformation_mode": "asymmetric",
                                                                    "nearest_mode": "floor"}),
    "half_half_pixel_round_prefer_ceil": ((1, 3, 8, 10), [1, 1, 0.5, 0.5], {"nearest_mode": "round_prefer_ceil"}),
    "down_x2_up_x2_mixed": ((1, 3, 8, 5), [1, 1, 0.5, 2], {"coordinate_transformation_mode": "asymmetric",
                                                               "nearest_mode": "floor"}),
}


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
@pytest.mark.parametrize("name", sorted(NEAREST))
def test_nearest_resize_is_exact_on_the_npu(name, target):
    shape, scales, attrs = NEAREST[name]
    m = _resize(shape, scales, mode="nearest", **attrs)
    x = _x(shape)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x}, target)
    np.testing.assert_array_equal(got[0], want)  # data movement: the same values
    assert all(p.target == "npu" for p in report.placements), report.summary()
    assert "relax.image.resize2d" not in [p.op for p in report.placements]
    assert len(report.functions) == 1, report.summary()


def test_nearest_resize_by_sizes_input():
    m = _resize((1, 3, 5, 6), sizes=[1, 3, 15, 12], mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")
    x = _x((1, 3, 5, 6))
    got, report = compile_run(m, {"x": x})
    np.testing.assert_array_equal(got[0], reference(m, {"x": x})[0])
    assert all(p.target == "npu" for p in report.placements), report.summary()


def test_large_nearest_upsample_tiles_on_a_tiny_npu():
    m = _resize((1, 16, 24, 20), [1, 1, 2, 2], mode="nearest")
    x = _x((1, 16, 24, 20))
    got, report = compile_run(m, {"x": x}, TINY)
    np.testing.assert_array_equal(got[0], reference(m, {"x": x})[0])
    assert all(p.target == "npu" for p in report.placements), report.summary()


BILINEAR = {
    "half_pixel": ((1, 3, 5, 6), {}),
    "pytorch_half_pixel": ((1, 4, 4, 7), {"coordinate_transformation_mode": "pytorch_half_pixel"}),
    "one_row": ((1, 2, 1, 5), {}),
    "wide": ((1, 20, 6, 9), {}),
}


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
@pytest.mark.parametrize("name", sorted(BILINEAR))
def test_bilinear_x2_matches_onnxruntime(name, target):
    shape, attrs = BILINEAR[name]
    m = _resize(shape, [1, 1, 2, 2], mode="linear", **attrs)
    x = _x(shape)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x}, target)
    fp16_close(got[0], want, 4)
    # edges clamp: the corner is the input's corner (relu'd), exactly
    np.testing.assert_array_equal(got[0][..., 0, 0], want[..., 0, 0])
    np.testing.assert_array_equal(got[0][..., -1, -1], want[..., -1, -1])
    if target == "npu":
        assert all(p.target == "npu" for p in report.placements), report.summary()
        assert len(report.functions) == 1, report.summary()
    else:  # the tiny SRAM may refuse a concat of whole rows; the convolution and transposes still tile
        assert all(p.target == "npu" for p in report.placements if p.op != "relax.concat"), report.summary()


REFUSED = {
    "nearest_half_pixel_floor": ((1, 2, 4, 5), [1, 1, 2, 2], {"mode": "nearest", "nearest_mode": "floor"},
                                 "neither a whole-number repeat nor a strided slice"),
    "nearest_x1.5": ((1, 2, 4, 6), [1, 1, 1.5, 1.5], {"mode": "nearest"},
                     "neither a whole-number repeat nor a strided slice"),
    "bilinear_x3": ((1, 2, 4, 5), [1, 1, 3, 3], {"mode": "linear"}, "exactly x2 on both axes only"),
    "bilinear_align_corners": ((1, 2, 4, 5), [1, 1, 2, 2], {"mode": "linear",
                                                                "coordinate_transformation_mode": "align_corners"},
                               "coordinate mode align_corners"),
    "cubic": ((1, 2, 4, 5), [1, 1, 2, 2], {"mode": "cubic"}, "resize method cubic"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_resize_stays_on_the_cpu_with_its_reason(name):
    shape, scales, attrs, reason = REFUSED[name]
    m = _resize(shape, scales, **attrs)
    x = _x(shape)
    want = reference(m, {"x": x})[0]
    got, report = compile_run(m, {"x": x})
    fp16_close(got[0], want)  # TVM's fp32 resize on the CPU between the NPU's fp16 relus
    (p,) = [p for p in report.placements if p.op == "relax.image.resize2d"]
    assert p.target == "cpu" and any(reason in r for r in p.reasons), p.reasons
    assert all(q.target == "npu" for q in report.placements if q.op == "relax.nn.relu"), report.summary()


def test_source_index_follows_the_coordinate_modes():
    """The index maps the rewrite classifies, checked against the ONNX formulas written out."""
    k = np.arange(8)
    np.testing.assert_array_equal(source_index(4, 8, "asymmetric", "floor"), k // 2)
    np.testing.assert_array_equal(source_index(4, 8, "half_pixel", "round_prefer_floor"), k // 2)
    # half_pixel with floor: (k + 0.5) / 2 - 0.5 floored, clamped: 0, 0, 0, 1, 1, 2, 2, 3 (a shifted repeat)
    np.testing.assert_array_equal(source_index(4, 8, "half_pixel", "floor"), [0, 0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(source_index(8, 4, "half_pixel", "round_prefer_ceil"), 2 * np.arange(4) + 1)
    np.testing.assert_array_equal(source_index(8, 4, "asymmetric", "floor"), 2 * np.arange(4))


def _relax_nhwc(shape, out_hw, method, mode="half_pixel", rounding="round_prefer_floor"):
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(x))
            r = bb.emit(relax.op.image.resize2d(a, out_hw, layout="NHWC", method=method,
                                                coordinate_transformation_mode=mode, rounding_method=rounding))
            y = bb.emit_output(relax.op.nn.relu(r))
        bb.emit_func_output(y)
    return tvm.IRModule({"main": bb.get()["main"]})


def _run(mod, x, target):
    import tvm
    from tvm import relax

    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(mod, target=target)
    report = tvm_npu.last_report() if target != "llvm" else None
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy(), report


@pytest.mark.parametrize("target", ["npu", TINY], ids=["npu-edge", "npu-tiny"])
def test_nhwc_nearest_x2_two_broadcasts(target):
    """TFLite's NHWC nearest x2: repeats on both axes and channels after W take two broadcasts."""
    shape = (2, 5, 6, 8)
    x = _x(shape)
    got, report = _run(_relax_nhwc(shape, (10, 12), "nearest_neighbor", "asymmetric", "floor"), x, target)
    want = np.maximum(x, 0).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(got, want)
    assert [p.op for p in report.placements].count("relax.broadcast_to") == 2, report.summary()
    assert all(p.target == "npu" for p in report.placements), report.summary()


def _bilinear_x2_half_pixel(x, axis):
    """numpy: ONNX Resize linear, half_pixel, x2 along one axis (coordinates clamped to the input)."""
    n = x.shape[axis]
    c = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    f = (c - i0).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    return np.take(x, i0, axis) * (1 - f) + np.take(x, i1, axis) * f


def test_nhwc_bilinear_x2_matches_numpy():
    shape = (2, 5, 7, 6)
    x = _x(shape)
    want = np.maximum(_bilinear_x2_half_pixel(_bilinear_x2_half_pixel(np.maximum(x, 0), 1), 2), 0)
    got, report = _run(_relax_nhwc(shape, (10, 14), "linear"), x, "npu")
    fp16_close(got, want, 4)
    assert all(p.target == "npu" for p in report.placements), report.summary()


@pytest.mark.parametrize("half_pixel", [False, True], ids=["asymmetric", "half_pixel_centers"])
def test_int8_tflite_nearest_resize_is_litert_exact(half_pixel):
    """An int8 TFLite graph conv -> RESIZE_NEAREST_NEIGHBOR x2 -> conv: the resize moves int8 bytes on the
    NPU between the integer convolutions (stride-0 broadcasts), and the result is LiteRT's bytes."""
    import tvm
    from tvm import relax

    from tvm_npu.importer import load
    from tvm_npu.quant import QParams
    from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference

    rng = np.random.default_rng(4)
    b = ModelBuilder(5)
    x = b.add_input("x", (1, 6, 7, 4), QParams.per_tensor(0.05, -3))
    c = b.conv2d(x, 8, 3, QParams.per_tensor(0.1, 5), activation="RELU")
    r = b.add_tensor("r", (1, 12, 14, 8), "int8", b.qparams(c))
    b.add_op("RESIZE_NEAREST_NEIGHBOR", [c, b.add_const("size", np.array([12, 14], np.int32))], [r],
             ("ResizeNearestNeighborOptions", {"AlignCorners": False, "HalfPixelCenters": half_pixel}))
    y = b.conv2d(r, 4, 3, QParams.per_tensor(0.08, -2))
    b.mark_output(y)
    buf = b.finish()
    xs = rand_int8(rng, (1, 6, 7, 4))
    (want,) = run_reference(buf, [xs])
    with tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(load(buf, format="tflite").mod, target="npu")
    report = tvm_npu.last_report()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xs)).numpy()
    np.testing.assert_array_equal(got, want)
    assert all(p.target == "npu" for p in report.placements), report.summary()
    assert "relax.broadcast_to" in [p.op for p in report.placements], report.summary()
