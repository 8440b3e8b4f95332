"""SOFTMAX stays on the CPU: the reference runs it, tvm_npu.quant.SOFTMAX_NOTE says why (tvm_npu.quant.softmax)."""

from __future__ import annotations

import numpy as np

from tvm_npu import quant
from tvm_npu.quant import QParams
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference


def test_softmax_is_written_and_documented():
    """SOFTMAX models can be written and run on the reference (for CPU-side tests); the NPU cannot run the
    reference's fixed-point algorithm bit-exactly (tvm_npu.quant.SOFTMAX_NOTE explains why)."""
    b = ModelBuilder(5)
    x = b.add_input("x", (4, 10), QParams.per_tensor(0.1, 3))
    b.mark_output(b.softmax(x, beta=1.0))
    xin = rand_int8(b.rng, (4, 10))
    (out,) = run_reference(b.finish(), [xin])
    real = np.exp((xin.astype(np.float64) - 3) * float(np.float32(0.1)))
    real /= real.sum(axis=1, keepdims=True)
    assert np.abs((out.astype(np.float64) + 128) / 256 - real).max() <= 1 / 256 + 1e-9
    assert "GetReciprocal" in quant.SOFTMAX_NOTE
