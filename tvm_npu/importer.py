"""Loading model files (ONNX, TFLite, PyTorch .pt2) into Relax: the one loader of the CLI, the model zoo and the Relay layer.

    loaded = load("model.onnx", {"x": (1, 3, 224, 224)})     # fixed input shapes
    loaded.mod                                               # the Relax IRModule
    loaded.inputs, loaded.outputs                            # [TensorInfo(name, shape, dtype)] in call order

A bad input (a missing file, a file that is not a model, an unsupported format, an unknown input
name, a dynamic input without a shape) raises one `ModelLoadError` (a `ValueError`) that names the
file and the reason; the frontends' own errors (e.g. unsupported operators) pass through unchanged.

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
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

__all__ = ["ModelLoadError", "ModelFileNotFoundError", "TensorInfo", "LoadedModel", "FORMATS", "load",
           "fix_onnx_input_shapes"]

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt2": "pt2"}
_TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of TFLite models (bytes 4..8)
_ZIP_MAGIC = b"PK\x03\x04"  # a .pt2 archive is a zip file (ONNX and TFLite files never start so)
TORCH_EXTRA = "pip install 'tvm_npu[torch]' (torch==2.13.0)"

Shape = Tuple[Optional[int], ...]


class ModelLoadError(ValueError):
    """A model that cannot be loaded: `str(e)` names the file and the reason, in one line."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"cannot load model {what}: {reason}")
        self.what, self.reason = what, reason


class ModelFileNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist (a FileNotFoundError too, as opening it would have raised)."""


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
            raise ModelLoadError(what, "not a file")
        fmt = format or FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ModelLoadError(what, f"unsupported model format {path.suffix or '(no suffix)'!r}: "
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
        except DecodeError as e:
            raise ModelLoadError(what, f"not an ONNX model ({e})") from None
        except OSError as e:  # unreadable, or its external data file is missing
            raise ModelLoadError(what, f"cannot read it ({e})") from None
        fresh = True
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_from_string(bytes(source))
        except DecodeError as e:
            raise ModelLoadError(what, f"not an ONNX model ({e})") from None
        fresh = True
    else:
        model, fresh = source, False
    if not model.HasField("graph") or model.ir_version < 3:
        raise ModelLoadError(what, "not an ONNX model (no graph, or an IR version below 3)")
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
                raise ModelLoadError(what, f"it has no input {name!r} (its inputs: {', '.join(inputs) or 'none'})")
            continue
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and len(dims) != len(shape):
            raise ModelLoadError(what, f"input {name!r} has rank {len(dims)}, the shape given is {list(shape)}")
        if not len(dims):
            vi.type.tensor_type.shape.SetInParent()
            for _ in shape:
                dims.add()
        for d, v in zip(dims, shape):
            d.Clear()
            d.dim_value = int(v)
    return model


def _load_onnx(source, what, shapes, dtypes, slim, static, strict_shapes, keep_params_in_input,
               sanitize_input_names, opset) -> LoadedModel:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model, fresh = _read_onnx(source, what)
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
                raise ModelLoadError(what, f"input {vi.name!r} has dynamic dims {dims}: give its shape "
                                           f"(--shape {vi.name}={shown} on the command line)")
    if slim:
        model = _slim(model)
    mod = from_onnx(model, dtype_dict=dict(dtypes) if dtypes else "float32", opset=opset,
                    keep_params_in_input=keep_params_in_input, sanitize_input_names=sanitize_input_names)
    ins, outs = _signature(mod)
    names = [i.name for i in model.graph.input]
    return LoadedModel(mod, _named(names, ins), _named([o.name for o in model.graph.output], outs), "onnx", model)


def _slim(model):
    import onnxslim

    return onnxslim.slim(model, skip_optimizations=["graph_fusion"])


# ---- TFLite -----------------------------------------------------------------------------------

def _load_tflite(source, what, shapes, dtypes, static, strict_shapes, op_converter) -> LoadedModel:
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        buf = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
        if buf[4:8] != _TFLITE_IDENTIFIER:
            raise ModelLoadError(what, f"not a TFLite model (no {_TFLITE_IDENTIFIER.decode()} flatbuffer identifier)")
        model = tflite.Model.GetRootAsModel(buf, 0)
    else:
        model = source
    if model.SubgraphsLength() < 1:
        raise ModelLoadError(what, "not a TFLite model (no subgraph)")
    graph = model.Subgraphs(0)
    names = [graph.Tensors(graph.Inputs(i)).Name().decode() for i in range(graph.InputsLength())]
    unknown = sorted(set(shapes) - set(names)) + sorted(set(dtypes or {}) - set(names))
    if unknown and strict_shapes:
        raise ModelLoadError(what, f"it has no input {unknown[0]!r} (its inputs: {', '.join(names) or 'none'})")
    kw = {}
    if shapes:
        kw["shape_dict"] = {n: list(s) for n, s in shapes.items() if n in names}
    if dtypes:
        kw["dtype_dict"] = {n: d for n, d in dtypes.items() if n in names}
    if op_converter is not None:
        kw["op_converter"] = op_converter
    mod = from_tflite(model, **kw)
    ins, outs = _signature(mod)
    inputs = _named(names, ins)
    if static:
        for t in inputs:
            if t.shape is None or None in t.shape:
                raise ModelLoadError(what, f"input {t.name!r} has dynamic dims {t.shape}: give its shape")
    out_names = [graph.Tensors(graph.Outputs(i)).Name().decode() for i in range(graph.OutputsLength())]
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
            raise ModelLoadError(what, f"cannot read it ({e})") from None
    else:
        data = bytes(source)
    written_by = "a .pt2 file is a zip archive written by torch.export.save"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ModelLoadError(what, f"not a PyTorch exported program: not a zip archive or a truncated one ({e}); "
                                   f"{written_by}") from None
    if not any(n.endswith("/archive_format") or n == "version" for n in names):
        hint = (" (it looks like a torch.save checkpoint or a TorchScript archive: export the model with "
                "torch.export.export and save that with torch.export.save)" if any(
                    n.endswith("/data.pkl") for n in names) else "")
        raise ModelLoadError(what, f"not a PyTorch exported program: a zip archive without an archive_format "
                                   f"record{hint}; {written_by}")
    with _LogRecords("torch.export") as logs:  # torch.export.load logs the real reason, then raises a vague one
        try:
            return torch.export.load(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001 - any failure to deserialise means a damaged archive
            reason = logs.last_exception() or _one_line(e)
    raise ModelLoadError(what, f"a damaged or incompatible torch.export archive: torch.export.load failed ({reason})")


def _symbolic_binding(what: str, name: str, dims, shape: Sequence[int], bounds) -> dict[str, int]:
    """{symbolic variable: value} that gives input `name` (relax dims `dims`) the shape `shape`."""
    if len(dims) != len(shape):
        raise ModelLoadError(what, f"input {name!r} has rank {len(dims)}, the shape given is {list(shape)}")
    binding: dict[str, int] = {}
    lower, upper = bounds
    for axis, (d, v) in enumerate(zip(dims, shape)):
        v = int(v)
        static = _int_or_none(d)
        if static is not None:
            if static != v:
                raise ModelLoadError(what, f"input {name!r} has the static dim {static} at axis {axis} in the exported "
                                           f"program, the shape given is {list(shape)}")
            continue
        sym = str(d)
        if not hasattr(d, "name"):
            raise ModelLoadError(what, f"input {name!r} dim {axis} is the expression {sym} of other dims: give the "
                                       f"shapes of the inputs that define them")
        lo, hi = lower.get(sym), upper.get(sym)
        if (lo is not None and v < int(lo)) or (hi is not None and v > int(hi)):
            rng = f"[{lo if lo is not None else 0}, {hi if hi is not None else 'inf'}]"
            raise ModelLoadError(what, f"input {name!r} dim {axis} ({sym}) was exported with the range {rng}; "
                                       f"the shape given is {list(shape)}")
        if binding.setdefault(sym, v) != v:
            raise ModelLoadError(what, f"input {name!r} uses the dynamic dim {sym} twice with different values in "
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
        raise ModelLoadError(what, f"it has no input {unknown[0]!r} (its inputs: {', '.join(names) or 'none'})")
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
            raise ModelLoadError(what, f"input {name!r} is not a tensor of known rank; it takes no shape")
        for sym, v in _symbolic_binding(what, name, list(ty.shape.values), shape, bounds).items():
            if binding.setdefault(sym, v) != v:
                raise ModelLoadError(what, f"the dynamic dim {sym} is given as {binding[sym]} and as {v} "
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
                raise ModelLoadError(what, f"input {t.name!r} has dynamic dims {list(t.shape or [])} (exported with "
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
