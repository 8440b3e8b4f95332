"""Fuzzing: random bytes, mutated programs, random well-formed instructions and corrupted artifacts give a
ValueError or a successful run, never another exception and never a crash. Successful random programs
must also agree with the independent schedule model (timing and counters)."""

from __future__ import annotations

import json
import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import model_schedule, pack_artifact_sections, sample_artifact
from tvm_npu.artifact import Artifact
from tvm_npu.config import PRESETS
from tvm_npu.isa import DramRef, DType, Instr, Program, Region, Space, TensorRef, spec

NANO = PRESETS["npu-nano"]
IO_BYTES, CONST_BYTES, SCRATCH_BYTES = 2048, 1024, 512


def _run(emu, blob: bytes, cfg=NANO):
    """Runs a program; returns the result, or the ValueError. Anything else propagates (a test failure)."""
    try:
        return emu.Emulator(cfg).run(blob, const=bytes(range(256)) * 4, io=np.full(IO_BYTES, 7, np.uint8),
                                     scratch_bytes=SCRATCH_BYTES, trace=True)
    except ValueError as e:
        msg = str(e)
        assert msg.startswith(("instruction ", "program: ")), msg
        return e


def _python_agrees(blob: bytes, outcome) -> None:
    """A program the emulator runs must decode in Python (the artifact loader checks with it)."""
    if not isinstance(outcome, Exception):
        Program.decode(blob)


def _seed_programs():
    art, _, _ = sample_artifact()
    t = TensorRef(Space.ACT, DType.INT8, 0, (1, 2, 2, 16))
    f = TensorRef(Space.ACT, DType.FP16, 256, (1, 2, 2, 8))
    other = Program([
        Instr.make("dma.load", "push_next", dst=t, src=DramRef(Region.IO, 0, (64, 32, 16, 1)), pad_value=-1),
        Instr.make("vadd", "pop_prev", a=t, b=t, o=t, a_mult=2**30, b_mult=2**30, o_mult=2**30, left_shift=2,
                   act_min=-128, act_max=127),
        Instr.make("vfunc", a=f, o=f, func=2),
        Instr.make("vpool", "push_next", a=t, o=TensorRef(Space.ACT, DType.INT8, 512, (1, 1, 1, 16)), mode=1, kh=2,
                   kw=2, stride_h=2, stride_w=2, act_min=-128, act_max=127),
        Instr.make("dma.store", "pop_prev", src=t, dst=DramRef(Region.SCRATCH, 0, (64, 32, 16, 1))),
        Instr.make("barrier"),
        Instr.make("end"),
    ])
    return [art.program, other.encode()]


def test_seed_programs_run(npu_emulator):
    for blob in _seed_programs():
        assert not isinstance(_run(npu_emulator, blob), Exception)


def test_random_bytes(npu_emulator):
    r = random.Random(1)
    header = spec.PROGRAM_HEADER
    for i in range(1500):
        n = r.randrange(0, 200)
        body = bytes(r.getrandbits(8) for _ in range(n))
        if i % 2:  # behind a valid header, so the instruction decoder sees the bytes
            body = header.pack(b"NPUP", 1, 0, r.randrange(0, 8), len(body)) + body
        _python_agrees(body, _run(npu_emulator, body))


def test_mutated_programs(npu_emulator):
    r = random.Random(2)
    seeds = _seed_programs()
    ok = 0
    for i in range(3000):
        blob = bytearray(r.choice(seeds))
        kind = i % 4
        if kind == 0:  # bit flips
            for _ in range(r.randrange(1, 4)):
                pos = r.randrange(len(blob))
                blob[pos] ^= 1 << r.randrange(8)
        elif kind == 1:  # truncation, with and without a header that agrees
            blob = blob[:r.randrange(len(blob))]
            if len(blob) >= 16 and r.random() < 0.5:
                struct.pack_into("<I", blob, 12, len(blob) - 16)
        elif kind == 2:  # a field overwritten with an edge value
            pos = r.randrange(16, len(blob) - 3)
            width = r.choice([1, 2, 4])
            val = r.choice([0, 1, 0xFF, 0x7F, 0x80, 0xFFFF, 0x8000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 16, 4096])
            blob[pos:pos + width] = (val & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        else:  # an instruction duplicated or dropped (header fixed up)
            prog = Program.decode(bytes(blob))
            instrs = list(prog.instrs)
            j = r.randrange(len(instrs))
            if r.random() < 0.5:
                instrs.insert(j, instrs[j])
            else:
                del instrs[j]
            blob = bytearray(Program(instrs).encode())
        outcome = _run(npu_emulator, bytes(blob))
        _python_agrees(bytes(blob), outcome)
        ok += not isinstance(outcome, Exception)
    assert 0 < ok < 3000  # both outcomes happen


# ---- random well-formed instructions with plausible fields -----------------------------------------

_small_dim = st.sampled_from([1, 1, 2, 3, 4, 16])
_addr = st.sampled_from([0, 16, 32, 64, 256, 1024, 8, 65520])
_tensor = st.builds(TensorRef, st.sampled_from(list(Space)), st.sampled_from(list(DType)), _addr,
                    st.tuples(_small_dim, _small_dim, _small_dim, _small_dim))
_dram = st.builds(DramRef, st.sampled_from(list(Region)), st.sampled_from([0, 16, 100, 2000]),
                  st.tuples(*[st.sampled_from([0, 1, 2, 16, 64, -1, -16]) for _ in range(4)]))
_scalar = {
    "u8": st.sampled_from([0, 1, 2, 3, 255]), "i8": st.sampled_from([-32, -31, -1, 0, 1, 31, 32]),
    "u16": st.sampled_from([0, 1, 2, 3]), "i32": st.sampled_from([-(2**31), -129, -128, -1, 0, 1, 127, 2**30]),
    "u32": st.sampled_from([0, 16, 256, 65536]), "f32": st.sampled_from([-1.0, 0.0, 1.0, float("inf")]),
}


@st.composite
def _instr(draw):
    op = draw(st.sampled_from([o for o in spec.OPCODES if o.mnemonic != "end"]))
    ops = {}
    for o in op.fmt.operands:
        if o.kind == "tensor":
            ops[o.name] = draw(_tensor)
        elif o.kind == "dram":
            ops[o.name] = draw(_dram)
        elif o.name in ("stride_h", "stride_w", "dilation_h", "dilation_w", "kh", "kw", "groups"):
            ops[o.name] = draw(st.sampled_from([1, 1, 2, 0]))
        elif o.name == "queue":
            ops[o.name] = draw(st.sampled_from([0, 1, 2, 3]))
        else:
            ops[o.name] = draw(_scalar[o.kind])
    return Instr.make(op.mnemonic, draw(st.integers(0, 15)), **ops)


@settings(max_examples=400)
@given(st.lists(_instr(), min_size=0, max_size=8), st.booleans())
def test_random_wellformed_programs(npu_emulator, instrs, with_end):
    prog = Program(instrs + ([Instr.make("end")] if with_end else []))
    blob = prog.encode()
    outcome = _run(npu_emulator, blob)
    _python_agrees(blob, outcome)
    if isinstance(outcome, Exception):
        if "deadlock" in str(outcome):
            with pytest.raises(ValueError):
                model_schedule(prog, NANO)
        return
    times, counters = model_schedule(prog, NANO)
    assert [tuple(r[2:]) for r in outcome.trace.tolist()] == times
    got = outcome.counters.to_dict()
    for key, value in counters.items():
        assert got[key] == value, key


# ---- random valid programs: the emulator runs them and its schedule is the model's ---------------------

_ADDR = st.sampled_from([0, 256, 1024, 4096])
_DEPS_OK = {0: (2, 8), 1: (1, 2, 4, 8), 2: (1, 4)}  # legal flag bits per queue


def _t(draw, space, dtype, shape):
    return TensorRef(space, dtype, draw(_ADDR), shape)


@st.composite
def _valid_instr(draw):
    kind = draw(st.sampled_from(["load", "store", "gemm", "conv", "dwconv", "binary", "requant", "clamp", "lut",
                                 "func", "pool", "reduce", "cvt", "sync", "barrier"]))
    d = st.integers(1, 3)
    n, h, w, c = 1, draw(d), draw(d), draw(st.sampled_from([1, 3, 16, 20]))
    A, W, C = Space.ACT, Space.WGT, Space.ACC
    i8, i16, i32, f16, f32 = DType.INT8, DType.INT16, DType.INT32, DType.FP16, DType.FP32
    if kind == "load":
        dt = draw(st.sampled_from(list(DType)))
        pads = [draw(st.integers(0, 1)) for _ in range(4)]
        dst = _t(draw, draw(st.sampled_from([A, W, C])), dt, (n, h + pads[0] + pads[1], w + pads[2] + pads[3], c))
        es = spec.DTYPE_SIZE[dt]
        src = DramRef(draw(st.sampled_from([Region.IO, Region.CONST])), draw(st.sampled_from([0, 16, 64])),
                      (0, w * c * es, c * es, es))
        ins = Instr.make("dma.load", dst=dst, src=src, pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2],
                         pad_right=pads[3], pad_value=draw(st.integers(-200, 200)))
    elif kind == "store":
        dt = draw(st.sampled_from(list(DType)))
        es = spec.DTYPE_SIZE[dt]
        ins = Instr.make("dma.store", src=_t(draw, A, dt, (n, h, w, c)),
                         dst=DramRef(draw(st.sampled_from([Region.IO, Region.SCRATCH])), 0, (0, w * c * es, c * es, es)))
    elif kind in ("gemm", "conv", "dwconv"):
        adt = draw(st.sampled_from([i8, i16, f16]))
        wdt, odt = (f16, f32) if adt == f16 else (i8, i32)
        off = 0 if adt == f16 else draw(st.integers(-128, 127))
        acc = draw(st.integers(0, 1))
        if kind == "gemm":
            k = draw(st.sampled_from([1, 5, 16]))
            ins = Instr.make("gemm", a=_t(draw, A, adt, (1, h, w, k)), w=_t(draw, W, wdt, (1, 1, k, c)),
                             o=_t(draw, C, odt, (1, h, w, c)), a_offset=off, accumulate=acc)
        else:
            kh, kw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            if kind == "conv":
                g = draw(st.sampled_from([1, 2]))
                cin, cout = 2 * draw(st.integers(1, 4)), 2 * draw(st.integers(1, 4))
                ins = Instr.make("conv2d", a=_t(draw, A, adt, (1, h + kh - 1, w + kw - 1, cin)),
                                 w=_t(draw, W, wdt, (kh, kw, cin // g, cout)), o=_t(draw, C, odt, (1, h, w, cout)),
                                 groups=g, a_offset=off, accumulate=acc)
            else:
                mult = draw(st.integers(1, 2))
                ins = Instr.make("dwconv2d", a=_t(draw, A, adt, (1, h + kh - 1, w + kw - 1, c)),
                                 w=_t(draw, W, wdt, (kh, kw, 1, c * mult)), o=_t(draw, C, odt, (1, h, w, c * mult)),
                                 a_offset=off, accumulate=acc)
    elif kind == "binary":
        dt = draw(st.sampled_from([i8, i16, i32, f16, f32]))
        sp = draw(st.sampled_from([A, C]))
        bshape = (1, draw(st.sampled_from([1, h])), 1, draw(st.sampled_from([1, c])))
        ins = Instr.make(draw(st.sampled_from(["vadd", "vsub", "vmul", "vmax", "vmin"])), a=_t(draw, sp, dt, (n, h, w, c)),
                         b=_t(draw, sp, dt, bshape), o=_t(draw, sp, dt, (n, h, w, c)), a_mult=2**30, b_mult=2**30,
                         a_shift=draw(st.integers(-3, 0)), left_shift=draw(st.integers(0, 8)), o_mult=2**30,
                         o_shift=draw(st.integers(-3, 0)), act_min=-100, act_max=100)
    elif kind == "requant":
        fp = draw(st.booleans())
        ins = Instr.make("vrequant", a=_t(draw, C, f32 if fp else i32, (n, h, w, c)),
                         o=_t(draw, A, f16 if fp else draw(st.sampled_from([i8, i16])), (n, h, w, c)),
                         mult=draw(st.integers(0, 2**31 - 1)), shift=draw(st.integers(-31, 31)),
                         o_offset=draw(st.integers(-10, 10)), act_min=-128, act_max=127)
    elif kind == "clamp":
        dt = draw(st.sampled_from(list(DType)))
        ins = Instr.make("vclamp", a=_t(draw, A, dt, (n, h, w, c)), o=_t(draw, A, dt, (n, h, w, c)), min_i=-5,
                         max_i=5, min_f=-1.0, max_f=1.0)
    elif kind == "lut":
        ins = Instr.make("vlut", a=_t(draw, A, i8, (n, h, w, c)), o=_t(draw, A, i8, (n, h, w, c)),
                         lut_addr=draw(_ADDR))
    elif kind == "func":
        ins = Instr.make("vfunc", a=_t(draw, A, draw(st.sampled_from([f16, f32])), (n, h, w, c)),
                         o=_t(draw, A, draw(st.sampled_from([f16, f32])), (n, h, w, c)), func=draw(st.integers(0, 6)))
    elif kind == "pool":
        dt = draw(st.sampled_from([i8, i16, f16, f32]))
        ins = Instr.make("vpool", a=_t(draw, A, dt, (n, h + 1, w + 1, c)), o=_t(draw, A, dt, (n, h, w, c)),
                         mode=draw(st.integers(0, 1)), kh=2, kw=2, pad_top=draw(st.integers(0, 1)),
                         pad_left=draw(st.integers(0, 1)), act_min=-128, act_max=127)
    elif kind == "reduce":
        dt = draw(st.sampled_from([i8, i16, f16, f32]))
        mode, axis = draw(st.integers(0, 1)), draw(st.integers(0, 3))
        oshape = [n, h, w, c]
        oshape[axis] = 1
        odt = dt if mode == 1 else (f32 if dt in (f16, f32) else i32)
        ins = Instr.make("vreduce", a=_t(draw, A, dt, (n, h, w, c)), o=_t(draw, C, odt, tuple(oshape)), mode=mode,
                         axis=axis)
    elif kind == "cvt":
        adt, odt = draw(st.sampled_from([(i8, i32), (i16, i32), (f16, f32), (f32, f16), (i8, i8), (f32, f32)]))
        ins = Instr.make("vcvt", a=_t(draw, A, adt, (n, h, w, c)), o=_t(draw, C, odt, (n, h, w, c)))
    elif kind == "sync":
        ins = Instr.make("sync", queue=draw(st.integers(0, 2)))
    else:
        return Instr.make("barrier")
    legal = _DEPS_OK[int(ins.queue)]
    # pushes often, pops rarely: most random programs then schedule instead of deadlocking
    deps = sum(b for b in legal if draw(st.integers(0, 5 if b in (1, 2) else 1)) == 0)
    return Instr.make(ins.mnemonic, deps, **dict(ins.operands))


@settings(max_examples=300)
@given(st.lists(_valid_instr(), min_size=1, max_size=10))
def test_random_valid_programs_match_the_model(npu_emulator, instrs):
    prog = Program(instrs + [Instr.make("end")])
    outcome = _run(npu_emulator, prog.encode())
    try:
        times, counters = model_schedule(prog, NANO)
    except ValueError:
        assert isinstance(outcome, ValueError) and "deadlock" in str(outcome), outcome
        return
    if isinstance(outcome, ValueError):
        # only data can refuse a valid program at run time: IO / CONST / SCRATCH bounds of DMA
        assert "outside the" in str(outcome), outcome
        return
    assert [tuple(r[2:]) for r in outcome.trace.tolist()] == times
    got = outcome.counters.to_dict()
    for key, value in counters.items():
        assert got[key] == value, key


@settings(max_examples=150)
@given(st.lists(st.sampled_from(["sync0", "sync1", "sync2", "barrier"]), min_size=1, max_size=12),
       st.lists(st.integers(0, 15), min_size=12, max_size=12))
def test_random_token_programs_match_the_model(npu_emulator, kinds, flags):
    """Only control instructions with random tokens: deadlock or a schedule equal to the model's."""
    instrs = []
    for kind, f in zip(kinds, flags):
        if kind == "barrier":
            instrs.append(Instr.make("barrier"))
        else:
            q = int(kind[-1])
            if q == 0:
                f &= ~(1 | 4)  # no previous queue
            if q == 2:
                f &= ~(2 | 8)  # no next queue
            instrs.append(Instr.make("sync", f, queue=q))
    prog = Program(instrs + [Instr.make("end")])
    outcome = _run(npu_emulator, prog.encode())
    try:
        times, counters = model_schedule(prog, NANO)
    except ValueError:
        assert isinstance(outcome, ValueError) and "deadlock" in str(outcome)
        return
    assert not isinstance(outcome, Exception), outcome
    assert [tuple(r[2:]) for r in outcome.trace.tolist()] == times
    for key, value in counters.items():
        assert outcome.counters.to_dict()[key] == value, key


# ---- corrupted artifacts ------------------------------------------------------------------------

def _fix_crcs(blob: bytearray) -> None:
    _, _, _, count, _ = struct.unpack_from("<4sHHII", blob)
    for i in range(min(count, 4)):
        off = 16 + 24 * i
        if off + 24 > len(blob):
            return
        tag, crc, start, size = struct.unpack_from("<4sIQQ", blob, off)
        if start + size <= len(blob):
            struct.pack_into("<I", blob, off + 4, zlib.crc32(bytes(blob[start:start + size])))


def _meta_variants(art: Artifact):
    """Artifacts whose META is valid JSON but semantically odd: they load or fail with ArtifactError."""
    base = json.loads(json.dumps(art.meta()))
    r = random.Random(4)
    for _ in range(60):
        meta = json.loads(json.dumps(base))
        path = r.choice([("io", 0, "offset"), ("io", 1, "offset"), ("io", 0, "shape"), ("scratch_bytes",),
                         ("config", "act_sram_bytes"), ("io", 0, "dtype"), ("provenance", 0, "end"), ("io_bytes",)])
        obj = meta
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = r.choice([0, -1, 1, 10**12, "x", None, [], [1, 2], 3.5, 2**31, 16])
        yield json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def test_corrupted_artifacts(npu_emulator):
    art, x, expected = sample_artifact()
    blob = art.serialize()
    r = random.Random(3)
    loaded = ran = 0
    for i in range(1500):
        bad = bytearray(blob)
        kind = i % 4
        if kind == 0:
            for _ in range(r.randrange(1, 6)):
                bad[r.randrange(len(bad))] ^= 1 << r.randrange(8)
        elif kind == 1:
            bad = bad[:r.randrange(len(bad))]
        elif kind == 2:  # corrupt, then make the CRCs agree so the damage reaches the parsers
            for _ in range(r.randrange(1, 4)):
                bad[r.randrange(16, len(bad))] = r.getrandbits(8)
            _fix_crcs(bad)
        else:
            pos = r.randrange(len(bad) - 4)
            bad[pos:pos + 4] = r.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff", b"\0\0\0\x80"])
            _fix_crcs(bad)
        try:
            loaded_art = Artifact.deserialize(bytes(bad))
        except ValueError:
            continue
        loaded += 1
        try:
            outs, _ = loaded_art.run({t.name: np.zeros(t.shape, t.dtype) for t in loaded_art.inputs})
            ran += 1
        except ValueError:
            pass
    assert loaded > 0


def test_semantically_odd_artifacts(npu_emulator):
    art, x, _ = sample_artifact()
    blob = art.serialize()
    secs = []
    _, _, _, count, _ = struct.unpack_from("<4sHHII", blob)
    for i in range(count):
        tag, crc, off, size = struct.unpack_from("<4sIQQ", blob, 16 + 24 * i)
        secs.append((tag, blob[off:off + size]))
    for meta in _meta_variants(art):
        bad = pack_artifact_sections([(t, meta if t == b"META" else d) for t, d in secs])
        try:
            loaded = Artifact.deserialize(bad)
        except ValueError:
            continue
        try:
            loaded.run({t.name: np.zeros(t.shape, t.dtype) for t in loaded.inputs})
        except ValueError:
            pass


def test_artifact_programs_fuzzed_through_the_loader(npu_emulator):
    """Replace PROG with mutated programs (valid CRC): the loader or the emulator refuses, or it runs."""
    art, x, _ = sample_artifact()
    r = random.Random(5)
    for i in range(300):
        prog = bytearray(art.program)
        for _ in range(r.randrange(1, 4)):
            prog[r.randrange(16, len(prog))] = r.getrandbits(8)
        candidate = Artifact(art.config, bytes(prog), art.constants, art.io, art.scratch_bytes, [], {})
        try:
            loaded = Artifact.deserialize(candidate.serialize())
        except ValueError:
            continue
        try:
            loaded.run({"x": x})
        except ValueError as e:
            assert str(e).startswith(("instruction ", "program: "))
