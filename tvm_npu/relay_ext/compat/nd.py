"""tvm.nd of TVM <= 0.16 (array, empty, NDArray) on tvm.runtime.tensor / Tensor of TVM 0.27."""

from __future__ import annotations

import types

import numpy as np
import tvm

from .unmapped import ShimModule


def _nd_array(source_array, device=None, mem_scope=None):
    """`tvm.nd.array`: tvm.runtime.tensor (a tvm.runtime.Tensor)."""
    if isinstance(source_array, tvm.runtime.Tensor):
        source_array = source_array.numpy()
    return tvm.runtime.tensor(np.asarray(source_array), device or tvm.cpu(0), mem_scope=mem_scope)


def _nd_empty(shape, dtype="float32", device=None, mem_scope=None):
    """`tvm.nd.empty`: tvm.runtime.empty."""
    return tvm.runtime.empty(shape, dtype, device or tvm.cpu(0), mem_scope=mem_scope)


def module() -> types.ModuleType:
    """The tvm.nd module."""
    nd = ShimModule("tvm.nd", "tvm.nd of TVM <= 0.16, renamed tvm.runtime.tensor / Tensor in TVM 0.27.", {},
                    default="tvm.runtime.tensor / tvm.runtime.empty / tvm.runtime.Tensor")
    nd.array, nd.empty, nd.NDArray = _nd_array, _nd_empty, tvm.runtime.Tensor
    nd.from_dlpack, nd.cpu, nd.cuda, nd.device = tvm.runtime.from_dlpack, tvm.cpu, tvm.cuda, tvm.device
    return nd
