"""Generates the emulator's C++ ISA header from spec.py, so the ISA is written down exactly once.

Run at build time by setup.py (``python -m tvm_npu.isa.gen_cpp OUT.h``); never imported at run time
by the compiler.
"""

from __future__ import annotations

import enum
import struct
import sys
from pathlib import Path

from . import spec
from ..config import NPUConfig

_CTYPE = {"u8": "uint8_t", "i8": "int8_t", "u16": "uint16_t", "i16": "int16_t", "u32": "uint32_t",
          "i32": "int32_t", "f32": "float"}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace(".", "_").split("_"))


def _enum(cls: type[enum.IntEnum], ctype: str = "uint8_t") -> str:
    body = ", ".join(f"{m.name} = {int(m.value)}" for m in cls)
    return f"enum class {cls.__name__} : {ctype} {{ {body} }};\n" \
           f"constexpr int kNum{cls.__name__} = {max(int(m) for m in cls) + 1};\n"


def generate() -> str:
    out = [
        "// Generated from tvm_npu/isa/spec.py by tvm_npu/isa/gen_cpp.py. Do not edit.",
        "#pragma once",
        "#include <cstddef>",
        "#include <cstdint>",
        "#include <cstring>",
        "",
        "namespace npu {",
        "namespace isa {",
        "",
        f"constexpr uint32_t kIsaVersion = {spec.ISA_VERSION};",
        "constexpr char kProgramMagic[4] = {" + ", ".join(f"'{chr(b)}'" for b in spec.PROGRAM_MAGIC) + "};",
        f"constexpr size_t kProgramHeaderSize = {spec.PROGRAM_HEADER.size};",
        f"constexpr size_t kInstrHeaderSize = {spec.INSTR_HEADER.size};",
        f"constexpr uint32_t kSramAlign = {spec.SRAM_ALIGN};",
        "",
    ]
    for cls in (spec.Queue, spec.Unit, spec.Space, spec.Region, spec.DType, spec.PoolMode,
                spec.ReduceMode, spec.Func):
        out.append(_enum(cls))
    out.append("enum Dep : uint8_t { " + ", ".join(
        f"DEP_{m.name} = {int(m.value)}" for m in spec.Dep if m.value) + " };")
    out.append("constexpr int kDTypeSize[kNumDType] = {" + ", ".join(
        str(spec.DTYPE_SIZE[d]) for d in spec.DType) + "};")
    out.append("constexpr const char* kDTypeName[kNumDType] = {" + ", ".join(
        f'"{spec.DTYPE_NAME[d]}"' for d in spec.DType) + "};")
    out.append("")
    out.append("struct Tensor { " + " ".join(f"{_CTYPE[t]} {p};" for p, t in spec.TENSOR_PARTS) + " };")
    out.append("struct Dram { " + " ".join(f"{_CTYPE[t]} {p};" for p, t in spec.DRAM_PARTS) + " };")
    out.append("")
    for fmt in spec.FORMATS:
        members = []
        for op in fmt.operands:
            ctype = {"tensor": "Tensor", "dram": "Dram"}.get(op.kind, _CTYPE.get(op.kind))
            members.append(f"  {ctype} {op.name};")
        out.append(f"struct Fmt{_camel(fmt.name)} {{")
        out.extend(members or ["  uint8_t unused_;"])
        out.append("};")
    out.append("")
    out.append("enum class Opcode : uint8_t { " + ", ".join(
        f"{_camel(op.mnemonic).upper()} = 0x{op.code:02X}" for op in spec.OPCODES) + " };")
    out.append("")
    out.append("struct Instr {")
    out.append("  Opcode opcode;")
    out.append("  uint8_t deps;")
    out.append("  uint32_t index;  // position in the program")
    out.append("  union {")
    for fmt in spec.FORMATS:
        out.append(f"    Fmt{_camel(fmt.name)} {fmt.name};")
    out.append("  };")
    out.append("};")
    out.append("")
    out.append("struct OpcodeInfo { uint8_t code; const char* mnemonic; uint16_t size; Queue queue; Unit unit; };")
    out.append("// Returns nullptr for an unknown opcode.")
    out.append("inline const OpcodeInfo* LookupOpcode(uint8_t code) {")
    out.append("  static const OpcodeInfo kTable[] = {")
    for op in spec.OPCODES:
        out.append(f'    {{0x{op.code:02X}, "{op.mnemonic}", {op.fmt.size}, Queue::{op.queue.name}, '
                   f"Unit::{op.unit.name}}},")
    out.append("  };")
    out.append("  for (const auto& e : kTable) if (e.code == code) return &e;")
    out.append("  return nullptr;")
    out.append("}")
    out.append("")
    out.append("// Decodes the fields of a known opcode from p (which holds at least its size in bytes).")
    out.append("inline void DecodeFields(Opcode op, const uint8_t* p, Instr* in) {")
    out.append("  p += kInstrHeaderSize;")
    out.append("  switch (op) {")
    for op in spec.OPCODES:
        out.append(f"    case Opcode::{_camel(op.mnemonic).upper()}: {{")
        offset = 0
        for operand in op.fmt.operands:
            parts = spec.COMPOUND.get(operand.kind)
            if parts:
                for part, t in parts:
                    size = struct.calcsize("<" + spec.SCALAR_TYPES[t][0])
                    out.append(f"      std::memcpy(&in->{op.fmt.name}.{operand.name}.{part}, p + {offset}, {size});")
                    offset += size
            else:
                size = struct.calcsize("<" + spec.SCALAR_TYPES[operand.kind][0])
                out.append(f"      std::memcpy(&in->{op.fmt.name}.{operand.name}, p + {offset}, {size});")
                offset += size
        assert offset == op.fmt.struct.size, (op.mnemonic, offset)
        out.append("      break;")
        out.append("    }")
    out.append("  }")
    out.append("}")
    out.append("")
    fields = NPUConfig.integer_fields()
    out.append("// Mirrors tvm_npu.config.NPUConfig (integer fields, declaration order).")
    out.append("struct Config {")
    out.extend(f"  int64_t {f} = 0;" for f in fields)
    out.append("};")
    out.append("template <typename F> void ForEachConfigField(Config* c, F f) {")
    out.extend(f'  f("{f}", &c->{f});' for f in fields)
    out.append("}")
    out.append("")
    out.append("}  // namespace isa")
    out.append("}  // namespace npu")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tvm_npu.isa.gen_cpp OUTPUT.h", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = generate()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
