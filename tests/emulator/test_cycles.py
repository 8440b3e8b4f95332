"""The cycle model: every instruction's cost by the formulas of docs/ISA.md and NPU_SPEC.md, computed
here from the configuration, on the three presets and a custom machine; counters per queue and unit."""

from __future__ import annotations

import pytest

from helpers import (conv_cycles, dma_cycles, dwconv_cycles, gemm_cycles, instr_cycles, model_schedule, run_program,
                     vector_cycles)
from tvm_npu.config import PRESETS, NPUConfig
from tvm_npu.isa import DramRef, DType, Instr, PoolMode, Program, ReduceMode, Region, Space, TensorRef

CUSTOM = NPUConfig("custom-npu", mac_rows=4, mac_cols=12, act_sram_bytes=256 * 1024, wgt_sram_bytes=128 * 1024,
                   acc_sram_bytes=128 * 1024, dma_bytes_per_cycle=3, dma_setup_cycles=7, vector_lanes=5,
                   clock_mhz=100, vector_issue_cycles=2, control_cycles=3, half_rate_factor=4)
CONFIGS = [PRESETS["npu-nano"], PRESETS["npu-edge"], PRESETS["npu-pro"], CUSTOM]
CFG_IDS = [c.name for c in CONFIGS]


def T(space, dtype, shape, addr=0):
    return TensorRef(space, dtype, addr, shape)


A, W, C = Space.ACT, Space.WGT, Space.ACC
I8, I16, I32, F16, F32 = DType.INT8, DType.INT16, DType.INT32, DType.FP16, DType.FP32


def _time_one(emu, cfg, ins, io=1 << 16, const=1 << 12):
    """Runs [ins, end] and returns (cycles of ins from the trace, counters)."""
    prog = Program([ins, Instr.make("end")])
    res = run_program(emu, cfg, prog, io=io, const=bytes(const), trace=True)
    (i0, q0, s0, e0), (i1, q1, s1, e1) = res.trace.tolist()
    assert (i0, i1) == (0, 1) and s0 == 0 and s1 == e0 and e1 == e0 + cfg.control_cycles
    assert res.counters.cycles == e1
    return e0 - s0, res.counters


# ---- DMA ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("dtype,shape,pads", [
    (I8, (1, 1, 1, 1), (0, 0, 0, 0)), (I8, (1, 8, 8, 16), (0, 0, 0, 0)), (I16, (2, 3, 5, 7), (0, 0, 0, 0)),
    (F16, (1, 6, 6, 8), (1, 1, 1, 1)), (I32, (1, 1, 3, 33), (0, 0, 0, 0)), (I8, (1, 5, 5, 3), (2, 0, 0, 3)),
])
def test_dma_load_cost(npu_emulator, cfg, dtype, shape, pads):
    t = T(A if dtype != I32 else C, dtype, shape)
    ins = Instr.make("dma.load", dst=t, src=DramRef(Region.IO, 0, (0, 0, 0, 1)), pad_top=pads[0],
                     pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3], pad_value=5)
    n, h, w, c = shape
    nbytes = n * (h - pads[0] - pads[1]) * (w - pads[2] - pads[3]) * c * {I8: 1, I16: 2, F16: 2, I32: 4}[dtype]
    cycles, ctr = _time_one(npu_emulator, cfg, ins)
    assert cycles == cfg.dma_setup_cycles + -(-nbytes // cfg.dma_bytes_per_cycle) == dma_cycles(cfg, nbytes)
    assert ctr.dma_read_bytes == (0, nbytes, 0) and ctr.dma_write_bytes == (0, 0, 0)
    assert ctr.unit_busy[0] == ctr.queue_busy[0] == cycles


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("nbytes", [1, 7, 16, 17, 1000, 4096])
def test_dma_store_cost(npu_emulator, cfg, nbytes):
    ins = Instr.make("dma.store", src=T(A, I8, (1, 1, 1, nbytes)), dst=DramRef(Region.SCRATCH, 0, (0, 0, 0, 1)))
    prog = Program([ins, Instr.make("end")])
    res = run_program(npu_emulator, cfg, prog, scratch_bytes=nbytes, trace=True)
    assert res.trace[0, 3] - res.trace[0, 2] == cfg.dma_setup_cycles + -(-nbytes // cfg.dma_bytes_per_cycle)
    assert res.counters.dma_write_bytes == (0, 0, nbytes)
    assert res.counters.unit_busy[1] == res.counters.queue_busy[2] == dma_cycles(cfg, nbytes)


# ---- MAC ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("dtype,m,k,n", [(I8, 1, 1, 1), (I8, 16, 16, 16), (I8, 17, 40, 33), (I8, 64, 8, 5),
                                         (I16, 9, 24, 18), (F16, 33, 16, 20), (F16, 8, 8, 8)])
def test_gemm_cost(npu_emulator, cfg, dtype, m, k, n):
    acc = F32 if dtype == F16 else I32
    ins = Instr.make("gemm", a=T(A, dtype, (1, 1, m, k)), w=T(W, F16 if dtype == F16 else I8, (1, 1, k, n)),
                     o=T(C, acc, (1, 1, m, n)))
    cycles, ctr = _time_one(npu_emulator, cfg, ins)
    rate = cfg.half_rate_factor if dtype in (I16, F16) else 1
    want = -(-m // cfg.mac_rows) * -(-n // cfg.mac_cols) * k * rate
    assert cycles == want == gemm_cycles(cfg, m, n, k, rate > 1)
    assert ctr.macs == m * n * k
    assert ctr.unit_busy[2] == ctr.queue_busy[1] - cfg.control_cycles == want


def test_gemm_rows_count_n_h_w(npu_emulator):
    cfg = PRESETS["npu-edge"]
    ins = Instr.make("gemm", a=T(A, I8, (2, 3, 5, 16)), w=T(W, I8, (1, 1, 16, 20)), o=T(C, I32, (1, 6, 5, 20)))
    cycles, _ = _time_one(npu_emulator, cfg, ins)
    assert cycles == -(-30 // 16) * -(-20 // 16) * 16


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("dtype,inp,khw,cout,stride,dil,groups", [
    (I8, (1, 8, 8, 16), (3, 3), 16, (1, 1), (1, 1), 1),
    (I8, (1, 9, 9, 6), (3, 3), 20, (2, 2), (1, 1), 2),
    (I8, (2, 7, 7, 8), (2, 3), 8, (1, 2), (2, 1), 8),
    (I16, (1, 5, 5, 4), (3, 3), 8, (1, 1), (1, 1), 1),
    (F16, (1, 6, 6, 12), (1, 1), 24, (1, 1), (1, 1), 3),
])
def test_conv2d_cost(npu_emulator, cfg, dtype, inp, khw, cout, stride, dil, groups):
    n, h, w, cin = inp
    kh, kw = khw
    oh = (h - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (w - (kw - 1) * dil[1] - 1) // stride[1] + 1
    ins = Instr.make("conv2d", a=T(A, dtype, inp), w=T(W, F16 if dtype == F16 else I8, (kh, kw, cin // groups, cout)),
                     o=T(C, F32 if dtype == F16 else I32, (n, oh, ow, cout)), stride_h=stride[0], stride_w=stride[1],
                     dilation_h=dil[0], dilation_w=dil[1], groups=groups)
    cycles, ctr = _time_one(npu_emulator, cfg, ins)
    rate = cfg.half_rate_factor if dtype in (I16, F16) else 1
    m = n * oh * ow
    want = groups * -(-m // cfg.mac_rows) * -(-(cout // groups) // cfg.mac_cols) * kh * kw * (cin // groups) * rate
    assert cycles == want == conv_cycles(cfg, n, oh, ow, cout, kh, kw, cin, groups, rate > 1)
    assert ctr.macs == m * cout * kh * kw * (cin // groups)


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("dtype,inp,khw,mult,stride", [
    (I8, (1, 8, 8, 16), (3, 3), 1, (1, 1)), (I8, (1, 9, 9, 20), (3, 3), 2, (2, 2)),
    (I16, (2, 5, 5, 8), (2, 2), 1, (1, 1)), (F16, (1, 6, 6, 40), (3, 3), 1, (1, 1)),
])
def test_dwconv2d_cost(npu_emulator, cfg, dtype, inp, khw, mult, stride):
    n, h, w, c = inp
    kh, kw = khw
    oh, ow = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    cout = c * mult
    ins = Instr.make("dwconv2d", a=T(A, dtype, inp), w=T(W, F16 if dtype == F16 else I8, (kh, kw, 1, cout)),
                     o=T(C, F32 if dtype == F16 else I32, (n, oh, ow, cout)), stride_h=stride[0], stride_w=stride[1])
    cycles, ctr = _time_one(npu_emulator, cfg, ins)
    rate = cfg.half_rate_factor if dtype in (I16, F16) else 1
    want = n * oh * ow * kh * kw * -(-cout // cfg.mac_cols) * rate
    assert cycles == want == dwconv_cycles(cfg, n, oh, ow, cout, kh, kw, rate > 1)
    assert ctr.macs == n * oh * ow * cout * kh * kw


# ---- vector -----------------------------------------------------------------------------------

def _vector_cases():
    a8 = T(A, I8, (1, 4, 5, 20))
    out = T(A, I8, (1, 4, 5, 20), 4096)
    acc = T(C, I32, (1, 4, 5, 20))
    f16 = T(A, F16, (1, 3, 3, 7))
    f16o = T(A, F16, (1, 3, 3, 7), 4096)
    return [
        ("vadd", dict(a=a8, b=T(A, I8, (1, 1, 1, 20), 8192), o=out, act_min=-128, act_max=127), 400),
        ("vsub", dict(a=a8, b=a8, o=out, act_min=-128, act_max=127), 400),
        ("vmul", dict(a=a8, b=a8, o=out, act_min=-128, act_max=127), 400),
        ("vmax", dict(a=T(A, I8, (1, 1, 1, 1)), b=a8, o=out, act_min=-128, act_max=127), 400),
        ("vmin", dict(a=f16, b=f16, o=f16o), 63),
        ("vrequant", dict(a=acc, o=out, mult=2**30, shift=0, act_min=-128, act_max=127), 400),
        ("vclamp", dict(a=a8, o=out, min_i=-1, max_i=1), 400),
        ("vlut", dict(a=a8, o=out, lut_addr=8192), 400),
        ("vfunc", dict(a=f16, o=f16o, func=0), 63),
        ("vcvt", dict(a=a8, o=acc), 400),
        ("vreduce", dict(a=a8, o=T(A, I8, (1, 4, 1, 20), 4096), mode=int(ReduceMode.MAX), axis=2), 400),
        ("vreduce", dict(a=a8, o=T(C, I32, (1, 4, 5, 1)), mode=int(ReduceMode.SUM), axis=3), 400),
        ("vpool", dict(a=a8, o=T(A, I8, (1, 2, 2, 20), 4096), mode=int(PoolMode.AVG), kh=3, kw=2, stride_h=2,
                       stride_w=3, pad_top=1, act_min=-128, act_max=127), 2 * 2 * 20 * 6),
        ("vpool", dict(a=f16, o=T(A, F16, (1, 1, 1, 7), 4096), mode=int(PoolMode.MAX), kh=3, kw=3), 63),
    ]


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("mnemonic,operands,elements", _vector_cases(),
                         ids=[f"{c[0]}{i}" for i, c in enumerate(_vector_cases())])
def test_vector_cost(npu_emulator, cfg, mnemonic, operands, elements):
    ins = Instr.make(mnemonic, **operands)
    cycles, ctr = _time_one(npu_emulator, cfg, ins)
    assert cycles == -(-elements // cfg.vector_lanes) + cfg.vector_issue_cycles == vector_cycles(cfg, elements)
    assert cycles == instr_cycles(ins, cfg)
    assert ctr.unit_busy[3] == cycles and ctr.macs == 0


# ---- control ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
def test_control_costs(npu_emulator, cfg):
    prog = Program([Instr.make("sync", queue=0), Instr.make("sync", queue=1), Instr.make("sync", queue=2),
                    Instr.make("barrier"), Instr.make("sync", queue=2), Instr.make("barrier"), Instr.make("end")])
    res = run_program(npu_emulator, cfg, prog, trace=True)
    c = cfg.control_cycles
    assert res.trace.tolist() == [[0, 0, 0, c], [1, 1, 0, c], [2, 2, 0, c], [3, 1, c, 2 * c], [4, 2, 2 * c, 3 * c],
                                  [5, 1, 3 * c, 4 * c], [6, 1, 4 * c, 5 * c]]
    assert res.counters.cycles == 5 * c
    assert res.counters.unit_busy == (0, 0, 0, 0, 7 * c)
    assert res.counters.instructions == 7


def test_end_only_program(npu_emulator):
    for cfg in CONFIGS:
        res = run_program(npu_emulator, cfg, Program([Instr.make("end")]))
        assert res.counters.cycles == cfg.control_cycles
        assert res.counters.to_dict() == {
            "cycles": cfg.control_cycles, "instructions": 1, "queue_busy": [0, cfg.control_cycles, 0],
            "queue_stall": [0, 0, 0], "unit_busy": [0, 0, 0, 0, cfg.control_cycles], "macs": 0,
            "dma_read_bytes": [0, 0, 0], "dma_write_bytes": [0, 0, 0], "sram_high_water": [0, 0, 0],
            "fp_events": []}


# ---- whole programs: the independent schedule model --------------------------------------------

def _pipeline(tokens=True):
    a = T(A, I8, (1, 4, 4, 64))
    w = T(W, I8, (1, 1, 64, 32))
    o = T(C, I32, (1, 4, 4, 32))
    y = T(A, I8, (1, 4, 4, 32), 4096)
    ld = DramRef.dense(Region.IO, 0, (1, 4, 4, 64), 1)
    lw = DramRef.dense(Region.CONST, 0, (1, 1, 64, 32), 1)
    st = DramRef.dense(Region.IO, 1024, (1, 4, 4, 32), 1)
    if tokens:
        return Program([
            Instr.make("dma.load", dst=w, src=lw),
            Instr.make("dma.load", "push_next", dst=a, src=ld),
            Instr.make("gemm", "pop_prev", a=a, w=w, o=o),
            Instr.make("vrequant", "push_next", a=o, o=y, mult=2**30, shift=-4, act_min=-128, act_max=127),
            Instr.make("dma.store", "pop_prev", src=y, dst=st),
            Instr.make("end"),
        ])
    return Program([
        Instr.make("dma.load", dst=w, src=lw), Instr.make("dma.load", dst=a, src=ld), Instr.make("barrier"),
        Instr.make("gemm", a=a, w=w, o=o),
        Instr.make("vrequant", a=o, o=y, mult=2**30, shift=-4, act_min=-128, act_max=127), Instr.make("barrier"),
        Instr.make("dma.store", src=y, dst=st), Instr.make("end"),
    ])


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
def test_pipeline_timing_by_hand(npu_emulator, cfg):
    res = run_program(npu_emulator, cfg, _pipeline(), const=bytes(2048), io=2048, trace=True)
    dw, da = dma_cycles(cfg, 2048), dma_cycles(cfg, 1024)
    g = gemm_cycles(cfg, 16, 32, 64)
    rq = vector_cycles(cfg, 16 * 32)
    ds = dma_cycles(cfg, 512)
    ctl = cfg.control_cycles
    t = res.trace.tolist()
    assert t == [[0, 0, 0, dw], [1, 0, dw, dw + da], [2, 1, dw + da, dw + da + g],
                 [3, 1, dw + da + g, dw + da + g + rq], [4, 2, dw + da + g + rq, dw + da + g + rq + ds],
                 [5, 1, dw + da + g + rq + ds, dw + da + g + rq + ds + ctl]]
    c = res.counters
    assert c.cycles == dw + da + g + rq + ds + ctl
    assert c.queue_busy == (dw + da, g + rq + ctl, ds)
    # COMPUTE waits for the loads, STORE for the compute; end waits (on COMPUTE) for the store
    assert c.queue_stall == (0, dw + da + ds, dw + da + g + rq)
    assert c.unit_busy == (dw + da, ds, g, rq, ctl)
    assert c.macs == 16 * 32 * 64
    assert c.dma_read_bytes == (2048, 1024, 0) and c.dma_write_bytes == (0, 512, 0)
    assert c.sram_high_water == (4096 + 15 * 32 + 32, 64 * 32, 15 * 128 + 128)


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
@pytest.mark.parametrize("tokens", [True, False])
def test_pipeline_matches_the_model(npu_emulator, cfg, tokens):
    prog = _pipeline(tokens)
    res = run_program(npu_emulator, cfg, prog, const=bytes(2048), io=2048, trace=True)
    times, counters = model_schedule(prog, cfg)
    assert [tuple(r[2:]) for r in res.trace.tolist()] == times
    assert [r[1] for r in res.trace.tolist()] == [int(i.queue) if i.mnemonic not in ("barrier", "end") else 1
                                                   for i in prog]
    got = res.counters.to_dict()
    for key, value in counters.items():
        assert got[key] == value, key


def test_tokens_between_store_and_compute_and_load(npu_emulator):
    """push_prev / pop_next edges: STORE -> COMPUTE -> LOAD, FIFO per edge, several tokens queued."""
    cfg = PRESETS["npu-nano"]
    t = T(A, I8, (1, 1, 4, 16))
    ld = DramRef(Region.IO, 0, (0, 0, 16, 1))
    st = DramRef(Region.IO, 64, (0, 0, 16, 1))
    prog = Program([
        Instr.make("dma.load", "push_next", dst=t, src=ld),
        Instr.make("dma.load", "push_next", dst=t, src=ld),
        Instr.make("sync", "pop_prev,push_next", queue=1),
        Instr.make("sync", "pop_prev,push_next", queue=1),
        Instr.make("dma.store", "pop_prev,push_prev", src=t, dst=st),
        Instr.make("dma.store", "pop_prev,push_prev", src=t, dst=st),
        Instr.make("sync", "pop_next,push_prev", queue=1),
        Instr.make("sync", "pop_next,push_prev", queue=1),
        Instr.make("dma.load", "pop_next", dst=t, src=ld),
        Instr.make("dma.load", "pop_next", dst=t, src=ld),
        Instr.make("end"),
    ])
    res = run_program(npu_emulator, cfg, prog, io=128, trace=True)
    times, counters = model_schedule(prog, cfg)
    assert [tuple(r[2:]) for r in res.trace.tolist()] == times
    for key, value in counters.items():
        assert res.counters.to_dict()[key] == value, key
    # the last loads wait for the syncs that wait for the stores
    assert times[8][0] == times[6][1] and times[6][0] >= times[4][1]


def test_barrier_orders_everything(npu_emulator):
    cfg = PRESETS["npu-edge"]
    t = T(A, I8, (1, 1, 16, 16))
    prog = Program([
        Instr.make("dma.load", dst=t, src=DramRef(Region.IO, 0, (0, 0, 16, 1))),
        Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16), 4096), o=T(A, I8, (1, 1, 1, 16), 4096), min_i=0, max_i=1),
        Instr.make("barrier"),
        Instr.make("dma.store", src=t, dst=DramRef(Region.IO, 256, (0, 0, 16, 1))),
        Instr.make("vclamp", a=t, o=t, min_i=0, max_i=1),
        Instr.make("end"),
    ])
    res = run_program(npu_emulator, cfg, prog, io=512, trace=True)
    tr = res.trace.tolist()
    dl = dma_cycles(cfg, 256)
    assert tr[0][2:] == [0, dl] and tr[1][2:] == [0, vector_cycles(cfg, 16)]
    assert tr[2][2:] == [dl, dl + 1]
    assert tr[3][2] == dl + 1 and tr[4][2] == dl + 1
    assert res.counters.queue_stall[2] == dl + 1  # STORE waited for the barrier
    times, _ = model_schedule(prog, cfg)
    assert [tuple(r[2:]) for r in tr] == times


@pytest.mark.parametrize("cfg", CONFIGS, ids=CFG_IDS)
def test_load_and_store_are_separate_full_bandwidth_channels(npu_emulator, cfg):
    """An unordered load and store run side by side, each at the full DMA bandwidth."""
    prog = Program([
        Instr.make("dma.load", dst=T(A, I8, (1, 1, 16, 64)), src=DramRef(Region.IO, 0, (0, 0, 64, 1))),
        Instr.make("dma.store", src=T(A, I8, (1, 1, 16, 64), 4096), dst=DramRef(Region.IO, 1024, (0, 0, 64, 1))),
        Instr.make("end"),
    ])
    res = run_program(npu_emulator, cfg, prog, io=2048, trace=True)
    d = dma_cycles(cfg, 1024)
    assert res.trace[:2, 2:].tolist() == [[0, d], [0, d]]
    assert res.counters.cycles == d + cfg.control_cycles
    assert res.counters.unit_busy[:2] == (d, d)
