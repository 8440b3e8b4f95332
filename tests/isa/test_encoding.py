"""ISA v1 binary and text forms: round trips for every opcode, field ranges, the exact byte layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_npu.isa import (DramRef, Dep, DType, Instr, ISAError, Program, Region, Space, TensorRef, assemble,
                         disassemble, spec)

# ---- strategies ---------------------------------------------------------------------------------

_RANGES = {t: (lo, hi) for t, (_, lo, hi) in spec.SCALAR_TYPES.items() if t != "f32"}


def _int_field(t: str):
    lo, hi = _RANGES[t]
    # edges are where encoders go wrong, so draw them often
    return st.one_of(st.sampled_from([lo, hi, 0, min(hi, 1), max(lo, -1)]), st.integers(lo, hi))


_f32 = st.floats(width=32, allow_nan=False)  # NaN != NaN would make equality meaningless

tensors = st.builds(
    TensorRef, st.sampled_from(list(Space)), st.sampled_from(list(DType)), _int_field("u32"),
    st.tuples(_int_field("u16"), _int_field("u16"), _int_field("u16"), _int_field("u16")))
drams = st.builds(
    DramRef, st.sampled_from(list(Region)), _int_field("u32"),
    st.tuples(_int_field("i32"), _int_field("i32"), _int_field("i32"), _int_field("i32")))


def _operand(kind: str):
    if kind == "tensor":
        return tensors
    if kind == "dram":
        return drams
    if kind == "f32":
        return _f32
    return _int_field(kind)


@st.composite
def instrs(draw, opcode=None):
    op = opcode if opcode is not None else draw(st.sampled_from(spec.OPCODES))
    operands = {o.name: draw(_operand(o.kind)) for o in op.fmt.operands}
    deps = Dep(draw(st.integers(0, 15)))
    return Instr.make(op.mnemonic, deps, **operands)


programs = st.lists(instrs(), min_size=0, max_size=12).map(Program)


# ---- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("op", spec.OPCODES, ids=lambda o: o.mnemonic)
@settings(max_examples=60)
@given(data=st.data())
def test_instruction_round_trip_every_opcode(op, data):
    ins = data.draw(instrs(op))
    raw = ins.encode()
    assert len(raw) == op.fmt.size and len(raw) % spec.INSTR_ALIGN == 0
    back = Instr.decode(raw)
    assert back == ins
    assert back.encode() == raw
    assert Instr.from_text(ins.to_text()) == ins
    # the whole-program forms
    prog = Program([ins, Instr.make("end")])
    blob = prog.encode()
    assert Program.decode(blob) == prog
    assert Program.from_text(prog.to_text()) == prog
    assert assemble(disassemble(blob)) == blob


@settings(max_examples=80)
@given(programs)
def test_program_round_trips(prog):
    blob = prog.encode()
    assert Program.decode(blob) == prog
    assert Program.decode(blob).encode() == blob
    text = prog.to_text()
    assert Program.from_text(text) == prog
    assert disassemble(blob) == text
    assert assemble(disassemble(blob)) == blob
    assert assemble(text) == blob


def test_f32_fields_keep_their_bits():
    # -0.0 == 0.0 in Python: compare bytes, not objects
    for v in (-0.0, 0.0, float("inf"), float("-inf"), 1e-45, 3.4028234663852886e38, 0.1, -6.0):
        ins = Instr.make("vclamp", a=_t(), o=_t(), min_f=v, max_f=v)
        raw = ins.encode()
        assert Instr.decode(raw).encode() == raw
        assert Instr.from_text(ins.to_text()).encode() == raw
        off = _field_offset("vclamp", "min_f")
        assert raw[off:off + 4] == struct.pack("<f", v)


def test_f32_operand_is_rounded_to_what_the_encoding_holds():
    ins = Instr.make("vclamp", a=_t(), o=_t(), min_f=0.1, max_f=1.0)
    assert ins["min_f"] == float(np.float32(0.1))
    assert Instr.decode(ins.encode()) == ins


# ---- exact layout -------------------------------------------------------------------------------

def _t(space=Space.ACT, dtype=DType.INT8, addr=0, shape=(1, 1, 1, 16)):
    return TensorRef(space, dtype, addr, shape)


def _field_offset(mnemonic: str, field: str) -> int:
    fmt = spec.BY_MNEMONIC[mnemonic].fmt
    off = spec.INSTR_HEADER.size
    for name, t in fmt.fields:
        if name == field:
            return off
        off += struct.calcsize("<" + spec.SCALAR_TYPES[t][0])
    raise KeyError(field)


def test_documented_sizes_and_codes():
    expected = {"dma.load": (0x01, 48), "dma.store": (0x02, 40), "gemm": (0x10, 56), "conv2d": (0x11, 64),
                "dwconv2d": (0x12, 56), "vadd": (0x20, 88), "vsub": (0x21, 88), "vmul": (0x22, 88),
                "vmax": (0x23, 88), "vmin": (0x24, 88), "vrequant": (0x28, 56), "vclamp": (0x29, 48),
                "vlut": (0x2A, 40), "vfunc": (0x2B, 40), "vpool": (0x2C, 48), "vreduce": (0x2D, 40),
                "vcvt": (0x2E, 32), "sync": (0x30, 8), "barrier": (0x31, 8), "end": (0x3F, 8)}
    got = {op.mnemonic: (op.code, op.fmt.size) for op in spec.OPCODES}
    assert got == expected


def test_gemm_bytes_by_hand():
    a = TensorRef(Space.ACT, DType.INT8, 0x100, (1, 2, 3, 4))
    w = TensorRef(Space.WGT, DType.INT8, 0x20, (1, 1, 4, 16))
    o = TensorRef(Space.ACC, DType.INT32, 0x40, (1, 2, 3, 16))
    raw = Instr.make("gemm", Dep.POP_PREV | Dep.PUSH_NEXT, a=a, w=w, o=o, a_offset=-7, accumulate=1).encode()
    want = struct.pack("<BBH", 0x10, 0b1001, 56)
    for t in (a, w, o):
        want += struct.pack("<BBIHHHH", int(t.space), int(t.dtype), t.addr, *t.shape)
    want += struct.pack("<iB", -7, 1)
    want += bytes(56 - len(want))
    assert raw == want


def test_program_header_by_hand():
    prog = Program([Instr.make("barrier"), Instr.make("end")])
    blob = prog.encode()
    assert blob[:16] == b"NPUP" + struct.pack("<HHII", 1, 0, 2, 16)
    assert blob[16:] == struct.pack("<BBH", 0x31, 0, 8) + bytes(4) + struct.pack("<BBH", 0x3F, 0, 8) + bytes(4)


def test_dram_operand_layout():
    d = DramRef(Region.SCRATCH, 0x1234, (-1, 0, 2**31 - 1, -(2**31)))
    raw = Instr.make("dma.store", src=_t(), dst=d).encode()
    off = _field_offset("dma.store", "dst_region")
    assert struct.unpack_from("<BIiiii", raw, off) == (2, 0x1234, -1, 0, 2**31 - 1, -(2**31))


def test_dense_strides():
    d = DramRef.dense(Region.IO, 64, (2, 3, 5, 7), 2)
    assert d.strides == (3 * 5 * 7 * 2, 5 * 7 * 2, 7 * 2, 2)
    assert d.addr == 64 and d.region == Region.IO


def test_tensor_row_stride_and_nbytes():
    assert TensorRef(Space.ACT, DType.INT8, 0, (1, 2, 3, 1)).row_stride == 16
    assert TensorRef(Space.ACT, DType.INT8, 0, (1, 2, 3, 17)).row_stride == 32
    assert TensorRef(Space.ACT, DType.FP16, 0, (1, 2, 3, 8)).row_stride == 16
    assert TensorRef(Space.ACC, DType.INT32, 0, (1, 2, 3, 5)).row_stride == 32
    assert TensorRef(Space.ACC, DType.INT32, 0, (2, 2, 3, 5)).nbytes == 2 * 2 * 3 * 32
    assert TensorRef(Space.ACC, DType.INT32, 0, (2, 2, 3, 5)).elements == 60


def test_text_syntax():
    t = TensorRef.parse("act:i8@0x100[1,8,8,16]")
    assert t == TensorRef(Space.ACT, DType.INT8, 256, (1, 8, 8, 16))
    assert str(t) == "act:i8@0x100[1,8,8,16]"
    d = DramRef.parse("io@0x40/[4096,256,16,1]")
    assert d == DramRef(Region.IO, 64, (4096, 256, 16, 1))
    assert str(DramRef(Region.CONST, 0, (0, -4, 0, 1))) == "const@0x0/[0,-4,0,1]"
    text = """
    # comment line
    dma.load dst=act:i8@0x0[1,1,1,16] src=io@0x0/[16,16,16,1] pad_value=-3 deps=push_next  ; trailing
    vcvt a=act:i8@0x0[1,1,1,16] o=acc:i32@0x0[1,1,1,16] deps=pop_prev
    end
    """
    prog = Program.from_text(text)
    assert [i.mnemonic for i in prog] == ["dma.load", "vcvt", "end"]
    assert prog.instrs[0].deps == Dep.PUSH_NEXT and prog.instrs[0]["pad_value"] == -3
    assert prog.instrs[0]["pad_top"] == 0  # omitted scalars default to 0
    assert prog.instrs[1].deps == Dep.POP_PREV
    assert Instr.make("conv2d", a=_t(), w=_t(), o=_t())["stride_h"] == 1  # documented defaults


def test_deps_parsing():
    from tvm_npu.isa import parse_deps
    assert parse_deps("pop_prev|push_next") == Dep.POP_PREV | Dep.PUSH_NEXT
    assert parse_deps(["pop_next", "push_prev"]) == Dep.POP_NEXT | Dep.PUSH_PREV
    assert parse_deps(5) == Dep.POP_PREV | Dep.PUSH_PREV
    with pytest.raises(ISAError, match="unknown dependency flag"):
        parse_deps("pop_sideways")


def test_instr_queue():
    assert Instr.make("sync", queue=2).queue == spec.Queue.STORE
    assert Instr.make("dma.load", dst=_t(), src=DramRef(Region.IO, 0, (0, 0, 0, 1))).queue == spec.Queue.LOAD
    assert Instr.make("dma.store", src=_t(), dst=DramRef(Region.IO, 0, (0, 0, 0, 1))).queue == spec.Queue.STORE
    assert Instr.make("vadd", a=_t(), b=_t(), o=_t()).queue == spec.Queue.COMPUTE


# ---- encoder refusals ---------------------------------------------------------------------------

_BAD_SCALARS = {"u8": [-1, 256], "i8": [-129, 128], "u16": [-1, 65536], "i32": [-(2**31) - 1, 2**31],
                "u32": [-1, 2**32]}


def _scalar_fields():
    out = []
    for op in spec.OPCODES:
        for o in op.fmt.operands:
            if o.kind in _BAD_SCALARS:
                out.append((op.mnemonic, o.name, o.kind))
    return out


def _minimal_operands(mnemonic):
    ops = {}
    for o in spec.BY_MNEMONIC[mnemonic].fmt.operands:
        if o.kind == "tensor":
            ops[o.name] = _t()
        elif o.kind == "dram":
            ops[o.name] = DramRef(Region.IO, 0, (0, 0, 0, 1))
    return ops


@pytest.mark.parametrize("mnemonic,field,kind", _scalar_fields())
def test_encoder_refuses_out_of_range_scalar(mnemonic, field, kind):
    for bad in _BAD_SCALARS[kind]:
        ins = Instr.make(mnemonic, **_minimal_operands(mnemonic), **{field: bad})
        with pytest.raises(ISAError, match=f"field {field}="):
            ins.encode()
        prog = Program([Instr.make("barrier"), ins, Instr.make("end")])
        with pytest.raises(ISAError, match=rf"^instruction 1 \({mnemonic}\): "):
            prog.encode()


@pytest.mark.parametrize("bad", [True, 1.5, "3", None])
def test_encoder_refuses_non_integers(bad):
    with pytest.raises(ISAError):
        Instr.make("vrequant", a=_t(), o=_t(), mult=bad).encode()


@pytest.mark.parametrize("part,value", [("addr", 2**32), ("addr", -16), ("n", 0x10000), ("c", -1)])
def test_encoder_refuses_out_of_range_tensor_parts(part, value):
    kw = dict(space=Space.ACT, dtype=DType.INT8, addr=0, shape=[1, 1, 1, 16])
    if part == "addr":
        kw["addr"] = value
    else:
        kw["shape"][{"n": 0, "c": 3}[part]] = value
    t = TensorRef(kw["space"], kw["dtype"], kw["addr"], tuple(kw["shape"]))
    with pytest.raises(ISAError, match="does not fit"):
        Instr.make("vcvt", a=t, o=_t()).encode()


@pytest.mark.parametrize("strides", [(2**31, 0, 0, 1), (0, -(2**31) - 1, 0, 1)])
def test_encoder_refuses_out_of_range_strides(strides):
    with pytest.raises(ISAError, match="does not fit i32"):
        Instr.make("dma.store", src=_t(), dst=DramRef(Region.IO, 0, strides)).encode()


def test_encoder_refuses_f32_overflow_and_wrong_operand_kinds():
    with pytest.raises(ISAError, match="does not fit f32"):
        Instr.make("vclamp", a=_t(), o=_t(), max_f=1e39)
    with pytest.raises(ISAError, match="must be a TensorRef"):
        Instr.make("vcvt", a=DramRef(Region.IO, 0, (0, 0, 0, 1)), o=_t()).encode()
    with pytest.raises(ISAError, match="must be a DramRef"):
        Instr.make("dma.store", src=_t(), dst=_t()).encode()


def test_make_refuses_unknown_or_missing_operands():
    with pytest.raises(ISAError, match="unknown mnemonic"):
        Instr.make("vfrobnicate")
    with pytest.raises(ISAError, match="missing operand 'w'"):
        Instr.make("gemm", a=_t(), o=_t())
    with pytest.raises(ISAError, match="unknown operand"):
        Instr.make("vcvt", a=_t(), o=_t(), bogus=1)


def test_tensor_and_dram_refs_validate_their_shape():
    with pytest.raises(ISAError, match="4 dims"):
        TensorRef(Space.ACT, DType.INT8, 0, (1, 2, 3))
    with pytest.raises(ISAError, match="4 entries"):
        DramRef(Region.IO, 0, (1, 2))
    with pytest.raises(ValueError):
        TensorRef(7, DType.INT8, 0, (1, 1, 1, 1))
    with pytest.raises(ValueError):
        DramRef(3, 0, (1, 1, 1, 1))


# ---- assembler refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ("frob a=1", "unknown mnemonic 'frob'"),
    ("vcvt a=act:i8@0x0[1,1,1,16]", "missing operand 'o'"),
    ("vcvt a=act:i8@0x0[1,1,1,16] o=act:i8@0x0[1,1,1,16] z=3", "unknown operand 'z'"),
    ("vcvt a=act:i8@0x0[1,1,1,16] o=act:q8@0x0[1,1,1,16]", "bad SRAM tensor operand"),
    ("vcvt a=act:i8@0x0[1,1,1] o=act:i8@0x0[1,1,1,16]", "bad SRAM tensor operand"),
    ("vcvt a=act:i8@0x0[1,1,1,16 o=act:i8@0x0[1,1,1,16]", "bad SRAM tensor operand"),
    ("dma.store src=act:i8@0x0[1,1,1,16] dst=rom@0x0/[1,1,1,1]", "bad DRAM operand"),
    ("dma.store src=act:i8@0x0[1,1,1,16] dst=io@0x0[1,1,1,1]", "bad DRAM operand"),
    ("vrequant a=acc:i32@0x0[1,1,1,4] o=act:i8@0x0[1,1,1,4] mult=abc", "not an integer"),
    ("vcvt a=act:i8@0x0[1,1,1,16] o=act:i8@0x0[1,1,1,16] deps=pop_sideways", "unknown dependency flag"),
    ("vcvt a=act:i8@0x0[1,1,1,16] o", "expected name=value"),
])
def test_assembler_errors_name_the_line(text, match):
    with pytest.raises(ISAError, match=match) as e:
        Program.from_text("end\n\n" + text + "\n")
    assert str(e.value).startswith("line 3: ")


def test_assembled_out_of_range_value_is_refused_on_encode():
    with pytest.raises(ISAError, match=r"instruction 0 \(vlut\): .*lut_addr"):
        assemble("vlut a=act:i8@0x0[1,1,1,16] o=act:i8@0x0[1,1,1,16] lut_addr=-1\nend\n")
