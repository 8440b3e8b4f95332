"""DRAM tensors in their logical layout, strided views onto them, SRAM and constant allocation."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..config import NPUConfig
from ..isa import DType, DramRef, Region, Space, TensorRef
from ..ir.desc import Unsupported
from ..ir.memory import sram_bytes
from ..isa.spec import DTYPE_SIZE, SRAM_ALIGN

NP_TO_DTYPE = {"int8": DType.INT8, "int16": DType.INT16, "int32": DType.INT32, "float16": DType.FP16,
               "float32": DType.FP32}


@dataclasses.dataclass(frozen=True)
class DramTensor:
    """A tensor in DRAM, dense and row-major in its logical (Relax) shape."""

    region: Region
    offset: int
    shape: Tuple[int, ...]
    dtype: DType

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @functools.cached_property  # a pure function of the frozen fields; every DMA view reads it
    def strides(self) -> Tuple[int, ...]:
        out, acc = [], self.itemsize
        for d in reversed(self.shape):
            out.append(acc)
            acc *= d
        return tuple(reversed(out))

    def view(self, axes: Sequence[Optional[int]], start: Dict[int, int] = None,
             steps: Sequence[int] = ()) -> DramRef:
        """A DMA descriptor reading this tensor as SRAM dims (n, h, w, c) = logical `axes` (None:
        a dim of size 1), starting at logical index `start` (axis -> index, others 0); `steps` (per
        SRAM dim, default 1): every step-th element (a strided slice)."""
        strides = self.strides
        delta = 0
        if start:
            for a, i in start.items():
                delta += strides[a] * i
        if steps:
            key = (self.offset + delta, tuple([0 if a is None else strides[a] * s for a, s in zip(axes, steps)]))
        else:
            key = (self.offset + delta, tuple([0 if a is None else strides[a] for a in axes]))
        ref = self._views.get(key)
        if ref is None:
            ref = self._views[key] = DramRef(self.region, *key)
        return ref

    @functools.cached_property
    def _views(self) -> Dict[Tuple[int, Tuple[int, ...]], DramRef]:
        """view()'s descriptors by (address, strides): a tile read again (weights, a broadcast
        operand) is one object. Lives as long as this tensor (the lowering of one operator)."""
        return {}


class SramAllocator:
    """Bump allocation of one operator's buffers in the three SRAMs; refuses what does not fit."""

    def __init__(self, config: NPUConfig):
        self.config = config
        self.top = {Space.ACT: 0, Space.WGT: 0, Space.ACC: 0}

    def alloc(self, space: Space, shape: Sequence[int], dtype: DType, what: str = "") -> TensorRef:
        size = sram_bytes(shape, dtype)
        addr = self.top[space]
        limit = self.config.sram_bytes(int(space))
        if addr + size > limit:
            raise Unsupported(f"{space.name} SRAM overflow: {what or 'buffer'} {list(shape)} {dtype.name} needs "
                              f"{size} bytes at {addr}, SRAM has {limit}")
        self.top[space] = (addr + size + SRAM_ALIGN - 1) // SRAM_ALIGN * SRAM_ALIGN
        return TensorRef(space, dtype, addr, tuple(shape))

    def fits(self, needs: Dict[Space, int]) -> bool:
        return all(self.top[s] + b <= self.config.sram_bytes(int(s)) for s, b in needs.items())


class ConstPool:
    """The CONST region: deduplicated, 16-byte aligned blobs."""

    def __init__(self):
        self.data = bytearray()
        self._index: Dict[bytes, int] = {}

    def add(self, array: np.ndarray) -> int:
        blob = np.ascontiguousarray(array).tobytes()
        if blob in self._index:
            return self._index[blob]
        offset = (len(self.data) + 15) // 16 * 16
        self.data += bytes(offset - len(self.data)) + blob
        self._index[blob] = offset
        return offset

    def tensor(self, array: np.ndarray, dtype: DType) -> DramTensor:
        arr = np.asarray(array, dtype={DType.FP16: np.float16, DType.FP32: np.float32, DType.INT8: np.int8,
                                       DType.INT16: np.int16, DType.INT32: np.int32}[dtype])
        return DramTensor(Region.CONST, self.add(arr), tuple(arr.shape) or (1,), dtype)
