"""The artifact: exact layout, round trip, reproducible bytes, every refusal on load, IO packing, runs."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest

import reference as ref
from helpers import artifact_sections, pack_artifact_sections, sample_artifact
from tvm_npu.artifact import Artifact, ArtifactError, IOTensor, ProvenanceRange, QuantParams
from tvm_npu.config import PRESETS
from tvm_npu.isa import Instr, Program

HEADER = struct.Struct("<4sHHII")
ENTRY = struct.Struct("<4sIQQ")
_sections, _pack = artifact_sections, pack_artifact_sections


def _with_meta(blob: bytes, mutate) -> bytes:
    secs = [(t, d) for t, _, _, _, d in _sections(blob)]
    out = []
    for tag, data in secs:
        if tag == b"META":
            meta = json.loads(data)
            mutate(meta)
            data = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        out.append((tag, data))
    return _pack(out)


@pytest.fixture(scope="module")
def art():
    return sample_artifact()[0]


@pytest.fixture(scope="module")
def blob(art):
    return art.serialize()


# ---- layout and round trip ----------------------------------------------------------------------

def test_layout_by_hand(art, blob):
    magic, fmt, isa, count, reserved = HEADER.unpack_from(blob)
    assert (magic, fmt, isa, count, reserved) == (b"NPUA", 1, 1, 4, 0)
    secs = _sections(blob)
    assert [s[0] for s in secs] == [b"META", b"PROG", b"CNST", b"GOLD"]
    end_of_table = HEADER.size + ENTRY.size * count
    prev_end = end_of_table
    for tag, crc, off, size, data in secs:
        assert off % 16 == 0 and off >= prev_end
        assert blob[prev_end:off] == bytes(off - prev_end)  # no padding garbage
        assert zlib.crc32(data) == crc
        prev_end = off + size
    assert len(blob) == (prev_end + 15) // 16 * 16 and blob[prev_end:] == bytes(len(blob) - prev_end)
    by_tag = {s[0]: s[4] for s in secs}
    assert by_tag[b"PROG"] == art.program
    assert by_tag[b"CNST"] == art.constants
    meta_text = by_tag[b"META"].decode()
    meta = json.loads(meta_text)
    assert meta_text == json.dumps(meta, sort_keys=True, separators=(",", ":"))
    assert meta["format_version"] == 1 and meta["isa_version"] == 1
    assert meta["config"] == PRESETS["npu-nano"].to_dict()
    assert meta["io_bytes"] == 512 and meta["scratch_bytes"] == 0
    assert meta["io"][0] == {"name": "x", "kind": "input", "dtype": "int8", "shape": [1, 4, 4, 16], "offset": 0,
                             "nbytes": 256, "layout": "NHWC",
                             "quant": {"scale": [0.05], "zero_point": [-3], "axis": None}}
    assert meta["provenance"][1] == {"start": 2, "end": 6, "op": "npu.dense_requant",
                                     "source": "test:MatMul_1 + Quantize_2"}
    with np.load(io.BytesIO(by_tag[b"GOLD"]), allow_pickle=False) as z:
        assert sorted(z.files) == ["x", "y"]
        np.testing.assert_array_equal(z["y"], art.golden["y"])


def test_round_trip(art, blob):
    back = Artifact.deserialize(blob)
    assert back.config == art.config
    assert back.program == art.program and back.constants == art.constants
    assert back.io == art.io
    assert back.scratch_bytes == art.scratch_bytes
    assert back.provenance == art.provenance
    assert back.producer == art.producer
    assert sorted(back.golden) == sorted(art.golden)
    for k in art.golden:
        assert back.golden[k].dtype == art.golden[k].dtype
        np.testing.assert_array_equal(back.golden[k], art.golden[k])
    assert back.serialize() == blob
    assert Artifact.deserialize(bytearray(blob)).serialize() == blob


def test_round_trip_without_golden_and_with_custom_config():
    cfg = PRESETS["npu-edge"].replace(name="custom", vector_lanes=24, dma_setup_cycles=10)
    art = sample_artifact(cfg, golden=False, scratch_bytes=4096, provenance=[])[0]
    blob = art.serialize()
    assert [s[0] for s in _sections(blob)] == [b"META", b"PROG", b"CNST"]
    back = Artifact.deserialize(blob)
    assert back.golden is None and back.config == cfg and back.scratch_bytes == 4096
    assert back.serialize() == blob


def test_serialisation_is_deterministic():
    a1 = sample_artifact()[0]
    a2 = sample_artifact()[0]
    # the same content inserted in another order must give the same bytes
    a2.producer = dict(reversed(list(a2.producer.items())))
    a2.golden = dict(reversed(list(a2.golden.items())))
    assert a1.serialize() == a1.serialize() == a2.serialize()


def test_io_properties(art):
    assert art.io_bytes == 512
    assert [t.name for t in art.inputs] == ["x"] and [t.name for t in art.outputs] == ["y"]
    assert art.io[0].nbytes == 256
    assert IOTensor("z", "output", "float32", (2, 3), 0).nbytes == 24
    assert Artifact(PRESETS["npu-nano"], Program([Instr.make("end")]).encode()).io_bytes == 0


# ---- refusals on load ---------------------------------------------------------------------------

def test_crc_corruption_in_every_section(blob):
    for tag, crc, off, size, data in _sections(blob):
        for pos in {off, off + size // 2, off + size - 1}:
            bad = bytearray(blob)
            bad[pos] ^= 0x40
            with pytest.raises(ArtifactError, match=rf"section {tag.decode()}: CRC mismatch"):
                Artifact.deserialize(bytes(bad))


def test_corrupted_crc_field(blob):
    bad = bytearray(blob)
    bad[HEADER.size + ENTRY.size + 4] ^= 1  # PROG's CRC
    with pytest.raises(ArtifactError, match="section PROG: CRC mismatch"):
        Artifact.deserialize(bytes(bad))


@pytest.mark.parametrize("n,match", [(0, "truncated artifact: 0 bytes"), (15, "truncated artifact"),
                                     (16, "section table of 4 entries does not fit"),
                                     (100, "section table of 4 entries does not fit")])
def test_truncated_header_and_table(blob, n, match):
    with pytest.raises(ArtifactError, match=match):
        Artifact.deserialize(blob[:n])


def test_truncation_anywhere_is_refused(blob):
    for n in range(0, len(blob) - 1, 7):
        if blob[n:].strip(b"\0") == b"":
            continue  # only padding removed
        with pytest.raises(ArtifactError):
            Artifact.deserialize(blob[:n])
    last = _sections(blob)[-1]
    with pytest.raises(ArtifactError, match=r"section GOLD: bytes \[\d+, \d+\) lie outside"):
        Artifact.deserialize(blob[:last[2] + last[3] - 1])


@pytest.mark.parametrize("field,value,match", [
    ("magic", b"NPUX", r"not an NPU artifact \(magic b'NPUX'"),
    ("fmt", 2, "artifact format version 2; this tvm_npu reads 1"),
    ("fmt", 0, "artifact format version 0"),
    ("isa", 2, "artifact is for ISA v2; this tvm_npu implements ISA v1"),
])
def test_wrong_magic_and_versions(blob, field, value, match):
    bad = bytearray(blob)
    if field == "magic":
        bad[:4] = value
    else:
        struct.pack_into("<H", bad, {"fmt": 4, "isa": 6}[field], value)
    with pytest.raises(ArtifactError, match=match):
        Artifact.deserialize(bytes(bad))


def test_program_of_another_isa_version_is_refused(art):
    prog = bytearray(art.program)
    struct.pack_into("<H", prog, 4, 2)
    secs = [(t, bytes(prog) if t == b"PROG" else d) for t, _, _, _, d in _sections(art.serialize())]
    with pytest.raises(ArtifactError, match="section PROG: program: ISA version 2"):
        Artifact.deserialize(_pack(secs))


def test_section_table_errors(blob):
    secs = [(t, d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match=r"section 1: unknown tag b'XTRA'"):
        Artifact.deserialize(_pack([secs[0], (b"XTRA", b"123"), secs[1], secs[2]]))
    with pytest.raises(ArtifactError, match="section PROG appears twice"):
        Artifact.deserialize(_pack([secs[0], secs[1], secs[1], secs[2]]))
    with pytest.raises(ArtifactError, match=r"missing section\(s\): CNST"):
        Artifact.deserialize(_pack([secs[0], secs[1]]))
    with pytest.raises(ArtifactError, match=r"missing section\(s\): META, PROG, CNST"):
        Artifact.deserialize(_pack([]))
    with pytest.raises(ArtifactError, match="does not fit"):
        Artifact.deserialize(_pack(secs + [(b"GOLD", b"")] * 2))  # more entries than known tags
    # an entry whose bytes overlap the table
    bad = bytearray(blob)
    struct.pack_into("<Q", bad, HEADER.size + 8, 0)
    with pytest.raises(ArtifactError, match="section META: bytes .* lie outside"):
        Artifact.deserialize(bytes(bad))
    bad = bytearray(blob)
    struct.pack_into("<Q", bad, HEADER.size + 16, 2**63)
    with pytest.raises(ArtifactError, match="section META: bytes .* lie outside"):
        Artifact.deserialize(bytes(bad))


def test_meta_not_json(blob):
    secs = [(t, b"{not json" if t == b"META" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="section META is not valid JSON"):
        Artifact.deserialize(_pack(secs))
    secs = [(t, b"\xff\xfe" if t == b"META" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="section META is not valid JSON"):
        Artifact.deserialize(_pack(secs))
    secs = [(t, b"[1, 2]" if t == b"META" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="META must be a JSON object"):
        Artifact.deserialize(_pack(secs))


def _set(path, value):
    if path is None:
        return value

    def mutate(meta):
        obj = meta
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        elif callable(value):
            obj[path[-1]] = value(obj[path[-1]])
        else:
            obj[path[-1]] = value
    return mutate


@pytest.mark.parametrize("path,value,match", [
    (("format_version",), 2, "META versions disagree"),
    (("isa_version",), "1", r"META.isa_version must be int"),
    (("config",), "npu-edge", r"META.config must be dict"),
    (("config", "mac_rows"), 0, r"META.config: NPUConfig.mac_rows must be in"),
    (("config", "act_sram_bytes"), 1000, r"META.config: .*multiple of 16"),
    (("config", "warp_drive"), 1, r"META.config: unknown NPUConfig field"),
    (("config", "name"), KeyError, r"META.config: NPUConfig is missing field"),
    (("io",), {}, r"META.io must be list"),
    (("io", 0, "dtype"), "bfloat16", r"META.io\[0\].dtype 'bfloat16' is not one of"),
    (("io", 0, "shape"), [1, 4, 4, True], r"META.io\[0\].shape must be a list of numbers"),
    (("io", 0, "nbytes"), 255, r"META.io\[0\].nbytes disagrees"),
    (("io", 0, "offset"), KeyError, r"META.io\[0\].offset is missing"),
    (("io", 0, "kind"), "inout", r"IO tensor 'x': kind must be 'input' or 'output'"),
    (("io", 1, "name"), "x", r"IO tensor 'x': duplicate name"),
    (("io", 1), lambda t: {**t, "offset": 128}, r"META.io_bytes disagrees"),
    (None, lambda m: m["io"][1].update(offset=128) or m.update(io_bytes=384), r"IO tensors 'x' and 'y' overlap"),
    (("io", 0, "offset"), -4, r"negative shape or offset"),
    (("io", 0, "quant", "axis"), "c", r"META.io\[0\].quant.axis must be an integer or null"),
    (("io", 0, "quant"), {"scale": [0.1, 0.2], "zero_point": [0, 0], "axis": None},
     r"per-tensor quantisation needs exactly one scale"),
    (("io", 0, "quant", "zero_point"), [1, 2], r"scale and zero_point must be equally long"),
    (("io", 0, "quant", "scale"), [], r"scale and zero_point must be equally long"),
    (("io_bytes",), 511, r"META.io_bytes disagrees with the IO table"),
    (("scratch_bytes",), -1, r"scratch_bytes is negative"),
    (("scratch_bytes",), 1.5, r"META.scratch_bytes must be int"),
    (("provenance", 1, "end"), 7, r"provenance range \[2, 7\) of 'npu.dense_requant' is outside"),
    (("provenance", 0, "start"), 2, r"provenance range \[2, 2\)"),
    (("provenance", 0, "op"), 3, r"META.provenance\[0\].op must be str"),
    (("producer",), [], r"META.producer must be dict"),
])
def test_meta_field_errors(blob, path, value, match):
    with pytest.raises(ArtifactError, match=match):
        Artifact.deserialize(_with_meta(blob, _set(path, value)))


def test_per_axis_quant_is_accepted_and_checked(blob):
    def per_axis(meta):
        meta["io"][0]["quant"] = {"scale": [0.1] * 16, "zero_point": [0] * 16, "axis": 3}
    back = Artifact.deserialize(_with_meta(blob, per_axis))
    assert back.io[0].quant == QuantParams(tuple([0.1] * 16), tuple([0] * 16), 3)

    def wrong_axis(meta):
        meta["io"][0]["quant"] = {"scale": [0.1] * 16, "zero_point": [0] * 16, "axis": 2}
    with pytest.raises(ArtifactError, match="one scale per element of axis"):
        Artifact.deserialize(_with_meta(blob, wrong_axis))


def test_gold_not_npz(blob):
    secs = [(t, b"PK\x03\x04garbage" if t == b"GOLD" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="section GOLD is not a valid .npz"):
        Artifact.deserialize(_pack(secs))


def test_undecodable_program(blob):
    secs = [(t, d[:-3] if t == b"PROG" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="section PROG: program: header says"):
        Artifact.deserialize(_pack(secs))


def test_serialize_refuses_inconsistent_artifacts():
    art = sample_artifact()[0]
    art.io = art.io + [IOTensor("z", "output", "int8", (4,), 500)]
    with pytest.raises(ArtifactError, match="IO tensors 'y' and 'z' overlap"):
        art.serialize()
    art = sample_artifact(provenance=[ProvenanceRange(0, 99, "npu.x", "y")])[0]
    with pytest.raises(ArtifactError, match="outside the 6-instruction program"):
        art.serialize()
    art = sample_artifact(program=b"junk")[0]
    with pytest.raises(ArtifactError, match="section PROG: program: truncated header"):
        art.serialize()
    art = sample_artifact(io=[IOTensor("x", "input", "complex64", (4,), 0)])[0]
    with pytest.raises(ArtifactError, match="dtype 'complex64'"):
        art.serialize()


# ---- IO packing ---------------------------------------------------------------------------------

def test_pack_and_unpack():
    art, x, y = sample_artifact()
    region = art.pack_inputs({"x": x})
    assert region.dtype == np.uint8 and region.shape == (512,)
    assert region[:256].tobytes() == x.tobytes() and not region[256:].any()
    region[256:] = y.reshape(-1).view(np.uint8)
    outs = art.unpack_outputs(region)
    assert list(outs) == ["y"]
    np.testing.assert_array_equal(outs["y"], y)
    assert outs["y"].dtype == np.int8 and outs["y"].shape == (1, 4, 4, 16)
    assert outs["y"].base is None or not np.shares_memory(outs["y"], region)


def test_pack_mixed_dtypes_at_offsets():
    art = sample_artifact(io=[IOTensor("a", "input", "float16", (3,), 0),
                              IOTensor("b", "input", "int32", (2, 2), 16),
                              IOTensor("c", "output", "float32", (2,), 32)])[0]
    a = np.array([1.5, -2, 65504], np.float16)
    b = np.array([[1, -1], [2**31 - 1, -(2**31)]], np.int32)
    region = art.pack_inputs({"a": a, "b": b})
    assert region.size == 40
    assert region[:6].tobytes() == a.tobytes() and not region[6:16].any()
    assert region[16:32].tobytes() == b.tobytes()
    region[32:40] = np.array([0.5, -3], np.float32).view(np.uint8)
    np.testing.assert_array_equal(art.unpack_outputs(region)["c"], np.array([0.5, -3], np.float32))


def test_pack_inputs_errors():
    art, x, _ = sample_artifact()
    with pytest.raises(ValueError, match=r"unknown input\(s\) \['q'\]"):
        art.pack_inputs({"x": x, "q": x})
    with pytest.raises(ValueError, match="missing input 'x'"):
        art.pack_inputs({})
    with pytest.raises(ValueError, match=r"input 'x' must be int8\[1, 4, 4, 16\], got int16"):
        art.pack_inputs({"x": x.astype(np.int16)})
    with pytest.raises(ValueError, match=r"got int8\[1, 16, 16\]"):
        art.pack_inputs({"x": x.reshape(1, 16, 16)})
    # a non-contiguous view of the right dtype and shape is fine
    big = np.zeros((1, 4, 4, 32), np.int8)
    big[..., ::2] = x
    np.testing.assert_array_equal(art.pack_inputs({"x": big[..., ::2]})[:256], x.reshape(-1).view(np.uint8))


# ---- running ------------------------------------------------------------------------------------

def test_run_matches_numpy(npu_emulator):
    art, x, expected = sample_artifact()
    outs, res = art.run({"x": x})
    assert outs["y"].dtype == np.int8
    np.testing.assert_array_equal(outs["y"], expected)
    assert res.counters.macs == 16 * 16 * 16
    # and the same through a serialise / deserialise cycle
    outs2, res2 = Artifact.deserialize(art.serialize()).run({"x": x})
    np.testing.assert_array_equal(outs2["y"], expected)
    assert res2.counters.to_dict() == res.counters.to_dict()


def test_run_on_every_preset(npu_emulator):
    for name in PRESETS:
        art, x, expected = sample_artifact(name)
        np.testing.assert_array_equal(art.run({"x": x})[0]["y"], expected)


def test_verify_golden(npu_emulator):
    art = sample_artifact()[0]
    assert art.verify() == {"y": 0.0}
    assert Artifact.deserialize(art.serialize()).verify() == {"y": 0.0}
    wrong = dict(art.golden)
    wrong["y"] = wrong["y"].copy()
    wrong["y"][0, 1, 2, 3] = np.int8(wrong["y"][0, 1, 2, 3] ^ 0x10)
    art.golden = wrong
    assert art.verify() == {"y": 16.0}
    art.golden = None
    with pytest.raises(ArtifactError, match="carries no golden"):
        art.verify()


def test_run_with_trace(npu_emulator):
    art, x, expected = sample_artifact()
    outs, res = art.run({"x": x}, trace=True)
    np.testing.assert_array_equal(outs["y"], expected)
    assert res.trace.shape == (6, 4)


def test_reference_of_the_sample(npu_emulator):
    """Guards the sample itself: its expected output is not trivially saturated or constant."""
    _, _, expected = sample_artifact()
    assert len(np.unique(expected)) > 50
    assert ref.INT32_MIN < 0


# ---- robustness: a corrupted or hostile artifact gives an ArtifactError, nothing else ------------------

@pytest.mark.parametrize("meta", [b"[" * 100000, b'{"a":' * 100000], ids=["array", "object"])
def test_deeply_nested_meta_is_an_artifact_error(blob, meta):
    """json.loads raises RecursionError (a RuntimeError) on deep nesting; the loader must turn it into
    an ArtifactError like every other malformed META."""
    secs = [(t, meta if t == b"META" else d) for t, _, _, _, d in _sections(blob)]
    with pytest.raises(ArtifactError, match="META"):
        Artifact.deserialize(_pack(secs))


def test_absurd_io_table_is_refused_before_allocating(npu_emulator):
    """An IO table declaring a 1 TiB output loads and then makes run() allocate the IO region: it must
    be refused with a ValueError (ArtifactError), not end in MemoryError (or, for a few GiB, in the
    host running out of memory)."""
    art, x, _ = sample_artifact(golden=False)
    art.io = [art.io[0], IOTensor("y", "output", "int8", (2**20, 2**20), 256)]
    try:
        loaded = Artifact.deserialize(art.serialize())
    except ArtifactError:
        return
    try:
        loaded.run({"x": x})
    except ValueError:
        return
    except MemoryError as e:
        pytest.fail(f"run() raised {type(e).__name__} instead of a ValueError: {e}")
