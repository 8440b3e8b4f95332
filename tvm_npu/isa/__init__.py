"""NPU instruction set v1: the definition (spec), instruction objects, binary and text forms."""

from . import spec
from .program import DramRef, Instr, ISAError, Program, TensorRef, parse_deps
from .spec import ISA_VERSION, DType, Dep, Func, PoolMode, Queue, ReduceMode, Region, Space, Unit


def assemble(text: str) -> bytes:
    """Assembly text -> encoded program bytes."""
    return Program.from_text(text).encode()


def validate(program, config=None, *, const_bytes: int = 0, io_bytes: int = 0, scratch_bytes: int = 0):
    """Validates an encoded program (or Program) for a configuration and DRAM region sizes without
    running it, and returns its data-independent counters (cycles, MACs, DMA bytes, ...).

    The rules are the emulator's (the executable definition of the hardware), so a program that
    passes here is one the emulator will run. Raises ISAError naming the instruction and the reason."""
    import npu_emulator

    from ..config import get_config

    blob = program.encode() if isinstance(program, Program) else bytes(program)
    try:
        return npu_emulator.Emulator(get_config(config)).check(blob, const_bytes=const_bytes, io_bytes=io_bytes,
                                                                scratch_bytes=scratch_bytes)
    except ISAError:
        raise
    except ValueError as e:
        raise ISAError(str(e)) from None


def disassemble(program: bytes) -> str:
    """Encoded program bytes -> assembly text (round-trips through assemble)."""
    return Program.decode(program).to_text()


__all__ = ["spec", "DramRef", "Instr", "ISAError", "Program", "TensorRef", "parse_deps", "ISA_VERSION", "DType",
           "Dep", "Func", "PoolMode", "Queue", "ReduceMode", "Region", "Space", "Unit", "assemble", "disassemble",
           "validate"]
