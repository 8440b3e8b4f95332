"""Instructions and programs as Python objects, with the binary encoder and decoder of spec.py."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import spec
from .spec import DType, Dep, Opcode, Region, Space

__all__ = ["TensorRef", "DramRef", "Instr", "Program", "ISAError"]


class ISAError(ValueError):
    """A malformed instruction or program; the message names the instruction index and mnemonic."""


# A compiler builds hundreds of thousands of operands and instructions, so the constructors below
# convert enums through tables and set each field once (a frozen dataclass's generated __init__
# sets every field and __post_init__ set them again); they check exactly what they always did.

def _member(enum_cls, by_value: dict, value):
    """`enum_cls(value)`, through a table of the members; anything else goes to the enum itself,
    which accepts or refuses it (ValueError) as it always did."""
    try:
        return by_value[value]
    except (KeyError, TypeError):
        return enum_cls(value)


_SPACES = {int(m): m for m in Space}
_DTYPES = {int(m): m for m in DType}
_REGIONS = {int(m): m for m in Region}
_DEPS = {v: Dep(v) for v in range(16)}
_set = object.__setattr__  # how a frozen dataclass sets its fields (keeps them out of a per-instance dict)


@dataclasses.dataclass(frozen=True, init=False)
class TensorRef:
    """An SRAM tensor operand: NHWC, rows padded to 16 bytes (see docs/ISA.md)."""

    space: Space
    dtype: DType
    addr: int
    shape: Tuple[int, int, int, int]

    def __init__(self, space: Space, dtype: DType, addr: int, shape: Sequence[int]) -> None:
        space = _member(Space, _SPACES, space)
        dtype = _member(DType, _DTYPES, dtype)
        dims = tuple(map(int, shape))
        if len(dims) != 4:
            raise ISAError(f"SRAM tensor shape must have 4 dims (n, h, w, c), got {shape}")
        _set(self, "space", space)
        _set(self, "dtype", dtype)
        _set(self, "addr", addr)
        _set(self, "shape", dims)

    @property
    def row_stride(self) -> int:
        return spec.row_stride(self.shape[3], self.dtype)

    @property
    def nbytes(self) -> int:
        n, h, w, _ = self.shape
        return n * h * w * self.row_stride

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def fields(self) -> Tuple[int, ...]:
        return (int(self.space), int(self.dtype), self.addr, *self.shape)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.space.name.lower()}:{spec.DTYPE_NAME[self.dtype]}@{self.addr:#x}[{dims}]"

    @classmethod
    def parse(cls, text: str) -> "TensorRef":
        try:
            space, rest = text.split(":", 1)
            dtype, rest = rest.split("@", 1)
            addr, dims = rest.split("[", 1)
            if not dims.endswith("]"):
                raise ValueError
            shape = tuple(int(d, 0) for d in dims[:-1].split(","))
            return cls(Space[space.upper()], _DTYPE_BY_NAME[dtype], int(addr, 0), shape)
        except (KeyError, ValueError) as e:
            raise ISAError(f"bad SRAM tensor operand {text!r}; expected e.g. act:i8@0x100[1,8,8,16]") from e


@dataclasses.dataclass(frozen=True, init=False)
class DramRef:
    """A DRAM operand: region, byte address and the byte strides of n, h, w, c."""

    region: Region
    addr: int
    strides: Tuple[int, int, int, int]

    def __init__(self, region: Region, addr: int, strides: Sequence[int]) -> None:
        region = _member(Region, _REGIONS, region)
        steps = tuple(map(int, strides))
        if len(steps) != 4:
            raise ISAError(f"DRAM strides must have 4 entries (n, h, w, c), got {strides}")
        _set(self, "region", region)
        _set(self, "addr", addr)
        _set(self, "strides", steps)

    @classmethod
    def dense(cls, region: Region, addr: int, shape: Sequence[int], itemsize: int) -> "DramRef":
        """Strides of a densely packed NHWC tensor of the given shape (no row padding)."""
        _, h, w, c = shape
        return cls(region, addr, (h * w * c * itemsize, w * c * itemsize, c * itemsize, itemsize))

    def fields(self) -> Tuple[int, ...]:
        return (int(self.region), self.addr, *self.strides)

    def __str__(self) -> str:
        return f"{self.region.name.lower()}@{self.addr:#x}/[{','.join(str(s) for s in self.strides)}]"

    @classmethod
    def parse(cls, text: str) -> "DramRef":
        try:
            region, rest = text.split("@", 1)
            addr, strides = rest.split("/", 1)
            if not (strides.startswith("[") and strides.endswith("]")):
                raise ValueError
            return cls(Region[region.upper()], int(addr, 0), tuple(int(s, 0) for s in strides[1:-1].split(",")))
        except (KeyError, ValueError) as e:
            raise ISAError(f"bad DRAM operand {text!r}; expected e.g. io@0x40/[4096,256,16,1]") from e


_DTYPE_BY_NAME = {name: dt for dt, name in spec.DTYPE_NAME.items()}
Operand = Union[TensorRef, DramRef, int, float]

# Scalars a user may leave out; everything else must be given.
_DEFAULTS = {"stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1, "groups": 1, "kh": 1, "kw": 1}
_DEP_NAMES = {"pop_prev": Dep.POP_PREV, "pop_next": Dep.POP_NEXT, "push_prev": Dep.PUSH_PREV,
              "push_next": Dep.PUSH_NEXT}
_REQUIRED = object()
_TENSOR, _DRAM, _SCALAR = "tensor", "dram", "scalar"


class _Layout:
    """What building and encoding one opcode's instructions needs, worked out once per opcode."""

    def __init__(self, opcode: Opcode):
        fmt = opcode.fmt
        self.opcode = opcode
        # Instr.make: every operand's default (_REQUIRED for the compound ones), in format order
        self.template = {o.name: _DEFAULTS.get(o.name, 0.0 if o.kind == "f32" else 0)
                         if o.kind in spec.SCALAR_TYPES else _REQUIRED for o in fmt.operands}
        self.required = tuple(o.name for o in fmt.operands if o.kind not in spec.SCALAR_TYPES)
        self.f32 = tuple(o.name for o in fmt.operands if o.kind == "f32")
        # flat_values: (name, _TENSOR | _DRAM | _SCALAR) per operand up to the last compound one, then
        # the names of the scalars after it (in every format of spec.py: all of them), read in one go
        kinds = [(o.name, o.kind if o.kind in spec.COMPOUND else _SCALAR) for o in fmt.operands]
        head = max((i + 1 for i, (_, kind) in enumerate(kinds) if kind is not _SCALAR), default=0)
        self.operands = tuple(kinds[:head])
        self.scalars = tuple(name for name, _ in kinds[head:])
        self.plain = _plain_encoder(opcode)


def _plain_encoder(opcode: Opcode) -> Callable[["Instr"], Optional[bytes]]:
    """The encoding of `opcode`'s instructions whose operands are plain: exactly TensorRef / DramRef
    with an int address, ints in integer fields, floats in f32 fields; None for any other.

    For plain operands struct refuses (struct.error, OverflowError) exactly what Instr.encode's
    checks refuse, so the checks need not run one by one. One generated function per opcode reads
    the operands and packs header, fields and zero padding with one struct, e.g. for vcvt:

        def encode(ins):
            ops = ins.operands
            v0 = ops['a']
            v1 = ops['o']
            if type(v0) is TensorRef and type(v0.addr) is int and type(v1) is TensorRef and ...:
                return pack(46, ins.deps, 32, v0.space, v0.dtype, v0.addr, *v0.shape, v1.space, ...)
            return None
    """
    fmt = opcode.fmt
    raw = spec.INSTR_HEADER.size + fmt.struct.size
    packer = struct.Struct(spec.INSTR_HEADER.format + fmt.struct.format[1:] + f"{fmt.size - raw}x")
    lines, plain, fields = [], ["True"], []
    for k, o in enumerate(fmt.operands):
        v = f"v{k}"
        lines.append(f"    {v} = ops[{o.name!r}]")
        if o.kind == "tensor":
            plain += [f"type({v}) is TensorRef", f"type({v}.addr) is int"]
            fields += [f"{v}.space", f"{v}.dtype", f"{v}.addr", f"*{v}.shape"]
        elif o.kind == "dram":
            plain += [f"type({v}) is DramRef", f"type({v}.addr) is int"]
            fields += [f"{v}.region", f"{v}.addr", f"*{v}.strides"]
        else:
            plain.append(f"type({v}) is {'float' if o.kind == 'f32' else 'int'}")
            fields.append(v)
    src = "\n".join(["def encode(ins):", "    ops = ins.operands", *lines,
                      f"    if {' and '.join(plain)}:",
                      f"        return pack({opcode.code}, ins.deps, {fmt.size}, {', '.join(fields + [''])})",
                      "    return None"])
    namespace = {"pack": packer.pack, "TensorRef": TensorRef, "DramRef": DramRef}
    exec(src, namespace)  # noqa: S102 - generated from spec.py's formats above
    return namespace["encode"]


_LAYOUTS = {op.code: _Layout(op) for op in spec.OPCODES}
_BY_MNEMONIC = {op.mnemonic: _LAYOUTS[op.code] for op in spec.OPCODES}


def _layout(opcode: Opcode) -> _Layout:
    layout = _LAYOUTS.get(opcode.code)
    if layout is None or (layout.opcode is not opcode and layout.opcode != opcode):  # not one of spec.OPCODES
        layout = _Layout(opcode)
    return layout


@dataclasses.dataclass(frozen=True, init=False)
class Instr:
    """One instruction: its opcode, its operands by name, and its dependency flags."""

    opcode: Opcode
    operands: Mapping[str, Operand]
    deps: Dep = Dep.NONE

    def __init__(self, opcode: Opcode, operands: Mapping[str, Operand], deps: Dep = Dep.NONE) -> None:
        _set(self, "opcode", opcode)
        _set(self, "operands", operands)
        _set(self, "deps", deps)

    @classmethod
    def make(cls, mnemonic: str, deps: Union[Dep, int, Iterable[str]] = Dep.NONE, **operands: Any) -> "Instr":
        """Build an instruction, e.g. ``Instr.make("gemm", a=..., w=..., o=..., deps="push_next")``."""
        layout = _BY_MNEMONIC.get(mnemonic)
        if layout is None:
            raise ISAError(f"unknown mnemonic {mnemonic!r}")
        values: Dict[str, Operand] = layout.template.copy()
        values.update(operands)
        for name in layout.required:
            if values[name] is _REQUIRED:
                raise ISAError(f"{mnemonic}: missing operand {name!r}")
        if len(values) != len(layout.template):
            raise ISAError(f"{mnemonic}: unknown operand(s) {sorted(operands.keys() - layout.template.keys())}")
        for name in layout.f32:
            if name in operands and isinstance(values[name], (int, float)):
                values[name] = _as_f32(values[name])  # keep what the encoding can hold: decode(encode(i)) == i
        return cls(layout.opcode, values, parse_deps(deps))

    def with_deps(self, flags: Union[Dep, int]) -> "Instr":
        """This instruction with `flags` added to its dependency flags."""
        return type(self)(self.opcode, self.operands, _member(Dep, _DEPS, int(self.deps) | int(flags)))

    @property
    def mnemonic(self) -> str:
        return self.opcode.mnemonic

    @property
    def queue(self) -> spec.Queue:
        if self.opcode.fmt is spec.FMT_SYNC:
            return spec.Queue(self.operands["queue"])
        return self.opcode.queue

    def __getitem__(self, name: str) -> Operand:
        return self.operands[name]

    def flat_values(self) -> List[Union[int, float]]:
        flat: List[Union[int, float]] = []
        operands = self.operands
        layout = _layout(self.opcode)
        for name, kind in layout.operands:
            v = operands[name]
            if kind is _SCALAR:
                flat.append(v)
            elif kind is _TENSOR:
                if not isinstance(v, TensorRef):
                    raise ISAError(f"{self.mnemonic}: operand {name} must be a TensorRef")
                flat.extend(v.fields())
            else:
                if not isinstance(v, DramRef):
                    raise ISAError(f"{self.mnemonic}: operand {name} must be a DramRef")
                flat.extend(v.fields())
        flat += map(operands.__getitem__, layout.scalars)
        return flat

    def encode(self) -> bytes:
        try:
            raw = _layout(self.opcode).plain(self)
            if raw is not None:
                return raw
        except (struct.error, OverflowError, KeyError):
            pass  # out of range, or an operand missing: the checks below say which (as they always did)
        return self._encode_checked()

    def _encode_checked(self) -> bytes:
        """encode(), one field at a time: what it accepts, and the error naming what it refuses."""
        fmt = self.opcode.fmt
        values = self.flat_values()
        for (name, t), v in zip(fmt.fields, values):
            _, lo, hi = spec.SCALAR_TYPES[t]
            if t == "f32":
                if not isinstance(v, (int, float)):
                    raise ISAError(f"{self.mnemonic}: field {name} must be a number, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ISAError(f"{self.mnemonic}: field {name}={v!r} does not fit {t}")
        body = spec.INSTR_HEADER.pack(self.opcode.code, int(self.deps), fmt.size) + fmt.struct.pack(*values)
        return body + bytes(fmt.size - len(body))

    @classmethod
    def decode(cls, buf: bytes, offset: int = 0, index: int = 0) -> "Instr":
        if len(buf) - offset < spec.INSTR_HEADER.size:
            raise ISAError(f"instruction {index}: truncated header ({len(buf) - offset} bytes left)")
        code, deps, length = spec.INSTR_HEADER.unpack_from(buf, offset)
        op = spec.BY_CODE.get(code)
        if op is None:
            raise ISAError(f"instruction {index}: unknown opcode 0x{code:02x}")
        where = f"instruction {index} ({op.mnemonic})"
        if length != op.fmt.size:
            raise ISAError(f"{where}: length field {length} differs from the opcode's size {op.fmt.size}")
        if len(buf) - offset < length:
            raise ISAError(f"{where}: truncated ({len(buf) - offset} of {length} bytes)")
        if deps & ~0xF:
            raise ISAError(f"{where}: unknown dependency flag bits 0x{deps:02x}")
        flat = list(op.fmt.struct.unpack_from(buf, offset + spec.INSTR_HEADER.size))
        values: Dict[str, Operand] = {}
        try:
            for operand in op.fmt.operands:
                if operand.kind == "tensor":
                    sp, dt, addr, *shape = flat[:7]
                    del flat[:7]
                    values[operand.name] = TensorRef(sp, dt, addr, tuple(shape))
                elif operand.kind == "dram":
                    region, addr, *strides = flat[:6]
                    del flat[:6]
                    values[operand.name] = DramRef(region, addr, tuple(strides))
                else:
                    values[operand.name] = flat.pop(0)
        except ValueError as e:  # an enum value out of range
            raise ISAError(f"{where}: operand {operand.name}: {e}") from None
        return cls(op, values, _DEPS[deps])

    # ---- text form -----------------------------------------------------------------------
    def to_text(self) -> str:
        parts = [self.mnemonic]
        for operand in self.opcode.fmt.operands:
            v = self.operands[operand.name]
            if operand.kind == "f32":
                v = repr(_as_f32(v))
            parts.append(f"{operand.name}={v}")
        if self.deps:
            parts.append("deps=" + ",".join(n for n, f in _DEP_NAMES.items() if self.deps & f))
        return " ".join(parts)

    __str__ = to_text

    @classmethod
    def from_text(cls, line: str) -> "Instr":
        words = line.split()
        if not words:
            raise ISAError("empty instruction")
        op = spec.BY_MNEMONIC.get(words[0])
        if op is None:
            raise ISAError(f"unknown mnemonic {words[0]!r}")
        kinds = {o.name: o.kind for o in op.fmt.operands}
        operands: Dict[str, Any] = {}
        deps: Any = Dep.NONE
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq:
                raise ISAError(f"{op.mnemonic}: expected name=value, got {word!r}")
            if key == "deps":
                deps = value.split(",")
            elif key not in kinds:
                raise ISAError(f"{op.mnemonic}: unknown operand {key!r}")
            elif kinds[key] == "tensor":
                operands[key] = TensorRef.parse(value)
            elif kinds[key] == "dram":
                operands[key] = DramRef.parse(value)
            elif kinds[key] == "f32":
                operands[key] = float(value)
            else:
                try:
                    operands[key] = int(value, 0)
                except ValueError:
                    raise ISAError(f"{op.mnemonic}: operand {key}={value!r} is not an integer") from None
        return cls.make(op.mnemonic, deps, **operands)


_F32 = struct.Struct("<f")


def _as_f32(v: float) -> float:
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:
        raise ISAError(f"{v!r} does not fit f32") from None


def parse_deps(deps: Union[Dep, int, str, Iterable[str]]) -> Dep:
    if type(deps) is Dep:
        return deps
    if isinstance(deps, (Dep, int)):
        return _member(Dep, _DEPS, int(deps))
    if isinstance(deps, str):
        deps = [d for d in deps.replace("|", ",").split(",") if d]
    out = Dep.NONE
    for name in deps:
        if name not in _DEP_NAMES:
            raise ISAError(f"unknown dependency flag {name!r}; known: {sorted(_DEP_NAMES)}")
        out |= _DEP_NAMES[name]
    return out


@dataclasses.dataclass
class Program:
    """A list of instructions; encodes to the program header plus the instruction stream."""

    instrs: List[Instr] = dataclasses.field(default_factory=list)

    def append(self, instr: Instr) -> Instr:
        self.instrs.append(instr)
        return instr

    def emit(self, mnemonic: str, deps: Any = Dep.NONE, **operands: Any) -> Instr:
        return self.append(Instr.make(mnemonic, deps, **operands))

    def __len__(self) -> int:
        return len(self.instrs)

    def __iter__(self):
        return iter(self.instrs)

    def encode(self) -> bytes:
        try:
            body = b"".join([instr.encode() for instr in self.instrs])
        except ISAError:
            for i, instr in enumerate(self.instrs):  # again, one by one, to name the instruction
                try:
                    instr.encode()
                except ISAError as e:
                    raise ISAError(f"instruction {i} ({instr.mnemonic}): {e}") from None
            raise
        header = spec.PROGRAM_HEADER.pack(spec.PROGRAM_MAGIC, spec.ISA_VERSION, 0, len(self.instrs), len(body))
        return header + body

    @classmethod
    def decode(cls, buf: bytes) -> "Program":
        buf = bytes(buf)
        if len(buf) < spec.PROGRAM_HEADER.size:
            raise ISAError(f"program: truncated header ({len(buf)} bytes)")
        magic, version, reserved, count, nbytes = spec.PROGRAM_HEADER.unpack_from(buf)
        if magic != spec.PROGRAM_MAGIC:
            raise ISAError(f"program: bad magic {magic!r} (expected {spec.PROGRAM_MAGIC!r})")
        if version != spec.ISA_VERSION:
            raise ISAError(f"program: ISA version {version}, this build supports {spec.ISA_VERSION}")
        if reserved != 0:
            raise ISAError(f"program: reserved header field is {reserved}, must be 0")
        if nbytes != len(buf) - spec.PROGRAM_HEADER.size:
            raise ISAError(f"program: header says {nbytes} bytes of instructions, "
                           f"{len(buf) - spec.PROGRAM_HEADER.size} present")
        instrs, offset = [], spec.PROGRAM_HEADER.size
        for i in range(count):
            instr = Instr.decode(buf, offset, i)
            instrs.append(instr)
            offset += instr.opcode.fmt.size
        if offset != len(buf):
            raise ISAError(f"program: {len(buf) - offset} bytes after the {count} instructions the header declares")
        return cls(instrs)

    def to_text(self) -> str:
        return "\n".join(i.to_text() for i in self.instrs) + "\n"

    @classmethod
    def from_text(cls, text: str) -> "Program":
        instrs = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if not line:
                continue
            try:
                instrs.append(Instr.from_text(line))
            except ISAError as e:
                raise ISAError(f"line {lineno}: {e}") from None
        return cls(instrs)
