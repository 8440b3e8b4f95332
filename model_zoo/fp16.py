"""An fp16-storage emulation of an ONNX model on onnxruntime: what fp16 alone does to a model.

Every float initializer and constant is rounded to fp16, and every node's float output is cast
fp32 -> fp16 -> fp32, while each operator still computes in fp32. That is the NPU's numeric
contract for float graphs (fp16 storage, fp32 accumulation) without any of the compiler's code,
so the error of this emulation against plain onnxruntime is the floor a correct NPU
compilation can be expected to reach: when the NPU's error is of the same size, the difference
is the model's sensitivity to fp16, not a compiler bug.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np

_FP16_MAX = 65504.0


def _round16(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float32 or not np.all(np.abs(a) < _FP16_MAX):  # e.g. clip bounds at FLT_MAX stay
        return a
    return a.astype(np.float16).astype(np.float32)


def fp16_emulated_model(model):
    """A copy of the ONNX model with fp16 storage emulated (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(_round16(numpy_helper.to_array(init)), init.name))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        float_values = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
                        if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    except Exception:  # noqa: BLE001 - without types, cast every output of a float-looking op
        float_values = None
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type == "Constant":
            for at in n.attribute:
                if at.name == "value" and at.t.data_type == TensorProto.FLOAT:
                    at.t.CopyFrom(numpy_helper.from_array(_round16(numpy_helper.to_array(at.t))))
            continue
        if n.op_type in ("Shape", "Size", "Cast") or not n.output:
            continue
        out = n.output[0]
        if float_values is not None and out not in float_values:
            continue
        n.output[0] = out + "__fp32"
        nodes.append(helper.make_node("Cast", [out + "__fp32"], [out + "__fp16"], to=TensorProto.FLOAT16))
        nodes.append(helper.make_node("Cast", [out + "__fp16"], [out], to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    return model


def fp16_emulated_runner(path, input_name: str, output_names: Sequence[str]) -> Callable[[np.ndarray], List[np.ndarray]]:
    """onnxruntime on the fp16-emulated model (graph optimisations off, so no cast is folded away)."""
    import onnx
    import onnxruntime as ort

    model = fp16_emulated_model(onnx.load(str(path)))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: [np.asarray(v) for v in sess.run(list(output_names), {input_name: x})]
