"""QParams: float32 scales, validation, quantize (tvm_npu.quant.params)."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_npu.quant import QParams


def test_qparams_rounds_scales_to_float32_and_validates():
    q = QParams.per_tensor(0.1, -3)
    assert q.s == np.float32(0.1) and q.zp == -3 and q.is_per_tensor and (q.qmin, q.qmax) == (-128, 127)
    pc = QParams.per_channel([0.1, 0.2, 0.3], 0, axis=3)
    assert pc.scale.dtype == np.float32 and list(pc.zero_point) == [0, 0, 0] and pc.axis == 3
    assert np.array_equal(QParams.per_tensor(0.5).channel_scales(4), np.full(4, 0.5, np.float32))
    assert q.equals(QParams.per_tensor(np.float32(0.1), -3)) and not q.equals(QParams.per_tensor(0.1, -2))
    for bad in (lambda: QParams.per_tensor(0.0), lambda: QParams.per_tensor(-1.0), lambda: QParams.per_tensor(0.1, 200),
                lambda: QParams(np.array([0.1, 0.2]), np.array([0, 0])), lambda: QParams.per_tensor(0.1, 0, "uint8")):
        with pytest.raises(ValueError):
            bad()
    assert QParams.per_tensor(0.01, 0, "int16").qmax == 32767
    np.testing.assert_array_equal(q.quantize([0.0, 0.05, -0.05, 100.0]), [-3, -2, -4, 127])  # half away from zero
