"""relay.build: bind the params, compile with tvm.compile (NPU targets partition), return the executor factory."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Optional

import tvm
from tvm import relax

from .graph_executor import GraphExecutorFactoryModule
from .meta import make_meta, with_meta
from .params import bind
from .unmapped import unavailable

# What relay.build needs from the compiler, given to install() by tvm_npu (so that this layer does
# not import the compiler): the report of the latest partitioning, and whether a target is an NPU target.
HOOKS: Dict[str, Callable[..., Any]] = {
    "last_report": lambda: None,
    "is_npu_target": lambda target: target is not None and "npu" in [str(k) for k in target.keys],
}


class Executor:
    """`tvm.relay.backend.Executor`: only the graph executor exists (served by the Relax VM)."""

    def __init__(self, name: str = "graph", options: Optional[dict] = None):
        if name != "graph":
            raise unavailable(f"tvm.relay.backend.Executor({name!r})",
                              "tvm.compile + relax.VirtualMachine (the Relax VM is the only executor; "
                              "relay.build serves the graph-executor API on it)")
        self.name, self.options = name, dict(options or {})

    def __repr__(self):
        return f"Executor({self.name!r}, {self.options})"


class Runtime:
    """`tvm.relay.backend.Runtime`: only the C++ runtime exists."""

    def __init__(self, name: str = "cpp", options: Optional[dict] = None):
        if name != "cpp":
            raise unavailable(f"tvm.relay.backend.Runtime({name!r})",
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
            raise unavailable("relay.build with a heterogeneous target dict",
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
            raise unavailable(f"relay.build({name}={value!r})", "the Relax VM (graph-executor API through this shim)")
    if workspace_memory_pools is not None or constant_memory_pools is not None:
        raise unavailable("relay.build memory pools (USMP)",
                          "relax.transform.StaticPlanBlockMemory (tvm.compile runs it)")
    target = _resolve_target(target, target_host)
    mod_name = mod_name or "default"
    bound = bind(ir_mod, params)
    meta = make_meta(bound, mod_name, target)
    last_report, is_npu_target = HOOKS["last_report"], HOOKS["is_npu_target"]
    before = last_report()
    executable = tvm.compile(with_meta(bound, meta), target=target)
    report = last_report() if is_npu_target(target) and last_report() is not before else None
    return GraphExecutorFactoryModule(executable, meta, bound, target, report)
