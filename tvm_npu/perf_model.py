"""The compiler's performance model: predicts the emulator's cycles, and the roofline.

Per instruction it applies the cost table of NPU_SPEC.md; per operator it models the double
buffered pipeline of codegen/pipeline.py as `sum over steps of max(load, compute, store)` plus the
first load and the last store (fill and drain), instead of simulating the queues: cheap enough to
rank tile plans and decide what is worth offloading, and checked against the emulator by
scripts/bench_models.py and the tests.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from .config import NPUConfig
from .isa import DType, Instr, Queue
from .isa.spec import DTYPE_SIZE, Unit

_HALF = (DType.FP16, DType.INT16)


def instr_cycles(ins: Instr, cfg: NPUConfig) -> int:
    op, unit = ins.opcode, ins.opcode.unit
    if unit in (Unit.DMA_LOAD, Unit.DMA_STORE):
        t = ins["dst"] if unit == Unit.DMA_LOAD else ins["src"]
        n, h, w, c = t.shape
        if unit == Unit.DMA_LOAD:
            h -= ins["pad_top"] + ins["pad_bottom"]
            w -= ins["pad_left"] + ins["pad_right"]
        nbytes = n * h * w * c * DTYPE_SIZE[t.dtype]
        return cfg.dma_setup_cycles + math.ceil(nbytes / cfg.dma_bytes_per_cycle)
    if unit == Unit.MAC:
        a, w, o = ins["a"], ins["w"], ins["o"]
        rate = cfg.half_rate_factor if a.dtype in _HALF else 1
        R, C = cfg.mac_rows, cfg.mac_cols
        if op.mnemonic == "gemm":
            m = o.shape[0] * o.shape[1] * o.shape[2]
            return math.ceil(m / R) * math.ceil(o.shape[3] / C) * a.shape[3] * rate
        m = o.shape[0] * o.shape[1] * o.shape[2]
        kh, kw = w.shape[0], w.shape[1]
        if op.mnemonic == "dwconv2d":
            return m * kh * kw * math.ceil(o.shape[3] / C) * rate
        groups = ins["groups"]
        ng, cg = o.shape[3] // groups, w.shape[2]
        return groups * math.ceil(m / R) * math.ceil(ng / C) * kh * kw * cg * rate
    if unit == Unit.VECTOR:
        o = ins["o"]
        if op.mnemonic == "vreduce":
            elems = math.prod(ins["a"].shape)
        elif op.mnemonic == "vpool":
            elems = math.prod(o.shape) * ins["kh"] * ins["kw"]
        else:
            elems = math.prod(o.shape)
        return math.ceil(elems / cfg.vector_lanes) + cfg.vector_issue_cycles
    return cfg.control_cycles


def queue_cycles(instrs: Iterable[Instr], cfg: NPUConfig) -> int:
    return sum(instr_cycles(i, cfg) for i in instrs)


def pipeline_cycles(steps: Sequence, cfg: NPUConfig, double_buffer: bool = True) -> int:
    """Predicted cycles of a list of codegen.pipeline.Step (plus the closing barrier)."""
    costs = [(queue_cycles(s.loads, cfg), queue_cycles(s.computes, cfg), queue_cycles(s.stores, cfg)) for s in steps]
    if not costs:
        return cfg.control_cycles
    if not double_buffer:
        return sum(sum(c) for c in costs) + cfg.control_cycles
    # step i's compute overlaps the next step's load and the previous step's store
    total = costs[0][0] + costs[-1][2] + cfg.control_cycles
    for i, (_, compute, _) in enumerate(costs):
        nxt = costs[i + 1][0] if i + 1 < len(costs) else 0
        prev = costs[i - 1][2] if i > 0 else 0
        total += max(compute, nxt, prev)
    return total


def roofline_cycles(macs: int, half_rate: bool, dram_bytes: int, vector_elems: int, cfg: NPUConfig) -> float:
    """NPU_SPEC.md's bound: max(MACs / peak, minimum DRAM bytes / bandwidth, vector elements / L)."""
    peak = cfg.int8_macs_per_cycle / (cfg.half_rate_factor if half_rate else 1)
    return max(macs / peak, dram_bytes / cfg.dma_bytes_per_cycle, vector_elems / cfg.vector_lanes)


__all__ = ["instr_cycles", "queue_cycles", "pipeline_cycles", "roofline_cycles", "Queue"]
