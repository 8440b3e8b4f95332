"""The graph-executor API over the Relax VM: the factory relay.build returns, lib["default"](dev), GraphModule."""

from __future__ import annotations

import json
import types
from typing import Any, Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from .meta import read_meta
from .unmapped import MARK, ShimModule, unavailable

_VM_EXECUTABLE_KIND = "relax.VMExecutable"


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
            return ExecutorCreator(self.module)
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


class ExecutorCreator:
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
    raise TypeError(f"graph executor: unexpected VM output of type {type(value).__name__}")


class VMGraphExecutor:
    """The graph-executor-style module behind GraphModule: a relax.VirtualMachine plus the inputs
    set so far. `executor["set_input"]`, `["run"]`, `["get_output"]` ... also work (the Relay
    runtime-module form)."""

    def __init__(self, exec_module, dev):
        self.device = dev
        self.vm = relax.VirtualMachine(exec_module, dev)
        self.meta = read_meta(self.vm)
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
        if isinstance(module, GraphExecutorFactoryModule) or is_vm_executable(module):
            raise TypeError('GraphModule expects lib["default"](dev), not the library itself: '
                            'graph_executor.GraphModule(lib["default"](tvm.cpu()))')
        if not isinstance(module, VMGraphExecutor):
            raise TypeError(f"GraphModule expects lib['default'](dev) of a relay.build result (tvm_npu), "
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
        raise unavailable("GraphModule.share_params", "relay.build(..., params=params) (weights are bound "
                          "into the executable and shared by every executor made from it)")

    def debug_get_output(self, node, out=None):
        raise unavailable("GraphModule.debug_get_output",
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
    if is_vm_executable(exec_module):
        return GraphModule(VMGraphExecutor(exec_module, device))
    raise unavailable("graph_executor.create for a Relay graph JSON",
                      "relay.build(...) then graph_executor.GraphModule(lib['default'](dev))")


def is_vm_executable(obj) -> bool:
    try:
        return isinstance(obj, tvm.runtime.Module) and obj.kind == _VM_EXECUTABLE_KIND
    except Exception:  # noqa: BLE001 - a module without kind
        return False


def make_getitem(original):
    def __getitem__(self, name):
        try:
            return original(self, name)
        except AttributeError:
            if isinstance(name, str) and is_vm_executable(self) and _is_executor_name(self, name):
                return ExecutorCreator(self)
            raise

    __getitem__.__wrapped__ = original
    setattr(__getitem__, MARK, True)
    return __getitem__


def _is_executor_name(exec_module, name: str) -> bool:
    if name == "default":
        return True
    try:  # a custom relay.build(mod_name=...) is recorded in the executable
        ex = VMGraphExecutor(exec_module, tvm.cpu(0))
    except Exception:  # noqa: BLE001
        return False
    return ex.meta is not None and ex.meta.get("mod_name") == name


def module() -> types.ModuleType:
    """The tvm.contrib.graph_executor module."""
    ge = ShimModule("tvm.contrib.graph_executor", "Graph executor API over the Relax VM (tvm_npu).",
                   {"GraphModuleDebug": "GraphModule (no debug executor; use relax.VirtualMachine instrumentation)"})
    ge.GraphModule = GraphModule
    ge.create = create
    return ge
