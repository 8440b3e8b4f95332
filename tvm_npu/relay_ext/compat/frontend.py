"""relay.frontend.from_onnx / from_tflite: tvm_npu's model loader, then the weights detached into Relay-style params."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence

from ... import importer
from .params import detach, lift_constants, unique_names


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
