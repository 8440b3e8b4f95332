"""Mutations of valid seed inputs: byte flips, interesting words, truncation, splices, and
structure-aware field changes (ONNX protobuf fields; TFLite flatbuffer fields located through the
`tflite` accessors; artifact sections and META values with their CRCs recomputed, so that the
mutation reaches past the CRC check). Every mutation is a pure function of (seed bytes, rng)."""

from __future__ import annotations

import json
import struct
from typing import Callable, Dict, List, Tuple

import numpy as np

INTERESTING_32 = (0, 1, 2, 3, 4, 7, 8, 16, 127, 128, 255, 256, 1023, 4096, 65535, 65536, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFF, 0xFFFFFFFE, 0x10000000)
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x40)
INTERESTING_FLOATS = (0.0, -0.0, 1e5, -1e5, 3e4, 1e-9, 1e38, float("inf"), float("nan"), 65504.0, 65520.0)


# ---- byte level ---------------------------------------------------------------------------------

def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
    return bytes(b)


def set_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        b[int(rng.integers(len(b)))] = INTERESTING_BYTES[int(rng.integers(len(INTERESTING_BYTES)))]
    return bytes(b)


def set_word(data: bytes, rng: np.random.Generator) -> bytes:
    """An aligned little-endian u32 set to an interesting value (offsets, lengths, counts)."""
    b = bytearray(data)
    i = int(rng.integers(max(len(b) // 4, 1))) * 4
    v = INTERESTING_32[int(rng.integers(len(INTERESTING_32)))] if rng.random() < 0.8 else int(rng.integers(len(b) * 2))
    b[i:i + 4] = struct.pack("<I", v)[:len(b) - i]
    return bytes(b)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[:int(rng.integers(len(data)))]


def extend(data: bytes, rng: np.random.Generator) -> bytes:
    return data + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()


def splice(data: bytes, rng: np.random.Generator) -> bytes:
    """Deletes or duplicates a chunk (shifts every offset after it)."""
    i, n = int(rng.integers(len(data))), int(rng.integers(1, 32))
    return data[:i] + data[i + n:] if rng.random() < 0.5 else data[:i] + data[i:i + n] + data[i:]


BYTE_MUTATORS: Tuple[Callable, ...] = (flip_bits, set_bytes, set_word, truncate, extend, splice)


# ---- ONNX fields ----------------------------------------------------------------------------------

def onnx_field(data: bytes, rng: np.random.Generator) -> bytes:
    """One field of the ModelProto changed: a dim, an attribute value, an op type, a tensor type,
    an initializer's bytes, a node's inputs, the opset."""
    import onnx

    m = onnx.load_from_string(data)
    g = m.graph
    pick = int(rng.integers(9))

    def some(n):
        return int(rng.integers(n))

    weird = (0, -1, 1, 2, 3, 7, 1 << 20, 1 << 31, -(1 << 40))
    if pick == 0 and g.input:
        dims = g.input[some(len(g.input))].type.tensor_type.shape.dim
        if dims:
            d = dims[some(len(dims))]
            d.Clear()
            if rng.random() < 0.8:
                d.dim_value = weird[some(len(weird))]
            else:
                d.dim_param = "N"
    elif pick == 1 and g.node:
        node = g.node[some(len(g.node))]
        if node.attribute:
            a = node.attribute[some(len(node.attribute))]
            if a.ints:
                a.ints[some(len(a.ints))] = weird[some(len(weird))]
            elif a.HasField("i"):
                a.i = weird[some(len(weird))]
            else:
                a.type = int(rng.integers(0, 15))
        else:
            node.attribute.add().CopyFrom(onnx.helper.make_attribute(
                ("axis", "group", "kernel_shape", "alpha")[some(4)], [2, 2] if rng.random() < 0.5 else 3))
    elif pick == 2 and g.node:
        g.node[some(len(g.node))].op_type = ("Conv", "Relu", "Add", "MaxPool", "Softmax", "FooBar", "Reshape",
                                             "Sigmoid", "Gemm", "Identity", "")[some(11)]
    elif pick == 3 and g.initializer:
        t = g.initializer[some(len(g.initializer))]
        if rng.random() < 0.5:
            t.data_type = int(rng.integers(0, 17))
        else:
            raw = bytearray(t.raw_data) if t.raw_data else bytearray(np.asarray(t.float_data, np.float32).tobytes())
            t.ClearField("float_data")
            if raw and rng.random() < 0.5:
                j = some(max(len(raw) // 4, 1)) * 4
                raw[j:j + 4] = struct.pack("<f", INTERESTING_FLOATS[some(len(INTERESTING_FLOATS))])
            else:
                raw = raw[:some(len(raw) + 1)]
            t.raw_data = bytes(raw)
    elif pick == 4 and g.initializer:
        dims = g.initializer[some(len(g.initializer))].dims
        if dims:
            dims[some(len(dims))] = weird[some(len(weird))]
    elif pick == 5 and g.node:
        node = g.node[some(len(g.node))]
        names = [i.name for i in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]
        if node.input and rng.random() < 0.7:
            node.input[some(len(node.input))] = (names + ["dangling", ""])[some(len(names) + 2)]
        else:
            node.input.append(names[some(len(names))])
    elif pick == 6 and g.node:
        if rng.random() < 0.5:
            g.node.append(g.node[some(len(g.node))])
        else:
            del g.node[some(len(g.node))]
    elif pick == 7:
        m.opset_import[0].version = int(rng.integers(1, 25))
    elif g.output:
        t = g.output[some(len(g.output))].type.tensor_type
        t.elem_type = int(rng.integers(0, 17))
    return m.SerializeToString()


# ---- TFLite fields --------------------------------------------------------------------------------

def tflite_fields(data: bytes) -> List[Tuple[int, int, str]]:
    """(absolute offset, width, what) of the flatbuffer's scalar fields and vector elements that the
    frontend reads: tensor shapes, types, buffer indices, quantisation, operator inputs / outputs /
    opcode indices, operator codes, options fields, buffer lengths."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    fields: List[Tuple[int, int, str]] = []

    def scalar(tab, slot: int, width: int, what: str):
        o = tab.Offset(slot)
        if o:
            fields.append((tab.Pos + o, width, what))

    def vector(tab, slot: int, width: int, what: str):
        o = tab.Offset(slot)
        if o:
            start, n = tab.Vector(o), tab.VectorLen(o)
            fields.append((start - 4, 4, what + ".length"))
            fields.extend((start + k * width, width, f"{what}[{k}]") for k in range(min(n, 16)))

    for i in range(model.OperatorCodesLength()):
        tab = model.OperatorCodes(i)._tab
        scalar(tab, 4, 1, "opcode.deprecated_builtin_code")
        scalar(tab, 10, 4, "opcode.builtin_code")
    for b in range(model.BuffersLength()):
        tab = model.Buffers(b)._tab
        o = tab.Offset(4)
        if o:
            fields.append((tab.Vector(o) - 4, 4, f"buffer{b}.length"))
    graph = model.Subgraphs(0)
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        tab = tensor._tab
        vector(tab, 4, 4, f"tensor{t}.shape")
        scalar(tab, 6, 1, f"tensor{t}.type")
        scalar(tab, 8, 4, f"tensor{t}.buffer")
        q = tensor.Quantization()
        if q is not None:
            vector(q._tab, 8, 4, f"tensor{t}.scale")
            vector(q._tab, 10, 8, f"tensor{t}.zero_point")
            scalar(q._tab, 16, 4, f"tensor{t}.quantized_dimension")
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        tab = op._tab
        scalar(tab, 4, 4, f"op{k}.opcode_index")
        vector(tab, 6, 4, f"op{k}.inputs")
        vector(tab, 8, 4, f"op{k}.outputs")
        scalar(tab, 10, 1, f"op{k}.builtin_options_type")
        table = op.BuiltinOptions()
        if table is not None:
            for slot in range(4, 4 + 2 * 8, 2):  # the options' first fields (padding, strides, activation, ...)
                o = table.Offset(slot)
                if o:
                    fields.append((table.Pos + o, 1 if slot in (4, 10) else 4, f"op{k}.options.{slot}"))
    for j in range(graph.InputsLength()):
        fields.append((graph._tab.Vector(graph._tab.Offset(6)) + 4 * j, 4, f"graph.inputs[{j}]"))
    return [f for f in fields if 0 <= f[0] and f[0] + f[1] <= len(data)]


_FIELD_CACHE: Dict[bytes, List[Tuple[int, int, str]]] = {}


def tflite_field(data: bytes, rng: np.random.Generator) -> bytes:
    """One field of the flatbuffer set to an interesting value of its width."""
    fields = _FIELD_CACHE.setdefault(data, tflite_fields(data))
    pos, width, _ = fields[int(rng.integers(len(fields)))]
    b = bytearray(data)
    if width == 1:
        b[pos] = INTERESTING_BYTES[int(rng.integers(len(INTERESTING_BYTES)))] if rng.random() < 0.7 else int(
            rng.integers(256))
    elif width == 8:
        b[pos:pos + 8] = struct.pack("<q", (0, -1, 127, -128, 1 << 40, -(1 << 62))[int(rng.integers(6))])
    elif rng.random() < 0.2:  # a float field (scales)
        b[pos:pos + 4] = struct.pack("<f", INTERESTING_FLOATS[int(rng.integers(len(INTERESTING_FLOATS)))])
    else:
        b[pos:pos + 4] = struct.pack("<I", INTERESTING_32[int(rng.integers(len(INTERESTING_32)))])
    return bytes(b)


# ---- artifact sections ------------------------------------------------------------------------------

def _sections(data: bytes):
    from helpers import artifact_sections

    return [(tag, body) for tag, _, _, _, body in artifact_sections(data)]


def artifact_section(data: bytes, rng: np.random.Generator) -> bytes:
    """A section's bytes mutated (or a META value changed) and every CRC recomputed."""
    from helpers import pack_artifact_sections

    sections = _sections(data)
    k = int(rng.integers(len(sections)))
    tag, body = sections[k]
    if tag == b"META" and rng.random() < 0.7:
        meta = json.loads(body)
        _mutate_json(meta, rng)
        body = json.dumps(meta).encode()
    else:
        body = BYTE_MUTATORS[int(rng.integers(len(BYTE_MUTATORS)))](body, rng) if body else body
    sections = list(sections)
    sections[k] = (tag, body)
    if rng.random() < 0.1:  # a section dropped or repeated
        sections = sections[:-1] if rng.random() < 0.5 else sections + [sections[0]]
    return pack_artifact_sections(sections)


def _mutate_json(obj, rng: np.random.Generator) -> None:
    """One value somewhere in a JSON tree replaced by another type or an extreme number."""
    path = []
    node = obj
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = list(node)[int(rng.integers(len(node)))] if isinstance(node, dict) else int(rng.integers(len(node)))
        path.append((node, key))
        node = node[key]
    if not path:
        return
    parent, key = path[-1]
    choices = (None, -1, 0, 1 << 40, 2.5, "x", [], {}, True, -(1 << 63), "int8", [1, 2, 3], float(1e308))
    parent[key] = choices[int(rng.integers(len(choices)))]


MUTATORS: Dict[str, Tuple[Callable, ...]] = {
    "onnx": BYTE_MUTATORS + (onnx_field,) * 6,  # mostly structural: bytes rarely parse as protobuf
    "tflite": BYTE_MUTATORS + (tflite_field,) * 6,
    "artifact": BYTE_MUTATORS + (artifact_section,) * 6,
}


def mutate(kind: str, seed: bytes, rng: np.random.Generator) -> Tuple[bytes, str]:
    """One to three stacked mutations of `seed`; (bytes, their names)."""
    data, names = seed, []
    for _ in range(int(rng.integers(1, 4))):
        fn = MUTATORS[kind][int(rng.integers(len(MUTATORS[kind])))]
        try:
            new = fn(data, rng) if data else data
        except Exception:  # noqa: BLE001 - a structural mutator needs a parseable input; fall back to bytes
            new = flip_bits(data, rng) if data else data
        data = new
        names.append(fn.__name__)
    return data, "+".join(names)
