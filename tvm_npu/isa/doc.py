"""Generates the encoding tables of docs/ISA.md from spec.py (python -m tvm_npu.isa.doc [--check])."""

from __future__ import annotations

import sys
from pathlib import Path

from . import spec

BEGIN = "<!-- BEGIN GENERATED ENCODING (python -m tvm_npu.isa.doc) -->"
END = "<!-- END GENERATED ENCODING -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "ISA.md"


def encoding_tables() -> str:
    lines = [BEGIN, "", "## Encoding (generated)", "",
             f"ISA version {spec.ISA_VERSION}. Program header: `{spec.PROGRAM_HEADER.format}` = magic "
             f"`{spec.PROGRAM_MAGIC.decode()}`, u16 ISA version, u16 reserved, u32 instruction count, u32 "
             "bytes of instructions. Instruction header: u8 opcode, u8 dependency flags (bit 0 pop_prev, 1 "
             "pop_next, 2 push_prev, 3 push_next), u16 length in bytes. Fields follow little-endian and "
             f"unpadded; the instruction is zero-padded to a multiple of {spec.INSTR_ALIGN} bytes.", "",
             "An SRAM tensor operand `X` expands to `X_space u8, X_dtype u8, X_addr u32, X_n X_h X_w X_c u16`; "
             "a DRAM operand to `X_region u8, X_addr u32, X_sn X_sh X_sw X_sc i32`.", "",
             "Enums: " + "; ".join(f"{cls.__name__} " + ", ".join(f"{m.name}={int(m)}" for m in cls)
                                   for cls in (spec.Space, spec.Region, spec.DType, spec.Queue, spec.PoolMode,
                                               spec.ReduceMode, spec.Func)) + ".", "",
             "| opcode | mnemonic | queue | unit | bytes | operands |", "|---|---|---|---|---|---|"]
    for op in spec.OPCODES:
        operands = ", ".join(f"`{o.name}`:{o.kind}" for o in op.fmt.operands) or "none"
        queue = "operand" if op.fmt is spec.FMT_SYNC else ("all" if op.unit is spec.Unit.CONTROL else op.queue.name)
        lines.append(f"| 0x{op.code:02X} | `{op.mnemonic}` | {queue} | {op.unit.name} | {op.fmt.size} | {operands} |")
    lines += ["", END]
    return "\n".join(lines)


def render(text: str) -> str:
    table = encoding_tables()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + table + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + table + "\n"


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("docs/ISA.md is out of date: run python -m tvm_npu.isa.doc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
