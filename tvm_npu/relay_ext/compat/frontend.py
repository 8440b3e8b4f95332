"""relay.frontend.from_onnx / from_tflite / from_pytorch: tvm_npu's model loader, then the weights detached into
Relay-style params."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence

from ... import importer
from .params import detach, lift_constants, rename_params, unique_names


def from_onnx(model, shape: Optional[Dict[str, Sequence[int]]] = None, dtype="float32", opset: Optional[int] = None,
              freeze_params: bool = True, convert_config=None, export_node_renamed_model_path=None, **kwargs):
    """`tvm.relay.frontend.from_onnx`: (IRModule, {initializer name: tvm.runtime.Tensor}).

    `main` takes the graph inputs (ONNX names, unsanitized, so set_input("input.1", ...) works)
    followed by the weights; relay.build(params=params) binds them back. `freeze_params` is
    accepted for compatibility: the weights are always returned in `params` and bound at build
    time, which is what Relay's freeze_params=True achieved. `convert_config` and
    `export_node_renamed_model_path` have no Relax counterpart and are ignored with a warning.
    """
    if kwargs:
        raise TypeError(f"from_onnx() got unexpected keyword arguments {sorted(kwargs)}")
    if convert_config or export_node_renamed_model_path:
        warnings.warn("relay.frontend.from_onnx: convert_config / export_node_renamed_model_path have no Relax "
                      "equivalent and are ignored", stacklevel=2)
    # as Relay: unknown names in `shape` are ignored, dynamic inputs stay dynamic, initializers that
    # are also graph inputs are weights; the input names are kept as the file has them
    loaded = importer.load(model, shape, format="onnx", dtypes=dtype if isinstance(dtype, dict) else None,
                           opset=opset, static=False, strict_shapes=False, keep_params_in_input=True,
                           sanitize_input_names=False)
    # the Relax frontend names a weight's Var init.name.removeprefix("onnx::"); key params by init.name
    names = {t.name.removeprefix("onnx::"): t.name for t in loaded.model.graph.initializer}
    return detach(loaded.mod, names)


def from_tflite(model, shape_dict: Optional[Dict[str, Sequence[int]]] = None,
                dtype_dict: Optional[Dict[str, str]] = None, op_converter=None):
    """`tvm.relay.frontend.from_tflite`: (IRModule, {weight name: tvm.runtime.Tensor}).

    `model` is a `tflite.Model` (as in Relay); the flatbuffer's bytes or a file path also work.
    The Relax frontend embeds the weights as constants; they are lifted out into parameters of
    `main` (after the inputs), named after their TFLite tensors (`_param_<i>` when a weight has no
    tensor name), with the values in the layout the graph uses (e.g. HWIO convolution weights).
    """
    from tvm.relax.frontend.tflite import tflite_frontend as tfl

    base = op_converter or tfl.OperatorConverter
    seen: Dict[str, Any] = {}

    class _Recording(base):  # records the ExprTable, and the TFLite tensor name of every weight
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            table = self.exp_tab
            if "table" in seen:
                return  # converters made for sub-graphs share no weights with main
            seen["table"], seen["names"] = table, {}
            new_const = table.new_const

            def recording_new_const(value, shape=None, dtype="float32", source_name=None):
                expr = new_const(value, shape=shape, dtype=dtype, source_name=source_name)
                if source_name:
                    name = source_name.decode() if isinstance(source_name, bytes) else str(source_name)
                    seen["names"][f"_param_{table.const_ctr - 1}"] = name
                return expr

            table.new_const = recording_new_const

    mod = importer.load(model, shape_dict, format="tflite", dtypes=dtype_dict, static=False, strict_shapes=False,
                        op_converter=_Recording).mod
    table = seen.get("table")
    weights = [] if table is None else [(key, expr) for key, (expr, _value) in table.params.items()]
    names = unique_names([seen["names"].get(key, key) for key, _ in weights]) if weights else []
    mod = lift_constants(mod, [(expr, name) for (_, expr), name in zip(weights, names)])
    return detach(mod)


def from_pytorch(script_module, input_infos, custom_convert_map=None, default_dtype: str = "float32",
                 use_parser_friendly_name: bool = False, keep_quantized_weight: bool = False,
                 export_renamed_c_graph_path=None):
    """`tvm.relay.frontend.from_pytorch`: (IRModule, {weight name: tvm.runtime.Tensor}).

    `script_module` is a `torch.nn.Module` (exported with `torch.export.export`) or, as in Relay, a
    `torch.jit.ScriptModule` from `torch.jit.trace` / `torch.jit.script` (converted to an exported
    program with torch's TorchScript converter; a module it cannot convert is a ModelLoadError that
    says to pass the original `torch.nn.Module`). `input_infos` is Relay's list of `(name, shape)` or
    `(name, (shape, dtype))` in the order `forward` takes them (a dict also works); every dimension
    must be given. The program goes through tvm_npu's loader (`tvm_npu.importer.load`) and
    `tvm.relax.frontend.torch.from_exported_program`; `main` takes the inputs under the given names,
    then one parameter per weight, named and keyed in `params` by its state-dict name
    (`conv1.weight`; `conv1_weight` with `use_parser_friendly_name`). Buffers (batch-norm
    statistics) stay constants. `custom_convert_map` (Relay converters) has no Relax counterpart;
    `keep_quantized_weight` and `export_renamed_c_graph_path` are ignored with a warning.
    """
    from .unmapped import unavailable

    if custom_convert_map:
        raise unavailable("relay.frontend.from_pytorch(custom_convert_map=...)",
                          "tvm.relax.frontend.torch.from_exported_program(torch.export.export(model, args), "
                          "custom_convert_map={aten op name: fn(node, importer) -> relax.Var})")
    if keep_quantized_weight or export_renamed_c_graph_path:
        warnings.warn("relay.frontend.from_pytorch: keep_quantized_weight / export_renamed_c_graph_path have no Relax "
                      "equivalent and are ignored", stacklevel=2)
    torch = _import_torch()
    infos = _input_infos(input_infos, default_dtype, torch)
    args = tuple(torch.zeros(shape, dtype=dtype) for _, shape, dtype in infos)
    program = _export(script_module, args, torch)
    names = list(program.graph_signature.user_inputs)
    if len(names) != len(infos):
        raise importer.ModelLoadError(_what(script_module), f"forward takes {len(names)} tensor input(s) "
                                                            f"({', '.join(names)}), input_infos gives {len(infos)}")
    shapes = {n: shape for n, (_, shape, _) in zip(names, infos)}
    loaded = importer.load(program, shapes, keep_params_in_input=True)
    weights = {s.arg.name: s.target for s in program.graph_signature.input_specs
               if s.kind == torch.export.graph_signature.InputKind.PARAMETER}
    if use_parser_friendly_name:
        weights = {k: v.replace(".", "_") for k, v in weights.items()}
    renamed = {old: new for old, (new, _, _) in zip(names, infos)}
    renamed.update(weights)
    return detach(rename_params(loaded.mod, renamed))


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"relay.frontend.from_pytorch needs PyTorch ({e}): {importer.TORCH_EXTRA}") from None
    return torch


def _what(module) -> str:
    kind = "torch.jit.ScriptModule" if type(module).__module__.startswith("torch.jit") else "torch.nn.Module"
    return f"(a {kind} {getattr(module, 'original_name', type(module).__name__)})"


def _input_infos(input_infos, default_dtype: str, torch) -> list[tuple[str, tuple[int, ...], Any]]:
    """[(name, shape, torch dtype)] of Relay's input_infos."""
    items = list(input_infos.items()) if isinstance(input_infos, dict) else list(input_infos or [])
    if not items:
        raise ValueError("relay.frontend.from_pytorch: input_infos must list (name, shape) for every input of forward")
    out = []
    for item in items:
        try:
            name, spec = item
        except (TypeError, ValueError):
            raise ValueError(f"relay.frontend.from_pytorch: an input_infos entry is (name, shape) or "
                             f"(name, (shape, dtype)), got {item!r}") from None
        dtype = default_dtype
        if isinstance(spec, (list, tuple)) and len(spec) == 2 and isinstance(spec[1], str):
            spec, dtype = spec
        try:
            shape = tuple(int(d) for d in spec)
        except (TypeError, ValueError):
            raise ValueError(f"relay.frontend.from_pytorch: input {name!r} needs a static shape of integers, "
                             f"got {spec!r}") from None
        try:
            torch_dtype = torch.empty(0, dtype=getattr(torch, str(dtype))).dtype
        except (AttributeError, TypeError):
            raise ValueError(f"relay.frontend.from_pytorch: input {name!r} has an unknown dtype {dtype!r}") from None
        out.append((str(name), shape, torch_dtype))
    return out


def _export(module, args, torch):
    """The torch.export program of a torch.nn.Module or a TorchScript module (at these example inputs)."""
    what = _what(module)
    if isinstance(module, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        from torch._export.converter import TS2EPConverter

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the converter warns about every state-dict entry it copies
                return TS2EPConverter(module, args).convert()
        except Exception as e:  # noqa: BLE001 - the converter fails in many ways; the message names it
            raise importer.ModelLoadError(what, f"torch's TorchScript converter (TS2EPConverter) cannot turn it "
                                                f"into a torch.export program ({_first_line(e)}); pass the original "
                                                f"torch.nn.Module (before torch.jit.trace/script) instead") from None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"relay.frontend.from_pytorch expects a torch.nn.Module or a torch.jit.ScriptModule, "
                        f"got {type(module).__name__}")
    if module.training:
        warnings.warn(f"relay.frontend.from_pytorch: {what} is in training mode (batch norm uses batch statistics, "
                      f"dropout is active); call .eval() for inference", stacklevel=3)
    _check_arity(module, len(args), what)
    try:
        return torch.export.export(module, args)
    except Exception as e:  # noqa: BLE001 - export errors are of many types; the message names the reason
        raise importer.ModelLoadError(what, f"torch.export.export failed ({_first_line(e)})") from None


def _check_arity(module, count: int, what: str) -> None:
    """input_infos must give one entry per positional input of forward (before export says it less clearly)."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not len(required) <= count <= len(positional):
        raise importer.ModelLoadError(what, f"forward takes {len(positional)} tensor input(s) "
                                            f"({', '.join(p.name for p in positional)}), input_infos gives {count}")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
