"""Builds small load -> compute -> store programs for emulator tests and runs them.

``Kernel`` lays inputs out densely in the IO (or CONST) region, allocates SRAM tensors with a bump
allocator, and orders the three phases with dependency tokens (push_next on the last load, pop_prev
on the first compute, push_next on the last compute, pop_prev on the first store) or with barriers.
Output areas of the IO region are pre-filled with a sentinel so a store that writes nothing shows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tvm_npu.config import NPUConfig, get_config
from tvm_npu.isa import Dep, DramRef, DType, Instr, Program, Region, Space, TensorRef, spec

NP_TO_DTYPE = {np.dtype(np.int8): DType.INT8, np.dtype(np.int16): DType.INT16, np.dtype(np.int32): DType.INT32,
               np.dtype(np.float16): DType.FP16, np.dtype(np.float32): DType.FP32}
DTYPE_TO_NP = {v: k for k, v in NP_TO_DTYPE.items()}
SENTINEL = 0xCD


def dtype_of(x) -> DType:
    return NP_TO_DTYPE[np.dtype(x)]


def align(n: int, a: int = 16) -> int:
    return (n + a - 1) // a * a


def with_deps(instr: Instr, extra: Dep) -> Instr:
    return dataclasses.replace(instr, deps=Dep(int(instr.deps) | int(extra)))


@dataclasses.dataclass
class Output:
    addr: int
    dtype: np.dtype
    shape: Tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


class Kernel:
    """One test program: inputs in DRAM, SRAM tensors, compute instructions, outputs back to IO."""

    def __init__(self, config: Any = "npu-edge"):
        self.config: NPUConfig = get_config(config)
        self.regions = {Region.IO: bytearray(), Region.CONST: bytearray()}
        self.sram_next = {Space.ACT: 0, Space.WGT: 0, Space.ACC: 0}
        self.loads: List[Instr] = []
        self.computes: List[Instr] = []
        self.stores: List[Instr] = []
        self.outputs: List[Output] = []
        self.scratch_bytes = 0

    # ---- DRAM ---------------------------------------------------------------------------
    def place(self, data, region: Region = Region.IO) -> int:
        """Appends raw bytes (or an array, C order) to a region at a 16-byte aligned address."""
        buf = self.regions[region]
        buf += bytes(align(len(buf)) - len(buf))
        addr = len(buf)
        buf += np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else bytes(data)
        return addr

    # ---- SRAM ---------------------------------------------------------------------------
    def alloc(self, space: Space, dtype, shape: Sequence[int]) -> TensorRef:
        dt = dtype if isinstance(dtype, DType) else dtype_of(dtype)
        addr = self.sram_next[space]
        t = TensorRef(space, dt, addr, tuple(int(s) for s in shape))
        self.sram_next[space] = align(addr + t.nbytes)
        return t

    # ---- phases -------------------------------------------------------------------------
    def load(self, arr: np.ndarray, space: Space = Space.ACT, pads: Tuple[int, int, int, int] = (0, 0, 0, 0),
             pad_value: int = 0, region: Region = Region.IO) -> TensorRef:
        """Places an NHWC array densely in DRAM and loads it (with halo pads top, bottom, left, right)."""
        arr = np.asarray(arr)
        assert arr.ndim == 4, arr.shape
        addr = self.place(arr, region)
        n, h, w, c = arr.shape
        top, bottom, left, right = pads
        dst = self.alloc(space, arr.dtype, (n, h + top + bottom, w + left + right, c))
        self.load_raw(dst, DramRef.dense(region, addr, arr.shape, arr.itemsize), top, bottom, left, right, pad_value)
        return dst

    def load_raw(self, dst: TensorRef, src: DramRef, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0,
                 pad_value=0, deps: Any = Dep.NONE) -> Instr:
        ins = Instr.make("dma.load", deps, dst=dst, src=src, pad_top=pad_top, pad_bottom=pad_bottom,
                         pad_left=pad_left, pad_right=pad_right, pad_value=pad_value)
        self.loads.append(ins)
        return ins

    def op(self, mnemonic: str, deps: Any = Dep.NONE, **operands: Any) -> Instr:
        ins = Instr.make(mnemonic, deps, **operands)
        self.computes.append(ins)
        return ins

    def store(self, t: TensorRef) -> int:
        """Stores an SRAM tensor densely into a fresh IO area (copying ACC tensors to ACT first)."""
        if t.space != Space.ACT:
            copy = self.alloc(Space.ACT, t.dtype, t.shape)
            self.op("vcvt", a=t, o=copy)
            t = copy
        dt = DTYPE_TO_NP[t.dtype]
        out = Output(0, dt, t.shape)
        out.addr = self.place(bytes([SENTINEL]) * out.nbytes, Region.IO)
        self.store_raw(t, DramRef.dense(Region.IO, out.addr, t.shape, dt.itemsize))
        self.outputs.append(out)
        return len(self.outputs) - 1

    def store_raw(self, src: TensorRef, dst: DramRef, deps: Any = Dep.NONE) -> Instr:
        ins = Instr.make("dma.store", deps, src=src, dst=dst)
        self.stores.append(ins)
        return ins

    # ---- assembly -----------------------------------------------------------------------
    def program(self, sync: str = "tokens") -> Program:
        loads, computes, stores = list(self.loads), list(self.computes), list(self.stores)
        if sync == "tokens":
            if loads and stores and not computes:
                computes = [Instr.make("sync", queue=int(spec.Queue.COMPUTE))]
            if loads and computes:
                loads[-1] = with_deps(loads[-1], Dep.PUSH_NEXT)
                computes[0] = with_deps(computes[0], Dep.POP_PREV)
            if computes and stores:
                computes[-1] = with_deps(computes[-1], Dep.PUSH_NEXT)
                stores[0] = with_deps(stores[0], Dep.POP_PREV)
            return Program(loads + computes + stores + [Instr.make("end")])
        if sync == "barrier":
            instrs = loads + [Instr.make("barrier")] + computes + [Instr.make("barrier")] + stores
            return Program(instrs + [Instr.make("end")])
        raise ValueError(sync)

    def io_image(self) -> np.ndarray:
        return np.frombuffer(bytes(self.regions[Region.IO]), np.uint8).copy()

    def run(self, emulator_module, sync: str = "tokens", trace: bool = False, program: Optional[Program] = None):
        """Runs on the emulator; returns (outputs as arrays, RunResult)."""
        prog = program if program is not None else self.program(sync)
        emu = emulator_module.Emulator(self.config)
        res = emu.run(prog.encode(), const=bytes(self.regions[Region.CONST]), io=self.io_image(),
                      scratch_bytes=self.scratch_bytes, trace=trace)
        return self.read_outputs(res.io), res

    def read_outputs(self, io: np.ndarray) -> List[np.ndarray]:
        io = np.asarray(io, np.uint8)
        return [io[o.addr:o.addr + o.nbytes].copy().view(o.dtype).reshape(o.shape) for o in self.outputs]


def run_program(emulator_module, config: Any, program: Program, *, const: bytes = b"", io: Any = 0,
                scratch_bytes: int = 0, trace: bool = False):
    return emulator_module.Emulator(get_config(config)).run(program.encode(), const=const, io=io,
                                                            scratch_bytes=scratch_bytes, trace=trace)


# ---- cycle model (docs/ISA.md "Cycle model"), computed here from the configuration -------------

def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def dma_cycles(cfg: NPUConfig, nbytes: int) -> int:
    return cfg.dma_setup_cycles + ceil_div(nbytes, cfg.dma_bytes_per_cycle)


def vector_cycles(cfg: NPUConfig, elements: int) -> int:
    return ceil_div(elements, cfg.vector_lanes) + cfg.vector_issue_cycles


def gemm_cycles(cfg: NPUConfig, m: int, n: int, k: int, half_rate: bool = False) -> int:
    c = ceil_div(m, cfg.mac_rows) * ceil_div(n, cfg.mac_cols) * k
    return c * (cfg.half_rate_factor if half_rate else 1)


def conv_cycles(cfg: NPUConfig, n: int, oh: int, ow: int, cout: int, kh: int, kw: int, cin: int, groups: int = 1,
                half_rate: bool = False) -> int:
    m = n * oh * ow
    c = groups * ceil_div(m, cfg.mac_rows) * ceil_div(cout // groups, cfg.mac_cols) * kh * kw * (cin // groups)
    return c * (cfg.half_rate_factor if half_rate else 1)


def dwconv_cycles(cfg: NPUConfig, n: int, oh: int, ow: int, cout: int, kh: int, kw: int,
                  half_rate: bool = False) -> int:
    c = n * oh * ow * kh * kw * ceil_div(cout, cfg.mac_cols)
    return c * (cfg.half_rate_factor if half_rate else 1)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def rand_int(r: np.random.Generator, dtype, shape, lo=None, hi=None) -> np.ndarray:
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return r.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def rand_f16(r: np.random.Generator, shape, scale=1.0) -> np.ndarray:
    return (r.standard_normal(shape) * scale).astype(np.float16)


# ---- a small artifact: y = requant(x @ w) with w in CONST --------------------------------------

ART_MULT, ART_SHIFT, ART_ZP = 1395864371, -8, -5  # ~0.0025 in TFLite's (multiplier, shift) form


def sample_artifact(config: Any = "npu-nano", golden: bool = True, **overrides):
    """An Artifact computing y = clamp(MBQM(x @ w, m, s) - 5), x int8 [1,4,4,16], w int8 [16,16]."""
    from tvm_npu.artifact import Artifact, IOTensor, ProvenanceRange, QuantParams
    import reference as ref

    r = rng(1234)
    x = rand_int(r, np.int8, (1, 4, 4, 16))
    w = rand_int(r, np.int8, (16, 16))
    cfg = get_config(config)
    a = TensorRef(Space.ACT, DType.INT8, 0, (1, 4, 4, 16))
    wt = TensorRef(Space.WGT, DType.INT8, 0, (1, 1, 16, 16))
    acc = TensorRef(Space.ACC, DType.INT32, 0, (1, 4, 4, 16))
    y = TensorRef(Space.ACT, DType.INT8, 256, (1, 4, 4, 16))
    prog = Program([
        Instr.make("dma.load", dst=a, src=DramRef.dense(Region.IO, 0, (1, 4, 4, 16), 1)),
        Instr.make("dma.load", "push_next", dst=wt, src=DramRef.dense(Region.CONST, 0, (1, 1, 16, 16), 1)),
        Instr.make("gemm", "pop_prev", a=a, w=wt, o=acc),
        Instr.make("vrequant", "push_next", a=acc, o=y, mult=ART_MULT, shift=ART_SHIFT, o_offset=ART_ZP,
                   act_min=-128, act_max=127),
        Instr.make("dma.store", "pop_prev", src=y, dst=DramRef.dense(Region.IO, 256, (1, 4, 4, 16), 1)),
        Instr.make("end"),
    ])
    expected = ref.requant(ref.gemm_int(x.reshape(16, 16), w), ART_MULT, ART_SHIFT, ART_ZP, -128, 127)
    expected = expected.reshape(1, 4, 4, 16)
    kw = dict(
        config=cfg, program=prog.encode(), constants=w.tobytes(),
        io=[IOTensor("x", "input", "int8", (1, 4, 4, 16), 0, "NHWC", QuantParams((0.05,), (-3,))),
            IOTensor("y", "output", "int8", (1, 4, 4, 16), 256, "NHWC", QuantParams((0.1,), (ART_ZP,)))],
        scratch_bytes=0,
        provenance=[ProvenanceRange(0, 2, "npu.dense", "test:load"),
                    ProvenanceRange(2, 6, "npu.dense_requant", "test:MatMul_1 + Quantize_2")],
        producer={"tvm_npu": "0.1.0", "test": "sample_artifact"},
        golden={"x": x, "y": expected} if golden else None,
    )
    kw.update(overrides)
    return Artifact(**kw), x, expected


# ---- an independent model of docs/ISA.md's timing: per-instruction cost and the queue schedule ---

def instr_cycles(ins: Instr, cfg: NPUConfig) -> int:
    """The cost of one instruction by the formulas of docs/ISA.md "Cycle model"."""
    m = ins.mnemonic
    if m in ("sync", "barrier", "end"):
        return cfg.control_cycles
    if m == "dma.load":
        t = ins["dst"]
        n, h, w, c = t.shape
        elems = n * (h - ins["pad_top"] - ins["pad_bottom"]) * (w - ins["pad_left"] - ins["pad_right"]) * c
        return dma_cycles(cfg, elems * spec.DTYPE_SIZE[t.dtype])
    if m == "dma.store":
        t = ins["src"]
        return dma_cycles(cfg, t.elements * spec.DTYPE_SIZE[t.dtype])
    if m in ("gemm", "conv2d", "dwconv2d"):
        a, w, o = ins["a"], ins["w"], ins["o"]
        half = a.dtype in (DType.FP16, DType.INT16)
        if m == "gemm":
            rows = a.shape[0] * a.shape[1] * a.shape[2]
            return gemm_cycles(cfg, rows, w.shape[3], a.shape[3], half)
        n, oh, ow, cout = o.shape
        kh, kw = w.shape[0], w.shape[1]
        if m == "conv2d":
            return conv_cycles(cfg, n, oh, ow, cout, kh, kw, a.shape[3], ins["groups"], half)
        return dwconv_cycles(cfg, n, oh, ow, cout, kh, kw, half)
    if m == "vreduce":
        return vector_cycles(cfg, ins["a"].elements)
    if m == "vpool":
        return vector_cycles(cfg, ins["o"].elements * ins["kh"] * ins["kw"])
    return vector_cycles(cfg, ins["o"].elements)


_UNIT = {op.mnemonic: int(op.unit) for op in spec.OPCODES}
_EDGE_FLAGS = ((Dep.POP_PREV, -1), (Dep.POP_NEXT, +1))
_PUSH_FLAGS = ((Dep.PUSH_PREV, -1), (Dep.PUSH_NEXT, +1))


def model_schedule(program: Program, cfg: NPUConfig):
    """(start, end) per instruction and the counters they imply, following docs/ISA.md:
    in-order queues, start = max(previous end in the queue, token signal times, last barrier end);
    barrier / end wait for everything before them (and count on the COMPUTE queue, as spec.py says)."""
    instrs = list(program)
    n = len(instrs)
    times: List[Optional[Tuple[int, int]]] = [None] * n
    pushes: Dict[Tuple[int, int], List[int]] = {}
    popped: Dict[Tuple[int, int], int] = {}
    queue_end = [0, 0, 0]
    busy, stall, unit = [0, 0, 0], [0, 0, 0], [0] * 5
    fence_end = 0
    seg = 0
    while seg < n:
        fence = seg
        while instrs[fence].mnemonic not in ("barrier", "end"):
            fence += 1
        lists = [[i for i in range(seg, fence) if int(instrs[i].queue) == q] for q in range(3)]
        heads = [0, 0, 0]
        progress = True
        while progress:
            progress = False
            for q in range(3):
                while heads[q] < len(lists[q]):
                    i = lists[q][heads[q]]
                    ins = instrs[i]
                    edges = [(q + d, q) for flag, d in _EDGE_FLAGS if ins.deps & flag]
                    if any(len(pushes.get(e, [])) <= popped.get(e, 0) for e in edges):
                        break
                    start = max(queue_end[q], fence_end)
                    for e in edges:
                        start = max(start, pushes[e][popped.get(e, 0)])
                        popped[e] = popped.get(e, 0) + 1
                    cost = instr_cycles(ins, cfg)
                    times[i] = (start, start + cost)
                    stall[q] += start - queue_end[q]
                    busy[q] += cost
                    unit[_UNIT[ins.mnemonic]] += cost
                    queue_end[q] = start + cost
                    for flag, d in _PUSH_FLAGS:
                        if ins.deps & flag:
                            pushes.setdefault((q, q + d), []).append(start + cost)
                    heads[q] += 1
                    progress = True
        if any(heads[q] < len(lists[q]) for q in range(3)):
            raise ValueError("deadlock")
        q = int(spec.Queue.COMPUTE)
        start = max(fence_end, *queue_end)
        cost = cfg.control_cycles
        times[fence] = (start, start + cost)
        stall[q] += start - queue_end[q]
        busy[q] += cost
        unit[_UNIT[instrs[fence].mnemonic]] += cost
        queue_end[q] = start + cost
        fence_end = start + cost
        seg = fence + 1
    counters = dict(cycles=fence_end, instructions=n, queue_busy=busy, queue_stall=stall, unit_busy=unit)
    return times, counters


# ---- an independent reader / writer of the artifact layout (docs/ARTIFACT.md) ----------------------

def artifact_sections(blob: bytes):
    """[(tag, crc, offset, size, data)] of an artifact, read by the documented layout."""
    import struct
    _, _, _, count, _ = struct.unpack_from("<4sHHII", blob)
    out = []
    for i in range(count):
        tag, crc, off, size = struct.unpack_from("<4sIQQ", blob, 16 + i * 24)
        out.append((tag, crc, off, size, blob[off:off + size]))
    return out


def pack_artifact_sections(sections, *, magic=b"NPUA", fmt=1, isa=1, crcs=None) -> bytes:
    """An artifact from (tag, data) pairs by the documented layout (crcs[i] overrides a CRC)."""
    import struct
    import zlib
    off = align(16 + 24 * len(sections))
    table, body = b"", b""
    for i, (tag, data) in enumerate(sections):
        crc = zlib.crc32(data) if crcs is None or crcs[i] is None else crcs[i]
        table += struct.pack("<4sIQQ", tag, crc, off, len(data))
        padded = data + bytes(align(len(data)) - len(data))
        body += padded
        off += len(padded)
    head = struct.pack("<4sHHII", magic, fmt, isa, len(sections), 0) + table
    return head + bytes(align(len(head)) - len(head)) + body
