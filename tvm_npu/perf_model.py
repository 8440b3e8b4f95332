"""The compiler's performance model: predicts the emulator's cycles, and the roofline.

Per instruction it applies the cost table of NPU_SPEC.md; per operator it follows the tile steps of
lowering/pipeline.py with a step-level recurrence of the token protocol instead of simulating every
instruction on the queues: cheap enough to rank tile plans and decide what is worth offloading,
and checked against the emulator by scripts/bench_models.py and tests/codegen.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from .config import NPUConfig
from .isa import DType, Instr
from .isa.spec import DTYPE_SIZE, Unit

_HALF = (DType.FP16, DType.INT16)


def instr_cycles(ins: Instr, cfg: NPUConfig) -> int:
    op, unit, operands = ins.opcode, ins.opcode.unit, ins.operands
    if unit in (Unit.DMA_LOAD, Unit.DMA_STORE):
        t = operands["dst"] if unit == Unit.DMA_LOAD else operands["src"]
        n, h, w, c = t.shape
        if unit == Unit.DMA_LOAD:
            h -= operands["pad_top"] + operands["pad_bottom"]
            w -= operands["pad_left"] + operands["pad_right"]
        nbytes = n * h * w * c * DTYPE_SIZE[t.dtype]
        return cfg.dma_setup_cycles + math.ceil(nbytes / cfg.dma_bytes_per_cycle)
    if unit == Unit.MAC:
        a, w, o = operands["a"], operands["w"], operands["o"]
        rate = cfg.half_rate_factor if a.dtype in _HALF else 1
        R, C = cfg.mac_rows, cfg.mac_cols
        if op.mnemonic == "gemm":
            m = o.shape[0] * o.shape[1] * o.shape[2]
            return math.ceil(m / R) * math.ceil(o.shape[3] / C) * a.shape[3] * rate
        m = o.shape[0] * o.shape[1] * o.shape[2]
        kh, kw = w.shape[0], w.shape[1]
        if op.mnemonic == "dwconv2d":
            return m * kh * kw * math.ceil(o.shape[3] / C) * rate
        groups = operands["groups"]
        ng, cg = o.shape[3] // groups, w.shape[2]
        return groups * math.ceil(m / R) * math.ceil(ng / C) * kh * kw * cg * rate
    if unit == Unit.VECTOR:
        o = operands["o"]
        if op.mnemonic == "vreduce":
            elems = math.prod(operands["a"].shape)
        elif op.mnemonic == "vpool":
            elems = math.prod(o.shape) * operands["kh"] * operands["kw"]
        else:
            elems = math.prod(o.shape)
        return math.ceil(elems / cfg.vector_lanes) + cfg.vector_issue_cycles
    return cfg.control_cycles


def queue_cycles(instrs: Iterable[Instr], cfg: NPUConfig) -> int:
    return sum(instr_cycles(i, cfg) for i in instrs)


def pipeline_cycles(steps: Sequence, cfg: NPUConfig, double_buffer: bool = True) -> int:
    """Predicted cycles of a list of codegen.pipeline.Step (plus the closing barrier).

    A step-level recurrence of the token protocol: a step's loads start when the previous loads are
    done and the compute that last read their slot has finished (two load steps back when double
    buffered, one otherwise); its compute starts when its data is loaded, the previous compute is
    done and its output slot has been stored; its stores follow its compute.
    """
    reuse = 2 if double_buffer else 1
    comp_end_by_load: list = []  # compute end of each load step
    store_end: list = []  # end of each store step
    last_load = last_comp = last_store = 0
    for s in steps:
        lc, cc, sc = queue_cycles(s.loads, cfg), queue_cycles(s.computes, cfg) or cfg.control_cycles, \
            queue_cycles(s.stores, cfg)
        start_c = last_comp
        if s.loads:
            free = comp_end_by_load[-reuse] if len(comp_end_by_load) >= reuse else 0
            last_load = max(last_load, free) + lc
            start_c = max(start_c, last_load)
        if s.stores and len(store_end) >= reuse:
            start_c = max(start_c, store_end[-reuse])
        last_comp = start_c + cc
        if s.loads:
            comp_end_by_load.append(last_comp)
        if s.stores:
            last_store = max(last_store, last_comp) + sc
            store_end.append(last_store)
    return max(last_load, last_comp, last_store) + cfg.control_cycles


def roofline_cycles(macs: int, half_rate: bool, dram_bytes: int, vector_elems: int, cfg: NPUConfig) -> float:
    """NPU_SPEC.md's bound: max(MACs / peak, minimum DRAM bytes / bandwidth, vector elements / L)."""
    peak = cfg.int8_macs_per_cycle / (cfg.half_rate_factor if half_rate else 1)
    return max(macs / peak, dram_bytes / cfg.dma_bytes_per_cycle, vector_elems / cfg.vector_lanes)


__all__ = ["instr_cycles", "queue_cycles", "pipeline_cycles", "roofline_cycles"]
