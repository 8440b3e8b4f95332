"""Double buffering against its serialised twin, trace rows and Chrome trace JSON, SRAM and DMA counters."""

from __future__ import annotations

import json

import numpy as np
import pytest

import reference as ref
from helpers import (Kernel, dma_cycles, gemm_cycles, model_schedule, rand_int, rng, run_program, vector_cycles)
from tvm_npu.config import PRESETS, NPUConfig
from tvm_npu.isa import DramRef, DType, Instr, Program, Region, Space, TensorRef

FAST_DMA = NPUConfig("fast-dma-npu", mac_rows=4, mac_cols=4, act_sram_bytes=64 * 1024, wgt_sram_bytes=32 * 1024,
                     acc_sram_bytes=32 * 1024, dma_bytes_per_cycle=64, dma_setup_cycles=4, vector_lanes=16,
                     clock_mhz=500)
SLOW_STORE = NPUConfig("slow-store-npu", mac_rows=16, mac_cols=16, act_sram_bytes=64 * 1024,
                       wgt_sram_bytes=32 * 1024, acc_sram_bytes=32 * 1024, dma_bytes_per_cycle=16,
                       dma_setup_cycles=200, vector_lanes=64, clock_mhz=500)
TILE_M, K, N = 16, 64, 16
MULT, SHIFT, ZP = 1395864371, -8, 3


def _tiled_gemm(tiles: int, double_buffered: bool, store_bytes_scale: int = 1):
    """y_i = requant(x_i @ w) for T row tiles; x tiles in IO, w in CONST.

    Double-buffered: two A buffers and two output buffers; load i+2 waits (pop_next) for the gemm
    of tile i to free its A buffer, the requant of tile i+2 waits for the store of tile i to free its
    output buffer. Serialised twin: the same instructions separated by barriers, no tokens.
    """
    a = [TensorRef(Space.ACT, DType.INT8, i * 1024, (1, 1, TILE_M, K)) for i in range(2)]
    y = [TensorRef(Space.ACT, DType.INT8, 4096 + i * 256, (1, 1, TILE_M, N)) for i in range(2)]
    w = TensorRef(Space.WGT, DType.INT8, 0, (1, 1, K, N))
    acc = TensorRef(Space.ACC, DType.INT32, 0, (1, 1, TILE_M, N))
    out_base = tiles * TILE_M * K

    def deps(*names):
        return ",".join(names) if double_buffered else ""

    instrs = [Instr.make("dma.load", dst=w, src=DramRef.dense(Region.CONST, 0, (1, 1, K, N), 1))]
    if not double_buffered:
        instrs.append(Instr.make("barrier"))
    for i in range(tiles):
        b = i % 2
        ld = Instr.make("dma.load", deps("push_next", *(["pop_next"] if i >= 2 else [])), dst=a[b],
                        src=DramRef.dense(Region.IO, i * TILE_M * K, (1, 1, TILE_M, K), 1))
        gm = Instr.make("gemm", deps("pop_prev", "push_prev"), a=a[b], w=w, o=acc)
        rq = Instr.make("vrequant", deps("push_next", *(["pop_next"] if i >= 2 else [])), a=acc, o=y[b], mult=MULT,
                        shift=SHIFT, o_offset=ZP, act_min=-128, act_max=127)
        st = Instr.make("dma.store", deps("pop_prev", "push_prev"), src=y[b],
                        dst=DramRef.dense(Region.IO, out_base + i * TILE_M * N, (1, 1, TILE_M, N), 1))
        if double_buffered:
            instrs += [ld, gm, rq, st]
        else:
            instrs += [ld, Instr.make("barrier"), gm, rq, Instr.make("barrier"), st, Instr.make("barrier")]
    # (tokens the last tiles push that nobody pops are harmless: the program simply ends)
    instrs.append(Instr.make("end"))
    return Program(instrs)


def _data(tiles):
    r = rng(91)
    x = rand_int(r, np.int8, (tiles * TILE_M, K))
    w = rand_int(r, np.int8, (K, N))
    return x, w


@pytest.mark.parametrize("cfg", [PRESETS["npu-edge"], PRESETS["npu-nano"], FAST_DMA, SLOW_STORE],
                         ids=lambda c: c.name)
@pytest.mark.parametrize("tiles", [1, 2, 6])
def test_double_buffering_overlaps(npu_emulator, cfg, tiles):
    x, w = _data(tiles)
    io = np.concatenate([x.reshape(-1).view(np.uint8), np.full(tiles * TILE_M * N, 0xCD, np.uint8)])
    runs = {}
    for db in (True, False):
        prog = _tiled_gemm(tiles, db)
        res = run_program(npu_emulator, cfg, prog, const=w.tobytes(), io=io, trace=True)
        runs[db] = (prog, res)
    want = ref.requant(ref.gemm_int(x, w), MULT, SHIFT, ZP, -128, 127)
    for db, (prog, res) in runs.items():
        out = res.io[x.size:].view(np.int8).reshape(tiles * TILE_M, N)
        np.testing.assert_array_equal(out, want)
    assert runs[True][1].io.tobytes() == runs[False][1].io.tobytes()

    dw = dma_cycles(cfg, K * N)
    dl = dma_cycles(cfg, TILE_M * K)
    cc = gemm_cycles(cfg, TILE_M, N, K) + vector_cycles(cfg, TILE_M * N)
    ds = dma_cycles(cfg, TILE_M * N)
    ctl = cfg.control_cycles
    pipelined = dw + dl + cc + ds + (tiles - 1) * max(dl, cc, ds) + ctl
    serial = dw + ctl + tiles * (dl + cc + ds + 3 * ctl) + ctl
    c_db, c_serial = runs[True][1].counters, runs[False][1].counters
    assert c_db.cycles == pipelined
    assert c_serial.cycles == serial
    if tiles > 1:
        assert c_db.cycles < c_serial.cycles
    # same work, same busy units, only the waiting differs
    assert c_db.unit_busy[:4] == c_serial.unit_busy[:4]
    assert c_db.macs == c_serial.macs == tiles * TILE_M * N * K
    assert c_db.dma_read_bytes == c_serial.dma_read_bytes == (K * N, tiles * TILE_M * K, 0)
    assert sum(c_db.queue_stall) < sum(c_serial.queue_stall)
    for db, (prog, res) in runs.items():
        times, counters = model_schedule(prog, cfg)
        assert [tuple(r[2:]) for r in res.trace.tolist()] == times
        for key, value in counters.items():
            assert res.counters.to_dict()[key] == value, (db, key)


def test_double_buffered_loads_overlap_compute(npu_emulator):
    """In the trace, load i+1 runs while the gemm of tile i runs (the point of double buffering)."""
    cfg = PRESETS["npu-edge"]
    x, w = _data(4)
    res = run_program(npu_emulator, cfg, _tiled_gemm(4, True), const=w.tobytes(), io=x.size + 4 * TILE_M * N,
                      trace=True)
    tr = res.trace
    loads = tr[tr[:, 1] == 0][1:]  # without the weight load
    gemms = tr[[i for i in range(len(tr)) if tr[i, 1] == 1]][:-1:2]  # gemm, vrequant, ... (end last)
    for i in range(3):
        assert loads[i + 1, 2] < gemms[i, 3] and loads[i + 1, 3] > gemms[i, 2]
    assert (loads[1:, 2] == loads[:-1, 3]).all()  # load-bound: the LOAD queue never idles


def test_serialised_twin_never_overlaps(npu_emulator):
    cfg = PRESETS["npu-edge"]
    x, w = _data(3)
    res = run_program(npu_emulator, cfg, _tiled_gemm(3, False), const=w.tobytes(), io=x.size + 3 * TILE_M * N,
                      trace=True)
    rows = sorted(res.trace.tolist(), key=lambda r: r[2])
    for prev, nxt in zip(rows, rows[1:]):
        assert nxt[2] >= prev[3]


# ---- trace ----------------------------------------------------------------------------------

def test_trace_rows_and_chrome_json(npu_emulator):
    cfg = PRESETS["npu-edge"]
    prog = _tiled_gemm(3, True)
    x, w = _data(3)
    res = run_program(npu_emulator, cfg, prog, const=w.tobytes(), io=x.size + 3 * TILE_M * N, trace=True)
    tr = res.trace
    assert tr.dtype == np.int64 and tr.shape == (len(prog), 4)
    assert tr[:, 0].tolist() == list(range(len(prog)))
    assert tr[:, 1].tolist() == [int(i.queue) if i.mnemonic != "end" else 1 for i in prog]
    assert (tr[:, 3] >= tr[:, 2]).all() and tr[:, 3].max() == res.counters.cycles
    # per queue, instructions run in program order without overlap
    for q in range(3):
        rows = tr[tr[:, 1] == q]
        assert (rows[1:, 2] >= rows[:-1, 3]).all()
    busy = [int((tr[tr[:, 1] == q, 3] - tr[tr[:, 1] == q, 2]).sum()) for q in range(3)]
    assert tuple(busy) == res.counters.queue_busy

    from npu_emulator.trace import to_chrome_trace
    names = [i.mnemonic for i in prog]
    doc = to_chrome_trace(res.trace, mnemonics=names)
    doc = json.loads(json.dumps(doc))  # plain JSON all the way down
    events = doc["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(prog)
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {0: "LOAD", 1: "COMPUTE", 2: "STORE"}
    for e, row, name in zip(xs, tr.tolist(), names):
        assert e["name"] == name and e["tid"] == row[1] and e["pid"] == 0
        assert e["ts"] == row[2] and e["dur"] == row[3] - row[2]
        assert e["args"]["index"] == row[0]
    # with a clock, microseconds
    doc_us = to_chrome_trace(res.trace, mnemonics=names, clock_mhz=cfg.clock_mhz)
    xs_us = [e for e in doc_us["traceEvents"] if e["ph"] == "X"]
    for e, row in zip(xs_us, tr.tolist()):
        assert e["ts"] == pytest.approx(row[2] / cfg.clock_mhz)
        assert e["dur"] == pytest.approx((row[3] - row[2]) / cfg.clock_mhz)
    # without names
    assert [e["name"] for e in to_chrome_trace(res.trace)["traceEvents"] if e["ph"] == "X"][:2] == ["#0", "#1"]


def test_no_trace_unless_asked(npu_emulator):
    res = run_program(npu_emulator, "npu-edge", Program([Instr.make("end")]))
    assert res.trace is None


# ---- counters -------------------------------------------------------------------------------

def test_sram_high_water_is_highest_byte_written(npu_emulator):
    """Row padding after the last element is not written: [1,2,3,20] int8 at 4096 ends at 4096+5*32+20."""
    k = Kernel("npu-nano")
    k.sram_next[Space.ACT] = 4096
    t = k.load(rand_int(rng(92), np.int8, (1, 2, 3, 20)))
    w = k.alloc(Space.WGT, np.int8, (1, 1, 20, 8))
    k.load_raw(w, DramRef(Region.IO, k.place(bytes(160)), (0, 0, 8, 1)))
    acc = k.alloc(Space.ACC, np.int32, (1, 2, 3, 8))
    k.op("gemm", a=t, w=w, o=acc)
    _, res = k.run(npu_emulator)
    assert res.counters.sram_high_water == (4096 + 5 * 32 + 20, 19 * 16 + 8, 5 * 32 + 32)


def test_sram_high_water_counts_halo_and_vector_writes(npu_emulator):
    k = Kernel()
    x = rand_int(rng(93), np.int16, (1, 2, 2, 8))
    t = k.load(x, pads=(1, 1, 1, 1))  # [1,4,4,8] int16, rows of 16 bytes, last row is halo
    o = k.alloc(Space.ACC, np.int32, (1, 4, 4, 8))
    k.sram_next[Space.ACC] = 0
    k.op("vcvt", a=t, o=o)
    _, res = k.run(npu_emulator)
    assert res.counters.sram_high_water == (16 * 16, 0, 16 * 32)


def test_dma_counters_per_region(npu_emulator):
    k = Kernel()
    k.scratch_bytes = 1024
    a = k.load(np.zeros((1, 1, 4, 16), np.int8), region=Region.CONST)
    b = k.load(np.zeros((1, 2, 2, 8), np.int16), pads=(0, 1, 2, 0))
    k.store(a)
    k.store_raw(b, DramRef.dense(Region.SCRATCH, 0, b.shape, 2))
    c = k.load(np.zeros((1, 1, 1, 16), np.int32), Space.ACC)
    _, res = k.run(npu_emulator)
    assert res.counters.dma_read_bytes == (64, 2 * 2 * 8 * 2 + 64, 0)
    assert res.counters.dma_write_bytes == (0, 64, 3 * 4 * 8 * 2)
    assert c.space == Space.ACC


def test_counters_are_a_frozen_dataclass(npu_emulator):
    import dataclasses
    res = run_program(npu_emulator, "npu-edge", Program([Instr.make("end")]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.counters.cycles = 5
    d = res.counters.to_dict()
    assert set(d) == {"cycles", "instructions", "queue_busy", "queue_stall", "unit_busy", "macs", "dma_read_bytes",
                      "dma_write_bytes", "sram_high_water", "fp_events"}
    assert json.loads(json.dumps(d)) == d
