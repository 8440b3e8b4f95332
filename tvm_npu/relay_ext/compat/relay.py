"""The tvm.relay namespace: relay.frontend, relay.build, relay.backend, and stubs naming the Relax replacements."""

from __future__ import annotations

import types
from typing import Dict

import tvm

from .build_module import Executor, Runtime, build
from .frontend import from_onnx, from_pytorch, from_tflite
from .unmapped import FRONTENDS, RELAY_SUBMODULES, RELAY_TOP, TRANSFORMS, TUNING, ShimModule


def modules() -> Dict[str, types.ModuleType]:
    """tvm.relay and its submodules, by module name."""
    relay = ShimModule("tvm.relay", "Relay compatibility layer of tvm_npu (TVM 0.27 has no Relay).",
                       RELAY_TOP)
    frontend = ShimModule("tvm.relay.frontend", "Relay frontends mapped to the Relax frontends.", FRONTENDS,
                          default="export the model to ONNX and use relay.frontend.from_onnx")
    frontend.from_onnx = from_onnx
    frontend.from_tflite = from_tflite
    frontend.from_pytorch = from_pytorch
    transform = ShimModule("tvm.relay.transform", "Relay passes: use tvm.relax.transform.", TRANSFORMS,
                           default="the corresponding pass in tvm.relax.transform (tvm.compile runs the standard "
                                   "pipeline, and partitions for 'npu*' targets)")
    transform.PassContext = tvm.transform.PassContext
    transform.Sequential = tvm.transform.Sequential
    build_module = ShimModule("tvm.relay.build_module", "relay.build.",
                              {"create_executor": RELAY_TOP["create_executor"],
                               "bind_params_by_name": RELAY_TOP["bind_params_by_name"],
                               "optimize": RELAY_TOP["optimize"]})
    build_module.build = build
    backend = ShimModule("tvm.relay.backend", "Relay backend: only Executor('graph') / Runtime('cpp').",
                         {"vm": RELAY_SUBMODULES["vm"], "te_compiler": TUNING,
                          "compile_engine": TUNING, "aot": "the Relax VM (no AOT executor in TVM 0.27)"})
    backend.Executor, backend.Runtime = Executor, Runtime
    relay.frontend, relay.transform, relay.build_module, relay.backend = frontend, transform, build_module, backend
    relay.build = build
    relay.save_param_dict = tvm.runtime.save_param_dict
    relay.load_param_dict = tvm.runtime.load_param_dict
    relay.__path__ = []  # a package: unknown submodules give ModuleNotFoundError
    mods = {"tvm.relay": relay, "tvm.relay.frontend": frontend, "tvm.relay.transform": transform,
            "tvm.relay.build_module": build_module, "tvm.relay.backend": backend}
    for sub, repl in RELAY_SUBMODULES.items():
        default = None if sub in ("op", "nn") else repl  # None: look the operator up in relax.op
        extra = {"contrib": RELAY_SUBMODULES["contrib"]} if sub == "op" else {}
        m = ShimModule(f"tvm.relay.{sub}", f"Not available in TVM 0.27: use {repl}", extra, default=default)
        setattr(relay, sub, m)
        mods[f"tvm.relay.{sub}"] = m
    return mods
