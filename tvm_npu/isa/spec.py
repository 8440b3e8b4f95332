"""ISA v1 of the NPU, defined once: opcodes, operand formats, enums and the binary layout.

Everything else derives from the tables here: the Python encoder/decoder, the assembler and
disassembler, the validator, the C++ header of the emulator (``gen_cpp.py``) and docs/ISA.md.

Binary layout of one instruction (little-endian, no alignment padding between fields):

    offset 0  u8   opcode
    offset 1  u8   dependency flags (bit 0 pop_prev, 1 pop_next, 2 push_prev, 3 push_next)
    offset 2  u16  length of this instruction in bytes (must equal the opcode's size)
    offset 4  ...  the opcode's fields in declaration order, then zero padding to a multiple of 8

A program is a header (``PROGRAM_MAGIC``, ISA version, instruction count, byte length) followed by
the instructions back to back.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import struct
from typing import Dict, List, Tuple

ISA_VERSION = 1
PROGRAM_MAGIC = b"NPUP"
# magic, isa version (u16), reserved (u16), instruction count (u32), bytes of instructions (u32)
PROGRAM_HEADER = struct.Struct("<4sHHII")
INSTR_HEADER = struct.Struct("<BBH")
INSTR_ALIGN = 8
SRAM_ALIGN = 16  # SRAM tensor base addresses and rows are 16-byte aligned


class Queue(enum.IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Unit(enum.IntEnum):
    DMA_LOAD = 0
    DMA_STORE = 1
    MAC = 2
    VECTOR = 3
    CONTROL = 4


class Space(enum.IntEnum):
    """On-chip SRAMs."""

    ACT = 0
    WGT = 1
    ACC = 2


class Region(enum.IntEnum):
    """DRAM regions."""

    CONST = 0
    IO = 1
    SCRATCH = 2


class DType(enum.IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2
    FP16 = 3
    FP32 = 4


DTYPE_SIZE = {DType.INT8: 1, DType.INT16: 2, DType.INT32: 4, DType.FP16: 2, DType.FP32: 4}
DTYPE_NAME = {DType.INT8: "i8", DType.INT16: "i16", DType.INT32: "i32", DType.FP16: "f16", DType.FP32: "f32"}
DTYPE_NUMPY = {DType.INT8: "int8", DType.INT16: "int16", DType.INT32: "int32", DType.FP16: "float16",
               DType.FP32: "float32"}


class PoolMode(enum.IntEnum):
    MAX = 0
    AVG = 1


class ReduceMode(enum.IntEnum):
    SUM = 0
    MAX = 1


class Func(enum.IntEnum):
    """Transcendental functions of the vector unit (computed in double, rounded once)."""

    EXP = 0
    TANH = 1
    SIGMOID = 2
    GELU = 3  # exact: 0.5 x (1 + erf(x / sqrt 2))
    RSQRT = 4
    RECIPROCAL = 5
    GELU_TANH = 6  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))


class Dep(enum.IntFlag):
    """Dependency-token flags of an instruction, as in VTA: pop = wait for a token, push = signal."""

    NONE = 0
    POP_PREV = 1
    POP_NEXT = 2
    PUSH_PREV = 4
    PUSH_NEXT = 8


# Scalar field types: struct code and (min, max) of the value.
SCALAR_TYPES: Dict[str, Tuple[str, float, float]] = {
    "u8": ("B", 0, 2**8 - 1),
    "i8": ("b", -(2**7), 2**7 - 1),
    "u16": ("H", 0, 2**16 - 1),
    "i16": ("h", -(2**15), 2**15 - 1),
    "u32": ("I", 0, 2**32 - 1),
    "i32": ("i", -(2**31), 2**31 - 1),
    "f32": ("f", float("-inf"), float("inf")),
}

# Compound operands expand to scalar fields "<name>_<part>".
TENSOR_PARTS = (("space", "u8"), ("dtype", "u8"), ("addr", "u32"),
                ("n", "u16"), ("h", "u16"), ("w", "u16"), ("c", "u16"))
DRAM_PARTS = (("region", "u8"), ("addr", "u32"),
              ("sn", "i32"), ("sh", "i32"), ("sw", "i32"), ("sc", "i32"))
COMPOUND = {"tensor": TENSOR_PARTS, "dram": DRAM_PARTS}


@dataclasses.dataclass(frozen=True)
class Operand:
    """One operand of a format: a scalar ("u8", "i32", ...) or a compound ("tensor", "dram")."""

    name: str
    kind: str
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    operands: Tuple[Operand, ...]

    # cached: pure functions of a frozen format, used for every instruction encoded or decoded
    @functools.cached_property
    def fields(self) -> List[Tuple[str, str]]:
        """The flat scalar fields (name, type) in encoding order."""
        out: List[Tuple[str, str]] = []
        for op in self.operands:
            if op.kind in COMPOUND:
                out.extend((f"{op.name}_{part}", t) for part, t in COMPOUND[op.kind])
            else:
                out.append((op.name, op.kind))
        return out

    @functools.cached_property
    def struct(self) -> struct.Struct:
        return struct.Struct("<" + "".join(SCALAR_TYPES[t][0] for _, t in self.fields))

    @functools.cached_property
    def size(self) -> int:
        raw = INSTR_HEADER.size + self.struct.size
        return (raw + INSTR_ALIGN - 1) // INSTR_ALIGN * INSTR_ALIGN


@dataclasses.dataclass(frozen=True)
class Opcode:
    code: int
    mnemonic: str
    fmt: Format
    queue: Queue  # None-like for SYNC, whose queue is an operand
    unit: Unit
    doc: str


T, D = "tensor", "dram"

FMT_DMA_LOAD = Format("dma_load", (
    Operand("dst", T, "SRAM destination (ACT, WGT or ACC); its dims include the padding"),
    Operand("src", D, "DRAM source: region, byte address and byte strides of n, h, w, c"),
    Operand("pad_top", "u8"), Operand("pad_bottom", "u8"),
    Operand("pad_left", "u8"), Operand("pad_right", "u8"),
    Operand("pad_value", "i32", "raw element bits written into the halo (e.g. the zero point)"),
))
FMT_DMA_STORE = Format("dma_store", (
    Operand("src", T, "ACT source tensor"),
    Operand("dst", D, "DRAM destination: region, byte address and byte strides of n, h, w, c"),
))
FMT_GEMM = Format("gemm", (
    Operand("a", T, "ACT [rows = n*h*w, K = c]"),
    Operand("w", T, "WGT [K = n*h*w, N = c]"),
    Operand("o", T, "ACC [rows, N]"),
    Operand("a_offset", "i32", "added to every activation before the multiply (minus the zero point)"),
    Operand("accumulate", "u8", "0: o = a*w, 1: o += a*w"),
))
FMT_CONV = Format("conv", (
    Operand("a", T, "ACT input [N, H, W, Cin] (already padded: the convolution is 'valid')"),
    Operand("w", T, "WGT [KH, KW, Cin/groups, Cout]"),
    Operand("o", T, "ACC output [N, OH, OW, Cout]"),
    Operand("stride_h", "u8"), Operand("stride_w", "u8"),
    Operand("dilation_h", "u8"), Operand("dilation_w", "u8"),
    Operand("groups", "u16"),
    Operand("a_offset", "i32"),
    Operand("accumulate", "u8"),
))
FMT_DWCONV = Format("dwconv", (
    Operand("a", T, "ACT input [N, H, W, C] (already padded)"),
    Operand("w", T, "WGT [KH, KW, 1, C*multiplier]"),
    Operand("o", T, "ACC output [N, OH, OW, C*multiplier]"),
    Operand("stride_h", "u8"), Operand("stride_w", "u8"),
    Operand("dilation_h", "u8"), Operand("dilation_w", "u8"),
    Operand("a_offset", "i32"),
    Operand("accumulate", "u8"),
))
FMT_BINARY = Format("binary", (
    Operand("a", T), Operand("b", T), Operand("o", T, "output; a and b broadcast to it (dims equal or 1)"),
    Operand("a_offset", "i32"), Operand("a_mult", "i32"), Operand("a_shift", "i8"),
    Operand("b_offset", "i32"), Operand("b_mult", "i32"), Operand("b_shift", "i8"),
    Operand("left_shift", "u8"),
    Operand("o_mult", "i32"), Operand("o_shift", "i8"), Operand("o_offset", "i32"),
    Operand("act_min", "i32"), Operand("act_max", "i32"),
))
FMT_REQUANT = Format("requant", (
    Operand("a", T, "ACC int32 (or fp32)"),
    Operand("o", T, "ACT int8/int16 (or fp16)"),
    Operand("per_channel", "u8", "1: (multiplier, shift) int32 pairs per channel at params_addr in ACC"),
    Operand("mult", "i32"), Operand("shift", "i8"),
    Operand("params_addr", "u32"),
    Operand("o_offset", "i32"), Operand("act_min", "i32"), Operand("act_max", "i32"),
))
FMT_CLAMP = Format("clamp", (
    Operand("a", T), Operand("o", T),
    Operand("min_i", "i32"), Operand("max_i", "i32", "bounds for integer dtypes"),
    Operand("min_f", "f32"), Operand("max_f", "f32", "bounds for float dtypes"),
))
FMT_LUT = Format("lut", (
    Operand("a", T, "ACT int8"), Operand("o", T, "ACT int8"),
    Operand("lut_addr", "u32", "ACT byte address of 256 int8 entries, indexed by x + 128"),
))
FMT_FUNC = Format("func", (
    Operand("a", T, "fp16/fp32"), Operand("o", T, "fp16/fp32"),
    Operand("func", "u8", "Func enum"),
))
FMT_POOL = Format("pool", (
    Operand("a", T, "input [N, H, W, C]"), Operand("o", T, "output [N, OH, OW, C]"),
    Operand("mode", "u8", "PoolMode"),
    Operand("kh", "u8"), Operand("kw", "u8"), Operand("stride_h", "u8"), Operand("stride_w", "u8"),
    Operand("pad_top", "u8"), Operand("pad_left", "u8"),
    Operand("act_min", "i32"), Operand("act_max", "i32"),
))
FMT_REDUCE = Format("reduce", (
    Operand("a", T), Operand("o", T, "a's dims with the reduced axis set to 1"),
    Operand("mode", "u8", "ReduceMode"), Operand("axis", "u8", "0 n, 1 h, 2 w, 3 c"),
))
FMT_CVT = Format("cvt", (Operand("a", T), Operand("o", T, "same dims as a")))
FMT_SYNC = Format("sync", (Operand("queue", "u8", "the queue this token carrier runs in"),))
FMT_NONE = Format("none", ())

_C, _V, _M = Queue.COMPUTE, Unit.VECTOR, Unit.MAC
OPCODES: Tuple[Opcode, ...] = (
    Opcode(0x01, "dma.load", FMT_DMA_LOAD, Queue.LOAD, Unit.DMA_LOAD,
           "Strided 4-D copy DRAM -> SRAM with optional halo padding."),
    Opcode(0x02, "dma.store", FMT_DMA_STORE, Queue.STORE, Unit.DMA_STORE,
           "Strided 4-D copy ACT -> DRAM."),
    Opcode(0x10, "gemm", FMT_GEMM, _C, _M, "o (=|+=) (a + a_offset) x w."),
    Opcode(0x11, "conv2d", FMT_CONV, _C, _M, "Direct NHWC convolution with stride, dilation and groups."),
    Opcode(0x12, "dwconv2d", FMT_DWCONV, _C, _M, "Depthwise convolution, one channel per MAC column."),
    Opcode(0x20, "vadd", FMT_BINARY, _C, _V, "Elementwise add (TFLite quantised add for int8/int16)."),
    Opcode(0x21, "vsub", FMT_BINARY, _C, _V, "Elementwise subtract (TFLite quantised sub for int8/int16)."),
    Opcode(0x22, "vmul", FMT_BINARY, _C, _V, "Elementwise multiply (TFLite quantised mul for int8/int16)."),
    Opcode(0x23, "vmax", FMT_BINARY, _C, _V, "Elementwise maximum."),
    Opcode(0x24, "vmin", FMT_BINARY, _C, _V, "Elementwise minimum."),
    Opcode(0x28, "vrequant", FMT_REQUANT, _C, _V,
           "ACC -> ACT requantisation (TFLite MultiplyByQuantizedMultiplier, zero point, clamp)."),
    Opcode(0x29, "vclamp", FMT_CLAMP, _C, _V, "Clamp to [min, max]."),
    Opcode(0x2A, "vlut", FMT_LUT, _C, _V, "256-entry int8 table lookup."),
    Opcode(0x2B, "vfunc", FMT_FUNC, _C, _V, "fp16/fp32 exp, tanh, sigmoid, gelu, rsqrt, reciprocal."),
    Opcode(0x2C, "vpool", FMT_POOL, _C, _V, "Max or average pooling (TFLite reference semantics)."),
    Opcode(0x2D, "vreduce", FMT_REDUCE, _C, _V, "Sum or max over one axis."),
    Opcode(0x2E, "vcvt", FMT_CVT, _C, _V, "Copy / dtype conversion (f16<->f32, i8/i16->i32, same dtype)."),
    Opcode(0x30, "sync", FMT_SYNC, Queue.LOAD, Unit.CONTROL,
           "Token carrier: does nothing but wait for / signal its dependency tokens."),
    Opcode(0x31, "barrier", FMT_NONE, _C, Unit.CONTROL,
           "Every earlier instruction of every queue completes before any later one starts."),
    Opcode(0x3F, "end", FMT_NONE, _C, Unit.CONTROL, "End of program; must be the last instruction."),
)

BY_CODE: Dict[int, Opcode] = {op.code: op for op in OPCODES}
BY_MNEMONIC: Dict[str, Opcode] = {op.mnemonic: op for op in OPCODES}
FORMATS: Tuple[Format, ...] = tuple(dict.fromkeys(op.fmt for op in OPCODES))

assert len(BY_CODE) == len(OPCODES) and len(BY_MNEMONIC) == len(OPCODES)
assert all(f.size < 2**16 for f in FORMATS)

# Which neighbouring queue a flag talks to (None where the queue has no such neighbour).
PREV_QUEUE = {Queue.LOAD: None, Queue.COMPUTE: Queue.LOAD, Queue.STORE: Queue.COMPUTE}
NEXT_QUEUE = {Queue.LOAD: Queue.COMPUTE, Queue.COMPUTE: Queue.STORE, Queue.STORE: None}

# dtypes each operand role accepts (checked by the validator and the emulator).
ACT_DTYPES = (DType.INT8, DType.INT16, DType.FP16)
WGT_DTYPES = (DType.INT8, DType.FP16)
ACC_DTYPES = (DType.INT32, DType.FP32)


def row_stride(c: int, dtype: int) -> int:
    """Bytes between consecutive (n, h, w) rows of an SRAM tensor: C elements padded to 16 bytes."""
    raw = c * DTYPE_SIZE[DType(dtype)]
    return (raw + SRAM_ALIGN - 1) // SRAM_ALIGN * SRAM_ALIGN


def sram_tensor_bytes(n: int, h: int, w: int, c: int, dtype: int) -> int:
    return n * h * w * row_stride(c, dtype)
