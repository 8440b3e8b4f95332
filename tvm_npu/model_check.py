"""Validation of model files before TVM's frontends see them: malformed files and unsupported
operators become one typed error (tvm_npu.errors) naming the file, the operator and the reason.

TFLite: the flatbuffer is walked defensively (every vector's length bounded by the file, every
offset read inside it, tensor / buffer / operator-code indices in range, constant buffers as large as
their tensors, no tensor above 4 GiB), then every operator of the main subgraph is looked up in the
frontend's converter table (CUSTOM operators by their custom code). ONNX: the node types are looked
up in the frontend's table (with tvm_npu's converters installed); when the frontend fails on the
graph, `onnx.checker` says whether the graph is malformed (skipped above 256 MB).
"""

from __future__ import annotations

import math
import struct
from typing import Iterable, List, Optional

from .errors import ModelFileError, UnsupportedOperatorError

__all__ = ["check_tflite", "check_tflite_operators", "check_onnx_operators", "check_onnx_graph",
           "MAX_TENSOR_BYTES"]

_F32_TINY = 1.1754943508222875e-38  # the smallest normal float32
MAX_TENSOR_BYTES = 1 << 32  # one tensor above the NPU's 32-bit address space is not a real model's
_ONNX_CHECKER_MAX_BYTES = 256 << 20
# bytes per element of tflite.TensorType (the ones whose constant buffers have a fixed size)
_TFLITE_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
                    "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4,
                    "UINT16": 2, "BFLOAT16": 2}
# errors a flatbuffer accessor raises when an offset or a value does not fit the file
_FLATBUFFER_ERRORS = (struct.error, TypeError, IndexError, ValueError, OverflowError, UnicodeDecodeError,
                      AttributeError)


def _names(enum_class) -> dict:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


class _Walk:
    """Reads a tflite.Model with every vector bounded by the file's size."""

    def __init__(self, what: str, size: int):
        self.what, self.size = what, size

    def fail(self, reason: str, where: Optional[str] = None):
        raise ModelFileError(self.what, f"malformed TFLite flatbuffer: {reason}", operator=where,
                             fix="re-export or re-convert the model; the file is damaged or not written by a "
                                 "TFLite converter")

    def table(self, obj, what: str):
        """`obj` (a generated table accessor) where the flatbuffers verifier wants it: the table 4-byte
        aligned, its vtable 2-byte aligned, both inside the file."""
        buf, pos = obj._tab.Bytes, obj._tab.Pos
        if pos % 4 or pos + 4 > self.size:
            self.fail(f"{what}: table at byte {pos} is misaligned or outside the file")
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        if vt % 2 or vt < 0 or vt + 4 > self.size:
            self.fail(f"{what}: its vtable at byte {vt} is misaligned or outside the file")
        vsize, osize = struct.unpack_from("<HH", buf, vt)
        if vsize < 4 or vsize % 2:
            self.fail(f"{what}: its vtable says it has {vsize} bytes (a vtable has an even number, at least 4)")
        if vt + vsize > self.size or pos + osize > self.size:
            self.fail(f"{what}: its vtable ({vsize} bytes) or table ({osize} bytes) runs past the file")
        return obj

    def count(self, n: int, elem: int, what: str) -> range:
        if n < 0 or n * elem > self.size:
            self.fail(f"{what} claims {n} entries, more than the {self.size}-byte file can hold")
        return range(n)


def _litert_verifies(buf: bytes, what: str) -> None:
    """LiteRT's own flatbuffer verifier (TFLite runs it before reading any model): a file it calls
    invalid is refused, whatever our walk found (a fuzz finding: a field set to a word that the walk
    accepted, TVM imported, and LiteRT refuses). Other LiteRT failures (custom operators it cannot
    resolve) are not ours to judge here."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # (the reference interpreter is a pinned dependency; without it, the walk alone)
        return
    try:
        Interpreter(model_content=bytes(buf))
    except ValueError as e:
        if "not a valid Flatbuffer" in str(e):
            raise ModelFileError(what, "malformed TFLite flatbuffer: LiteRT's flatbuffer verifier rejects it",
                                 fix="re-export or re-convert the model; the file is damaged") from None
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def check_tflite(model, buf: bytes, what: str) -> None:
    """Refuses a TFLite flatbuffer that is truncated or whose tables point outside the file, with
    indices out of range, bad numbers, or constant buffers that do not match their tensors, or that
    LiteRT's flatbuffer verifier rejects."""
    import tflite

    if len(buf) < 8:
        raise ModelFileError(what, f"truncated TFLite file ({len(buf)} bytes)")
    w = _Walk(what, len(buf))
    root = struct.unpack_from("<I", buf, 0)[0]
    if root + 4 > len(buf):
        w.fail(f"the root table offset {root} lies outside the {len(buf)}-byte file (a truncated file?)")
    types = _names(tflite.TensorType)
    try:
        w.table(model, "the model table")
        if model.Version() != 3:
            w.fail(f"schema version {model.Version()}; TFLite models are version 3")
        n_codes = len(w.count(model.OperatorCodesLength(), 4, "the operator code table"))
        for i in range(n_codes):
            oc = w.table(model.OperatorCodes(i), f"operator code #{i}")
            oc.BuiltinCode(), oc.DeprecatedBuiltinCode(), oc.Version()
            if oc.CustomCode() is not None:
                oc.CustomCode().decode()
        n_buffers = len(w.count(model.BuffersLength(), 4, "the buffer table"))
        buffer_bytes: List[int] = []
        for b in range(n_buffers):
            buffer = w.table(model.Buffers(b), f"buffer #{b}")
            n = buffer.DataLength()
            w.count(n, 1, f"buffer #{b}")
            if n:
                buffer.DataAsNumpy()  # raises when the bytes run past the file
            off, size = buffer.Offset(), buffer.Size()
            if off or size:
                if off <= 1 or off + size > len(buf):
                    w.fail(f"buffer #{b} lies at bytes [{off}, {off + size}), outside the {len(buf)}-byte file")
                n = size
            buffer_bytes.append(n)
        for s in w.count(model.SubgraphsLength(), 4, "the subgraph table"):
            graph = w.table(model.Subgraphs(s), f"subgraph {s}")
            n_tensors = len(w.count(graph.TensorsLength(), 4, f"subgraph {s}'s tensor table"))
            for t in range(n_tensors):
                _check_tensor(w, w.table(graph.Tensors(t), f"tensor #{t}"), s, t, n_buffers, buffer_bytes, types)
            for kind, length, get in (("input", graph.InputsLength, graph.Inputs),
                                      ("output", graph.OutputsLength, graph.Outputs)):
                for j in w.count(length(), 4, f"subgraph {s}'s {kind} list"):
                    if not 0 <= get(j) < n_tensors:
                        w.fail(f"subgraph {s}'s {kind} {j} is tensor #{get(j)}, of {n_tensors}")
            for o in w.count(graph.OperatorsLength(), 4, f"subgraph {s}'s operator list"):
                where = f"operator #{o}" + (f" of subgraph {s}" if s else "")
                op = w.table(graph.Operators(o), where)
                if not 0 <= op.OpcodeIndex() < n_codes:
                    w.fail(f"operator code index {op.OpcodeIndex()}, of {n_codes}", where)
                for kind, length, get in (("input", op.InputsLength, op.Inputs), ("output", op.OutputsLength,
                                                                                  op.Outputs)):
                    for j in w.count(length(), 4, f"{where}'s {kind} list"):
                        if not -1 <= get(j) < n_tensors:
                            w.fail(f"its {kind} {j} is tensor #{get(j)}, of {n_tensors}", where)
                op.BuiltinOptionsType()
                w.count(op.CustomOptionsLength(), 1, f"{where}'s custom options")
    except ModelFileError:
        raise
    except _FLATBUFFER_ERRORS as e:
        w.fail(f"an offset or a value does not fit the file ({type(e).__name__}: {e}); a truncated or damaged file?")
    _litert_verifies(buf, what)


def _check_tensor(w: _Walk, tensor, s: int, t: int, n_buffers: int, buffer_bytes: List[int], types) -> None:
    if tensor.Name() is None:
        w.fail("a tensor without a name (every TFLite converter writes one)", f"tensor #{t}" + (f" of subgraph {s}" if s else ""))
    tab = tensor._tab
    start = tab.Vector(tab.Offset(10))  # Tensor.name: a u32 length, the bytes, a NUL (the verifier's rule)
    n = struct.unpack_from("<I", tab.Bytes, start - 4)[0]
    if (start - 4) % 4 or start + n >= w.size or tab.Bytes[start + n] != 0:
        w.fail("its name string is misaligned, runs past the file or is not NUL-terminated",
               f"tensor #{t}" + (f" of subgraph {s}" if s else ""))
    name = tensor.Name().decode()
    where = f"tensor #{t} {name!r}" + (f" of subgraph {s}" if s else "")
    shape = [int(tensor.Shape(j)) for j in w.count(tensor.ShapeLength(), 4, f"{where}'s shape")]
    for j in w.count(tensor.ShapeSignatureLength(), 4, f"{where}'s shape signature"):
        if tensor.ShapeSignature(j) < -1:
            w.fail(f"shape signature dim {tensor.ShapeSignature(j)}", where)
    if any(d < 0 for d in shape):
        w.fail(f"negative dimension in shape {shape}", where)
    type_name = types.get(tensor.Type())
    if type_name is None:
        w.fail(f"unknown tensor type code {tensor.Type()}", where)
    itemsize = _TFLITE_ITEMSIZE.get(type_name)
    nbytes = math.prod(shape) * (itemsize or 1)
    if nbytes > MAX_TENSOR_BYTES:
        w.fail(f"shape {shape} of {type_name} is {nbytes} bytes, above 4 GiB", where)
    b = tensor.Buffer()
    if not 0 <= b < max(n_buffers, 1):
        w.fail(f"buffer index {b}, of {n_buffers}", where)
    q = tensor.Quantization()
    if q is not None:
        w.table(q, f"{where}'s quantisation")
        scales = w.count(q.ScaleLength(), 4, f"{where}'s quantisation scales")
        zps = w.count(q.ZeroPointLength(), 8, f"{where}'s quantisation zero points")
        if len(scales):
            bad = [float(v) for v in q.ScaleAsNumpy() if not (math.isfinite(v) and (v >= _F32_TINY or (
                v == 0 and type_name not in ("INT8", "UINT8", "INT16"))))]
            if bad:  # (TVM and LiteRT disagree on what such a scale means; LiteRT refuses some)
                w.fail(f"quantisation scale {bad[0]!r} of {type_name}: scales are positive normal float32 numbers",
                       where)
        if len(zps):
            q.ZeroPointAsNumpy()
    if (b < len(buffer_bytes) and buffer_bytes[b] and itemsize and tensor.Sparsity() is None
            and buffer_bytes[b] != nbytes):
        w.fail(f"its constant buffer #{b} holds {buffer_bytes[b]} bytes, its shape {shape} of {type_name} needs "
               f"{nbytes}", where)


def _tflite_op_name(oc, names) -> tuple:
    code = max(oc.DeprecatedBuiltinCode(), oc.BuiltinCode())
    return code, names.get(code)


def check_tflite_operators(model, what: str, converter_class) -> None:
    """Every operator of the main subgraph has a converter in TVM's TFLite frontend; the first one that
    does not is named by its index and type (and custom code)."""
    import tflite

    names = _names(tflite.BuiltinOperator)
    graph = model.Subgraphs(0)
    convert_map = converter_class(model, graph, None, None).convert_map  # (built in __init__)
    missing = []
    for i in range(graph.OperatorsLength()):
        oc = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        code, name = _tflite_op_name(oc, names)
        if name == "CUSTOM":
            custom = oc.CustomCode().decode(errors="replace") if oc.CustomCode() is not None else "?"
            if f"CUSTOM:{custom}" in convert_map:  # one of ours (tvm_npu/frontend/tflite_ops.py)
                continue
            missing.append((f"operator #{i} (CUSTOM {custom!r})",
                            f"custom operator {custom!r}: TVM's TFLite frontend converts builtin operators only",
                            "convert the model with builtin operators only (no custom or Select TF ops), or "
                            "replace that operator before conversion"))
        elif name is None:
            missing.append((f"operator #{i} (builtin code {code})", f"unknown builtin operator code {code}",
                            "re-convert the model with a TFLite converter of schema version 3"))
        elif name not in convert_map:
            missing.append((f"operator #{i} ({name})", f"TVM's TFLite frontend has no converter for {name}", None))
    _raise_first(what, missing)


# Operators whose first input and first output have one type (a quantised operator computes in its
# input's type; LiteRT refuses the model otherwise, TVM's frontend does not check).
_SAME_TYPE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "SUB",
              "MUL", "CONCATENATION", "RESHAPE", "SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6", "MEAN", "PAD"}
# the bias input of the operators whose int32 bias is quantised with input scale x weight scale
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2}


def _scales(tensor):
    q = tensor.Quantization() if tensor is not None else None
    return q.ScaleAsNumpy().astype("float64") if q is not None and q.ScaleLength() else None


def check_tflite_consistency(model, what: str) -> None:
    """The rules LiteRT's kernels enforce when they prepare an operator and TVM's frontend does not:
    the operators above keep their input's type, and a quantised bias has the scale input scale x
    weight scale (per channel). A model that breaks them computes different numbers on each runtime."""
    import numpy as np
    import tflite

    names = _names(tflite.BuiltinOperator)
    graph = model.Subgraphs(0)

    def tensor(k):
        return graph.Tensors(k) if k >= 0 else None

    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        _, name = _tflite_op_name(model.OperatorCodes(op.OpcodeIndex()), names)
        ins = [tensor(int(k)) for k in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [tensor(int(k)) for k in op.OutputsAsNumpy()] if op.OutputsLength() else []
        where = f"operator #{i} ({name})"
        if name in _SAME_TYPE and ins and outs and ins[0] is not None and outs[0] is not None \
                and ins[0].Type() != outs[0].Type():
            types = _names(tflite.TensorType)
            raise ModelFileError(what, f"its input is {types.get(ins[0].Type())} and its output "
                                       f"{types.get(outs[0].Type())}; the operator keeps its input's type "
                                       f"(LiteRT refuses such a model too)", operator=where)
        b = _BIAS_INPUT.get(name)
        if b is None or len(ins) <= b or None in ins[:b + 1]:
            continue
        s_in, s_w, s_b = _scales(ins[0]), _scales(ins[1]), _scales(ins[b])
        if s_in is None or s_w is None or s_b is None or len(s_in) != 1 or len(s_b) not in (1, len(s_w)):
            continue
        want = s_in[0] * s_w
        if len(s_b) != len(want) and len(want) != 1:
            continue
        if not np.allclose(s_b, want, rtol=1e-5, atol=0.0):
            k = int(np.argmax(np.abs(s_b - want) / want)) if len(want) > 1 else 0
            raise ModelFileError(what, f"its bias scale {float(s_b[min(k, len(s_b) - 1)]):.6g} is not input scale x "
                                       f"weight scale = {float(want[k]):.6g} (LiteRT refuses such a model too)",
                                 operator=where)


def _raise_first(what: str, missing: List[tuple]) -> None:
    if not missing:
        return
    where, reason, fix = missing[0]
    if len(missing) > 1:
        others = sorted({m[0].split(" (", 1)[1].rstrip(")") for m in missing[1:]})
        reason += f" (and {len(missing) - 1} more unsupported operator(s): {', '.join(others[:5])})"
    raise UnsupportedOperatorError(what, reason, operator=where, fix=fix)


def check_onnx_operators(nodes: Iterable, what: str) -> None:
    """Every node of the graph has a converter in TVM's ONNX frontend (tvm_npu's installed); the first
    that does not is named by its node name and operator type."""
    from tvm.relax.frontend.onnx import onnx_frontend

    convert_map = onnx_frontend._get_convert_map()
    missing = []
    for i, node in enumerate(nodes):
        if node.op_type in convert_map or node.op_type in ("Constant", "If"):
            continue
        domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
        missing.append((f"node {node.name or f'#{i}'!r} ({domain}{node.op_type})",
                        f"TVM's ONNX frontend has no converter for {domain}{node.op_type}", None))
    _raise_first(what, missing)


def check_onnx_graph(model, what: str) -> None:
    """onnx.checker on models small enough for it to be cheap: a malformed graph (bad attribute types,
    dangling inputs, wrong opset) is refused with the checker's reason."""
    import onnx

    if model.ByteSize() > _ONNX_CHECKER_MAX_BYTES:
        return
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        reason = lines[0] if lines else type(e).__name__
        raise ModelFileError(what, f"not a valid ONNX model (onnx.checker: {reason})",
                             fix="check how the model was exported; onnx.checker.check_model(onnx.load(path)) "
                                 "gives the full report") from None
