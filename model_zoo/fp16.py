"""An fp16-storage emulation of an ONNX model on onnxruntime: what fp16 alone does to a model.

Every float initializer and constant is rounded to fp16, and every node's float output is cast
fp32 -> fp16 -> fp32, while each operator still computes in fp32. That is the NPU's numeric
contract for float graphs (fp16 storage, fp32 accumulation) without any of the compiler's code,
so the error of this emulation against plain onnxruntime is the floor a correct NPU
compilation can be expected to reach: when the NPU's error is of the same size, the difference
is the model's sensitivity to fp16, not a compiler bug.

One emulation is one sample of fp16's error, and where a model is ill-conditioned (a near-tie of
two classes behind a softmax) that sample can be unrepresentatively small. The noise ensemble
(`fp16_noise_envelope`) runs the model several times with every float node output multiplied by
(1 + u * 2**-11), u uniform in [-1, 1] and fixed per seed (the size of fp16's rounding error, drawn
by onnxruntime's RandomUniformLike), weights rounded to fp16 as above: each output element's largest
deviation over the ensemble is what fp16 storage can do to it.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np

_FP16_MAX = 65504.0
NOISE_SEEDS = 8


def _round16(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float32 or not np.all(np.abs(a) < _FP16_MAX):  # e.g. clip bounds at FLT_MAX stay
        return a
    return a.astype(np.float16).astype(np.float32)


NOISE_REL = 2.0**-11  # fp16's largest relative rounding error (half an ulp at the bottom of a binade)


def fp16_emulated_model(model, noise_seed: Optional[int] = None):
    """A copy of the ONNX model with fp16 storage emulated (see the module docstring); with
    `noise_seed`, every float node output is instead multiplied by a fixed random factor in
    1 +- NOISE_REL (one member of the noise ensemble)."""
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
        if noise_seed is None:
            nodes.append(helper.make_node("Cast", [out + "__fp32"], [out + "__fp16"], to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [out + "__fp16"], [out], to=TensorProto.FLOAT))
        else:
            seed = float(noise_seed * 100003 + len(nodes))  # distinct per node and per ensemble member
            nodes.append(helper.make_node("RandomUniformLike", [out + "__fp32"], [out + "__noise"],
                                          low=1.0 - NOISE_REL, high=1.0 + NOISE_REL, seed=seed))
            nodes.append(helper.make_node("Mul", [out + "__fp32", out + "__noise"], [out]))
    del g.node[:]
    g.node.extend(nodes)
    return model


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no cast folded away
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def fp16_emulated_runner(path, input_name: str, output_names: Sequence[str]) -> Callable[[np.ndarray], List[np.ndarray]]:
    """onnxruntime on the fp16-emulated model (graph optimisations off, so no cast is folded away)."""
    import onnx

    sess = _session(fp16_emulated_model(onnx.load(str(path))))
    return lambda x: [np.asarray(v) for v in sess.run(list(output_names), {input_name: x})]


def fp16_noise_deviation(path, input_name: str, output_names: Sequence[str], seeds: int = NOISE_SEEDS
                         ) -> Callable[[np.ndarray, Sequence[np.ndarray]], List[np.ndarray]]:
    """A function (input, reference outputs) -> per output, each element's largest deviation from
    the reference over the noise ensemble's `seeds` runs: how far fp16-sized noise moves it, in
    either direction. Sessions are built on first use (only inputs outside their bound need it)."""
    import onnx

    sessions: List = []

    def run(x: np.ndarray, refs: Sequence[np.ndarray]) -> List[np.ndarray]:
        if not sessions:
            base = onnx.load(str(path))
            sessions.extend(_session(fp16_emulated_model(base, noise_seed=k)) for k in range(seeds))
        devs = [np.zeros(np.shape(r), dtype=np.float64) for r in refs]
        for sess in sessions:
            for d, e, r in zip(devs, sess.run(list(output_names), {input_name: x}), refs):
                np.maximum(d, np.abs(np.asarray(e, np.float64) - np.asarray(r, np.float64)), out=d)
        return devs

    return run
