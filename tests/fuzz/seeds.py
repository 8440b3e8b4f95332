"""Valid seed inputs of the fuzz targets and the bad-input tests: a tiny ONNX convolution, a tiny
int8 TFLite convolution, a TFLite model with a custom operator, and an NPU artifact's bytes."""

from __future__ import annotations

import numpy as np

ONNX_INPUT = ("x", (1, 3, 8, 8))
TFLITE_INPUT = ("x", (1, 8, 8, 3))


def onnx_conv(op_type: str = "Relu", weight_scale: float = 0.3) -> bytes:
    """x[1,3,8,8] -> Conv(4, 3x3, pad 1) -> `op_type` -> y: 380 bytes."""
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(0).standard_normal((4, 3, 3, 3)) * weight_scale).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
                           helper.make_node(op_type, ["c"], ["y"], name="act1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def tflite_int8_conv() -> bytes:
    """x int8[1,8,8,3] -> CONV_2D(4, 3x3, RELU) -> y int8: about 1 KB."""
    from tvm_npu.quant import QParams
    from tvm_npu.testing.tflite_int8 import ModelBuilder

    b = ModelBuilder(seed=0)
    x = b.add_input("x", TFLITE_INPUT[1], QParams.per_tensor(0.05, -3))
    b.mark_output(b.conv2d(x, out_channels=4, kernel=3, out_q=QParams.per_tensor(0.1, 5), activation="RELU"))
    return b.finish()


def tflite_custom_op(custom_code: str = "MyCustomOp") -> bytes:
    """x float32[1,4] -> CUSTOM `custom_code` -> y float32[1,4] (ModelBuilder writes builtins only)."""
    import importlib

    import flatbuffers

    B, M, Op, OC, S, T = (importlib.import_module(f"tflite.{m}") for m in  # (the modules: tflite's __init__
                         ("Buffer", "Model", "Operator", "OperatorCode", "SubGraph", "Tensor"))  # exports classes)

    b = flatbuffers.Builder(256)
    B.BufferStart(b)
    buffers = [B.BufferEnd(b)]
    tensors = []
    for name in ("x", "y"):
        n, shape = b.CreateString(name), b.CreateNumpyVector(np.array([1, 4], np.int32))
        T.TensorStart(b)
        T.TensorAddShape(b, shape)
        T.TensorAddType(b, 0)  # FLOAT32
        T.TensorAddBuffer(b, 0)
        T.TensorAddName(b, n)
        tensors.append(T.TensorEnd(b))
    ins, outs = b.CreateNumpyVector(np.array([0], np.int32)), b.CreateNumpyVector(np.array([1], np.int32))
    Op.OperatorStart(b)
    Op.OperatorAddOpcodeIndex(b, 0)
    Op.OperatorAddInputs(b, ins)
    Op.OperatorAddOutputs(b, outs)
    op = Op.OperatorEnd(b)

    def vec(start, offs):
        start(b, len(offs))
        for off in reversed(offs):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    tensors_vec, ops_vec = vec(S.SubGraphStartTensorsVector, tensors), vec(S.SubGraphStartOperatorsVector, [op])
    g_in, g_out = b.CreateNumpyVector(np.array([0], np.int32)), b.CreateNumpyVector(np.array([1], np.int32))
    S.SubGraphStart(b)
    S.SubGraphAddTensors(b, tensors_vec)
    S.SubGraphAddInputs(b, g_in)
    S.SubGraphAddOutputs(b, g_out)
    S.SubGraphAddOperators(b, ops_vec)
    graph = S.SubGraphEnd(b)
    code = b.CreateString(custom_code)
    OC.OperatorCodeStart(b)
    OC.OperatorCodeAddDeprecatedBuiltinCode(b, 32)  # CUSTOM
    OC.OperatorCodeAddBuiltinCode(b, 32)
    OC.OperatorCodeAddCustomCode(b, code)
    OC.OperatorCodeAddVersion(b, 1)
    codes = vec(M.ModelStartOperatorCodesVector, [OC.OperatorCodeEnd(b)])
    graphs, bufs = vec(M.ModelStartSubgraphsVector, [graph]), vec(M.ModelStartBuffersVector, buffers)
    M.ModelStart(b)
    M.ModelAddVersion(b, 3)
    M.ModelAddOperatorCodes(b, codes)
    M.ModelAddSubgraphs(b, graphs)
    M.ModelAddBuffers(b, bufs)
    b.Finish(M.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def artifact_bytes() -> bytes:
    """A serialised NPU artifact with golden data (tests/helpers.py's sample_artifact)."""
    from helpers import sample_artifact

    return sample_artifact()[0].serialize()
