"""Small models for the tuning tests: one MAC operator each in MODELS (so a program's cycles are the
operator's), and a few vector operators each in VECTOR_MODELS."""

from __future__ import annotations

import numpy as np
from tvm import relax

RNG = np.random.default_rng(5)
W_CONV = (RNG.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32)
W_MM = (RNG.standard_normal((64, 40)) * 0.2).astype(np.float32)


def _model(shape, body):
    """`main(x)` of one float32 input of `shape` returning `body(x)`."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(body(x))
        bb.emit_func_output(y)
    return bb.get()


def conv_model():
    return _model((1, 16, 14, 14), lambda x: relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(W_CONV), padding=1)))


def matmul_model():
    return _model((98, 64), lambda x: relax.op.matmul(x, relax.const(W_MM)))


MODELS = {"conv": conv_model, "matmul": matmul_model}


def softmax_model():
    return _model((1, 12, 64, 64), lambda x: relax.op.nn.softmax(x, axis=-1))


def transpose_model():
    return _model((1, 64, 12, 32), lambda x: relax.op.permute_dims(relax.op.nn.relu(x), [0, 2, 1, 3]))


def reduce_model():
    """A global average pool (mean), a channel sum and a sum of the means (reduce), one add."""
    def body(x):
        r = relax.op.nn.relu(x)
        m = relax.op.mean(r, axis=[2, 3], keepdims=True)
        return relax.op.add(relax.op.sum(r, axis=[1], keepdims=True), relax.op.sum(m, axis=[1], keepdims=True))

    return _model((1, 256, 7, 7), body)


VECTOR_MODELS = {"softmax": softmax_model, "transpose": transpose_model, "reduce": reduce_model}
