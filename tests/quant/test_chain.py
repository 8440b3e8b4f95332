"""A chained int8 model: LiteRT runs the whole graph once; the NPU runs it operator by operator (one
hand-built program per op, host passing the int8 tensors between them) and must match byte for byte."""

from __future__ import annotations

import numpy as np

from qprog import npu_binary, npu_concat_channels, npu_conv2d, npu_depthwise_conv2d, npu_lut, npu_pool
from tvm_npu import quant
from tvm_npu.quant import QParams
from tvm_npu.testing.tflite_int8 import ModelBuilder, rand_int8, run_reference


def test_chain_conv_dw_pool_hardswish_add_mul_concat_logistic(npu_emulator):
    b = ModelBuilder(2024)
    q = QParams.per_tensor
    x = b.add_input("x", (1, 12, 11, 3), q(0.031, -9))
    skip = b.add_input("skip", (1, 1, 1, 8), q(0.05, 12))
    c1 = b.conv2d(x, 8, 3, q(0.047, -128), stride=2, activation="RELU6")
    d1 = b.depthwise_conv2d(c1, 3, q(0.06, -100), activation="RELU")
    p1 = b.average_pool2d(d1, 2, stride=1, padding="SAME")
    h1 = b.hard_swish(p1, q(0.04, -20))
    a1 = b.add(h1, skip, q(0.07, 3))
    m1 = b.mul(a1, h1, q(0.12, -7), "RELU")
    mp = b.max_pool2d(d1, 3, stride=1, padding="SAME")
    cat = b.concatenation([m1, b.quantize(mp, q(0.12, -7))], axis=3)
    out = b.logistic(cat)
    b.mark_output(out)
    buf = b.finish()

    xin, sin = rand_int8(b.rng, (1, 12, 11, 3)), rand_int8(b.rng, (1, 1, 1, 8))
    (want,) = run_reference(buf, [xin, sin])

    e = npu_emulator
    qp = b.qparams
    # a conv op's weight and bias tensors are the two created just before its output
    cq1 = quant.conv2d_quant(qp(x), qp(c1 - 2), qp(c1), "RELU6", bias=b.data(c1 - 1))
    t_c1 = npu_conv2d(e, xin, b.data(c1 - 2), cq1, (2, 2), (1, 1), "SAME")
    cq2 = quant.depthwise_conv2d_quant(qp(c1), qp(d1 - 2), qp(d1), "RELU", bias=b.data(d1 - 1))
    t_d1 = npu_depthwise_conv2d(e, t_c1, b.data(d1 - 2), cq2, (1, 1), (1, 1), "SAME")
    t_p1 = npu_pool(e, t_d1, "avg", (2, 2), (1, 1), "SAME", quant.pool_quant(qp(d1), qp(p1)))
    t_h1 = npu_lut(e, t_p1, quant.hard_swish_lut(qp(p1), qp(h1)))
    t_a1 = npu_binary(e, "vadd", t_h1, sin, quant.add_quant(qp(h1), qp(skip), qp(a1)))
    t_m1 = npu_binary(e, "vmul", t_a1, t_h1, quant.mul_quant(qp(a1), qp(h1), qp(m1), "RELU"))
    t_mp = npu_pool(e, t_d1, "max", (3, 3), (1, 1), "SAME", quant.pool_quant(qp(d1), qp(mp), mode="max"))
    # the QUANTIZE in front of the concatenation and the concatenation itself: one table for the second input
    tables = quant.concat_quant([qp(m1), qp(mp)], qp(cat))
    assert tables[0] is None and tables[1] is not None
    t_cat = npu_concat_channels(e, [t_m1, t_mp], tables)
    got = npu_lut(e, t_cat, quant.logistic_lut(qp(cat), qp(out)))

    assert got.shape == want.shape == (1, 6, 6, 16)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 30  # the chain did not saturate into a constant
