"""Small one-operator models for the tuning tests (one MAC operator each, so a program's cycles are
the operator's)."""

from __future__ import annotations

import numpy as np
from tvm import relax

RNG = np.random.default_rng(5)
W_CONV = (RNG.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32)
W_MM = (RNG.standard_normal((64, 40)) * 0.2).astype(np.float32)


def conv_model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 16, 14, 14], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(W_CONV), padding=1)))
        bb.emit_func_output(y)
    return bb.get()


def matmul_model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([98, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, relax.const(W_MM)))
        bb.emit_func_output(y)
    return bb.get()


MODELS = {"conv": conv_model, "matmul": matmul_model}


def softmax_model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 12, 64, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.softmax(x, axis=-1))
        bb.emit_func_output(y)
    return bb.get()


def transpose_model():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 64, 12, 32], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.permute_dims(relax.op.nn.relu(x), [0, 2, 1, 3]))
        bb.emit_func_output(y)
    return bb.get()


def reduce_model():
    """A global average pool (mean), a channel sum and a sum of the means (reduce), one add."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 256, 7, 7], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            r = relax.op.nn.relu(x)
            m = relax.op.mean(r, axis=[2, 3], keepdims=True)
            s = relax.op.sum(r, axis=[1], keepdims=True)
            y = bb.emit_output(relax.op.add(s, relax.op.sum(m, axis=[1], keepdims=True)))
        bb.emit_func_output(y)
    return bb.get()


VECTOR_MODELS = {"softmax": softmax_model, "transpose": transpose_model, "reduce": reduce_model}
