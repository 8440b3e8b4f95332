"""What replaces each Relay API without a mapping: the NotImplementedError messages and the module type raising them."""

from __future__ import annotations

import types
from typing import Dict, Optional

import tvm
from tvm import relax

MARK = "__tvm_npu_relay_compat__"  # set on every module object (and the Module.__getitem__) the layer installs

_IR_BUILD = ("build Relax IR instead: relax.BlockBuilder with relax.Var(name, relax.TensorType(shape, dtype)), "
             "relax.const and tvm.relax.op.*; or import a model with relay.frontend.from_onnx / from_tflite")

# name in tvm.relay -> Relax replacement
RELAY_TOP = {
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
RELAY_SUBMODULES = {
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

TRANSFORMS = {
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

FRONTENDS = {
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

TUNING = ("tune with MetaSchedule instead: relax.transform.MetaScheduleTuneIRMod / "
           "tvm.s_tir.meta_schedule (CPU kernels); the NPU code generator tiles its kernels itself and "
           "needs no tuning log")


def unavailable(qualname: str, replacement: str) -> NotImplementedError:
    return NotImplementedError(
        f"{qualname} is not available: TVM {tvm.__version__} has no Relay, and tvm_npu's compatibility layer maps "
        f"only relay.frontend.from_onnx/from_tflite/from_pytorch, relay.build and graph_executor.GraphModule. "
        f"Relax replacement: {replacement}. See docs/RELAY_COMPAT.md.")


class ShimModule(types.ModuleType):
    """A module of the shim. Public names it does not define raise NotImplementedError naming
    the Relax replacement; private/dunder names raise AttributeError (so that tools probing for
    __file__, __path__ ... keep working)."""

    def __init__(self, name: str, doc: str, replacements: Optional[Dict[str, str]] = None,
                 default: Optional[str] = None):
        super().__init__(name, doc)
        object.__setattr__(self, "_replacements", dict(replacements or {}))
        object.__setattr__(self, "_default", default)
        setattr(self, MARK, True)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        repl = self._replacements.get(name)
        if repl is None:
            repl = self._default(name) if callable(self._default) else self._default
        if repl is None:
            repl = _guess_replacement(name)
        raise unavailable(f"{self.__name__}.{name}", repl)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._replacements))


def _guess_replacement(name: str) -> str:
    for ns, label in ((relax.op.nn, "tvm.relax.op.nn"), (relax.op, "tvm.relax.op")):
        if hasattr(ns, name):
            return f"{label}.{name} (emitted with a relax.BlockBuilder); {_IR_BUILD}"
    return _IR_BUILD


def tuning_module(name: str) -> types.ModuleType:
    """tvm.autotvm / tvm.auto_scheduler: every public name raises, naming MetaSchedule."""
    return ShimModule(name, f"{name} is not part of TVM 0.27: {TUNING}", {}, default=TUNING)
