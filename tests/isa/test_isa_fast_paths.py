"""The fast paths of isa/program.py (enum tables, one-pass constructors, Instr.make's template, the
generated per-opcode encoders, with_deps) against the straightforward definitions they replace:
the same objects, the same bytes, the same refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_npu.isa import DramRef, Dep, DType, Instr, ISAError, Program, Region, Space, TensorRef, parse_deps, spec


# ---- the reference: encode() as one check per field, then one pack -------------------------------

def reference_encode(ins: Instr) -> bytes:
    """Instr.encode as first written: flatten via fields(), check every field, pack."""
    fmt = ins.opcode.fmt
    flat = []
    for o in fmt.operands:
        v = ins.operands[o.name]
        if o.kind == "tensor":
            if not isinstance(v, TensorRef):
                raise ISAError(f"{ins.mnemonic}: operand {o.name} must be a TensorRef")
            flat.extend(v.fields())
        elif o.kind == "dram":
            if not isinstance(v, DramRef):
                raise ISAError(f"{ins.mnemonic}: operand {o.name} must be a DramRef")
            flat.extend(v.fields())
        else:
            flat.append(v)
    for (name, t), v in zip(fmt.fields, flat):
        _, lo, hi = spec.SCALAR_TYPES[t]
        if t == "f32":
            if not isinstance(v, (int, float)):
                raise ISAError(f"{ins.mnemonic}: field {name} must be a number, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ISAError(f"{ins.mnemonic}: field {name}={v!r} does not fit {t}")
    body = spec.INSTR_HEADER.pack(ins.opcode.code, int(ins.deps), fmt.size) + fmt.struct.pack(*flat)
    return body + bytes(fmt.size - len(body))


def _outcome(fn):
    try:
        return ("ok", fn())
    except ISAError as e:
        return ("ISAError", str(e))
    except (struct.error, OverflowError, ValueError, TypeError) as e:
        return (type(e).__name__, None)


def _same_as_reference(ins: Instr) -> None:
    assert _outcome(ins.encode) == _outcome(lambda: reference_encode(ins))


# ---- strategies: mostly valid, often out of range, sometimes of the wrong type ---------------------

def _int_in(t):
    _, lo, hi = spec.SCALAR_TYPES[t]
    return st.one_of(st.sampled_from([lo, hi, 0, 1]), st.integers(lo, hi), st.sampled_from([lo - 1, hi + 1]))


odd_values = st.sampled_from([True, False, 1.5, np.int64(3), np.int32(-1), np.float32(2.0), np.float64(0.5), None,
                              "7", -0.0, float("inf")])
tensors = st.builds(TensorRef, st.sampled_from(list(Space)), st.sampled_from(list(DType)),
                    st.one_of(_int_in("u32"), odd_values),
                    st.tuples(*[_int_in("u16")] * 4))
drams = st.builds(DramRef, st.sampled_from(list(Region)), st.one_of(_int_in("u32"), odd_values),
                  st.tuples(*[_int_in("i32")] * 4))


def _value(kind):
    if kind == "tensor":
        return st.one_of(tensors, tensors, drams)
    if kind == "dram":
        return st.one_of(drams, drams, tensors)
    if kind == "f32":
        return st.one_of(st.floats(width=32, allow_nan=False), st.integers(-2**40, 2**40), odd_values)
    return st.one_of(_int_in(kind), _int_in(kind), odd_values)


@st.composite
def instrs(draw):
    op = draw(st.sampled_from(spec.OPCODES))
    operands = {o.name: draw(_value(o.kind)) for o in op.fmt.operands}
    return Instr(op, operands, Dep(draw(st.integers(0, 15))))  # straight from the fields: nothing converted


@settings(max_examples=1500)
@given(instrs())
def test_encode_equals_the_field_by_field_encoder(ins):
    _same_as_reference(ins)


@settings(max_examples=300)
@given(st.lists(instrs(), max_size=6))
def test_program_encode_names_the_first_bad_instruction(instrs_):
    prog = Program(list(instrs_))
    want = None
    for i, ins in enumerate(prog):
        status, detail = _outcome(lambda: reference_encode(ins))
        if status == "ISAError":
            want = ("ISAError", f"instruction {i} ({ins.mnemonic}): {detail}")
            break
        if status != "ok":
            want = (status, None)
            break
    got = _outcome(prog.encode)
    if want is None:
        body = b"".join(reference_encode(i) for i in prog)
        assert got == ("ok", spec.PROGRAM_HEADER.pack(spec.PROGRAM_MAGIC, spec.ISA_VERSION, 0, len(prog), len(body))
                       + body)
    else:
        assert got == want


@pytest.mark.parametrize("bad", [True, np.int64(5), 5.0, "5", None])
def test_plain_encoder_leaves_non_int_addresses_to_the_checks(bad):
    t = TensorRef(Space.ACT, DType.INT8, bad, (1, 1, 1, 16))
    with pytest.raises(ISAError, match="a_addr"):
        Instr.make("vcvt", a=t, o=TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 1, 16))).encode()


def test_f32_fields_accept_what_they_always_accepted():
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    for v in (np.float64(0.25), 3, True, -0.0):  # float subclass, int, bool: numbers; -0.0 keeps its sign
        ins = Instr(spec.BY_MNEMONIC["vclamp"], {"a": t, "o": t, "min_i": 0, "max_i": 0, "min_f": v, "max_f": 1.0})
        assert ins.encode() == reference_encode(ins)
    ins = Instr(spec.BY_MNEMONIC["vclamp"], {"a": t, "o": t, "min_i": 0, "max_i": 0, "min_f": np.float32(1),
                                             "max_f": 1.0})
    with pytest.raises(ISAError, match="min_f must be a number"):
        ins.encode()
    ins = Instr(spec.BY_MNEMONIC["vclamp"], {"a": t, "o": t, "min_i": 0, "max_i": 0, "min_f": 1e39, "max_f": 1.0})
    with pytest.raises(OverflowError):  # as before: f32 overflow surfaces from struct
        ins.encode()


def test_subclassed_operands_encode_through_their_fields():
    class Shifted(TensorRef):
        def fields(self):
            space, dtype, addr, *shape = super().fields()
            return (space, dtype, addr + 16, *shape)

    t = Shifted(Space.ACT, DType.INT8, 0, (1, 1, 1, 16))
    ins = Instr.make("vcvt", a=t, o=t)
    assert ins.encode() == reference_encode(ins)
    assert Instr.decode(ins.encode())["a"].addr == 16


# ---- constructors ---------------------------------------------------------------------------------

def test_refs_convert_like_the_enums_do():
    t = TensorRef(1, np.int64(3), 32, [np.int64(1), 2, 3.0, True])
    assert t.space is Space.WGT and t.dtype is DType.FP16
    assert t.shape == (1, 2, 3, 1) and all(type(d) is int for d in t.shape)
    assert TensorRef(Space.ACC, 4, 0, (1, 1, 1, 1)).dtype is DType.FP32
    d = DramRef(2, 0, np.array([1, 2, 3, 4]))
    assert d.region is Region.SCRATCH and d.strides == (1, 2, 3, 4) and type(d.strides[0]) is int
    for bad in (7, -1, "ACT", None, [0]):
        with pytest.raises(ValueError):
            TensorRef(bad, DType.INT8, 0, (1, 1, 1, 1))
        with pytest.raises(ValueError):
            DramRef(bad, 0, (1, 1, 1, 1))
    with pytest.raises(ValueError):
        TensorRef(Space.ACT, 9, 0, (1, 1, 1, 1))
    with pytest.raises(ISAError, match="4 dims"):
        TensorRef(Space.ACT, DType.INT8, 0, [1, 2])
    with pytest.raises(ISAError, match="4 entries"):
        DramRef(Region.IO, 0, (1, 2, 3, 4, 5))


def test_refs_are_frozen_dataclasses_as_before():
    import dataclasses
    t = TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 1, 16))
    assert [f.name for f in dataclasses.fields(t)] == ["space", "dtype", "addr", "shape"]
    assert dataclasses.replace(t, addr=32) == TensorRef(Space.ACT, DType.INT8, 32, (1, 1, 1, 16))
    assert hash(t) == hash(TensorRef(0, 0, 0, [1, 1, 1, 16]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.addr = 5
    ins = Instr.make("vcvt", a=t, o=t)
    assert [f.name for f in dataclasses.fields(ins)] == ["opcode", "operands", "deps"]
    assert dataclasses.replace(ins, deps=Dep.PUSH_NEXT) == Instr(ins.opcode, ins.operands, Dep.PUSH_NEXT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ins.deps = Dep.NONE


# ---- Instr.make, parse_deps, with_deps -------------------------------------------------------------

def test_make_fills_defaults_in_format_order_and_rounds_given_f32():
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    ins = Instr.make("vclamp", a=t, o=t, max_f=0.1)
    assert list(ins.operands) == [o.name for o in ins.opcode.fmt.operands]
    assert ins["min_i"] == 0 and ins["min_f"] == 0.0 and ins["max_f"] == float(np.float32(0.1))
    conv = Instr.make("conv2d", o=t, w=t, a=t)  # any keyword order
    assert list(conv.operands)[:3] == ["a", "w", "o"] and conv["groups"] == 1 and conv["stride_h"] == 1
    assert Instr.make("vclamp", a=t, o=t, min_f="x")["min_f"] == "x"  # kept as given; encode refuses it


def test_make_reports_missing_before_unknown():
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    with pytest.raises(ISAError, match="missing operand 'w'"):
        Instr.make("gemm", a=t, o=t, bogus=1)
    with pytest.raises(ISAError, match=r"unknown operand\(s\) \['x', 'y'\]"):
        Instr.make("vcvt", a=t, o=t, y=1, x=2)


@pytest.mark.parametrize("value", list(range(0, 40)) + [True, False])
def test_parse_deps_of_numbers_is_the_enum(value):
    assert parse_deps(value) == Dep(int(value)) and type(parse_deps(value)) is Dep


def test_with_deps_adds_flags_and_leaves_the_original():
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    ins = Instr.make("vcvt", "pop_prev", a=t, o=t)
    out = ins.with_deps(Dep.PUSH_NEXT)
    assert out.deps == Dep.POP_PREV | Dep.PUSH_NEXT and type(out.deps) is Dep
    assert ins.deps == Dep.POP_PREV and out.operands == ins.operands and out.opcode is ins.opcode
    assert ins.with_deps(int(Dep.POP_PREV)).deps == Dep.POP_PREV
    assert out.encode() == reference_encode(out)


def test_a_missing_operand_fails_where_it_always_did():
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    op = spec.BY_MNEMONIC["vcvt"]
    wrong_first = Instr(op, {"a": DramRef(Region.IO, 0, (0, 0, 0, 2))})  # a is checked before o is looked up
    assert _outcome(wrong_first.encode) == _outcome(lambda: reference_encode(wrong_first))
    with pytest.raises(KeyError):
        Instr(op, {"a": t}).encode()


def test_an_equal_opcode_encodes_like_the_spec_one():
    import dataclasses
    t = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 1, 8))
    ins = Instr.make("vcvt", "push_next", a=t, o=t)
    twin = Instr(dataclasses.replace(ins.opcode), ins.operands, ins.deps)  # equal, not the same object
    assert twin.opcode is not ins.opcode and twin.encode() == ins.encode()
    odd = dataclasses.replace(ins.opcode, code=0x7E)  # not in spec.OPCODES: encoded by its own layout
    assert Instr(odd, ins.operands, ins.deps).encode() == reference_encode(Instr(odd, ins.operands, ins.deps))
