"""NPU instruction set v1: the definition (spec), instruction objects, binary and text forms."""

from . import spec
from .program import DramRef, Instr, ISAError, Program, TensorRef, parse_deps
from .spec import ISA_VERSION, DType, Dep, Func, PoolMode, Queue, ReduceMode, Region, Space, Unit


def assemble(text: str) -> bytes:
    """Assembly text -> encoded program bytes."""
    return Program.from_text(text).encode()


def disassemble(program: bytes) -> str:
    """Encoded program bytes -> assembly text (round-trips through assemble)."""
    return Program.decode(program).to_text()


__all__ = ["spec", "DramRef", "Instr", "ISAError", "Program", "TensorRef", "parse_deps", "ISA_VERSION", "DType",
           "Dep", "Func", "PoolMode", "Queue", "ReduceMode", "Region", "Space", "Unit", "assemble", "disassemble"]
