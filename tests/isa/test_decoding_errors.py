"""The decoder refuses malformed programs with an ISAError naming the program header or the instruction."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_npu.isa import DramRef, Dep, DType, Instr, ISAError, Program, Region, Space, TensorRef, disassemble, spec

HDR = spec.PROGRAM_HEADER.size


def _prog() -> Program:
    a = TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 1, 16))
    return Program([
        Instr.make("dma.load", "push_next", dst=a, src=DramRef(Region.IO, 0, (16, 16, 16, 1))),
        Instr.make("vclamp", "pop_prev", a=a, o=a, min_i=-3, max_i=3),
        Instr.make("barrier"),
        Instr.make("end"),
    ])


def _offsets(prog: Program):
    offs, off = [], HDR
    for ins in prog:
        offs.append(off)
        off += ins.opcode.fmt.size
    return offs


def _fix_header(blob: bytearray, count=None) -> bytes:
    magic, version, res, n, _ = spec.PROGRAM_HEADER.unpack_from(blob)
    spec.PROGRAM_HEADER.pack_into(blob, 0, magic, version, res, n if count is None else count, len(blob) - HDR)
    return bytes(blob)


def test_valid_program_decodes():
    prog = _prog()
    assert Program.decode(prog.encode()) == prog
    assert Program.decode(bytearray(prog.encode())) == prog  # any bytes-like


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_unknown_opcode_names_the_instruction(index):
    prog = _prog()
    blob = bytearray(prog.encode())
    blob[_offsets(prog)[index]] = 0x7E
    with pytest.raises(ISAError, match=rf"^instruction {index}: unknown opcode 0x7e"):
        Program.decode(bytes(blob))


@pytest.mark.parametrize("code", sorted(set(range(256)) - set(spec.BY_CODE)))
def test_every_unassigned_opcode_is_unknown(code):
    blob = bytearray(Program([Instr.make("end")]).encode())
    blob[HDR] = code
    with pytest.raises(ISAError, match=r"^instruction 0: unknown opcode"):
        Program.decode(bytes(blob))


@pytest.mark.parametrize("index,length", [(0, 40), (1, 56), (1, 0), (2, 16), (3, 0xFFFF)])
def test_bad_length_field_names_the_instruction(index, length):
    prog = _prog()
    blob = bytearray(prog.encode())
    struct.pack_into("<H", blob, _offsets(prog)[index] + 2, length)
    mnemonic = prog.instrs[index].mnemonic
    with pytest.raises(ISAError, match=rf"^instruction {index} \({mnemonic}\): length field {length} differs"):
        Program.decode(bytes(blob))


def test_unknown_dependency_bits_name_the_instruction():
    prog = _prog()
    blob = bytearray(prog.encode())
    blob[_offsets(prog)[1] + 1] = 0x12
    with pytest.raises(ISAError, match=r"^instruction 1 \(vclamp\): unknown dependency flag bits 0x12"):
        Program.decode(bytes(blob))


@pytest.mark.parametrize("field,value,what", [
    ("dst_space", 3, "dst"), ("dst_dtype", 5, "dst"), ("src_region", 3, "src"), ("dst_dtype", 255, "dst"),
])
def test_bad_enum_operand_names_the_instruction(field, value, what):
    prog = _prog()
    blob = bytearray(prog.encode())
    off = _offsets(prog)[0] + spec.INSTR_HEADER.size
    for name, t in spec.FMT_DMA_LOAD.fields:
        if name == field:
            break
        off += struct.calcsize("<" + spec.SCALAR_TYPES[t][0])
    blob[off] = value
    with pytest.raises(ISAError, match=rf"^instruction 0 \(dma.load\): operand {what}"):
        Program.decode(bytes(blob))


@pytest.mark.parametrize("cut", [1, 4, 7, 8, 20])
def test_truncated_instruction_names_it(cut):
    """Truncated body with a header that agrees on the byte count: the last instruction is cut."""
    prog = Program(_prog().instrs[:2])  # dma.load (48) + vclamp (48)
    blob = bytearray(prog.encode())[:-cut]
    if 48 - cut >= spec.INSTR_HEADER.size:
        match = r"^instruction 1 \(vclamp\): truncated"
    else:
        match = r"^instruction 1: truncated header"
    with pytest.raises(ISAError, match=match):
        Program.decode(_fix_header(blob))


def test_count_larger_than_the_instructions_present():
    blob = bytearray(_prog().encode())
    with pytest.raises(ISAError, match=r"^instruction 4: truncated header \(0 bytes left\)"):
        Program.decode(_fix_header(blob, count=5))


def test_count_smaller_than_the_instructions_present():
    blob = bytearray(_prog().encode())
    with pytest.raises(ISAError, match=r"^program: \d+ bytes after the 3 instructions"):
        Program.decode(_fix_header(blob, count=3))


@pytest.mark.parametrize("cut", [1, 8, 47])
def test_truncated_program_disagrees_with_header(cut):
    blob = _prog().encode()
    with pytest.raises(ISAError, match=r"^program: header says \d+ bytes of instructions, \d+ present"):
        Program.decode(blob[:-cut])
    with pytest.raises(ISAError, match=r"^program: header says"):
        Program.decode(blob + b"\0" * cut)


@pytest.mark.parametrize("n", [0, 1, 15])
def test_truncated_program_header(n):
    with pytest.raises(ISAError, match=rf"^program: truncated header \({n} bytes\)"):
        Program.decode(_prog().encode()[:n])


@pytest.mark.parametrize("magic", [b"NPUA", b"\0\0\0\0", b"npup"])
def test_bad_magic(magic):
    blob = magic + _prog().encode()[4:]
    with pytest.raises(ISAError, match=r"^program: bad magic"):
        Program.decode(blob)


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_bad_isa_version(version):
    blob = bytearray(_prog().encode())
    struct.pack_into("<H", blob, 4, version)
    with pytest.raises(ISAError, match=rf"^program: ISA version {version}, this build supports 1"):
        Program.decode(bytes(blob))


def test_disassemble_reports_the_same_errors():
    blob = bytearray(_prog().encode())
    blob[_offsets(_prog())[2]] = 0x99
    with pytest.raises(ISAError, match=r"^instruction 2: unknown opcode 0x99"):
        disassemble(bytes(blob))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_isaerror(data):
    for blob in (data, spec.PROGRAM_HEADER.pack(b"NPUP", 1, 0, len(data) // 8, len(data)) + data):
        try:
            prog = Program.decode(blob)
        except ISAError:
            continue
        # whatever decodes re-encodes to something that decodes to the same program
        assert Program.decode(prog.encode()) == prog


@settings(max_examples=300)
@given(st.data())
def test_mutated_programs_decode_or_raise_isaerror(data):
    blob = bytearray(_prog().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    try:
        Program.decode(bytes(blob))
    except ISAError as e:
        assert str(e).startswith(("program: ", "instruction "))


def test_dep_flags_survive_decoding():
    prog = _prog()
    back = Program.decode(prog.encode())
    assert [i.deps for i in back] == [Dep.PUSH_NEXT, Dep.POP_PREV, Dep.NONE, Dep.NONE]
