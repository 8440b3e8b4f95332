"""Relay-era compatibility layer: install() lets a TVM <= 0.16 style script run on TVM 0.27 (Relax only).

After `install()` (which `import tvm_npu` calls), a Relay-era deployment script runs unchanged:

    mod, params = relay.frontend.from_onnx(model, shape={"x": (1, 3, 8, 8)})
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target="npu", params=params)
    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    m.set_input("x", x); m.run(); y = m.get_output(0).numpy()
    lib.export_library("net.so")
    m = graph_executor.GraphModule(tvm.runtime.load_module("net.so")["default"](tvm.cpu()))

How it maps (docs/RELAY_COMPAT.md has the full table):
- `relay.frontend.from_onnx/from_tflite/from_pytorch` (frontend.py) load the model with tvm_npu's
  one loader (tvm_npu.importer; a PyTorch module is first exported with torch.export) and *detach*
  the weights (params.py): the module's `main` takes the inputs first, then one parameter per
  weight; `params` maps the weight names to `tvm.runtime.Tensor`s.
- `relay.build` (build_module.py) binds `params` back (`relax.transform.BindParams`), compiles with
  `tvm.compile` (so "npu*" targets partition to the NPU) and returns a `GraphExecutorFactoryModule`
  around the Relax VM executable. A small Relax function `_tvm_npu_relay_compat_meta` (meta.py: a
  JSON string of input names, shapes and dtypes, output count) is compiled into the executable so
  that a library loaded back from disk still knows its interface.
- `graph_executor.GraphModule` (graph_executor.py) drives a `relax.VirtualMachine` with the
  graph-executor API; `tvm.nd` (nd.py) is `tvm.runtime.tensor`.
- `tvm.runtime.load_module(path)["default"]` works because `install()` extends
  `tvm.runtime.Module.__getitem__`: on a Relax VM executable that has no function "default", the
  name "default" (or the `mod_name` given to `relay.build`) returns the executor creator instead
  of raising. Every other lookup is unchanged.
- Everything Relay could do that has no mapping (Relay IR, relay.transform passes, quantize,
  AutoTVM, other frontends ...) raises `NotImplementedError` naming the Relax replacement (unmapped.py).

Nothing is installed when TVM ships its own `tvm.relay` (or `tvm.contrib.graph_executor`). The layer
does not import the compiler: `install(last_report=..., is_npu_target=...)` hands it what
`relay.build` reports (tvm_npu/__init__.py does).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any, Callable, Dict, Optional

import tvm

from . import graph_executor as _graph_executor
from . import nd as _nd
from . import relay as _relay
from .build_module import HOOKS, Executor, Runtime, build
from .frontend import from_onnx, from_pytorch, from_tflite
from .graph_executor import GraphExecutorFactoryModule, GraphModule, VMGraphExecutor, create, make_getitem
from .unmapped import MARK, tuning_module

__all__ = ["install", "uninstall", "is_installed", "load_module", "GraphModule", "GraphExecutorFactoryModule",
           "VMGraphExecutor", "Executor", "Runtime", "build", "from_onnx", "from_tflite", "from_pytorch", "create"]

_STATE: Dict[str, Any] = {"installed": {}}


def load_module(path: str):
    """`tvm.runtime.load_module(path)`; after install() the plain TVM call works the same way
    (the result's ["default"] creates the executor)."""
    return tvm.runtime.load_module(path)


def _state_of(name: str) -> str:
    """"ours" (registered by this layer), "tvm" (TVM provides it: never replace) or "missing"."""
    mod = sys.modules.get(name)
    if mod is not None:
        return "ours" if getattr(mod, MARK, False) else "tvm"
    try:
        return "tvm" if importlib.util.find_spec(name) is not None else "missing"
    except (ImportError, ValueError):
        return "missing"


def _register(name: str, module: types.ModuleType) -> None:
    parent_name, _, attr = name.rpartition(".")
    sys.modules[name] = module
    parent = sys.modules.get(parent_name)
    if parent is not None:
        setattr(parent, attr, module)
    _STATE["installed"][name] = module


def install(last_report: Optional[Callable[[], Any]] = None,
            is_npu_target: Optional[Callable[[Any], bool]] = None) -> bool:
    """Registers tvm.relay, tvm.contrib.graph_executor, tvm.nd (array/empty) and tvm.autotvm /
    tvm.auto_scheduler stubs, each only when TVM does not provide it, and lets
    tvm.runtime.Module["default"] create an executor from a Relax VM executable.

    `last_report` (tvm_npu.last_report) and `is_npu_target` (tvm_npu.target.is_npu_target) give
    relay.build the partitioning report of its NPU builds (factory.npu_report); once given, they
    stay for later calls. Idempotent. Returns True when the Relay shim is active."""
    import tvm.contrib  # noqa: F401 - the parent of graph_executor must exist

    if last_report is not None:
        HOOKS["last_report"] = last_report
    if is_npu_target is not None:
        HOOKS["is_npu_target"] = is_npu_target
    builders = [("tvm.relay", _relay.modules),
                ("tvm.contrib.graph_executor", lambda: {"tvm.contrib.graph_executor": _graph_executor.module()}),
                ("tvm.autotvm", lambda: {"tvm.autotvm": tuning_module("tvm.autotvm")}),
                ("tvm.auto_scheduler", lambda: {"tvm.auto_scheduler": tuning_module("tvm.auto_scheduler")}),
                ("tvm.nd", lambda: {"tvm.nd": _nd.module()})]
    for name, builder in builders:
        if _state_of(name) == "missing":
            for sub, module in builder().items():
                _register(sub, module)
    cls = tvm.runtime.Module
    if not getattr(cls.__getitem__, MARK, False):
        cls.__getitem__ = make_getitem(cls.__getitem__)
    return is_installed()


def is_installed() -> bool:
    mod = sys.modules.get("tvm.relay")
    return mod is not None and getattr(mod, MARK, False)


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
    if getattr(cls.__getitem__, MARK, False):
        cls.__getitem__ = cls.__getitem__.__wrapped__
