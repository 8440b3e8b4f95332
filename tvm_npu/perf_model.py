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


def dma_cycles(nbytes: int, cfg: NPUConfig) -> int:
    """One DMA descriptor moving `nbytes` (halo padding excluded)."""
    return cfg.dma_setup_cycles + math.ceil(nbytes / cfg.dma_bytes_per_cycle)


def gemm_cycles(m: int, n: int, k: int, half: bool, cfg: NPUConfig) -> int:
    return math.ceil(m / cfg.mac_rows) * math.ceil(n / cfg.mac_cols) * k * (cfg.half_rate_factor if half else 1)


def conv2d_cycles(m: int, ng: int, kh: int, kw: int, cg: int, groups: int, half: bool, cfg: NPUConfig) -> int:
    """CONV2D of `m` output pixels, `groups` groups of `ng` output and `cg` input channels each."""
    return groups * gemm_cycles(m, ng, kh * kw * cg, half, cfg)


def dwconv2d_cycles(m: int, kh: int, kw: int, channels: int, half: bool, cfg: NPUConfig) -> int:
    return m * kh * kw * math.ceil(channels / cfg.mac_cols) * (cfg.half_rate_factor if half else 1)


def vector_cycles(elems: int, cfg: NPUConfig) -> int:
    """One vector pass over `elems` elements (pooling: elements x window)."""
    return math.ceil(elems / cfg.vector_lanes) + cfg.vector_issue_cycles


def instr_cycles(ins: Instr, cfg: NPUConfig) -> int:
    op, unit, operands = ins.opcode, ins.opcode.unit, ins.operands
    if unit in (Unit.DMA_LOAD, Unit.DMA_STORE):
        t = operands["dst"] if unit == Unit.DMA_LOAD else operands["src"]
        n, h, w, c = t.shape
        if unit == Unit.DMA_LOAD:
            h -= operands["pad_top"] + operands["pad_bottom"]
            w -= operands["pad_left"] + operands["pad_right"]
        return dma_cycles(n * h * w * c * DTYPE_SIZE[t.dtype], cfg)
    if unit == Unit.MAC:
        a, w, o = operands["a"], operands["w"], operands["o"]
        half = a.dtype in _HALF
        m = o.shape[0] * o.shape[1] * o.shape[2]
        if op.mnemonic == "gemm":
            return gemm_cycles(m, o.shape[3], a.shape[3], half, cfg)
        kh, kw = w.shape[0], w.shape[1]
        if op.mnemonic == "dwconv2d":
            return dwconv2d_cycles(m, kh, kw, o.shape[3], half, cfg)
        groups = operands["groups"]
        return conv2d_cycles(m, o.shape[3] // groups, kh, kw, w.shape[2], groups, half, cfg)
    if unit == Unit.VECTOR:
        o = operands["o"]
        if op.mnemonic == "vreduce":
            elems = math.prod(operands["a"].shape)
        elif op.mnemonic == "vpool":
            elems = math.prod(o.shape) * operands["kh"] * operands["kw"]
        else:
            elems = math.prod(o.shape)
        return vector_cycles(elems, cfg)
    return cfg.control_cycles


def queue_cycles(instrs: Iterable[Instr], cfg: NPUConfig) -> int:
    return sum(instr_cycles(i, cfg) for i in instrs)


class PipelineClock:
    """The step-level recurrence of the token protocol, one step at a time: a step's loads start when
    the previous loads are done and the compute that last read their slot has finished (two load
    steps back when double buffered, one otherwise); its compute starts when its data is loaded, the
    previous compute is done and its output slot has been stored; its stores follow its compute.
    `step` takes the step's summed queue cycles; `state`/`shift` let a caller that knows a repeated
    block has reached its steady state (every time the block reads moved by the same amount in one
    repetition) advance the clock by whole blocks (tiling.mac_cost)."""

    __slots__ = ("comp", "comp_ends", "control", "load", "reuse", "store", "store_ends")

    def __init__(self, cfg: NPUConfig, double_buffer: bool = True):
        self.reuse = 2 if double_buffer else 1
        self.control = cfg.control_cycles
        self.comp_ends: list = []  # compute end of each load step
        self.store_ends: list = []  # end of each store step
        self.load = self.comp = self.store = 0

    def step(self, lc: int, cc: int, sc: int, loads: bool, stores: bool) -> None:
        reuse = self.reuse
        start_c = self.comp
        if loads:
            ends = self.comp_ends
            free = ends[-reuse] if len(ends) >= reuse else 0
            self.load = max(self.load, free) + lc
            start_c = max(start_c, self.load)
        if stores and len(self.store_ends) >= reuse:
            start_c = max(start_c, self.store_ends[-reuse])
        self.comp = start_c + (cc or self.control)
        if loads:
            self.comp_ends.append(self.comp)
        if stores:
            self.store = max(self.store, self.comp) + sc
            self.store_ends.append(self.store)

    def state(self) -> tuple:
        """The times the recurrence still reads (None while fewer than `reuse` steps loaded / stored)."""
        r = self.reuse
        ce = tuple(self.comp_ends[-r:]) if len(self.comp_ends) >= r else None
        se = tuple(self.store_ends[-r:]) if len(self.store_ends) >= r else None
        return self.load, self.comp, self.store, ce, se

    def shift(self, delta: int, loads: bool = True, stores: bool = True) -> None:
        """The times the recurrence reads move `delta` later: the compute's, and those of the loads /
        the stores."""
        r = self.reuse
        self.comp += delta
        if loads:
            self.load += delta
            self.comp_ends[-r:] = [t + delta for t in self.comp_ends[-r:]]
        if stores:
            self.store += delta
            self.store_ends[-r:] = [t + delta for t in self.store_ends[-r:]]

    def end(self) -> int:
        """The operator's cycles (plus the closing barrier)."""
        return max(self.load, self.comp, self.store) + self.control


def pipeline_cycles(steps: Sequence, cfg: NPUConfig, double_buffer: bool = True) -> int:
    """Predicted cycles of a list of codegen.pipeline.Step (plus the closing barrier): the recurrence
    of PipelineClock over the steps' summed queue cycles."""
    clock = PipelineClock(cfg, double_buffer)
    for s in steps:
        clock.step(queue_cycles(s.loads, cfg), queue_cycles(s.computes, cfg), queue_cycles(s.stores, cfg),
                   bool(s.loads), bool(s.stores))
    return clock.end()


def roofline_cycles(macs: int, half_rate: bool, dram_bytes: int, vector_elems: int, cfg: NPUConfig) -> float:
    """NPU_SPEC.md's bound: max(MACs / peak, minimum DRAM bytes / bandwidth, vector elements / L)."""
    peak = cfg.int8_macs_per_cycle / (cfg.half_rate_factor if half_rate else 1)
    return max(macs / peak, dram_bytes / cfg.dma_bytes_per_cycle, vector_elems / cfg.vector_lanes)


__all__ = ["instr_cycles", "queue_cycles", "pipeline_cycles", "roofline_cycles", "PipelineClock", "dma_cycles",
           "gemm_cycles", "conv2d_cycles", "dwconv2d_cycles", "vector_cycles"]
