"""SRAM layout: rows padded to 16 bytes, padding never read by compute and never written by it."""

from __future__ import annotations

import numpy as np

import reference as ref
from helpers import Kernel, rand_int, rng
from tvm_npu.isa import DramRef, DType, Region, ReduceMode, Space, TensorRef


def _garbage_rows(k, space, addr, rows, stride):
    """Fills `rows` rows of `stride` bytes at addr with 0x77 through a wide DMA view."""
    wide = TensorRef(space, DType.INT8, addr, (1, 1, rows, stride))
    k.load_raw(wide, DramRef(Region.IO, k.place(np.full(rows * stride, 0x77, np.uint8)), (0, 0, stride, 1)))
    return wide


def test_padding_is_not_read(npu_emulator):
    r = rng(101)
    x = rand_int(r, np.int8, (1, 1, 3, 20))  # row stride 32: bytes 20..31 of each row are padding
    w = rand_int(r, np.int8, (20, 16))
    k = Kernel()
    _garbage_rows(k, Space.ACT, 0, 3, 32)
    a = TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 3, 20))
    k.load_raw(a, DramRef.dense(Region.IO, k.place(x), x.shape, 1))  # overwrites bytes 0..19 of each row
    tw = k.load(w.reshape(1, 1, 20, 16), Space.WGT)
    acc = k.alloc(Space.ACC, np.int32, (1, 1, 3, 16))
    red = k.alloc(Space.ACC, np.int32, (1, 1, 3, 1))
    k.op("gemm", a=a, w=tw, o=acc)
    k.op("vreduce", a=a, o=red, mode=int(ReduceMode.SUM), axis=3)
    k.store(acc)
    k.store(red)
    (o1, o2), _ = k.run(npu_emulator)
    np.testing.assert_array_equal(o1.reshape(3, 16), ref.gemm_int(x.reshape(3, 20), w))
    np.testing.assert_array_equal(o2.reshape(-1), x.astype(np.int64).sum(axis=3).reshape(-1))


def test_padding_is_not_written(npu_emulator):
    r = rng(102)
    x = rand_int(r, np.int8, (1, 1, 2, 20))
    k = Kernel()
    a = k.load(x)
    out_addr = 1024
    wide = _garbage_rows(k, Space.ACT, out_addr, 2, 32)
    o = TensorRef(Space.ACT, DType.INT8, out_addr, (1, 1, 2, 20))
    k.op("vclamp", a=a, o=o, min_i=-10, max_i=10)
    k.store(wide)  # the whole rows, padding included
    (out,), _ = k.run(npu_emulator)
    rows = out.reshape(2, 32)
    np.testing.assert_array_equal(rows[:, :20], np.clip(x.reshape(2, 20), -10, 10))
    assert (rows[:, 20:] == 0x77).all()


def test_row_stride_for_every_dtype(npu_emulator):
    """Element (n,h,w,c) lives at addr + row * ceil(c*size/16)*16 + c*size: view the same bytes as int8."""
    for dtype, c in [(np.int16, 5), (np.float16, 9), (np.int32, 3), (np.float32, 4), (np.int8, 33)]:
        x = (rand_int(rng(103), dtype, (1, 1, 2, c)) if np.dtype(dtype).kind == "i"
             else rng(103).standard_normal((1, 1, 2, c)).astype(dtype))
        k = Kernel()
        t = k.load(x, Space.ACT)
        stride = -(-c * x.itemsize // 16) * 16
        k.store(TensorRef(Space.ACT, DType.INT8, t.addr, (1, 1, 2, stride)))
        (out,), _ = k.run(npu_emulator)
        rows = out.reshape(2, stride)
        for i in range(2):
            assert rows[i, :c * x.itemsize].tobytes() == x[0, 0, i].tobytes()
            assert not rows[i, c * x.itemsize:].any()
