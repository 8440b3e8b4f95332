"""dma.load / dma.store: strides (windows, transposes, broadcast, flips, overlaps), halos, regions."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from helpers import SENTINEL, Kernel, rand_f16, rand_int, rng
from tvm_npu.isa import DramRef, DType, Instr, Program, Region, Space, TensorRef

DTYPES = [np.int8, np.int16, np.float16]


def _rand(r, dtype, shape):
    return rand_f16(r, shape, 4.0) if np.dtype(dtype) == np.float16 else rand_int(r, dtype, shape)


def _eq(got, want):
    if np.asarray(want).dtype.kind == "f":
        assert ref.same_float(got, want)
    else:
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


@pytest.mark.parametrize("dtype", DTYPES + [np.int32])
@pytest.mark.parametrize("shape", [(1, 1, 1, 16), (2, 3, 5, 7), (1, 4, 4, 33)])
def test_dense_round_trip(npu_emulator, dtype, shape):
    r = rng(1)
    x = _rand(r, dtype, shape)
    k = Kernel()
    space = Space.ACC if np.dtype(dtype) == np.int32 else Space.ACT
    k.store(k.load(x, space))
    (out,), _ = k.run(npu_emulator)
    _eq(out, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_window(npu_emulator, dtype):
    r = rng(2)
    big = _rand(r, dtype, (2, 8, 9, 32))
    s = big.itemsize
    k = Kernel()
    base = k.place(big)
    dst = k.alloc(Space.ACT, dtype, (2, 4, 5, 16))
    strides = (8 * 9 * 32 * s, 9 * 32 * s, 32 * s, s)
    k.load_raw(dst, DramRef(Region.IO, base + (2 * 9 * 32 + 3 * 32 + 8) * s, strides))
    k.store(dst)
    (out,), _ = k.run(npu_emulator)
    _eq(out, big[:, 2:6, 3:8, 8:24])
    _eq(out, ref.dma_gather(k.io_image(), base + (2 * 9 * 32 + 3 * 32 + 8) * s, strides, (2, 4, 5, 16), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nchw_to_nhwc_transpose(npu_emulator, dtype):
    r = rng(3)
    n, c, h, w = 2, 12, 3, 5
    x = _rand(r, dtype, (n, c, h, w))
    s = x.itemsize
    k = Kernel()
    base = k.place(x)
    dst = k.alloc(Space.ACT, dtype, (n, h, w, c))
    k.load_raw(dst, DramRef(Region.IO, base, (c * h * w * s, w * s, s, h * w * s)))
    k.store(dst)
    (out,), _ = k.run(npu_emulator)
    _eq(out, x.transpose(0, 2, 3, 1))


def test_broadcast_with_zero_strides(npu_emulator):
    r = rng(4)
    row = rand_int(r, np.int8, (20,))
    scalar = rand_int(r, np.int16, (1,))
    k = Kernel()
    a_row = k.place(row)
    a_sc = k.place(scalar)
    t1 = k.alloc(Space.ACT, np.int8, (2, 3, 4, 20))
    k.load_raw(t1, DramRef(Region.IO, a_row, (0, 0, 0, 1)))
    t2 = k.alloc(Space.ACT, np.int16, (1, 2, 3, 8))
    k.load_raw(t2, DramRef(Region.IO, a_sc, (0, 0, 0, 0)))
    t3 = k.alloc(Space.ACT, np.int8, (1, 4, 3, 20))  # rows repeat along h, columns along w
    k.load_raw(t3, DramRef(Region.IO, a_row, (0, 1, 0, 0)))
    for t in (t1, t2, t3):
        k.store(t)
    (o1, o2, o3), _ = k.run(npu_emulator)
    _eq(o1, np.broadcast_to(row, (2, 3, 4, 20)).copy())
    _eq(o2, np.full((1, 2, 3, 8), scalar[0], np.int16))
    _eq(o3, np.broadcast_to(row[:4][None, :, None, None], (1, 4, 3, 20)).copy())


def test_negative_and_overlapping_strides(npu_emulator):
    r = rng(5)
    x = rand_int(r, np.int8, (1, 1, 10, 16))
    k = Kernel()
    base = k.place(x)
    flip = k.alloc(Space.ACT, np.int8, (1, 1, 10, 16))
    k.load_raw(flip, DramRef(Region.IO, base + 9 * 16 + 15, (0, 0, -16, -1)))
    sliding = k.alloc(Space.ACT, np.int8, (1, 7, 4, 16))  # im2col-like: element (h, w) = pixel h + w
    k.load_raw(sliding, DramRef(Region.IO, base, (0, 16, 16, 1)))
    k.store(flip)
    k.store(sliding)
    (o1, o2), _ = k.run(npu_emulator)
    _eq(o1, x[:, :, ::-1, ::-1])
    want = np.stack([np.stack([x[0, 0, h + w] for w in range(4)]) for h in range(7)])[None]
    _eq(o2, want)


@pytest.mark.parametrize("dtype,pad_value,fill", [
    (np.int8, -3, -3), (np.int8, 0x12345680, -128), (np.int8, 127, 127),
    (np.int16, -300, -300), (np.int16, 0x0001FFFF, -1),
    (np.float16, 0x7777BE00, -1.5), (np.float16, 0, 0.0),
])
def test_halo_padding(npu_emulator, dtype, pad_value, fill):
    r = rng(6)
    x = _rand(r, dtype, (2, 3, 4, 16))
    k = Kernel()
    t = k.load(x, pads=(1, 2, 3, 1), pad_value=pad_value)
    assert t.shape == (2, 6, 8, 16)
    k.store(t)
    (out,), res = k.run(npu_emulator)
    want = np.pad(x, ((0, 0), (1, 2), (3, 1), (0, 0)), constant_values=np.array(fill, dtype))
    _eq(out, want)
    _eq(out, ref.pad_nhwc(x, 1, 2, 3, 1, pad_value))
    # only the copied elements cost DMA bytes: the halo is generated on chip
    assert res.counters.dma_read_bytes[int(Region.IO)] == x.nbytes


def test_halo_with_transposing_strides(npu_emulator):
    r = rng(7)
    x = rand_int(r, np.int8, (1, 16, 4, 4))  # NCHW
    k = Kernel()
    base = k.place(x)
    dst = k.alloc(Space.ACT, np.int8, (1, 6, 7, 16))
    k.load_raw(dst, DramRef(Region.IO, base, (256, 4, 1, 16)), pad_top=1, pad_bottom=1, pad_left=2, pad_right=1,
               pad_value=-7)
    k.store(dst)
    (out,), _ = k.run(npu_emulator)
    _eq(out, np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (2, 1), (0, 0)), constant_values=-7))


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_transposed_to_nchw(npu_emulator, dtype):
    r = rng(8)
    x = _rand(r, dtype, (2, 3, 5, 16))
    n, h, w, c = x.shape
    s = x.itemsize
    k = Kernel()
    t = k.load(x)
    out_addr = k.place(bytes([SENTINEL]) * x.nbytes)
    k.store_raw(t, DramRef(Region.IO, out_addr, (c * h * w * s, w * s, s, h * w * s)))
    _, res = k.run(npu_emulator)
    got = res.io[out_addr:out_addr + x.nbytes].copy().view(dtype).reshape(n, c, h, w)
    _eq(got, x.transpose(0, 3, 1, 2))


def test_store_into_a_window_leaves_the_rest(npu_emulator):
    r = rng(9)
    x = rand_int(r, np.int8, (1, 2, 3, 16))
    k = Kernel()
    t = k.load(x)
    area = np.full((1, 6, 6, 32), -99, np.int8)
    addr = k.place(area)
    k.store_raw(t, DramRef(Region.IO, addr + (1 * 6 * 32 + 2 * 32 + 4), (6 * 6 * 32, 6 * 32, 32, 1)))
    _, res = k.run(npu_emulator)
    got = res.io[addr:addr + area.nbytes].view(np.int8).reshape(area.shape)
    want = area.copy()
    want[:, 1:3, 2:5, 4:20] = x
    _eq(got, want)
    # and the input bytes are untouched
    assert res.io[:x.nbytes].tobytes() == x.tobytes()


def test_store_with_reference_scatter(npu_emulator):
    r = rng(10)
    x = rand_int(r, np.int16, (2, 2, 3, 8))
    k = Kernel()
    t = k.load(x)
    addr = k.place(bytes(2048))
    strides = (1000, 300, 40, 4)  # gaps between every element
    k.store_raw(t, DramRef(Region.IO, addr + 6, strides))
    _, res = k.run(npu_emulator)
    want = k.io_image()
    ref.dma_scatter(want, addr + 6, strides, x)
    np.testing.assert_array_equal(res.io, want)


def test_regions_const_and_scratch(npu_emulator):
    """CONST -> ACT -> SCRATCH -> ACT -> IO, the SCRATCH hop ordered by barriers."""
    r = rng(11)
    x = rand_int(r, np.int8, (1, 4, 4, 16))
    k = Kernel()
    k.scratch_bytes = 4096
    t = k.load(x, region=Region.CONST)
    t2 = k.alloc(Space.ACT, np.int8, x.shape)
    out_addr = k.place(bytes([SENTINEL]) * x.nbytes)
    dense = DramRef.dense(Region.SCRATCH, 512, x.shape, 1)
    prog = Program([
        k.loads[0],
        Instr.make("barrier"),
        Instr.make("dma.store", src=t, dst=dense),
        Instr.make("barrier"),
        Instr.make("dma.load", dst=t2, src=dense),
        Instr.make("barrier"),
        Instr.make("dma.store", src=t2, dst=DramRef.dense(Region.IO, out_addr, x.shape, 1)),
        Instr.make("end"),
    ])
    _, res = k.run(npu_emulator, program=prog)
    _eq(res.io[out_addr:out_addr + x.nbytes].view(np.int8).reshape(x.shape), x)
    c = res.counters
    assert list(c.dma_read_bytes) == [x.nbytes, 0, x.nbytes]
    assert list(c.dma_write_bytes) == [0, x.nbytes, x.nbytes]


def test_scratch_starts_zeroed(npu_emulator):
    k = Kernel()
    k.scratch_bytes = 256
    t = k.alloc(Space.ACT, np.int8, (1, 1, 4, 16))
    k.load_raw(t, DramRef.dense(Region.SCRATCH, 64, t.shape, 1))
    k.store(t)
    for _ in range(2):  # and again on a second run of the same emulator
        (out,), _ = k.run(npu_emulator)
        assert not out.any()


def test_loads_into_wgt_and_acc(npu_emulator):
    r = rng(12)
    b = rand_int(r, np.int32, (1, 1, 1, 24))
    k = Kernel()
    acc = k.alloc(Space.ACC, np.int32, (1, 2, 3, 24))
    addr = k.place(b)
    k.load_raw(acc, DramRef(Region.IO, addr, (0, 0, 0, 4)))  # bias broadcast into every accumulator row
    k.store(acc)
    (out,), _ = k.run(npu_emulator)
    _eq(out, np.broadcast_to(b, (1, 2, 3, 24)).copy())


def test_sync_modes_agree(npu_emulator):
    r = rng(13)
    x = rand_int(r, np.int8, (1, 3, 3, 16))
    results = []
    for sync in ("tokens", "barrier"):
        k = Kernel()
        t = k.load(x)
        o = k.alloc(Space.ACT, np.int8, x.shape)
        k.op("vclamp", a=t, o=o, min_i=-20, max_i=50)
        k.store(o)
        (out,), _ = k.run(npu_emulator, sync=sync)
        results.append(out)
    _eq(results[0], np.clip(x, -20, 50))
    _eq(results[1], np.clip(x, -20, 50))


def test_io_arguments(npu_emulator):
    """io may be a uint8 array, bytes or a size (zero-filled)."""
    from helpers import run_program
    t = TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 1, 16))
    prog = Program([
        Instr.make("dma.load", "push_next", dst=t, src=DramRef(Region.IO, 0, (0, 0, 0, 1))),
        Instr.make("sync", "pop_prev,push_next", queue=1),
        Instr.make("dma.store", "pop_prev", src=t, dst=DramRef(Region.IO, 16, (0, 0, 0, 1))),
        Instr.make("end"),
    ])
    io = np.arange(32, dtype=np.uint8)
    res = run_program(npu_emulator, "npu-edge", prog, io=io)
    assert res.io.dtype == np.uint8 and res.io.shape == (32,)
    np.testing.assert_array_equal(res.io, np.concatenate([np.arange(16), np.arange(16)]).astype(np.uint8))
    res = run_program(npu_emulator, "npu-edge", prog, io=bytes(range(32)))
    np.testing.assert_array_equal(res.io[16:], np.arange(16))
    res = run_program(npu_emulator, "npu-edge", prog, io=32)
    assert res.io.shape == (32,) and not res.io.any()


def test_unordered_store_races_as_timing_implies(npu_emulator):
    """Without tokens the store starts at cycle 0 and finishes before the compute that would produce its
    data has started: it stores the SRAM's initial zeros. With tokens it stores the result."""
    r = rng(14)
    x = rand_int(r, np.int8, (1, 16, 16, 16))  # 4 KiB: the load takes far longer than a 16-byte store
    outs = {}
    for ordered in (False, True):
        k = Kernel()
        t = k.load(x)
        o = k.alloc(Space.ACT, np.int8, (1, 1, 1, 16))
        k.op("vclamp", a=TensorRef(Space.ACT, DType.INT8, t.addr, (1, 1, 1, 16)), o=o, min_i=-50, max_i=50)
        k.store(o)
        prog = k.program()
        if not ordered:
            prog = Program([Instr.make(i.mnemonic, i.deps if i.mnemonic != "dma.store" else 0, **dict(i.operands))
                            if i.mnemonic != "vclamp" else Instr.make("vclamp", "pop_prev", **dict(i.operands))
                            for i in prog])
        (out,), res = k.run(npu_emulator, program=prog, trace=True)
        outs[ordered] = out
        store = res.trace[[i for i, ins in enumerate(prog) if ins.mnemonic == "dma.store"][0]]
        clamp = res.trace[[i for i, ins in enumerate(prog) if ins.mnemonic == "vclamp"][0]]
        assert (store[3] <= clamp[2]) == (not ordered)
    assert not outs[False].any()
    np.testing.assert_array_equal(outs[True].reshape(-1), np.clip(x[0, 0, 0], -50, 50))


def test_run_does_not_mutate_its_arguments(npu_emulator):
    x = rand_int(rng(15), np.int8, (1, 2, 2, 16))
    k = Kernel()
    k.store(k.load(x))
    io = k.io_image()
    before = io.copy()
    res = npu_emulator.Emulator(k.config).run(k.program().encode(), io=io)
    np.testing.assert_array_equal(io, before)
    assert res.io.shape == io.shape and not np.shares_memory(res.io, io)
    assert res.io[-64:].tobytes() == x.tobytes()
