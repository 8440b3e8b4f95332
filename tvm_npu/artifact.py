"""The executable artifact: program, constants, IO table, configuration and provenance in one blob.

Layout (little-endian; docs/ARTIFACT.md is the full description):

    header   magic "NPUA", u16 format version, u16 ISA version, u32 section count, u32 reserved
    table    per section: 4-byte tag, u32 CRC-32 of the data, u64 offset, u64 size
    data     sections, each starting on a 16-byte boundary

Sections: ``META`` (UTF-8 JSON: config, IO table, scratch size, provenance, producer), ``PROG`` (the
encoded program), ``CNST`` (the CONST region), optionally ``GOLD`` (golden inputs and outputs for a
``verify`` replay, an ``.npz``). Serialisation is deterministic: the same artifact gives the same
bytes. Everything is validated on load; a bad artifact raises ``ArtifactError`` saying what is wrong.
"""

from __future__ import annotations

import dataclasses
import io as _io
import json
import math
import struct
import zlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import NPUConfig
from .errors import NPUError
from .isa import ISA_VERSION, ISAError, Program

__all__ = ["Artifact", "ArtifactError", "IOTensor", "QuantParams", "ProvenanceRange", "FORMAT_VERSION"]

MAGIC = b"NPUA"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHHII")
_ENTRY = struct.Struct("<4sIQQ")
_ALIGN = 16
_REQUIRED = (b"META", b"PROG", b"CNST")
_KNOWN = _REQUIRED + (b"GOLD",)
_IO_DTYPES = ("int8", "uint8", "int16", "int32", "float16", "float32")
_MAX_SECTION_BYTES = 1 << 34
_MAX_REGION_BYTES = 1 << 32


class ArtifactError(NPUError, ValueError):
    """The artifact is malformed, corrupted, or built for another ISA or format version."""

    exit_code = 5


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Affine quantisation of an IO tensor: real = scale * (q - zero_point), per tensor or along axis."""

    scale: Tuple[float, ...]
    zero_point: Tuple[int, ...]
    axis: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}


@dataclasses.dataclass(frozen=True)
class IOTensor:
    """A model input or output as it lives in the IO region (byte offset, dtype, shape, layout)."""

    name: str
    kind: str  # "input" or "output"
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]
    offset: int
    layout: str = ""  # e.g. "NHWC"; empty when not an image tensor
    quant: Optional[QuantParams] = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> Dict[str, Any]:
        d = {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape),
             "offset": self.offset, "nbytes": self.nbytes, "layout": self.layout}
        if self.quant is not None:
            d["quant"] = self.quant.to_dict()
        return d


@dataclasses.dataclass(frozen=True)
class ProvenanceRange:
    """Instructions [start, end) were produced for one source operator of the user's model."""

    start: int
    end: int
    op: str  # the NPU composite (naming contract npu.<op>[_<fusion>])
    source: str  # the source operator(s) and their location in the original model

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Artifact:
    config: NPUConfig
    program: bytes
    constants: bytes = b""
    io: List[IOTensor] = dataclasses.field(default_factory=list)
    scratch_bytes: int = 0
    provenance: List[ProvenanceRange] = dataclasses.field(default_factory=list)
    producer: Dict[str, Any] = dataclasses.field(default_factory=dict)
    golden: Optional[Dict[str, np.ndarray]] = None

    @property
    def io_bytes(self) -> int:
        return max((t.offset + t.nbytes for t in self.io), default=0)

    @property
    def inputs(self) -> List[IOTensor]:
        return [t for t in self.io if t.kind == "input"]

    @property
    def outputs(self) -> List[IOTensor]:
        return [t for t in self.io if t.kind == "output"]

    def meta(self) -> Dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "isa_version": ISA_VERSION,
            "config": self.config.to_dict(),
            "io": [t.to_dict() for t in self.io],
            "io_bytes": self.io_bytes,
            "scratch_bytes": self.scratch_bytes,
            "provenance": [p.to_dict() for p in self.provenance],
            "producer": self.producer,
        }

    # ---- serialisation -------------------------------------------------------------------
    def serialize(self) -> bytes:
        self.verify_structure(decode_program=False)
        sections = [
            (b"META", json.dumps(self.meta(), sort_keys=True, separators=(",", ":")).encode()),
            (b"PROG", bytes(self.program)),
            (b"CNST", bytes(self.constants)),
        ]
        if self.golden is not None:
            buf = _io.BytesIO()
            # Sorted keys and no timestamps (np.savez writes none) keep the bytes reproducible.
            np.savez(buf, **{k: self.golden[k] for k in sorted(self.golden)})
            sections.append((b"GOLD", buf.getvalue()))
        offset = _align(_HEADER.size + _ENTRY.size * len(sections))
        table, blobs = [], []
        for tag, data in sections:
            table.append(_ENTRY.pack(tag, zlib.crc32(data), offset, len(data)))
            pad = _align(offset + len(data)) - (offset + len(data))
            blobs.append(data + bytes(pad))
            offset += len(data) + pad
        head = _HEADER.pack(MAGIC, FORMAT_VERSION, ISA_VERSION, len(sections), 0) + b"".join(table)
        head += bytes(_align(len(head)) - len(head))
        return head + b"".join(blobs)

    @classmethod
    def deserialize(cls, blob: bytes) -> "Artifact":
        blob = bytes(blob)
        if len(blob) < _HEADER.size:
            raise ArtifactError(f"truncated artifact: {len(blob)} bytes, header needs {_HEADER.size}")
        magic, fmt_version, isa_version, count, _ = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise ArtifactError(f"not an NPU artifact (magic {magic!r}, expected {MAGIC!r})")
        if fmt_version != FORMAT_VERSION:
            raise ArtifactError(f"artifact format version {fmt_version}; this tvm_npu reads {FORMAT_VERSION}")
        if isa_version != ISA_VERSION:
            raise ArtifactError(f"artifact is for ISA v{isa_version}; this tvm_npu implements ISA v{ISA_VERSION}")
        if count > len(_KNOWN) or _HEADER.size + count * _ENTRY.size > len(blob):
            raise ArtifactError(f"section table of {count} entries does not fit the {len(blob)}-byte artifact")
        sections: Dict[bytes, bytes] = {}
        for i in range(count):
            tag, crc, offset, size = _ENTRY.unpack_from(blob, _HEADER.size + i * _ENTRY.size)
            if tag not in _KNOWN:
                raise ArtifactError(f"section {i}: unknown tag {tag!r}")
            if tag in sections:
                raise ArtifactError(f"section {tag.decode()} appears twice")
            if size > _MAX_SECTION_BYTES or offset + size > len(blob) or offset < _HEADER.size + count * _ENTRY.size:
                raise ArtifactError(f"section {tag.decode()}: bytes [{offset}, {offset + size}) lie outside "
                                    f"the {len(blob)}-byte artifact")
            data = blob[offset:offset + size]
            if zlib.crc32(data) != crc:
                raise ArtifactError(f"section {tag.decode()}: CRC mismatch (corrupted artifact)")
            sections[tag] = data
        missing = [t.decode() for t in _REQUIRED if t not in sections]
        if missing:
            raise ArtifactError(f"missing section(s): {', '.join(missing)}")
        try:
            meta = json.loads(sections[b"META"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"section META is not valid JSON: {e}") from None
        except RecursionError:
            raise ArtifactError("section META nests too deeply to be an artifact's metadata") from None
        art = cls._from_meta(meta, sections[b"PROG"], sections[b"CNST"])
        if b"GOLD" in sections:
            try:
                with np.load(_io.BytesIO(sections[b"GOLD"]), allow_pickle=False) as z:
                    art.golden = {k: z[k] for k in z.files}
            except Exception as e:  # np.load raises many types on corrupt zips
                raise ArtifactError(f"section GOLD is not a valid .npz: {e}") from None
        art.verify_structure()
        return art

    @classmethod
    def _from_meta(cls, meta: Any, program: bytes, constants: bytes) -> "Artifact":
        m = _Reader(meta, "META")
        if m.get("format_version", int) != FORMAT_VERSION or m.get("isa_version", int) != ISA_VERSION:
            raise ArtifactError("META versions disagree with the artifact header")
        try:
            config = NPUConfig.from_dict(m.get("config", dict))
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"META.config: {e}") from None
        io = []
        for i, t in enumerate(m.get("io", list)):
            r = _Reader(t, f"META.io[{i}]")
            quant = None
            if "quant" in t:
                q = _Reader(r.get("quant", dict), f"META.io[{i}].quant")
                axis = q.raw("axis")
                if axis is not None and not isinstance(axis, int):
                    raise ArtifactError(f"META.io[{i}].quant.axis must be an integer or null")
                quant = QuantParams(tuple(float(s) for s in q.list_of("scale", (int, float))),
                                    tuple(q.list_of("zero_point", int)), axis)
            dtype = r.get("dtype", str)
            if dtype not in _IO_DTYPES:
                raise ArtifactError(f"META.io[{i}].dtype {dtype!r} is not one of {_IO_DTYPES}")
            io.append(IOTensor(r.get("name", str), r.get("kind", str), dtype,
                               tuple(r.list_of("shape", int)), r.get("offset", int), r.get("layout", str), quant))
            if r.get("nbytes", int) != io[-1].nbytes:
                raise ArtifactError(f"META.io[{i}].nbytes disagrees with its dtype and shape")
        prov = []
        for i, p in enumerate(m.get("provenance", list)):
            r = _Reader(p, f"META.provenance[{i}]")
            prov.append(ProvenanceRange(r.get("start", int), r.get("end", int), r.get("op", str), r.get("source", str)))
        art = cls(config, program, constants, io, m.get("scratch_bytes", int), prov, m.get("producer", dict))
        if m.get("io_bytes", int) != art.io_bytes:
            raise ArtifactError("META.io_bytes disagrees with the IO table")
        return art

    def verify_structure(self, decode_program: bool = True) -> None:
        """Checks that do not need the emulator: the program decodes and every table is consistent.
        `decode_program=False` (used when writing what our own encoder produced) reads only the
        program header; loading always decodes every instruction."""
        try:
            n_instrs = len(Program.decode(self.program)) if decode_program else _instruction_count(self.program)
        except ISAError as e:
            raise ArtifactError(f"section PROG: {e}") from None
        names = set()
        for t in self.io:
            where = f"IO tensor {t.name!r}"
            if t.kind not in ("input", "output"):
                raise ArtifactError(f"{where}: kind must be 'input' or 'output', got {t.kind!r}")
            if t.dtype not in _IO_DTYPES:
                raise ArtifactError(f"{where}: dtype {t.dtype!r} is not one of {_IO_DTYPES}")
            if any(d < 0 for d in t.shape) or t.offset < 0:
                raise ArtifactError(f"{where}: negative shape or offset")
            if t.name in names:
                raise ArtifactError(f"{where}: duplicate name")
            names.add(t.name)
            if t.quant is not None:
                q = t.quant
                if len(q.scale) != len(q.zero_point) or not q.scale:
                    raise ArtifactError(f"{where}: quantisation scale and zero_point must be equally long, non-empty")
                if q.axis is None and len(q.scale) != 1:
                    raise ArtifactError(f"{where}: per-tensor quantisation needs exactly one scale")
                if q.axis is not None and not (0 <= q.axis < len(t.shape) and t.shape[q.axis] == len(q.scale)):
                    raise ArtifactError(f"{where}: per-axis quantisation must have one scale per element of axis")
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.io if t.nbytes)
        for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise ArtifactError(f"IO tensors {n0!r} and {n1!r} overlap in the IO region")
        if self.scratch_bytes < 0:
            raise ArtifactError("scratch_bytes is negative")
        # DRAM addresses are 32-bit in the ISA: no region can be larger than 4 GiB
        for what, size in (("IO region", self.io_bytes), ("scratch_bytes", self.scratch_bytes),
                           ("CONST region", len(self.constants))):
            if not 0 <= size <= _MAX_REGION_BYTES:
                raise ArtifactError(f"{what} of {size} bytes is outside [0, 4 GiB] (ISA addresses are 32-bit)")
        for p in self.provenance:
            if not 0 <= p.start < p.end <= n_instrs:
                raise ArtifactError(f"provenance range [{p.start}, {p.end}) of {p.op!r} is outside the "
                                    f"{n_instrs}-instruction program")

    # ---- running -------------------------------------------------------------------------
    def pack_inputs(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The IO region with every input written at its offset (outputs zero)."""
        region = np.zeros(self.io_bytes, np.uint8)
        unknown = set(inputs) - {t.name for t in self.inputs}
        if unknown:
            raise ValueError(f"unknown input(s) {sorted(unknown)}; the artifact takes {[t.name for t in self.inputs]}")
        for t in self.inputs:
            if t.name not in inputs:
                raise ValueError(f"missing input {t.name!r} ({t.dtype}{list(t.shape)})")
            arr = np.asarray(inputs[t.name])
            if arr.dtype != np.dtype(t.dtype) or arr.shape != t.shape:
                raise ValueError(f"input {t.name!r} must be {t.dtype}{list(t.shape)}, got {arr.dtype}{list(arr.shape)}")
            region[t.offset:t.offset + t.nbytes] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        return region

    def unpack_outputs(self, region: np.ndarray) -> Dict[str, np.ndarray]:
        return {t.name: region[t.offset:t.offset + t.nbytes].view(t.dtype).reshape(t.shape).copy()
                for t in self.outputs}

    def run(self, inputs: Mapping[str, np.ndarray], *, trace: bool = False):
        """Run on the emulator; returns (outputs by name, npu_emulator.RunResult)."""
        import npu_emulator

        result = npu_emulator.Emulator(self.config).run(
            self.program, const=self.constants, io=self.pack_inputs(inputs), scratch_bytes=self.scratch_bytes,
            trace=trace)
        return self.unpack_outputs(result.io), result

    def verify(self) -> Dict[str, float]:
        """Replays the golden inputs and returns the max abs difference per output (0.0 = exact)."""
        if not self.golden:
            raise ArtifactError("artifact carries no golden inputs/outputs")
        outs, _ = self.run({t.name: self.golden[t.name] for t in self.inputs})
        return {name: float(np.max(np.abs(outs[name].astype(np.float64) - self.golden[name].astype(np.float64)),
                                   initial=0.0)) for name in outs}


def _instruction_count(program: bytes) -> int:
    """The instruction count of a program's header, after checking its magic, version and length."""
    from .isa import spec

    if len(program) < spec.PROGRAM_HEADER.size:
        raise ISAError(f"program: truncated header ({len(program)} bytes)")
    magic, version, reserved, count, nbytes = spec.PROGRAM_HEADER.unpack_from(program)
    if magic != spec.PROGRAM_MAGIC or version != spec.ISA_VERSION or reserved != 0:
        raise ISAError(f"program: bad header (magic {magic!r}, ISA version {version}, reserved {reserved})")
    if nbytes != len(program) - spec.PROGRAM_HEADER.size:
        raise ISAError(f"program: header says {nbytes} bytes of instructions, "
                       f"{len(program) - spec.PROGRAM_HEADER.size} present")
    return count


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class _Reader:
    """Typed access to a JSON object that names the field path in every error."""

    def __init__(self, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise ArtifactError(f"{where} must be a JSON object")
        self.obj, self.where = obj, where

    def raw(self, key: str) -> Any:
        if key not in self.obj:
            raise ArtifactError(f"{self.where}.{key} is missing")
        return self.obj[key]

    def get(self, key: str, typ: type) -> Any:
        v = self.raw(key)
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise ArtifactError(f"{self.where}.{key} must be {typ.__name__}, got {type(v).__name__}")
        return v

    def list_of(self, key: str, typ: Any) -> Sequence[Any]:
        v = self.get(key, list)
        if not all(isinstance(x, typ) and not isinstance(x, bool) for x in v):
            raise ArtifactError(f"{self.where}.{key} must be a list of numbers")
        return v
