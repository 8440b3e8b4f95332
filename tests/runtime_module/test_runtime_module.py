"""The TVM runtime module of kind "npu": running artifacts, conversions, counters, serialisation,
validation of malformed artifacts and module bytes, and an exported library run in a fresh process."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import reference as ref
from tvm_npu.artifact import Artifact, ArtifactError, IOTensor, ProvenanceRange, QuantParams
from tvm_npu.config import get_config
from tvm_npu.isa import DramRef, DType, Instr, Program, Region, Space, TensorRef

tvm = pytest.importorskip("tvm")
rm = pytest.importorskip("tvm_npu.runtime_module")

MULT, SHIFT, ZP = 1395864371, -8, -5  # ~0.0025 as a TFLite (multiplier, shift)


@pytest.fixture(scope="module", autouse=True)
def _library(npu_emulator):  # skips locally when the native library is not built
    rm.load_library()


# ---- artifacts built by hand -------------------------------------------------------------------

def int8_artifact():
    """y = clamp(MBQM(x @ w) - 5); the IO table lists the output first to check argument order."""
    r = np.random.default_rng(7)
    x = r.integers(-128, 128, (1, 4, 4, 16)).astype(np.int8)
    w = r.integers(-128, 128, (16, 16)).astype(np.int8)
    a = TensorRef(Space.ACT, DType.INT8, 0, (1, 4, 4, 16))
    wt = TensorRef(Space.WGT, DType.INT8, 0, (1, 1, 16, 16))
    acc = TensorRef(Space.ACC, DType.INT32, 0, (1, 4, 4, 16))
    y = TensorRef(Space.ACT, DType.INT8, 256, (1, 4, 4, 16))
    prog = Program([
        Instr.make("dma.load", dst=a, src=DramRef.dense(Region.IO, 0, (1, 4, 4, 16), 1)),
        Instr.make("dma.load", "push_next", dst=wt, src=DramRef.dense(Region.CONST, 0, (1, 1, 16, 16), 1)),
        Instr.make("gemm", "pop_prev", a=a, w=wt, o=acc),
        Instr.make("vrequant", "push_next", a=acc, o=y, mult=MULT, shift=SHIFT, o_offset=ZP, act_min=-128, act_max=127),
        Instr.make("dma.store", "pop_prev", src=y, dst=DramRef.dense(Region.IO, 256, (1, 4, 4, 16), 1)),
        Instr.make("end"),
    ])
    art = Artifact(
        config=get_config("npu-nano"), program=prog.encode(), constants=w.tobytes(),
        io=[IOTensor("y", "output", "int8", (1, 4, 4, 16), 256, "NHWC", QuantParams((0.1,), (ZP,))),
            IOTensor("x", "input", "int8", (1, 4, 4, 16), 0, "NHWC", QuantParams((0.05,), (-3,)))],
        provenance=[ProvenanceRange(0, 2, "npu.dense", "test:load"),
                    ProvenanceRange(2, 4, "npu.dense_requant", "test:MatMul_1 + Quantize_2"),
                    ProvenanceRange(4, 6, "npu.store", "test:store")],
        producer={"test": "int8_artifact"})
    expected = ref.requant(ref.gemm_int(x.reshape(16, 16), w), MULT, SHIFT, ZP, -128, 127).reshape(1, 4, 4, 16)
    return art, x, expected


F16_SHAPE = (2, 3, 16)


def fp16_add_artifact():
    """o = a + b in fp16 (IO tensors a, b, o are float16 [2, 3, 16])."""
    shape4 = (1,) + F16_SHAPE
    ta = TensorRef(Space.ACT, DType.FP16, 0, shape4)
    tb = TensorRef(Space.ACT, DType.FP16, 256, shape4)
    to = TensorRef(Space.ACT, DType.FP16, 512, shape4)
    prog = Program([
        Instr.make("dma.load", dst=ta, src=DramRef.dense(Region.IO, 0, shape4, 2)),
        Instr.make("dma.load", "push_next", dst=tb, src=DramRef.dense(Region.IO, 192, shape4, 2)),
        Instr.make("vadd", "pop_prev,push_next", a=ta, b=tb, o=to),
        Instr.make("dma.store", "pop_prev", src=to, dst=DramRef.dense(Region.IO, 384, shape4, 2)),
        Instr.make("end"),
    ])
    return Artifact(config=get_config("npu-nano"), program=prog.encode(),
                    io=[IOTensor("a", "input", "float16", F16_SHAPE, 0),
                        IOTensor("b", "input", "float16", F16_SHAPE, 192),
                        IOTensor("o", "output", "float16", F16_SHAPE, 384)],
                    provenance=[ProvenanceRange(0, 5, "npu.add", "test:Add_0")])


def copy_artifact(rows: int):
    """o = x, float16 [rows, 16]: isolates the runtime's float32 <-> float16 conversions."""
    shape4 = (1, 1, rows, 16)
    t = TensorRef(Space.ACT, DType.FP16, 0, shape4)
    prog = Program([
        Instr.make("dma.load", "push_next", dst=t, src=DramRef.dense(Region.IO, 0, shape4, 2)),
        Instr.make("sync", "pop_prev,push_next", queue=1),
        Instr.make("dma.store", "pop_prev", src=t, dst=DramRef.dense(Region.IO, rows * 32, shape4, 2)),
        Instr.make("end"),
    ])
    return Artifact(config=get_config("npu-edge"), program=prog.encode(),
                    io=[IOTensor("x", "input", "float16", (rows, 16), 0),
                        IOTensor("o", "output", "float16", (rows, 16), rows * 32)])


def tensor(a):
    return tvm.runtime.tensor(np.ascontiguousarray(a))


def run(mod, symbol, inputs, outputs):
    """Calls the NPU function with tvm tensors; outputs are (shape, dtype) pairs; returns numpy arrays."""
    outs = [tvm.runtime.empty(shape, dtype) for shape, dtype in outputs]
    mod[symbol](*[tensor(a) for a in inputs], *outs)
    return [o.numpy() for o in outs]


@pytest.fixture(scope="module")
def arts():
    int8, x, expected = int8_artifact()
    return {"gemm": (int8, x, expected), "add": fp16_add_artifact()}


@pytest.fixture
def module(arts):
    return rm.create_module({"gemm": arts["gemm"][0].serialize(), "add": arts["add"].serialize()})


# ---- running ------------------------------------------------------------------------------------

def test_int8_gemm_requant(module, arts):
    _, x, expected = arts["gemm"]
    (y,) = run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    np.testing.assert_array_equal(y, expected)
    assert module.kind == "npu"
    assert sorted(module["npu_symbols"]()) == ["add", "gemm"]


def test_fp16_add_with_float32_tensors(module):
    r = np.random.default_rng(3)
    a = (r.standard_normal(F16_SHAPE) * 100).astype(np.float32)
    b = (r.standard_normal(F16_SHAPE) * 100).astype(np.float32)
    a16, b16 = a.astype(np.float16), b.astype(np.float16)
    want = ref.float_binary("vadd", a16, b16, np.float16)
    # float32 in (rounded to the float16 IO entry), float32 out (exact widening)
    (o32,) = run(module, "add", [a, b], [(F16_SHAPE, "float32")])
    assert ref.same_float(o32, want.astype(np.float32))
    # float16 tensors are copied as they are; mixing both kinds works
    (o16,) = run(module, "add", [a16, b], [(F16_SHAPE, "float16")])
    assert ref.same_float(o16, want)


def test_float32_to_float16_rounds_to_nearest_even():
    mod = rm.create_module({"copy": copy_artifact(4096).serialize()})
    r = np.random.default_rng(11)
    bits = r.integers(0, 2**32, 4096 * 16, dtype=np.uint64).astype(np.uint32)
    # concentrate on exponents around the float16 range, where rounding, subnormals and overflow live
    bits[::2] = (bits[::2] & 0x807FFFFF) | (r.integers(100, 145, bits[::2].size).astype(np.uint32) << 23)
    x = bits.view(np.float32)
    x[:36] = [1.0, 1 + 2**-11, 1 + 3 * 2**-11, 1 - 2**-12, 2049, 2051, 65504, 65519.99, 65520, 65536, 1e30,
              -65520, 2**-14, 2**-14 - 2**-25, 2**-24, 2**-25, 2**-25 + 2**-40, 3 * 2**-25, 5 * 2**-25, 2**-26,
              1e-45, -2**-25, -3 * 2**-25, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 0.1, -0.3, 1 / 3,
              2**-24 * 1.5, 2**-24 * 2.5, 2**-15 * 1.0009765625, 6.1e-5]
    x = x.reshape(4096, 16)
    with np.errstate(all="ignore"):
        want = x.astype(np.float16)
    (o16,) = run(mod, "copy", [x], [((4096, 16), "float16")])
    assert ref.same_float(o16, want)


def test_float16_to_float32_is_exact():
    mod = rm.create_module({"copy": copy_artifact(4096).serialize()})
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(4096, 16)
    (o32,) = run(mod, "copy", [every], [((4096, 16), "float32")])
    assert ref.same_float(o32, every.astype(np.float32))
    (back,) = run(mod, "copy", [o32], [((4096, 16), "float16")])  # float32 -> float16 -> float32 round trip
    assert ref.same_float(back, every)


# ---- counters, trace, profile -------------------------------------------------------------------

def test_counters_and_trace_match_the_emulator(module, arts, npu_emulator):
    art, x, _ = arts["gemm"]
    with pytest.raises(ValueError, match="has not run"):
        module["npu_last_counters"]("gemm")
    assert module["npu_run_count"]("gemm") == 0
    run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    assert len(module["npu_last_trace"]("gemm")) == 0  # tracing is off by default
    module["npu_set_trace"](True)
    run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    assert module["npu_run_count"]("gemm") == 2 and module["npu_run_count"]("add") == 0
    _, res = art.run({"x": x}, trace=True)
    got = npu_emulator.Counters._from_native(module["npu_last_counters"]("gemm"))
    assert got == res.counters
    np.testing.assert_array_equal(np.asarray(list(module["npu_last_trace"]("gemm"))).reshape(-1, 4), res.trace)
    module["npu_set_trace"](False)
    run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    assert len(module["npu_last_trace"]("gemm")) == 0  # no stale trace from an earlier run
    assert bytes(module["npu_artifact"]("gemm")) == art.serialize()
    with pytest.raises(ValueError, match="no symbol 'nope'"):
        module["npu_run_count"]("nope")
    assert not module.implements_function("nope")


def test_profile_layers_and_chrome_trace(module, arts):
    art, x, _ = arts["gemm"]
    rm.set_trace(module)
    run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    with pytest.raises(ValueError, match="give a symbol"):
        rm.NPUProfile(module)
    prof = rm.NPUProfile(module, "gemm")
    rows = prof.trace
    assert rows.shape == (6, 4)
    assert prof.counters.cycles == rows[:, 3].max() and prof.run_count == 1
    layers = prof.layers()
    assert [(l.op, l.source, l.start, l.end) for l in layers] == [
        (p.op, p.source, p.start, p.end) for p in art.provenance]
    for l in layers:
        sel = rows[l.start:l.end]
        assert (l.start_cycle, l.end_cycle) == (sel[:, 2].min(), sel[:, 3].max())
        assert l.busy == tuple(int((sel[sel[:, 1] == q, 3] - sel[sel[:, 1] == q, 2]).sum()) for q in range(3))
    assert layers[0].busy[0] == rows[0, 3] - rows[0, 2] + rows[1, 3] - rows[1, 2]  # both loads on LOAD
    events = [e for e in prof.chrome_trace()["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in events] == ["dma.load", "dma.load", "gemm", "vrequant", "dma.store", "end"]
    rm.set_trace(module, False)
    run(module, "gemm", [x], [((1, 4, 4, 16), "int8")])
    with pytest.raises(ValueError, match="set_trace"):
        prof.layers()


# ---- argument errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, exc, match", [
    (lambda x: [x], ValueError, r"takes 2 tensors \(inputs, then outputs: x, y\), got 1"),
    (lambda x: [x, tvm.runtime.empty((1, 4, 4, 16), "int8"), x], ValueError, "takes 2 tensors"),
    (lambda x: [x[:, :2], tvm.runtime.empty((1, 4, 4, 16), "int8")], ValueError,
     r"input tensor 'x' \(argument 0\) has shape \[1, 2, 4, 16\], expected \[1, 4, 4, 16\]"),
    (lambda x: [x.reshape(16, 16), tvm.runtime.empty((1, 4, 4, 16), "int8")], ValueError, "tensor 'x'.*shape"),
    (lambda x: [x.astype(np.uint8), tvm.runtime.empty((1, 4, 4, 16), "int8")], ValueError,
     "tensor 'x'.*dtype uint8, expected int8"),
    (lambda x: [x, tvm.runtime.empty((1, 4, 4, 16), "float32")], ValueError,
     "output tensor 'y'.*dtype float32, expected int8"),
    (lambda x: [x, 3], TypeError, r"argument 1 \(tensor 'y'\) must be a tensor"),
])
def test_argument_errors_name_the_tensor(module, arts, args, exc, match):
    x = arts["gemm"][1]
    call = [tensor(a) if isinstance(a, np.ndarray) else a for a in args(x)]
    with pytest.raises(exc, match=match):
        module["gemm"](*call)
    assert module["npu_run_count"]("gemm") == 0


@pytest.mark.parametrize("a_dtype, out_dtype", [("float64", "float16"), ("int16", "float16"),
                                                ("float16", "float64"), ("float16", "int16")])
def test_only_float32_converts_to_float16(module, a_dtype, out_dtype):
    a = tensor(np.zeros(F16_SHAPE, a_dtype))
    b = tensor(np.zeros(F16_SHAPE, np.float16))
    with pytest.raises(ValueError, match="expected float16 \\(or float32, converted\\)"):
        module["add"](a, b, tvm.runtime.empty(F16_SHAPE, out_dtype))


def test_emulator_errors_name_the_symbol():
    art, x, _ = int8_artifact()
    prog = Program.decode(art.program)
    bad = prog.instrs[0]
    bad = Instr.make("dma.load", dst=bad["dst"], src=DramRef.dense(Region.IO, 1 << 20, (1, 4, 4, 16), 1))
    art.program = Program([bad] + list(prog.instrs[1:])).encode()
    mod = rm.create_module({"oob": art.serialize()})
    with pytest.raises(ValueError, match="npu function 'oob': instruction 0"):
        run(mod, "oob", [x], [((1, 4, 4, 16), "int8")])


# ---- malformed artifacts ------------------------------------------------------------------------

def sections_of(blob: bytes):
    _, _, _, count, _ = struct.unpack_from("<4sHHII", blob)
    out = []
    for i in range(count):
        tag, _, off, size = struct.unpack_from("<4sIQQ", blob, 16 + 24 * i)
        out.append([tag, blob[off:off + size]])
    return out


def build(sections, *, header=None, fix_crc=True):
    """Serialises sections like Artifact.serialize, with valid CRCs unless told otherwise."""
    offset = (16 + 24 * len(sections) + 15) // 16 * 16
    table, body = b"", b""
    for tag, data in sections:
        table += struct.pack("<4sIQQ", tag, zlib.crc32(data) if fix_crc else 0, offset, len(data))
        pad = -len(data) % 16
        body += data + bytes(pad)
        offset += len(data) + pad
    head = (header or struct.pack("<4sHHII", b"NPUA", 1, 1, len(sections), 0)) + table
    return head + bytes(-len(head) % 16) + body


def with_meta(blob: bytes, edit) -> bytes:
    secs = sections_of(blob)
    meta = json.loads(secs[0][1])
    edit(meta)
    secs[0][1] = json.dumps(meta, sort_keys=True).encode()
    return build(secs)


def with_section(blob: bytes, tag: bytes, data: bytes) -> bytes:
    return build([[t, data if t == tag else d] for t, d in sections_of(blob)])


def _both(*edits):
    def edit(meta):
        for e in edits:
            e(meta)
    return edit


def _set(path, value):
    def edit(meta):
        obj = meta
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value(obj[path[-1]]) if callable(value) else value
    return edit


META_CASES = [
    (_set(["config"], KeyError), "META.config is missing"),
    (_set(["config", "mac_rows"], "16"), "META.config.mac_rows must be an integer"),
    (_set(["config", "mac_rows"], True), "META.config.mac_rows must be an integer"),
    (_set(["config", "mac_rows"], 16.0), "META.config.mac_rows must be an integer"),
    (_set(["config", "mac_rows"], 0), "META.config"),
    (_set(["config", "act_sram_bytes"], 1000), "META.config"),
    (_set(["config", "name"], 3), "META.config.name must be a string"),
    (_set(["config", "name"], KeyError), "META.config.name is missing"),
    (_set(["config", "name"], ""), "META.config.name must not be empty"),
    (_set(["config", "turbo"], 1), "unknown field turbo"),
    # NPUConfig.from_dict fills defaulted fields; the C++ reader wants all, like npu_emulator.execute
    (_set(["config", "half_rate_factor"], KeyError), "half_rate_factor is missing", "python accepts"),
    (_set(["io", 1, "dtype"], "float64"), r"META.io\[1\].dtype 'float64' is not one of"),
    (_set(["io", 1, "dtype"], "bool"), "is not one of"),
    (_set(["io", 1, "nbytes"], lambda v: v + 1), r"META.io\[1\].nbytes 257 disagrees"),
    (_set(["io", 1, "shape"], [1, -4, 4, 16]), "negative dimension"),
    (_set(["io", 1, "shape"], [1 << 40, 1 << 40]), "too large"),
    (_set(["io", 1, "shape"], [1, 4.0, 4, 16]), r"META.io\[1\].shape must be a list of integers"),
    (_set(["io", 1, "shape"], "1x4"), r"shape must be a list"),
    (_set(["io", 1, "kind"], "inout"), "must be 'input' or 'output'"),
    (_set(["io", 1, "name"], "y"), "duplicate name"),
    (_set(["io", 1, "name"], KeyError), r"META.io\[1\].name is missing"),
    (_set(["io", 1, "offset"], 128), "'x' and 'y' overlap"),
    (_set(["io", 1, "offset"], -16), "offset -16 outside"),
    (_set(["io", 1, "layout"], KeyError), "layout is missing"),
    (_set(["io", 1, "quant", "scale"], [0.1, 0.2]), "scale and zero_point must be equally long"),
    (_both(_set(["io", 1, "quant", "scale"], [0.1, 0.2]), _set(["io", 1, "quant", "zero_point"], [1, 2])),
     "per-tensor quantisation needs exactly one scale"),
    (_set(["io", 1, "quant", "zero_point"], [1.5]), "zero_point must be a list of integers"),
    (_set(["io", 1, "quant", "axis"], "0"), "axis must be an integer or null"),
    (_set(["io", 1, "quant", "axis"], 9), "per-axis quantisation"),
    (_set(["io", 1, "quant"], [1]), "quant must be a JSON object"),
    (_set(["io", 1], 7), r"META.io\[1\] must be a JSON object"),
    (_set(["io"], {}), "META.io must be a list"),
    (_set(["io_bytes"], 4096), "META.io_bytes 4096 disagrees"),
    (_set(["scratch_bytes"], -1), "scratch_bytes -1 outside"),
    (_set(["scratch_bytes"], 1.5), "scratch_bytes must be an integer"),
    (_set(["scratch_bytes"], 2**32 + 1), r"scratch_bytes 4294967297 outside \[0, 4 GiB\]"),
    (_set(["format_version"], 2), "versions disagree"),
    (_set(["isa_version"], KeyError), "isa_version is missing"),
    (_set(["provenance", 0, "end"], 99), r"provenance range \[0, 99\) of 'npu.dense' is outside the 6-instruction"),
    (_set(["provenance", 0, "end"], 0), "provenance range"),
    (_set(["provenance", 0, "op"], 3), r"META.provenance\[0\].op must be a string"),
    (_set(["provenance"], None), "META.provenance must be a list"),
    (_set(["producer"], []), "META.producer must be a JSON object"),
]


@pytest.mark.parametrize("edit, match, python_accepts", [(c[0], c[1], len(c) > 2) for c in META_CASES],
                         ids=[c[1] for c in META_CASES])
def test_malformed_meta_is_refused_by_both_readers(edit, match, python_accepts):
    blob = with_meta(int8_artifact()[0].serialize(), edit)
    if python_accepts:
        Artifact.deserialize(blob)
    else:
        with pytest.raises(ArtifactError):
            Artifact.deserialize(blob)
    with pytest.raises(ValueError, match="symbol 'f': artifact: .*" + match):
        rm.create_module({"f": blob})


GOOD = None


def _good():
    global GOOD
    if GOOD is None:
        GOOD = int8_artifact()[0].serialize()
    return GOOD


def _header(**kw):
    f = dict(magic=b"NPUA", fmt=1, isa=1, count=3, reserved=0)
    f.update(kw)
    return struct.pack("<4sHHII", f["magic"], f["fmt"], f["isa"], f["count"], f["reserved"])


def _patch_entry(blob, index, offset=None, size=None, tag=None):
    b = bytearray(blob)
    t, crc, off, sz = struct.unpack_from("<4sIQQ", b, 16 + 24 * index)
    struct.pack_into("<4sIQQ", b, 16 + 24 * index, tag or t, crc, off if offset is None else offset,
                     sz if size is None else size)
    return bytes(b)


def _meta_text(text: bytes):
    secs = sections_of(_good())
    secs[0][1] = text
    return build(secs)


STRUCT_CASES = [
    (lambda: b"", "truncated: 0 bytes"),
    (lambda: _good()[:10], "truncated: 10 bytes"),
    (lambda: b"NPUB" + _good()[4:], "not an NPU artifact"),
    (lambda: _header(fmt=2) + _good()[16:], "format version 2"),
    (lambda: _header(isa=9) + _good()[16:], "built for ISA v9"),
    (lambda: _header(count=9) + _good()[16:], "section table of 9 entries"),
    (lambda: _header(count=4) + _good()[16:], "section META: offset 96 size .* lies outside"),
    (lambda: _good()[:80], "section table of 3 entries does not fit the 80-byte artifact"),
    (lambda: _good()[:200], "section META: .* lies outside the 200-byte artifact"),
    (lambda: _patch_entry(_good(), 1, size=2**64 - 1), "lies outside"),
    (lambda: _patch_entry(_good(), 1, offset=2**64 - 16, size=32), "lies outside"),
    (lambda: _patch_entry(_good(), 1, offset=8), "lies outside"),
    (lambda: _patch_entry(_good(), 1, tag=b"ZZZZ"), "unknown tag 'ZZZZ'"),
    (lambda: _patch_entry(_good(), 1, tag=b"META"), "section META appears twice"),
    (lambda: build(sections_of(_good()), fix_crc=False), "CRC mismatch"),
    (lambda: build(sections_of(_good())[:2], header=_header(count=2)), "missing section CNST"),
    (lambda: with_section(_good(), b"PROG", b"NPUP"), "section PROG: truncated program header"),
    (lambda: with_section(_good(), b"PROG", b"XXXX" + _good_prog()[4:]), "bad program magic"),
    (lambda: with_section(_good(), b"PROG", _good_prog()[:-8]), "bytes of instructions"),
    (lambda: with_section(_good(), b"PROG", _prog_patch(16, 0x77)), "instruction 0: unknown opcode 119"),
    (lambda: with_section(_good(), b"PROG", _prog_patch(18, 40)), r"instruction 0 \(dma.load\): bad length"),
    (lambda: with_section(_good(), b"PROG", _prog_patch(17, 0x30)), "unknown dependency flag"),
    (lambda: with_section(_good(), b"PROG", _prog_count(5)), "8 bytes after the declared instructions"),
    (lambda: with_section(_good(), b"PROG", _prog_count(7)), "instruction 6: truncated"),
    (lambda: _meta_text(b"{not json"), "section META is not valid JSON"),
    (lambda: _meta_text(b"\xff\xfe{}"), "section META is not valid JSON"),
    # Python's json recurses (RecursionError, not ArtifactError); the C++ reader refuses before parsing
    (lambda: _meta_text(b"[" * 100000 + b"]" * 100000), "nested deeper than 64", (ArtifactError, RecursionError)),
    (lambda: _meta_text(b"[]"), "META must be a JSON object"),
]


def _good_prog():
    return dict((bytes(t), d) for t, d in sections_of(_good()))[b"PROG"]


def _prog_patch(pos, value):
    p = bytearray(_good_prog())
    p[pos] = value
    return bytes(p)


def _prog_count(count):
    p = bytearray(_good_prog())
    struct.pack_into("<I", p, 8, count)
    return bytes(p)


@pytest.mark.parametrize("make, match, py_error", [c + (ArtifactError,) * (3 - len(c)) for c in STRUCT_CASES],
                         ids=[c[1] for c in STRUCT_CASES])
def test_malformed_container_is_refused_by_both_readers(make, match, py_error):
    blob = make()
    with pytest.raises(py_error):
        Artifact.deserialize(blob)
    with pytest.raises(ValueError, match=match):
        rm.create_module({"f": blob})


def test_crc32_matches_zlib():
    # The CRC is checked per section: a section whose stored CRC is zlib's must load, for odd sizes too.
    art, _, _ = int8_artifact()
    for n in (0, 1, 3, 15, 17, 255):
        art.constants = bytes(range(256))[:n] + bytes(256 - n)
        rm.create_module({"f": art.serialize()})


# ---- serialisation ------------------------------------------------------------------------------

def test_save_load_round_trip(module, arts):
    data = rm.save_to_bytes(module)
    again = rm.create_module({"add": arts["add"].serialize(), "gemm": arts["gemm"][0].serialize()})
    assert rm.save_to_bytes(again) == data  # deterministic: sorted by symbol, no timestamps
    loaded = tvm.get_global_func("ffi.Module.load_from_bytes.npu")(data)
    assert loaded.kind == "npu" and sorted(loaded["npu_symbols"]()) == ["add", "gemm"]
    assert bytes(loaded["npu_artifact"]("gemm")) == arts["gemm"][0].serialize()
    _, x, expected = arts["gemm"]
    (y,) = run(loaded, "gemm", [x], [((1, 4, 4, 16), "int8")])
    np.testing.assert_array_equal(y, expected)


def _module_bytes(symbols):
    out = b"NPUM" + struct.pack("<IQ", 1, len(symbols))
    for name, blob in symbols:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<Q", len(blob)) + blob
    return out


@pytest.mark.parametrize("data, match", [
    (b"", "truncated magic"),
    (b"NPUX" + bytes(12), "bad magic"),
    (b"NPUM" + struct.pack("<IQ", 2, 0), "serialisation version 2"),
    (b"NPUM" + struct.pack("<IQ", 1, 2**63), "symbols cannot fit"),
    (_module_bytes([(b"f", b"")])[:-1] + b"", "truncated"),
    (_module_bytes([(b"f", b"x" * 20)])[:-3], r"truncated artifact \(20 bytes needed, 17 left\)"),
    (_module_bytes([(b"f", b"x")]).replace(struct.pack("<Q", 1) + b"f", struct.pack("<Q", 2**64 - 1) + b"f", 1),
     "truncated symbol name"),
    (_module_bytes([(b"", b"x")]), "empty symbol name"),
    (_module_bytes([(b"f", b"garbage")]), "symbol 'f': artifact: truncated: 7 bytes"),
])
def test_load_from_bytes_refuses_bad_module_bytes(data, match):
    with pytest.raises(ValueError, match=match):
        rm.load_from_bytes(data)


def test_load_from_bytes_refuses_duplicates_and_trailing_bytes():
    good = _good()
    assert rm.load_from_bytes(_module_bytes([(b"f", good), (b"g", good)]))["npu_symbols"]() == ["f", "g"]
    with pytest.raises(ValueError, match="symbol 'f' appears twice"):
        rm.load_from_bytes(_module_bytes([(b"f", good), (b"f", good)]))
    with pytest.raises(ValueError, match="1 trailing bytes"):
        rm.load_from_bytes(_module_bytes([(b"f", good)]) + b"\0")


def _check_loaded(m, x, expected):
    """A module that loaded from mutated bytes must still behave: run it, errors allowed, no crash."""
    for sym in m["npu_symbols"]():
        try:
            if sym == "gemm":
                (y,) = run(m, sym, [x], [((1, 4, 4, 16), "int8")])
                np.testing.assert_array_equal(y, expected)  # mutations of padding must not change results
        except ValueError:
            pass


def test_fuzz_module_bytes(module, arts):
    """Truncations, bit flips, byte overwrites and length-field rewrites: ValueError or a working module."""
    _, x, expected = arts["gemm"]
    data = rm.save_to_bytes(module)
    r = np.random.default_rng(2024)
    loaded = refused = 0
    for i in range(600):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:
            b = b[:r.integers(0, len(b))]
        elif kind == 1:
            for _ in range(r.integers(1, 9)):
                pos = r.integers(0, len(b))
                b[pos] ^= 1 << r.integers(0, 8)
        elif kind == 2:
            pos = r.integers(0, len(b) - 8)
            b[pos:pos + 8] = r.integers(0, 256, 8, dtype=np.uint8).tobytes()
        else:  # a u64 length field (or the count) set to something large or small
            pos = [8, 16, 25, 33][r.integers(0, 4)]
            values = [0, 1, 2**63, 2**64 - 1, len(b), int(r.integers(0, 5000))]
            struct.pack_into("<Q", b, pos, values[r.integers(0, len(values))])
        try:
            m = rm.load_from_bytes(bytes(b))
        except ValueError:
            refused += 1
            continue
        loaded += 1
        _check_loaded(m, x, expected)
    assert refused > 500 and loaded > 0  # flips in section padding still load


def test_fuzz_artifact_sections_with_valid_crc(arts):
    """Mutated META text and PROG bytes with recomputed CRCs get past the CRC check, so the JSON
    validation, the program framing and the emulator's own validation all see garbage."""
    _, x, _ = arts["gemm"]
    good = arts["gemm"][0].serialize()
    secs = sections_of(good)
    r = np.random.default_rng(99)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(400):
        which = i % 2  # 0: META, 1: PROG
        data = bytearray(secs[which][1])
        for _ in range(r.integers(1, 4)):
            pos = r.integers(0, len(data))
            data[pos] = r.integers(0, 256) if r.random() < 0.5 else data[pos] ^ (1 << r.integers(0, 8))
        mutated = [[t, bytes(data) if k == which else d] for k, (t, d) in enumerate(secs)]
        try:
            m = rm.create_module({"f": build(mutated)})
        except ValueError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        try:
            run(m, "f", [x], [((1, 4, 4, 16), "int8")])
        except ValueError:
            pass
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0


# ---- in a compiled Relax program, exported and loaded in a fresh process ------------------------

def _relax_program(npu_mod):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 4, 16], "int8"))
    a = relax.Var("a", relax.TensorType(list(F16_SHAPE), "float32"))
    b = relax.Var("b", relax.TensorType(list(F16_SHAPE), "float32"))
    with bb.function("main", [x, a, b]):
        y = bb.emit(relax.call_dps_packed("gemm", (x,), relax.TensorType([1, 4, 4, 16], "int8")))
        # float32 tensors through a float16 artifact: the VM hands float32 buffers, the module converts
        o = bb.emit(relax.call_dps_packed("add", (a, b), relax.TensorType(list(F16_SHAPE), "float32")))
        out = bb.emit(relax.Tuple([y, o]))
        bb.emit_func_output(out)
    return tvm.compile(bb.get().with_attr("external_mods", [npu_mod]), target="llvm")


FRESH = textwrap.dedent("""
    import sys, numpy as np, tvm
    from tvm import relax
    import tvm_npu.runtime_module as rm
    rm.load_library()  # registers ffi.Module.load_from_bytes.npu before loading
    lib = tvm.runtime.load_module(sys.argv[1])
    npu = rm.find_npu_modules(lib)
    assert len(npu) == 1 and sorted(npu[0]["npu_symbols"]()) == ["add", "gemm"], npu
    rm.set_trace(lib)
    vm = relax.VirtualMachine(lib, tvm.cpu())
    inputs = np.load(sys.argv[2])
    y, o = vm["main"](*[tvm.runtime.tensor(inputs[k]) for k in ("x", "a", "b")])
    prof = rm.NPUProfile(lib, "gemm")
    np.savez(sys.argv[3], y=y.numpy(), o=o.numpy(), cycles=prof.counters.cycles, layers=len(prof.layers()))
""")


def test_export_library_and_run_in_fresh_process(module, arts, tmp_path):
    from tvm import relax

    ex = _relax_program(module)
    assert [m.kind for m in rm.find_npu_modules(ex.mod)] == ["npu"]
    vm = relax.VirtualMachine(ex, tvm.cpu())
    assert len(rm.find_npu_modules(vm.module)) == 1
    _, x, expected = arts["gemm"]
    r = np.random.default_rng(5)
    a = (r.standard_normal(F16_SHAPE) * 10).astype(np.float32)
    b = (r.standard_normal(F16_SHAPE) * 10).astype(np.float32)
    y, o = vm["main"](tensor(x), tensor(a), tensor(b))
    np.testing.assert_array_equal(y.numpy(), expected)
    want = ref.float_binary("vadd", a.astype(np.float16), b.astype(np.float16), np.float16).astype(np.float32)
    assert ref.same_float(o.numpy(), want)
    assert rm.NPUProfile(vm.module, "add").run_count == 1

    lib_path = tmp_path / "npu_lib.so"
    ex.export_library(str(lib_path))
    np.savez(tmp_path / "in.npz", x=x, a=a, b=b)
    proc = subprocess.run([sys.executable, "-c", FRESH, str(lib_path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["y"], expected)
        assert ref.same_float(got["o"], want)
        assert int(got["layers"]) == 3 and int(got["cycles"]) > 0
