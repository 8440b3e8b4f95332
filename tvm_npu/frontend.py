"""Loading user models (ONNX, TFLite) into Relax with fixed input shapes, for the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass
class LoadedModel:
    mod: object  # tvm.IRModule
    inputs: List[Tuple[str, Tuple[int, ...], str]]  # (name, shape, dtype) in call order
    format: str


def _onnx(path: Path, shapes: Dict[str, Sequence[int]]) -> LoadedModel:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]
        shape = tuple(shapes.get(vi.name, dims))
        if any(d is None for d in shape):
            raise ValueError(f"input {vi.name!r} has dynamic dims {dims}: give --shape {vi.name}=" +
                             ",".join(str(d or "N") for d in dims))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
        inputs.append((vi.name, tuple(int(d) for d in shape), dtype))
    mod = from_onnx(model, shape_dict={n: list(s) for n, s, _ in inputs}, keep_params_in_input=False)
    return LoadedModel(mod, inputs, "onnx")


def _tflite(path: Path, shapes: Dict[str, Sequence[int]]) -> LoadedModel:
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    buf = path.read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    inputs, shape_dict, dtype_dict = [], {}, {}
    type_names = {v: k for k, v in tflite.TensorType.__dict__.items() if not k.startswith("_")}
    for i in range(graph.InputsLength()):
        t = graph.Tensors(graph.Inputs(i))
        name = t.Name().decode()
        shape = tuple(shapes.get(name, t.ShapeAsNumpy().tolist()))
        dtype = type_names[t.Type()].lower()  # FLOAT32 -> float32, INT8 -> int8, ...
        inputs.append((name, tuple(int(d) for d in shape), dtype))
        shape_dict[name], dtype_dict[name] = list(shape), dtype
    mod = from_tflite(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
    return LoadedModel(mod, inputs, "tflite")


def load(path: str, shapes: Optional[Dict[str, Sequence[int]]] = None) -> LoadedModel:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such model file: {path}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return _onnx(p, shapes or {})
    if suffix == ".tflite":
        return _tflite(p, shapes or {})
    raise ValueError(f"unknown model format {suffix!r}: .onnx and .tflite are supported")


def random_inputs(inputs, seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _, shape, dtype in inputs:
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def parse_shapes(items: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    shapes = {}
    for item in items or []:
        name, eq, dims = item.partition("=")
        if not eq:
            raise ValueError(f"--shape takes NAME=D1,D2,..., got {item!r}")
        shapes[name] = tuple(int(d) for d in dims.split(","))
    return shapes
