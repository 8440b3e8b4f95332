"""Loading model files (ONNX, TFLite, PyTorch .pt2) into Relax: the one loader of the CLI, the model zoo and the Relay layer.

    loaded = load("model.onnx", {"x": (1, 3, 224, 224)})     # fixed input shapes
    loaded.mod                                               # the Relax IRModule
    loaded.inputs, loaded.outputs                            # [TensorInfo(name, shape, dtype)] in call order

A bad input raises one typed error of tvm_npu.errors (a `ModelLoadError`, itself a `ValueError`)
that names the file, the operator where there is one, and the reason: a missing file, a file that
is not a model or a malformed one (`ModelFileError`: the ONNX protobuf and the TFLite flatbuffer are
checked before TVM reads them, tvm_npu/model_check.py), an unsupported operator
(`UnsupportedOperatorError`: ONNX node name and type, TFLite operator index and type), an unknown
input name, a dynamic input without a shape, a shape of the wrong rank or size; whatever else the
frontends raise becomes a `FrontendError` with their reason in one line.

ONNX: initializers that old exporters also list as graph inputs are weights, not inputs; `shapes`
fix the inputs' dimensions in the graph itself (before `slim`: onnxslim folds the shape
computations, without its graph fusions, so the compiler sees the original operators).
TFLite: the Relax frontend reads the input shapes and types from the flatbuffer; `shapes` and
`dtypes` override them.
PyTorch: a `.pt2` archive written by `torch.export.save` (or a `torch.export.ExportedProgram`) is
imported with `tvm.relax.frontend.torch.from_exported_program` (needs the `[torch]` extra). The
program fixes its input dtypes; a dimension exported as dynamic (`torch.export.Dim`) becomes a
symbolic variable that `shapes` binds (within the program's range constraints).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .errors import (FrontendError, ModelFileError, ModelFileNotFoundError, ModelLoadError,
                     ShapeError, UnsupportedOperatorError, one_line)

__all__ = ["ModelLoadError", "ModelFileError", "ModelFileNotFoundError", "UnsupportedOperatorError",
           "FrontendError", "ShapeError", "TensorInfo", "LoadedModel", "FORMATS", "load",
           "fix_onnx_input_shapes"]

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "pt2"}
_TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of TFLite models (bytes 4..8)
_ZIP_MAGIC = b"PK\x03\x04"  # a .pt2 archive is a zip file (ONNX and TFLite files never start so)
TORCH_EXTRA = "pip install 'tvm_npu[torch]' (torch==2.13.0)"

Shape = Tuple[Optional[int], ...]


class TensorInfo(NamedTuple):
    """One graph input or output: its name in the model file, its shape (None: dynamic dimension or
    unknown rank) and dtype, as the Relax module has them."""

    name: str
    shape: Optional[Shape]
    dtype: Optional[str]


@dataclasses.dataclass
class LoadedModel:
    mod: Any  # tvm.IRModule
    inputs: List[TensorInfo]  # graph inputs in the order main takes them (weights excluded)
    outputs: List[TensorInfo]  # in the order main returns them
    format: str  # "onnx" | "tflite" | "pt2"
    model: Any = None  # the onnx.ModelProto / tflite.Model / torch.export.ExportedProgram that was imported

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.name for t in self.outputs]


def load(source, shapes: Optional[Mapping[str, Sequence[int]]] = None, *, format: Optional[str] = None,
         dtypes: Optional[Mapping[str, str]] = None, slim: Optional[bool] = None, static: bool = True,
         strict_shapes: bool = True, keep_params_in_input: bool = False, sanitize_input_names: bool = True,
         opset: Optional[int] = None, op_converter=None) -> LoadedModel:
    """Imports a model into Relax.

    source        a path (.onnx, .tflite or .pt2, or any name with `format`), the file's bytes, an
                  onnx.ModelProto, a tflite.Model or a torch.export.ExportedProgram (never modified)
    shapes        {input name: shape}: fixed input shapes (.pt2: values of its dynamic dimensions)
    format        "onnx", "tflite" or "pt2" (default: from the suffix, the bytes or the object)
    dtypes        {input name: dtype} overrides (.pt2: the program fixes them; only equal ones pass)
    slim          ONNX: fold shape computations with onnxslim before import (no graph fusions); None (the
                  default): when `shapes` fixed dynamic input dims, so the shape computations the graph did at
                  run time fold into constants at those shapes (TVM 0.27 cannot follow some of them)
    static        every input must end up with a static shape (else: the error says which --shape to give)
    strict_shapes a name in `shapes` that is not a graph input is an error (False: ignored, as Relay did)
    keep_params_in_input  ONNX and .pt2: the weights as trailing parameters of main (attribute "params")
    sanitize_input_names, opset: ONNX, passed to the Relax frontend
    op_converter  TFLite: the frontend's OperatorConverter class (a subclass, to observe the import)
    """
    what, fmt = _describe(source, format)
    if fmt == "onnx":
        return _load_onnx(source, what, shapes or {}, dtypes, slim, static, strict_shapes, keep_params_in_input,
                          sanitize_input_names, opset)
    if slim:  # (None: nothing to do for TFLite)
        raise ModelLoadError(what, "onnxslim applies to ONNX models only")
    if fmt == "pt2":
        return _load_pt2(source, what, shapes or {}, dtypes, static, strict_shapes, keep_params_in_input)
    return _load_tflite(source, what, shapes or {}, dtypes, static, strict_shapes, op_converter)


# ---- what the source is ------------------------------------------------------------------------

def _describe(source, format: Optional[str]) -> Tuple[str, str]:
    """(how errors name the source, "onnx" | "tflite" | "pt2"); checks that a path is a readable file."""
    if format is not None and format not in FORMATS.values():
        raise ValueError(f"unknown model format {format!r}: {', '.join(sorted(FORMATS.values()))}")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        what = str(source)
        if not path.exists():
            raise ModelFileNotFoundError(what, "no such file")
        if not path.is_file():
            raise ModelFileError(what, "not a file")
        fmt = format or FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ModelFileError(what, f"unsupported model format {path.suffix or '(no suffix)'!r}: "
                                       f"{', '.join(FORMATS)} files are supported")
        return what, fmt
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:8])
        fmt = format or ("tflite" if head[4:8] == _TFLITE_IDENTIFIER else "pt2" if head[:4] == _ZIP_MAGIC else "onnx")
        return f"({len(source)} bytes of {fmt})", fmt
    kind = type(source).__module__.split(".")[0]
    if kind == "torch" and hasattr(source, "graph_signature"):
        return "(a torch.export.ExportedProgram)", "pt2"
    torch = sys.modules.get("torch")  # (a torch object exists only if torch is imported)
    if torch is not None and isinstance(source, (torch.nn.Module, torch.jit.ScriptFunction)):
        raise ValueError(f"a {type(source).__name__} is not a model file: export it first, "
                         f"torch.export.export(model.eval(), example_args) (and torch.export.save for a .pt2 file)")
    if kind == "onnx" or (format == "onnx" and hasattr(source, "graph")):
        return "(an onnx.ModelProto)", "onnx"
    if kind == "tflite" or (format == "tflite" and hasattr(source, "Subgraphs")):
        return "(a tflite.Model)", "tflite"
    raise ValueError(f"a model is a path, bytes, an onnx.ModelProto, a tflite.Model or a "
                     f"torch.export.ExportedProgram, not {type(source).__name__}")


# ---- ONNX -------------------------------------------------------------------------------------

def _read_onnx(source, what: str):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(source, (str, os.PathLike)):
        try:
            model = onnx.load(str(source))  # (external data is read relative to the file)
        except OSError as e:  # unreadable, or its external data file is missing
            raise ModelFileError(what, f"cannot read it ({e})") from None
        except (DecodeError, ValueError, RuntimeError, RecursionError) as e:  # protobuf's ways of saying "garbage"
            raise ModelFileError(what, f"not an ONNX model ({one_line(e)})") from None
        fresh = True
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_from_string(bytes(source))
        except (DecodeError, ValueError, RuntimeError, RecursionError) as e:
            raise ModelFileError(what, f"not an ONNX model ({one_line(e)})") from None
        fresh = True
    else:
        model, fresh = source, False
    if not model.HasField("graph") or model.ir_version < 3:
        raise ModelFileError(what, "not an ONNX model (no graph, or an IR version below 3)")
    return model, fresh


def _dims(vi) -> Optional[List[Optional[int]]]:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]


def fix_onnx_input_shapes(model, shapes: Mapping[str, Sequence[int]], what: str = "the model",
                          strict: bool = True):
    """Sets the dimensions of the named ONNX graph inputs in place (the model is then imported,
    quantised or slimmed at those shapes); returns the model. A name that is not an input is a
    `ModelLoadError` with strict (else ignored), and so is a shape of another rank."""
    inputs = {i.name: i for i in model.graph.input}
    for name, shape in shapes.items():
        vi = inputs.get(name)
        if vi is None:
            if strict:
                raise ShapeError(what, f"it has no input {name!r} (its inputs: {', '.join(inputs) or 'none'})")
            continue
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and len(dims) != len(shape):
            raise ShapeError(what, f"input {name!r} has rank {len(dims)}, the shape given is {list(shape)}",
                             fix=f"give {len(dims)} dimensions: --shape {name}={','.join(_shown(_dims(vi)))}")
        if not len(dims):
            vi.type.tensor_type.shape.SetInParent()
            for _ in shape:
                dims.add()
        for d, v in zip(dims, shape):
            d.Clear()
            d.dim_value = int(v)
    return model


def _shown(dims) -> List[str]:
    return [str(d) if d is not None else "N" for d in dims or ["N"]]


def check_shapes(shapes: Mapping[str, Sequence[int]], what: str, dtypes: Optional[Mapping[str, Any]] = None) -> None:
    """Shapes given for inputs: positive dimensions and a size the machine can hold (the bytes are
    estimated before anything is allocated)."""
    import numpy as np

    from .model_check import MAX_TENSOR_BYTES

    for name, shape in shapes.items():
        dims = list(shape)
        if any(int(d) <= 0 for d in dims):
            raise ShapeError(what, f"the shape {dims} given for input {name!r} has a dimension <= 0",
                             fix="every dimension must be a positive integer")
        itemsize = np.dtype((dtypes or {}).get(name) or "float32").itemsize
        nbytes = math.prod(int(d) for d in dims) * itemsize
        if nbytes > MAX_TENSOR_BYTES:
            raise ShapeError(what, f"the shape {dims} given for input {name!r} is {nbytes / 2**30:.1f} GiB, above the "
                             f"{MAX_TENSOR_BYTES >> 30} GiB an NPU tensor can address",
                             fix="give a smaller shape")


def _load_onnx(source, what, shapes, dtypes, slim, static, strict_shapes, keep_params_in_input,
               sanitize_input_names, opset) -> LoadedModel:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from .model_check import check_onnx_graph, check_onnx_operators

    check_shapes(shapes, what, dtypes)
    model, fresh = _read_onnx(source, what)
    check_onnx_operators(model.graph.node, what)
    inits = {t.name for t in model.graph.initializer}
    weights_as_inputs = any(i.name in inits for i in model.graph.input)
    if not fresh and (weights_as_inputs or shapes or slim):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the caller's model stays as it was
        model = copy
    if weights_as_inputs:  # old exporters list the weights as graph inputs too: they are weights
        keep = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
    if slim is None:  # fixed-shape preparation: dynamic dims fixed by `shapes` -> fold the shape computations
        slim = bool(shapes) and any(d is None for vi in model.graph.input for d in (_dims(vi) or [None])
                                    if vi.name in shapes)
    if shapes:
        fix_onnx_input_shapes(model, shapes, what, strict_shapes)
    if static:
        for vi in model.graph.input:
            dims = _dims(vi)
            if dims is None or None in dims:
                shown = ",".join(str(d or "N") for d in dims or ["N"])
                raise ShapeError(what, f"input {vi.name!r} has dynamic dims {dims}: give its shape "
                                 f"(--shape {vi.name}={shown} on the command line)")
    try:
        if slim:
            model = _slim(model, what)
        mod = from_onnx(model, dtype_dict=dict(dtypes) if dtypes else "float32", opset=opset,
                        keep_params_in_input=keep_params_in_input, sanitize_input_names=sanitize_input_names)
    except Exception as e:  # noqa: BLE001 - the error boundary: the frontend's failures in one line
        # A malformed graph is the likeliest cause: onnx.checker names it (it is not run up front, as
        # it also refuses sloppy models the frontend imports, e.g. outputs without a shape field)
        check_onnx_graph(model, what)
        if isinstance(e, FrontendError):  # (onnxslim's)
            raise
        raise _frontend_error(what, "ONNX", e) from e
    check_static_dims(mod, what)
    ins, outs = _signature(mod)
    names = [i.name for i in model.graph.input]
    return LoadedModel(mod, _named(names, ins), _named([o.name for o in model.graph.output], outs), "onnx", model)


def _slim(model, what: str = "the model"):
    import onnxslim

    try:
        return onnxslim.slim(model, skip_optimizations=["graph_fusion"])
    except Exception as e:  # noqa: BLE001 - onnxslim runs shape inference and onnxruntime on the model
        raise FrontendError(what, f"the fixed-shape preparation (onnxslim) failed: {one_line(e)}") from e


def _frontend_error(what: str, frontend: str, e: Exception):
    """A frontend's failure as one of our errors: an operator or attribute it does not implement is an
    UnsupportedOperatorError, anything else a FrontendError; both carry its reason in one line."""
    import tvm

    if isinstance(e, (tvm.error.OpNotImplemented, tvm.error.OpAttributeUnImplemented,
                      tvm.error.OpAttributeInvalid, tvm.error.OpAttributeRequired)):
        return UnsupportedOperatorError(what, f"TVM's {frontend} frontend: {one_line(e)}")
    if isinstance(e, MemoryError):
        return FrontendError(what, f"TVM's {frontend} frontend ran out of memory importing it (a damaged size?)")
    return FrontendError(what, f"TVM's {frontend} frontend failed: {one_line(e)}",
                         fix="check the model with its reference runtime; if it runs there, report this with "
                             "the traceback (--debug)")


# ---- TFLite -----------------------------------------------------------------------------------

def _load_tflite(source, what, shapes, dtypes, static, strict_shapes, op_converter) -> LoadedModel:
    import tflite
    from tvm.relax.frontend.tflite import from_tflite
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    from .model_check import check_tflite, check_tflite_consistency, check_tflite_operators

    check_shapes(shapes, what, dtypes)
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        try:
            buf = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
        except OSError as e:
            raise ModelFileError(what, f"cannot read it ({e})") from None
        if buf[4:8] != _TFLITE_IDENTIFIER:
            raise ModelFileError(what, f"not a TFLite model (no {_TFLITE_IDENTIFIER.decode()} flatbuffer identifier)")
        model = tflite.Model.GetRootAsModel(buf, 0)
        check_tflite(model, buf, what)
    else:
        model = source
    if model.SubgraphsLength() < 1:
        raise ModelFileError(what, "not a TFLite model (no subgraph)")
    graph = model.Subgraphs(0)
    names = [graph.Tensors(graph.Inputs(i)).Name().decode(errors="replace") for i in range(graph.InputsLength())]
    unknown = sorted(set(shapes) - set(names)) + sorted(set(dtypes or {}) - set(names))
    if unknown and strict_shapes:
        raise ShapeError(what, f"it has no input {unknown[0]!r} (its inputs: {', '.join(names) or 'none'})")
    for i, name in enumerate(names):
        if name in shapes:
            rank = graph.Tensors(graph.Inputs(i)).ShapeLength()
            if rank != len(shapes[name]):
                raise ShapeError(what, f"input {name!r} has rank {rank}, the shape given is {list(shapes[name])}",
                                 fix=f"give {rank} dimensions")
    if op_converter is None:  # (a caller's converter class may observe its instances: not built here)
        check_tflite_operators(model, what, OperatorConverter)
    check_tflite_consistency(model, what)
    kw = {}
    if shapes:
        kw["shape_dict"] = {n: list(s) for n, s in shapes.items() if n in names}
    if dtypes:
        kw["dtype_dict"] = {n: d for n, d in dtypes.items() if n in names}
    if op_converter is not None:
        kw["op_converter"] = op_converter
    try:
        mod = from_tflite(model, **kw)
    except Exception as e:  # noqa: BLE001 - the error boundary: the frontend's failures in one line
        raise _frontend_error(what, "TFLite", e) from e
    check_static_dims(mod, what)
    ins, outs = _signature(mod)
    inputs = _named(names, ins)
    if static:
        for t in inputs:
            if t.shape is None or None in t.shape:
                raise ShapeError(what, f"input {t.name!r} has dynamic dims {t.shape}: give its shape")
    out_names = [graph.Tensors(graph.Outputs(i)).Name().decode(errors="replace") for i in range(graph.OutputsLength())]
    return LoadedModel(mod, inputs, _named(out_names, outs), "tflite", model)


# ---- PyTorch (.pt2: torch.export.save) ----------------------------------------------------------

def _import_torch(what: str):
    try:
        import torch
        import tvm.relax.frontend.torch  # noqa: F401 - needs torch too
    except ImportError as e:
        raise ModelLoadError(what, f"reading a .pt2 program needs PyTorch, which does not import here ({e}): "
                                   f"{TORCH_EXTRA}") from None
    return torch


class _LogRecords(logging.Handler):
    """Collects the records of one logger for the duration of a `with` (and keeps them off the console)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger, self.records = logging.getLogger(name), []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.propagate = self.logger.propagate
        self.logger.addHandler(self)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.propagate = self.propagate

    def last_exception(self) -> str | None:
        for r in reversed(self.records):
            if r.exc_info and r.exc_info[1] is not None:
                return _one_line(r.exc_info[1])
        return None


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _read_pt2(source, what: str, torch):
    """The ExportedProgram of a .pt2 path or its bytes; a file that is not one is a ModelLoadError
    saying what it is instead (not a zip archive, a zip without a program, a damaged archive)."""
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return source
    if isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ModelFileError(what, f"cannot read it ({e})") from None
    else:
        data = bytes(source)
    written_by = "a .pt2 file is a zip archive written by torch.export.save"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ModelFileError(what, f"not a PyTorch exported program: not a zip archive or a truncated one ({e}); "
                                   f"{written_by}") from None
    if not any(n.endswith("/archive_format") or n == "version" for n in names):
        hint = (" (it looks like a torch.save checkpoint or a TorchScript archive: export the model with "
                "torch.export.export and save that with torch.export.save)" if any(
                    n.endswith("/data.pkl") for n in names) else "")
        raise ModelFileError(what, f"not a PyTorch exported program: a zip archive without an archive_format "
                                   f"record{hint}; {written_by}")
    with _LogRecords("torch.export") as logs:  # torch.export.load logs the real reason, then raises a vague one
        try:
            return torch.export.load(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001 - any failure to deserialise means a damaged archive
            reason = logs.last_exception() or _one_line(e)
    raise ModelFileError(what, f"a damaged or incompatible torch.export archive: torch.export.load failed ({reason})")


def _symbolic_binding(what: str, name: str, dims, shape: Sequence[int], bounds) -> dict[str, int]:
    """{symbolic variable: value} that gives input `name` (relax dims `dims`) the shape `shape`."""
    if len(dims) != len(shape):
        raise ShapeError(what, f"input {name!r} has rank {len(dims)}, the shape given is {list(shape)}")
    binding: dict[str, int] = {}
    lower, upper = bounds
    for axis, (d, v) in enumerate(zip(dims, shape)):
        v = int(v)
        static = _int_or_none(d)
        if static is not None:
            if static != v:
                raise ShapeError(what, f"input {name!r} has the static dim {static} at axis {axis} in the exported "
                                           f"program, the shape given is {list(shape)}")
            continue
        sym = str(d)
        if not hasattr(d, "name"):
            raise ShapeError(what, f"input {name!r} dim {axis} is the expression {sym} of other dims: give the "
                                       f"shapes of the inputs that define them")
        lo, hi = lower.get(sym), upper.get(sym)
        if (lo is not None and v < int(lo)) or (hi is not None and v > int(hi)):
            rng = f"[{lo if lo is not None else 0}, {hi if hi is not None else 'inf'}]"
            raise ShapeError(what, f"input {name!r} dim {axis} ({sym}) was exported with the range {rng}; "
                                       f"the shape given is {list(shape)}")
        if binding.setdefault(sym, v) != v:
            raise ShapeError(what, f"input {name!r} uses the dynamic dim {sym} twice with different values in "
                                       f"{list(shape)}")
    return binding


def _load_pt2(source, what, shapes, dtypes, static, strict_shapes, keep_params_in_input) -> LoadedModel:
    torch = _import_torch(what)
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from .provenance import install_torch

    install_torch()  # reports name the torch modules (`layer1.0.conv1:conv2d_3`), not `lv12`

    program = _read_pt2(source, what, torch)
    signature = program.graph_signature
    names = list(signature.user_inputs)
    unknown = sorted(set(shapes) - set(names)) + sorted(set(dtypes or {}) - set(names))
    if unknown and strict_shapes:
        raise ShapeError(what, f"it has no input {unknown[0]!r} (its inputs: {', '.join(names) or 'none'})")
    with warnings.catch_warnings():  # torch 2.13's run_decompositions deep-copies a deprecated spec type of its own
        warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning)
        mod = from_exported_program(program, keep_params_as_input=keep_params_in_input, unwrap_unit_return_tuple=True)
    fn = mod["main"]
    attrs = fn.attrs if fn.attrs is not None else {}
    bounds = ({str(k): v for k, v in attrs["tir_var_lower_bound"].items()} if "tir_var_lower_bound" in attrs else {},
              {str(k): v for k, v in attrs["tir_var_upper_bound"].items()} if "tir_var_upper_bound" in attrs else {})
    ins, _ = _signature(mod)
    params = {n: p for n, p in zip(names, fn.params)}
    binding: dict[str, int] = {}
    for name, shape in shapes.items():
        if name not in params:
            continue
        ty = params[name].ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None or not hasattr(ty.shape, "values"):
            raise ShapeError(what, f"input {name!r} is not a tensor of known rank; it takes no shape")
        for sym, v in _symbolic_binding(what, name, list(ty.shape.values), shape, bounds).items():
            if binding.setdefault(sym, v) != v:
                raise ShapeError(what, f"the dynamic dim {sym} is given as {binding[sym]} and as {v} "
                                           f"(input {name!r})")
    if binding:
        mod = relax.transform.BindSymbolicVars(binding, "main")(mod)
        ins, _ = _signature(mod)
    for name, (shape, dtype) in zip(names, ins):
        want = (dtypes or {}).get(name)
        if want is not None and dtype is not None and str(want) != dtype:
            raise ModelLoadError(what, f"input {name!r} is {dtype} in the exported program, which fixes its input "
                                       f"dtypes (export it with a {want} example input instead)")
    inputs = _named(names, ins)
    if static:
        for t in inputs:
            if t.shape is None or None in t.shape:
                shown = ",".join(str(d) if d is not None else "N" for d in t.shape or ["N"])
                raise ShapeError(what, f"input {t.name!r} has dynamic dims {list(t.shape or [])} (exported with "
                                           f"torch.export.Dim): give its shape (--shape {t.name}={shown} on the "
                                           f"command line)")
    _, outs = _signature(mod)
    return LoadedModel(mod, inputs, _named(list(signature.user_outputs), outs), "pt2", program)


# ---- the imported module's signature ----------------------------------------------------------

def _leaves(ty) -> List[Tuple[Optional[Shape], Optional[str]]]:
    from tvm import relax

    if isinstance(ty, relax.TupleType):
        return [leaf for f in ty.fields for leaf in _leaves(f)]
    if isinstance(ty, relax.TensorType):
        shape = None
        if ty.shape is not None and hasattr(ty.shape, "values"):
            shape = tuple(_int_or_none(v) for v in ty.shape.values)
        return [(shape, str(ty.dtype))]
    return [(None, None)]


def _int_or_none(v) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def check_static_dims(mod, what: str) -> None:
    """Refuses an imported module in which a tensor gets a negative static dimension: the model's
    operator options do not fit their inputs (e.g. a pooling window larger than its input), which the
    frontends do not check and the compiler cannot handle."""
    from tvm import relax

    from .provenance import source_name

    fn = mod["main"]
    bindings = [(f"input {p.name}", p.ty) for p in fn.params]
    if isinstance(fn.body, relax.SeqExpr):
        bindings += [(f"operator {source_name(b.value) or b.var.name}", b.var.ty)
                     for block in fn.body.blocks for b in block.bindings]
    for where, ty in bindings:
        for shape, _ in _leaves(ty):
            if shape is not None and any(d is not None and d < 0 for d in shape):
                raise ModelFileError(what, f"its output gets the shape {list(shape)}: the operator's attributes do not "
                                           f"fit its input (e.g. a window or stride larger than the input)",
                                     operator=where, fix="check the model with its reference runtime; it is inconsistent")


def _signature(mod) -> Tuple[List[Tuple], List[Tuple]]:
    """(inputs, outputs) of main as (shape, dtype): the graph inputs only (num_input), then every
    tensor the function returns (tuples flattened)."""
    fn = mod["main"]
    params = list(fn.params)
    if fn.attrs is not None and "num_input" in fn.attrs:
        params = params[:int(fn.attrs["num_input"])]
    return [_leaves(p.ty)[0] for p in params], _leaves(fn.ret_ty)


def _named(names: Sequence[str], infos: Sequence[Tuple]) -> List[TensorInfo]:
    """The file's names with the module's shapes and dtypes (unknown when the counts differ, e.g.
    an output that is a nested tuple)."""
    if len(names) != len(infos):
        return [TensorInfo(n, None, None) for n in names]
    return [TensorInfo(n, s, d) for n, (s, d) in zip(names, infos)]
