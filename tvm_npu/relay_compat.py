"""Relay-era compatibility layer: run a TVM <= 0.16 style script on TVM 0.27 (Relax only).

After `install()` (which `import tvm_npu` calls), a Relay-era deployment script runs unchanged:

    mod, params = relay.frontend.from_onnx(model, shape={"x": (1, 3, 8, 8)})
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target="npu", params=params)
    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    m.set_input("x", x); m.run(); y = m.get_output(0).numpy()
    lib.export_library("net.so")
    m = graph_executor.GraphModule(tvm.runtime.load_module("net.so")["default"](tvm.cpu()))

How it maps (docs/RELAY_COMPAT.md has the full table):
- `relay.frontend.from_onnx/from_tflite` run the Relax frontends and *detach* the weights: the
  module's `main` takes the inputs first, then one parameter per weight; `params` maps the
  weight names to `tvm.runtime.Tensor`s.
- `relay.build` binds `params` back (`relax.transform.BindParams`), compiles with `tvm.compile`
  (so "npu*" targets partition to the NPU) and returns a `GraphExecutorFactoryModule` around the
  Relax VM executable. A small Relax function `_tvm_npu_relay_compat_meta` (a JSON string: input
  names, shapes and dtypes, output count) is compiled into the executable so that a library
  loaded back from disk still knows its interface.
- `graph_executor.GraphModule` drives a `relax.VirtualMachine` with the graph-executor API.
- `tvm.runtime.load_module(path)["default"]` works because `install()` extends
  `tvm.runtime.Module.__getitem__`: on a Relax VM executable that has no function "default", the
  name "default" (or the `mod_name` given to `relay.build`) returns the executor creator instead
  of raising. Every other lookup is unchanged.
- Everything Relay could do that has no mapping (Relay IR, relay.transform passes, quantize,
  AutoTVM, other frontends ...) raises `NotImplementedError` naming the Relax replacement.

Nothing is installed when TVM ships its own `tvm.relay` (or `tvm.contrib.graph_executor`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tvm
from tvm import relax

__all__ = ["install", "uninstall", "is_installed", "load_module", "GraphModule", "GraphExecutorFactoryModule",
           "build", "from_onnx", "from_tflite", "create"]

META_FUNC = "_tvm_npu_relay_compat_meta"  # Relax function compiled into relay.build executables
META_FORMAT = "tvm_npu.relay_compat/1"
_MARK = "__tvm_npu_relay_compat__"  # set on every module object this file registers
_VM_EXECUTABLE_KIND = "relax.VMExecutable"


# --------------------------------------------------------------------------------------------
# NotImplementedError messages: what replaces each unmappable Relay API
# --------------------------------------------------------------------------------------------

_IR_BUILD = ("build Relax IR instead: relax.BlockBuilder with relax.Var(name, relax.TensorType(shape, dtype)), "
             "relax.const and tvm.relax.op.*; or import a model with relay.frontend.from_onnx / from_tflite")

# name in tvm.relay -> Relax replacement
_RELAY_TOP = {
    "var": "relax.Var(name, relax.TensorType(shape, dtype)) (inside a relax.BlockBuilder function)",
    "Var": "relax.Var",
    "const": "relax.const(value, dtype)",
    "Constant": "relax.const / tvm.ir.expr.Constant",
    "Function": "relax.Function or relax.BlockBuilder().function(...)",
    "Call": "relax.Call (or bb.emit(relax.op.<op>(...)))",
    "Tuple": "relax.Tuple",
    "TupleGetItem": "relax.TupleGetItem",
    "Let": "relax.VarBinding inside a relax.BindingBlock (Relax is always in A-normal form)",
    "If": "relax.If",
    "GlobalVar": "tvm.ir.GlobalVar",
    "Module": "tvm.IRModule",
    "IRModule": "tvm.IRModule",
    "TensorType": "relax.TensorType(shape, dtype)",
    "TupleType": "relax.TupleType",
    "FuncType": "relax.FuncType",
    "scalar_type": "relax.TensorType((), dtype)",
    "ScopeBuilder": "relax.BlockBuilder",
    "ExprFunctor": "relax.expr_functor.PyExprVisitor / PyExprMutator",
    "ExprVisitor": "relax.expr_functor.PyExprVisitor (with @relax.expr_functor.visitor)",
    "ExprMutator": "relax.expr_functor.PyExprMutator (with @relax.expr_functor.mutator)",
    "Prelude": "none (Relax has no ADT prelude)",
    "create_executor": "ex = tvm.compile(mod, target); relax.VirtualMachine(ex, tvm.cpu())['main'](*inputs)",
    "optimize": "tvm.compile(mod, target) (it runs the optimisation pipeline; tvm_npu hooks it)",
    "bind_params_by_name": "relax.transform.BindParams('main', params)(mod)",
}

# stub submodules of tvm.relay: name -> replacement text for any attribute of it
_RELAY_SUBMODULES = {
    "op": "tvm.relax.op (operators) inside a relax.BlockBuilder; BYOC partitioning for the NPU is "
          "tvm.compile(mod, target='npu') or tvm_npu.partition_for_npu",
    "nn": "tvm.relax.op.nn",
    "image": "tvm.relax.op.image",
    "vision": "tvm.relax.op.vision",
    "random": "tvm.relax.op (no random ops for inference; generate data with numpy)",
    "annotation": "none: device annotation is R.to_vdevice / relax.transform.RealizeVDevice",
    "expr": _IR_BUILD,
    "ty": "tvm.relax.TensorType / relax.TupleType / relax.FuncType",
    "function": "relax.Function",
    "analysis": "tvm.relax.analysis (well_formed, free_vars, ...)",
    "dataflow_pattern": "tvm.relax.dpl (is_op, wildcard, ...) with relax.transform.FuseOpsByPattern",
    "testing": "tvm.relax.testing; Relay's model zoo (relay.testing.mobilenet ...) has no Relax copy: "
               "export the model to ONNX and use relay.frontend.from_onnx",
    "quantize": "none in Relax: quantize before import (onnxruntime.quantization QDQ model, or an int8 "
                "TFLite model) and import it with relay.frontend.from_onnx / from_tflite",
    "qnn": "an already quantized model imported with relay.frontend.from_onnx (QDQ) or from_tflite; "
           "Relax has no qnn dialect to build by hand",
    "vm": "ex = tvm.compile(mod, target); relax.VirtualMachine(ex, dev) (relay.build + "
          "graph_executor.GraphModule also work through this shim)",
    "param_dict": "tvm.runtime.save_param_dict / load_param_dict",
    "loops": "relax control flow (relax.If, recursion)",
    "prelude": "none (Relax has no ADT prelude)",
    "adt": "none (Relax has no algebraic data types)",
    "collage": "none (no Collage in Relax)",
    "contrib": "tvm.compile(mod, target='npu') / tvm_npu.partition_for_npu for BYOC offload",
}

_TRANSFORMS = {
    "InferType": "none needed: Relax infers types while the IR is built (relax.transform.Normalize re-normalizes)",
    "FoldConstant": "relax.transform.FoldConstant()",
    "ConvertLayout": "relax.transform.ConvertLayout({'relax.nn.conv2d': ['NHWC', 'OHWI']}) "
                     "(tvm_npu already lays convolutions out for the NPU)",
    "AlterOpLayout": "relax.transform.AlterOpImpl",
    "ToMixedPrecision": "relax.transform.ToMixedPrecision(out_dtype)",
    "SimplifyInference": "relax.transform.DecomposeOpsForInference()",
    "FoldScaleAxis": "relax.transform.FoldBatchnormToConv2D() (closest; no general scale-axis folding)",
    "ForwardFoldScaleAxis": "relax.transform.FoldBatchnormToConv2D()",
    "BackwardFoldScaleAxis": "relax.transform.FoldBatchnormToConv2D()",
    "EliminateCommonSubexpr": "relax.transform.EliminateCommonSubexpr()",
    "DeadCodeElimination": "relax.transform.DeadCodeElimination()",
    "RemoveUnusedFunctions": "relax.transform.DeadCodeElimination()",
    "FuseOps": "relax.transform.FuseOps() (tvm.compile runs it)",
    "MergeComposite": "relax.transform.FuseOpsByPattern(patterns)",
    "AnnotateTarget": "tvm.compile(mod, target='npu') (or tvm_npu.partition_for_npu) for NPU offload; "
                      "relax.transform.FuseOpsByPattern(..., annotate_codegen=True) for other BYOC",
    "MergeCompilerRegions": "relax.transform.MergeCompositeFunctions()",
    "PartitionGraph": "tvm.compile(mod, target='npu') / tvm_npu.partition_for_npu; "
                      "relax.transform.RunCodegen() for other BYOC",
    "DynamicToStatic": "static shapes at import (shape=...) or relax.transform.BindSymbolicVars",
    "CombineParallelDense": "relax.transform.CombineParallelMatmul()",
    "CombineParallelConv2D": "none (no Relax equivalent)",
    "CanonicalizeOps": "relax.transform.LegalizeOps() (tvm.compile runs it)",
    "CanonicalizeCast": "none (no Relax equivalent)",
    "Legalize": "relax.transform.LegalizeOps()",
    "LambdaLift": "relax.transform.LambdaLift()",
    "ToANormalForm": "relax.transform.Normalize() (Relax is always in A-normal form)",
    "ToGraphNormalForm": "relax.transform.Normalize()",
    "ToBasicBlockNormalForm": "relax.transform.Normalize()",
    "EtaExpand": "none (no Relax equivalent)",
    "Inline": "relax.transform.InlinePrivateFunctions()",
    "DefuseOps": "none (no Relax equivalent)",
    "FakeQuantizationToInteger": "none: import an already quantized model (QDQ ONNX or int8 TFLite)",
    "BatchingOps": "none (no Relax equivalent)",
    "PartialEvaluate": "relax.transform.FoldConstant()",
    "RemoveStandaloneReshapes": "relax.transform.RemoveRedundantReshape()",
    "InferTypeLocal": "none needed: every Relax expression carries its type (expr.ty)",
    "function_pass": "relax.transform.function_pass",
    "dataflowblock_pass": "relax.transform.dataflowblock_pass",
}

_FRONTENDS = {
    "from_pytorch": "tvm.relax.frontend.torch.from_exported_program(torch.export.export(model, args)) "
                    "(or export the model to ONNX and use relay.frontend.from_onnx)",
    "from_tensorflow": "convert the model to TFLite (tf.lite.TFLiteConverter) or ONNX (tf2onnx) and use "
                       "relay.frontend.from_tflite / from_onnx",
    "from_keras": "convert the model to TFLite or ONNX (tf2onnx) and use relay.frontend.from_tflite / from_onnx",
    "from_mxnet": "export the model to ONNX and use relay.frontend.from_onnx",
    "from_darknet": "export the model to ONNX and use relay.frontend.from_onnx",
    "from_caffe": "export the model to ONNX and use relay.frontend.from_onnx",
    "from_caffe2": "export the model to ONNX and use relay.frontend.from_onnx",
    "from_coreml": "export the model to ONNX and use relay.frontend.from_onnx",
    "from_paddle": "export the model to ONNX (paddle2onnx) and use relay.frontend.from_onnx",
    "from_oneflow": "export the model to ONNX and use relay.frontend.from_onnx",
    "quantize_conv_bias_mkldnn_from_var": "an already quantized model imported with from_onnx / from_tflite",
}

_TUNING = ("tune with MetaSchedule instead: relax.transform.MetaScheduleTuneIRMod / "
           "tvm.s_tir.meta_schedule (CPU kernels); the NPU code generator tiles its kernels itself and "
           "needs no tuning log")


def _unavailable(qualname: str, replacement: str) -> NotImplementedError:
    return NotImplementedError(
        f"{qualname} is not available: TVM {tvm.__version__} has no Relay, and tvm_npu.relay_compat maps only "
        f"relay.frontend.from_onnx/from_tflite, relay.build and graph_executor.GraphModule. "
        f"Relax replacement: {replacement}. See docs/RELAY_COMPAT.md.")


class _ShimModule(types.ModuleType):
    """A module of the shim. Public names it does not define raise NotImplementedError naming
    the Relax replacement; private/dunder names raise AttributeError (so that tools probing for
    __file__, __path__ ... keep working)."""

    def __init__(self, name: str, doc: str, replacements: Optional[Dict[str, str]] = None,
                 default: Optional[str] = None):
        super().__init__(name, doc)
        object.__setattr__(self, "_replacements", dict(replacements or {}))
        object.__setattr__(self, "_default", default)
        setattr(self, _MARK, True)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        repl = self._replacements.get(name)
        if repl is None:
            repl = self._default(name) if callable(self._default) else self._default
        if repl is None:
            repl = _guess_replacement(name)
        raise _unavailable(f"{self.__name__}.{name}", repl)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._replacements))


def _guess_replacement(name: str) -> str:
    for ns, label in ((relax.op.nn, "tvm.relax.op.nn"), (relax.op, "tvm.relax.op")):
        if hasattr(ns, name):
            return f"{label}.{name} (emitted with a relax.BlockBuilder); {_IR_BUILD}"
    return _IR_BUILD


# --------------------------------------------------------------------------------------------
# Frontends
# --------------------------------------------------------------------------------------------

def _np_to_tensor(value) -> tvm.runtime.Tensor:
    if isinstance(value, tvm.runtime.Tensor):
        return value
    return tvm.runtime.tensor(np.ascontiguousarray(np.asarray(value)))


def _detach(mod: tvm.IRModule, names: Optional[Dict[str, str]] = None):
    """(mod without main's "params" attribute, {weight name: Tensor}) for a main whose parameters
    are the inputs (num_input of them) followed by the weights."""
    mod, detached = relax.frontend.detach_params(mod)
    fn = mod["main"]
    num_input = int(fn.attrs["num_input"]) if fn.attrs is not None and "num_input" in fn.attrs else 0
    weights = list(detached.get("main", []))
    weight_vars = list(fn.params)[num_input:]
    if len(weights) != len(weight_vars):
        raise RuntimeError(f"relay_compat: the frontend gave {len(weights)} weight values for "
                           f"{len(weight_vars)} weight parameters of main")
    names = names or {}
    params: Dict[str, tvm.runtime.Tensor] = {}
    for var, value in zip(weight_vars, weights):
        params[names.get(var.name, var.name)] = value
    return mod, params


def from_onnx(model, shape: Optional[Dict[str, Sequence[int]]] = None, dtype="float32", opset: Optional[int] = None,
              freeze_params: bool = True, convert_config=None, export_node_renamed_model_path=None, **kwargs):
    """`tvm.relay.frontend.from_onnx`: (IRModule, {initializer name: tvm.runtime.Tensor}).

    `main` takes the graph inputs (ONNX names, unsanitized, so set_input("input.1", ...) works)
    followed by the weights; relay.build(params=params) binds them back. `freeze_params` is
    accepted for compatibility: the weights are always returned in `params` and bound at build
    time, which is what Relay's freeze_params=True achieved. `convert_config` and
    `export_node_renamed_model_path` have no Relax counterpart and are ignored with a warning.
    """
    import onnx
    from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

    if kwargs:
        raise TypeError(f"from_onnx() got unexpected keyword arguments {sorted(kwargs)}")
    if convert_config or export_node_renamed_model_path:
        warnings.warn("relay_compat.from_onnx: convert_config / export_node_renamed_model_path have no Relax "
                      "equivalent and are ignored", stacklevel=2)
    if isinstance(model, (str, bytes)):
        model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    graph = model.graph
    init_names = [t.name for t in graph.initializer]
    if set(init_names) & {i.name for i in graph.input}:
        # old exporters list the weights as graph inputs too; Relay treated them as weights
        copy = type(model)()
        copy.CopyFrom(model)
        keep = [i for i in copy.graph.input if i.name not in set(init_names)]
        del copy.graph.input[:]
        copy.graph.input.extend(keep)
        model = copy
    dtype_dict = dtype if isinstance(dtype, dict) else None
    mod = relax_from_onnx(model, shape_dict=dict(shape) if shape else None,
                          dtype_dict=dtype_dict if dtype_dict is not None else "float32", opset=opset,
                          keep_params_in_input=True, sanitize_input_names=False)
    # the Relax frontend names a weight's Var init.name.removeprefix("onnx::"); key params by init.name
    names = {n.removeprefix("onnx::"): n for n in init_names}
    return _detach(mod, names)


def from_tflite(model, shape_dict: Optional[Dict[str, Sequence[int]]] = None,
                dtype_dict: Optional[Dict[str, str]] = None, op_converter=None):
    """`tvm.relay.frontend.from_tflite`: (IRModule, {weight name: tvm.runtime.Tensor}).

    `model` is a `tflite.Model` (as in Relay); the flatbuffer's bytes or a file path also work.
    The Relax frontend embeds the weights as constants; they are lifted out into parameters of
    `main` (after the inputs), named after their TFLite tensors (`_param_<i>` when a weight has no
    tensor name), with the values in the layout the graph uses (e.g. HWIO convolution weights).
    """
    import tflite
    from tvm.relax.frontend.tflite import tflite_frontend as tfl

    if isinstance(model, str):
        with open(model, "rb") as f:
            model = f.read()
    if isinstance(model, (bytes, bytearray, memoryview)):
        model = tflite.Model.GetRootAsModel(bytes(model), 0)
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

    mod = tfl.from_tflite(model, shape_dict=shape_dict, dtype_dict=dtype_dict, op_converter=_Recording)
    table = seen.get("table")
    weights = [] if table is None else [(key, expr) for key, (expr, _value) in table.params.items()]
    names = _unique_names([seen["names"].get(key, key) for key, _ in weights]) if weights else []
    mod = _lift_constants(mod, [(expr, name) for (_, expr), name in zip(weights, names)])
    return _detach(mod)


def _unique_names(names: List[str]) -> List[str]:
    out, used = [], set()
    for n in names:
        cand, i = n, 1
        while cand in used:
            cand, i = f"{n}_{i}", i + 1
        used.add(cand)
        out.append(cand)
    return out


def _lift_constants(mod: tvm.IRModule, consts: List[tuple]) -> tvm.IRModule:
    """main with each given Constant replaced by a new trailing parameter, its value moved to the
    "params" attribute (the layout relax.frontend.detach_params expects)."""
    fn = mod["main"]
    by_handle = {}
    for expr, name in consts:
        by_handle.setdefault(expr.__hash__(), []).append((expr, name))
    new_params, values = [], []
    lifted: Dict[int, relax.Var] = {}

    @relax.expr_functor.mutator
    class _Lift(relax.PyExprMutator):
        def visit_generic_const_(self, op):
            for expr, name in by_handle.get(op.__hash__(), []):
                if op.same_as(expr):
                    key = op.__hash__()
                    if key not in lifted:
                        var = relax.Var(name, op.ty)
                        lifted[key] = var
                        new_params.append(var)
                        values.append(op.value)
                    return lifted[key]
            return op

    body = _Lift().visit_expr(fn.body)
    attrs = {k: v for k, v in fn.attrs.items() if k != "params"} if fn.attrs is not None else {}
    if not new_params:
        has_params = fn.attrs is not None and "params" in fn.attrs
        return _with_main(mod, fn.without_attr("params") if has_params else fn)
    attrs["num_input"] = len(fn.params)
    attrs["params"] = values
    new_fn = relax.Function(list(fn.params) + new_params, body, fn.ret_ty, fn.is_pure).with_attrs(attrs)
    return _with_main(mod, new_fn)


def _with_main(mod: tvm.IRModule, fn: relax.Function) -> tvm.IRModule:
    out = _copy_module(mod)
    out["main"] = fn
    return out


def _copy_module(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.IRModule({gv: f for gv, f in mod.functions.items()}, attrs=mod.attrs)


# --------------------------------------------------------------------------------------------
# relay.build
# --------------------------------------------------------------------------------------------

class Executor:
    """`tvm.relay.backend.Executor`: only the graph executor exists (served by the Relax VM)."""

    def __init__(self, name: str = "graph", options: Optional[dict] = None):
        if name != "graph":
            raise _unavailable(f"tvm.relay.backend.Executor({name!r})",
                               "tvm.compile + relax.VirtualMachine (the Relax VM is the only executor; "
                               "relay.build serves the graph-executor API on it)")
        self.name, self.options = name, dict(options or {})

    def __repr__(self):
        return f"Executor({self.name!r}, {self.options})"


class Runtime:
    """`tvm.relay.backend.Runtime`: only the C++ runtime exists."""

    def __init__(self, name: str = "cpp", options: Optional[dict] = None):
        if name != "cpp":
            raise _unavailable(f"tvm.relay.backend.Runtime({name!r})",
                               "the default C++ runtime (microTVM / CRT is not part of TVM 0.27)")
        self.name, self.options = name, dict(options or {})

    def __repr__(self):
        return f"Runtime({self.name!r}, {self.options})"


def _resolve_target(target, target_host) -> tvm.target.Target:
    if target is None:
        target = tvm.target.Target.current(allow_none=True)
        if target is None:
            raise ValueError("relay.build: no target given and no target in scope")
    if isinstance(target, dict):
        if len(target) != 1:
            raise _unavailable("relay.build with a heterogeneous target dict",
                               "one target per build (tvm.compile with relax VDevice annotations "
                               "for heterogeneous execution)")
        target = next(iter(target.values()))
    if not isinstance(target, tvm.target.Target):
        target = tvm.target.Target(target)
    if target_host is not None:
        host = target_host if isinstance(target_host, tvm.target.Target) else tvm.target.Target(target_host)
        if host.kind.name != "llvm":
            warnings.warn(f"relay.build: target_host={str(host)!r} is ignored; the host code of this build is "
                          f"compiled for {target.kind.name}", stacklevel=3)
    return target


def _bind(mod: tvm.IRModule, params: Optional[Dict[str, Any]]) -> tvm.IRModule:
    """Relay's bind_params_by_name: bind the params whose name is a parameter of main (names not in
    main are ignored, as Relay did); names may also be given with the "onnx::" prefix."""
    if not params:
        return mod
    fn = mod["main"]
    by_name: Dict[str, List[relax.Var]] = {}
    for v in fn.params:
        by_name.setdefault(v.name, []).append(v)
    binding = {}
    for key, value in params.items():
        key = str(key)
        cands = by_name.get(key) or by_name.get(key.removeprefix("onnx::")) or []
        if not cands:
            continue
        if len(cands) > 1:
            raise ValueError(f"relay.build: several parameters of main are named {key!r}; cannot bind by name")
        binding[cands[0]] = _np_to_tensor(value)
    if not binding:
        return mod
    return relax.transform.BindParams("main", binding)(mod)


def _tensor_info(ty) -> List[Dict[str, Any]]:
    """[{"shape": [int|None] or None, "dtype": str}] for every tensor leaf of a Relax type."""
    if isinstance(ty, relax.TupleType):
        return [leaf for f in ty.fields for leaf in _tensor_info(f)]
    if isinstance(ty, relax.TensorType):
        shape = None
        if ty.shape is not None and hasattr(ty.shape, "values"):
            shape = []
            for v in ty.shape.values:
                try:
                    shape.append(int(v))
                except (TypeError, ValueError):
                    shape.append(None)
        return [{"shape": shape, "dtype": str(ty.dtype)}]
    return [{"shape": None, "dtype": None}]


def _meta(mod: tvm.IRModule, mod_name: str, target: tvm.target.Target) -> Dict[str, Any]:
    fn = mod["main"]
    inputs = []
    for v in fn.params:
        info = _tensor_info(v.ty)[0]
        inputs.append({"name": v.name, **info})
    outputs = _tensor_info(fn.ret_ty)
    return {"format": META_FORMAT, "mod_name": mod_name, "target": str(target), "inputs": inputs,
            "outputs": outputs}


def _with_meta(mod: tvm.IRModule, meta: Dict[str, Any]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    with bb.function(META_FUNC, []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(meta, sort_keys=True)))
    out = _copy_module(mod)
    out[META_FUNC] = bb.get()[META_FUNC]
    return out


def build(ir_mod, target=None, target_host=None, executor=None, runtime=None, workspace_memory_pools=None,
          constant_memory_pools=None, params=None, mod_name: Optional[str] = "default"):
    """`tvm.relay.build`: binds `params`, compiles with `tvm.compile(mod, target)` (inside the
    caller's PassContext) and returns a GraphExecutorFactoryModule. "npu", "npu-nano", "npu-edge",
    "npu-pro" (or any target with the "npu" key) partition to the NPU; "llvm" runs on the CPU."""
    if isinstance(ir_mod, relax.Function):
        ir_mod = tvm.IRModule({"main": ir_mod})
    if not isinstance(ir_mod, tvm.IRModule):
        raise TypeError(f"relay.build expects a tvm.IRModule (from relay.frontend.*), got {type(ir_mod).__name__}")
    if "main" not in [gv.name_hint for gv in ir_mod.get_global_vars()]:
        raise ValueError("relay.build: the module has no 'main' function")
    for name, value in (("executor", executor), ("runtime", runtime)):
        if value is not None and getattr(value, "name", None) not in ("graph", "cpp"):
            raise _unavailable(f"relay.build({name}={value!r})", "the Relax VM (graph-executor API through this shim)")
    if workspace_memory_pools is not None or constant_memory_pools is not None:
        raise _unavailable("relay.build memory pools (USMP)",
                           "relax.transform.StaticPlanBlockMemory (tvm.compile runs it)")
    target = _resolve_target(target, target_host)
    mod_name = mod_name or "default"
    bound = _bind(ir_mod, params)
    meta = _meta(bound, mod_name, target)
    from .relay_ext.partition import last_report
    from .target import is_npu_target

    before = last_report()
    executable = tvm.compile(_with_meta(bound, meta), target=target)
    report = last_report() if is_npu_target(target) and last_report() is not before else None
    return GraphExecutorFactoryModule(executable, meta, bound, target, report)


class GraphExecutorFactoryModule:
    """What relay.build returns: `factory["default"](dev)` creates an executor for GraphModule;
    `export_library(path)` writes the Relax VM executable (tvm.runtime.load_module(path)["default"]
    works the same way after install())."""

    def __init__(self, executable, meta: Dict[str, Any], ir_mod: tvm.IRModule, target, npu_report=None):
        self.executable = executable  # tvm.relax.VMExecutable
        self.lib = executable
        self.module = executable.mod  # the runtime module (kind relax.VMExecutable)
        self.ir_mod = ir_mod  # main with the params bound, as compiled
        self.target = target
        self.libmod_name = meta["mod_name"]
        self.params: Dict[str, tvm.runtime.Tensor] = {}  # everything is bound into the executable
        self.npu_report = npu_report  # tvm_npu.last_report() of this build (None for non-NPU targets)
        self._meta = meta

    def __getitem__(self, name: str):
        if name == self.libmod_name:
            return _ExecutorCreator(self.module)
        if name == "get_graph_json":
            return self.get_graph_json
        if name == "get_params":
            return self.get_params
        return self.module[name]

    def export_library(self, file_name, *args, **kwargs):
        return self.executable.export_library(file_name, *args, **kwargs)

    def get_lib(self):
        """The compiled code: the Relax VM executable (it has export_library)."""
        return self.executable

    def get_params(self) -> Dict[str, tvm.runtime.Tensor]:
        """Always {}: relay.build binds the params into the executable, so the executor needs none
        (`m.set_input(**lib.get_params())` is a no-op)."""
        return dict(self.params)

    def get_graph_json(self) -> str:
        """Not a Relay graph: a JSON description of the inputs and outputs (what
        graph_executor.create accepts and ignores)."""
        return json.dumps(self._meta, sort_keys=True)

    def get_executor_config(self) -> str:
        return self.get_graph_json()

    def get_devices(self):
        return [tvm.cpu(0)]

    def __repr__(self):
        return f"GraphExecutorFactoryModule(target={str(self.target)!r}, mod_name={self.libmod_name!r})"


# --------------------------------------------------------------------------------------------
# graph_executor
# --------------------------------------------------------------------------------------------

class _ExecutorCreator:
    """`lib["default"]`: called with a device, returns the executor GraphModule wraps."""

    def __init__(self, exec_module):
        self.exec_module = exec_module

    def __call__(self, *devices):
        if not devices:
            raise TypeError('lib["default"](dev) needs a device, e.g. tvm.cpu()')
        dev = devices[0]
        if isinstance(dev, (list, tuple)):
            dev = dev[0]
        return VMGraphExecutor(self.exec_module, dev)


def _flatten(value) -> List[tvm.runtime.Tensor]:
    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [t for v in value for t in _flatten(v)]
    raise TypeError(f"relay_compat: unexpected VM output of type {type(value).__name__}")


class VMGraphExecutor:
    """The graph-executor-style module behind GraphModule: a relax.VirtualMachine plus the inputs
    set so far. `executor["set_input"]`, `["run"]`, `["get_output"]` ... also work (the Relay
    runtime-module form)."""

    def __init__(self, exec_module, dev):
        self.device = dev
        self.vm = relax.VirtualMachine(exec_module, dev)
        self.meta = self._read_meta()
        if self.meta is not None:
            self.input_info = list(self.meta["inputs"])
            self.output_info: Optional[list] = list(self.meta["outputs"])
        else:  # an executable not made by relay.build: names from the VM, shapes unknown
            arity = int(self.vm.module["get_function_arity"]("main"))
            self.input_info = [{"name": str(self.vm.module["get_function_param_name"]("main", i)), "shape": None,
                                "dtype": None} for i in range(arity)]
            self.output_info = None
        self._inputs: List[Optional[tvm.runtime.Tensor]] = [None] * len(self.input_info)
        self._outputs: Optional[List[tvm.runtime.Tensor]] = None

    def _read_meta(self):
        try:
            fn = self.vm[META_FUNC]
        except Exception:  # noqa: BLE001 - not built by relay.build: no metadata
            return None
        try:
            meta = json.loads(str(fn()))
        except Exception:  # noqa: BLE001 - a foreign function of that name: ignore it
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None

    # Relay runtime-module form: executor["set_input"](...)
    def __getitem__(self, name: str):
        fns = {"set_input": self.set_input, "run": self.run, "get_output": self.get_output,
               "get_input": self.get_input, "get_num_outputs": self.get_num_outputs,
               "get_num_inputs": self.get_num_inputs, "get_input_index": self.get_input_index,
               "load_params": self.load_params}
        if name not in fns:
            raise AttributeError(f"graph executor has no function {name!r}")
        return fns[name]

    # ---- inputs
    def get_input_index(self, name: str) -> int:
        for i, info in enumerate(self.input_info):
            if info["name"] == name:
                return i
        return -1

    def _index(self, key) -> int:
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < len(self.input_info):
                raise IndexError(f"input index {key} out of range (the graph has {len(self.input_info)} inputs)")
            return int(key)
        idx = self.get_input_index(str(key))
        if idx < 0:
            raise RuntimeError(f"Could not find '{key}' in graph's inputs "
                               f"({[i['name'] for i in self.input_info]})")
        return idx

    def _convert(self, idx: int, value) -> tvm.runtime.Tensor:
        info = self.input_info[idx]
        dtype, shape = info.get("dtype"), info.get("shape")
        if isinstance(value, tvm.runtime.Tensor) and (dtype is None or str(value.dtype) == dtype):
            arr_shape = tuple(int(s) for s in value.shape)
            tensor = value.copyto(self.device)
        else:
            arr = value.numpy() if isinstance(value, tvm.runtime.Tensor) else np.asarray(value)
            if dtype is not None:
                arr = arr.astype(dtype, copy=False)
            arr_shape = tuple(arr.shape)
            tensor = tvm.runtime.tensor(np.ascontiguousarray(arr), self.device)
        if shape is not None and None not in shape and tuple(shape) != arr_shape:
            raise ValueError(f"input {info['name']!r}: array shape {arr_shape} does not match the graph's "
                             f"shape {tuple(shape)}")
        return tensor

    def set_input(self, key=None, value=None, **params):
        if key is not None:
            self._inputs[self._index(key)] = self._convert(self._index(key), value)
        for name, val in params.items():  # as Relay: names that are not inputs are ignored
            idx = self.get_input_index(name)
            if idx >= 0:
                self._inputs[idx] = self._convert(idx, val)

    def get_input(self, key, out=None):
        idx = self._index(key)
        if self._inputs[idx] is None:
            self._inputs[idx] = self._zeros(idx)
        if out is not None:
            out.copyfrom(self._inputs[idx])
            return out
        return self._inputs[idx]

    def _zeros(self, idx: int) -> tvm.runtime.Tensor:
        info = self.input_info[idx]
        if info.get("shape") is None or None in info["shape"] or info.get("dtype") is None:
            raise RuntimeError(f"input {info['name']!r} was not set (its shape is not static, so there is no "
                               f"default zero buffer)")
        return tvm.runtime.tensor(np.zeros(info["shape"], info["dtype"]), self.device)

    def get_num_inputs(self) -> int:
        return len(self.input_info)

    def get_input_info(self):
        shapes = {i["name"]: tuple(i["shape"]) if i.get("shape") is not None else None for i in self.input_info}
        dtypes = {i["name"]: i.get("dtype") for i in self.input_info}
        return shapes, dtypes

    def load_params(self, params_bytes):
        self.set_input(**tvm.runtime.load_param_dict(bytearray(params_bytes)))

    # ---- execution
    def _args(self):
        return [t if t is not None else self._zeros(i) for i, t in enumerate(self._inputs)]

    def run(self, **inputs):
        if inputs:
            self.set_input(**inputs)
        self._outputs = _flatten(self.vm["main"](*self._args()))

    def get_num_outputs(self) -> int:
        if self.output_info is not None:
            return len(self.output_info)
        if self._outputs is not None:
            return len(self._outputs)
        raise RuntimeError("the number of outputs of an executable not built by relay.build is known after run()")

    def get_output(self, index: int, out=None):
        if self._outputs is None:
            raise RuntimeError("get_output() before run(): call run() first")
        if not 0 <= int(index) < len(self._outputs):
            raise IndexError(f"output index {index} out of range (the graph has {len(self._outputs)} outputs)")
        value = self._outputs[int(index)]
        if out is not None:
            out.copyfrom(value)
            return out
        return value

    def benchmark(self, device=None, func_name="run", repeat=5, number=5, min_repeat_ms=None,
                  end_to_end=False, cooldown_interval_ms=0, repeats_to_cooldown=1, **kwargs):
        if kwargs:
            self.set_input(**kwargs)
        evaluator = self.vm.time_evaluator("main", device or self.device, number=number, repeat=repeat,
                                           min_repeat_ms=min_repeat_ms or 0, cooldown_interval_ms=cooldown_interval_ms,
                                           repeats_to_cooldown=repeats_to_cooldown)
        return evaluator(*self._args())


class GraphModule:
    """`tvm.contrib.graph_executor.GraphModule` over the Relax VM: wrap `lib["default"](dev)`."""

    def __init__(self, module):
        if isinstance(module, GraphExecutorFactoryModule) or _is_vm_executable(module):
            raise TypeError('GraphModule expects lib["default"](dev), not the library itself: '
                            'graph_executor.GraphModule(lib["default"](tvm.cpu()))')
        if not isinstance(module, VMGraphExecutor):
            raise TypeError(f"GraphModule expects lib['default'](dev) of a relay.build result (tvm_npu relay_compat), "
                            f"got {type(module).__name__}")
        self.module = module

    def set_input(self, key=None, value=None, **params):
        """set_input(name or index, value) and/or set_input(**{name: value}); numpy or tvm tensors."""
        self.module.set_input(key, value, **params)

    def run(self, **input_dict):
        self.module.run(**input_dict)

    def get_output(self, index, out=None):
        return self.module.get_output(index, out)

    def get_num_outputs(self) -> int:
        return self.module.get_num_outputs()

    def get_num_inputs(self) -> int:
        return self.module.get_num_inputs()

    def get_input(self, index, out=None):
        return self.module.get_input(index, out)

    def get_input_index(self, name: str) -> int:
        return self.module.get_input_index(name)

    def get_input_info(self):
        return self.module.get_input_info()

    def load_params(self, params_bytes):
        self.module.load_params(params_bytes)

    def share_params(self, other, params_bytes):
        raise _unavailable("GraphModule.share_params", "relay.build(..., params=params) (weights are bound "
                           "into the executable and shared by every executor made from it)")

    def debug_get_output(self, node, out=None):
        raise _unavailable("GraphModule.debug_get_output",
                           "relax.VirtualMachine instrumentation (vm.set_instrument) on GraphModule.module.vm")

    def benchmark(self, device=None, func_name="run", repeat=5, number=5, min_repeat_ms=None, end_to_end=False,
                  cooldown_interval_ms=0, repeats_to_cooldown=1, **kwargs):
        """Times main with the current inputs (relax.VirtualMachine.time_evaluator)."""
        return self.module.benchmark(device, func_name, repeat, number, min_repeat_ms, end_to_end,
                                     cooldown_interval_ms, repeats_to_cooldown, **kwargs)

    def __getitem__(self, key):
        return self.module[key]


def create(graph_json_str, libmod, device):
    """`graph_executor.create(graph_json, lib, dev)` for a relay.build result, its get_lib(), or a
    loaded library; the graph JSON is not needed (and ignored)."""
    if isinstance(device, (list, tuple)):
        device = device[0]
    if isinstance(libmod, GraphExecutorFactoryModule):
        return GraphModule(libmod[libmod.libmod_name](device))
    exec_module = getattr(libmod, "mod", libmod)  # relax.VMExecutable -> its runtime module
    if _is_vm_executable(exec_module):
        return GraphModule(VMGraphExecutor(exec_module, device))
    raise _unavailable("graph_executor.create for a Relay graph JSON",
                       "relay.build(...) then graph_executor.GraphModule(lib['default'](dev))")


def _is_vm_executable(obj) -> bool:
    try:
        return isinstance(obj, tvm.runtime.Module) and obj.kind == _VM_EXECUTABLE_KIND
    except Exception:  # noqa: BLE001 - a module without kind
        return False


def load_module(path: str):
    """`tvm.runtime.load_module(path)`; after install() the plain TVM call works the same way
    (the result's ["default"] creates the executor)."""
    return tvm.runtime.load_module(path)


# --------------------------------------------------------------------------------------------
# tvm.runtime.Module["default"] on a Relax VM executable
# --------------------------------------------------------------------------------------------

def _make_getitem(original):
    def __getitem__(self, name):
        try:
            return original(self, name)
        except AttributeError:
            if isinstance(name, str) and _is_vm_executable(self) and _is_executor_name(self, name):
                return _ExecutorCreator(self)
            raise

    __getitem__.__wrapped__ = original
    setattr(__getitem__, _MARK, True)
    return __getitem__


def _is_executor_name(exec_module, name: str) -> bool:
    if name == "default":
        return True
    try:  # a custom relay.build(mod_name=...) is recorded in the executable
        ex = VMGraphExecutor(exec_module, tvm.cpu(0))
    except Exception:  # noqa: BLE001
        return False
    return ex.meta is not None and ex.meta.get("mod_name") == name


# --------------------------------------------------------------------------------------------
# install / uninstall
# --------------------------------------------------------------------------------------------

_STATE: Dict[str, Any] = {"installed": {}}


def _state_of(name: str) -> str:
    """"ours" (registered by this file), "tvm" (TVM provides it: never replace) or "missing"."""
    mod = sys.modules.get(name)
    if mod is not None:
        return "ours" if getattr(mod, _MARK, False) else "tvm"
    try:
        return "tvm" if importlib.util.find_spec(name) is not None else "missing"
    except (ImportError, ValueError):
        return "missing"


def _build_relay_modules() -> Dict[str, types.ModuleType]:
    relay = _ShimModule("tvm.relay", "Relay compatibility layer of tvm_npu (TVM 0.27 has no Relay).",
                        _RELAY_TOP)
    frontend = _ShimModule("tvm.relay.frontend", "Relay frontends mapped to the Relax frontends.", _FRONTENDS,
                           default="export the model to ONNX and use relay.frontend.from_onnx")
    frontend.from_onnx = from_onnx
    frontend.from_tflite = from_tflite
    transform = _ShimModule("tvm.relay.transform", "Relay passes: use tvm.relax.transform.", _TRANSFORMS,
                            default="the corresponding pass in tvm.relax.transform (tvm.compile runs the standard "
                                    "pipeline, and partitions for 'npu*' targets)")
    transform.PassContext = tvm.transform.PassContext
    transform.Sequential = tvm.transform.Sequential
    build_module = _ShimModule("tvm.relay.build_module", "relay.build.",
                               {"create_executor": _RELAY_TOP["create_executor"],
                                "bind_params_by_name": _RELAY_TOP["bind_params_by_name"],
                                "optimize": _RELAY_TOP["optimize"]})
    build_module.build = build
    backend = _ShimModule("tvm.relay.backend", "Relay backend: only Executor('graph') / Runtime('cpp').",
                          {"vm": _RELAY_SUBMODULES["vm"], "te_compiler": _TUNING,
                           "compile_engine": _TUNING, "aot": "the Relax VM (no AOT executor in TVM 0.27)"})
    backend.Executor, backend.Runtime = Executor, Runtime
    relay.frontend, relay.transform, relay.build_module, relay.backend = frontend, transform, build_module, backend
    relay.build = build
    relay.save_param_dict = tvm.runtime.save_param_dict
    relay.load_param_dict = tvm.runtime.load_param_dict
    relay.__path__ = []  # a package: unknown submodules give ModuleNotFoundError
    mods = {"tvm.relay": relay, "tvm.relay.frontend": frontend, "tvm.relay.transform": transform,
            "tvm.relay.build_module": build_module, "tvm.relay.backend": backend}
    for sub, repl in _RELAY_SUBMODULES.items():
        default = None if sub in ("op", "nn") else repl  # None: look the operator up in relax.op
        extra = {"contrib": _RELAY_SUBMODULES["contrib"]} if sub == "op" else {}
        m = _ShimModule(f"tvm.relay.{sub}", f"Not available in TVM 0.27: use {repl}", extra, default=default)
        setattr(relay, sub, m)
        mods[f"tvm.relay.{sub}"] = m
    return mods


def _build_graph_executor() -> types.ModuleType:
    ge = _ShimModule("tvm.contrib.graph_executor", "Graph executor API over the Relax VM (tvm_npu relay_compat).",
                     {"GraphModuleDebug": "GraphModule (no debug executor; use relax.VirtualMachine instrumentation)"})
    ge.GraphModule = GraphModule
    ge.create = create
    return ge


def _nd_array(source_array, device=None, mem_scope=None):
    """`tvm.nd.array`: tvm.runtime.tensor (a tvm.runtime.Tensor)."""
    if isinstance(source_array, tvm.runtime.Tensor):
        source_array = source_array.numpy()
    return tvm.runtime.tensor(np.asarray(source_array), device or tvm.cpu(0), mem_scope=mem_scope)


def _nd_empty(shape, dtype="float32", device=None, mem_scope=None):
    """`tvm.nd.empty`: tvm.runtime.empty."""
    return tvm.runtime.empty(shape, dtype, device or tvm.cpu(0), mem_scope=mem_scope)


def _build_nd() -> types.ModuleType:
    nd = _ShimModule("tvm.nd", "tvm.nd of TVM <= 0.16, renamed tvm.runtime.tensor / Tensor in TVM 0.27.", {},
                     default="tvm.runtime.tensor / tvm.runtime.empty / tvm.runtime.Tensor")
    nd.array, nd.empty, nd.NDArray = _nd_array, _nd_empty, tvm.runtime.Tensor
    nd.from_dlpack, nd.cpu, nd.cuda, nd.device = tvm.runtime.from_dlpack, tvm.cpu, tvm.cuda, tvm.device
    return nd


def _build_tuning(name: str) -> types.ModuleType:
    return _ShimModule(name, f"{name} is not part of TVM 0.27: {_TUNING}", {}, default=_TUNING)


def _register(name: str, module: types.ModuleType) -> None:
    parent_name, _, attr = name.rpartition(".")
    sys.modules[name] = module
    parent = sys.modules.get(parent_name)
    if parent is not None:
        setattr(parent, attr, module)
    _STATE["installed"][name] = module


def install() -> bool:
    """Registers tvm.relay, tvm.contrib.graph_executor, tvm.nd (array/empty) and tvm.autotvm /
    tvm.auto_scheduler stubs, each only when TVM does not provide it, and lets
    tvm.runtime.Module["default"] create an executor from a Relax VM executable.
    Idempotent. Returns True when the Relay shim is active."""
    import tvm.contrib  # noqa: F401 - the parent of graph_executor must exist

    builders = [("tvm.relay", _build_relay_modules),
                ("tvm.contrib.graph_executor", lambda: {"tvm.contrib.graph_executor": _build_graph_executor()}),
                ("tvm.autotvm", lambda: {"tvm.autotvm": _build_tuning("tvm.autotvm")}),
                ("tvm.auto_scheduler", lambda: {"tvm.auto_scheduler": _build_tuning("tvm.auto_scheduler")}),
                ("tvm.nd", lambda: {"tvm.nd": _build_nd()})]
    for name, builder in builders:
        if _state_of(name) == "missing":
            for sub, module in builder().items():
                _register(sub, module)
    cls = tvm.runtime.Module
    if not getattr(cls.__getitem__, _MARK, False):
        cls.__getitem__ = _make_getitem(cls.__getitem__)
    return is_installed()


def is_installed() -> bool:
    mod = sys.modules.get("tvm.relay")
    return mod is not None and getattr(mod, _MARK, False)


def uninstall() -> None:
    """Removes everything install() registered (for tests, or to let TVM's own modules show)."""
    for name, module in list(_STATE["installed"].items()):
        if sys.modules.get(name) is module:
            del sys.modules[name]
        parent_name, _, attr = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and parent.__dict__.get(attr) is module:
            delattr(parent, attr)
    _STATE["installed"].clear()
    cls = tvm.runtime.Module
    if getattr(cls.__getitem__, _MARK, False):
        cls.__getitem__ = cls.__getitem__.__wrapped__
