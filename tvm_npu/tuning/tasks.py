"""Task extraction: the tunable operators a model offloads (MAC operators, and the float vector operators
of vector_space.VECTOR_KINDS), one task per workload, weighted by occurrences.

The model is partitioned and compiled the normal way (driver.compile_model, the path `tvm.compile`
takes) while records.collecting() listens to the operators the driver lowers; the operators of the
final NPU functions are kept (those the should-run decision sent back to the CPU are not), grouped
by workload key (signature, NPU configuration, ISA version, double buffering).
"""

from __future__ import annotations

import dataclasses
import math

import tvm

from ..artifact import Artifact
from ..config import NPUConfig, get_config
from ..driver import compile_model
from ..ir.desc import OpDesc
from ..ir.geometry import macs_of
from ..ir.plan import MacPlan, MeanPlan, RowPlan, SoftmaxPlan
from ..options import CompileOptions, current_options
from ..runtime_module import find_npu_modules
from ..tiling import plan as tile_plan
from .records import collecting, workload_key


@dataclasses.dataclass
class Task:
    """One tuning task: a workload, the operators it stands for, and its default plan."""

    key: str
    desc: OpDesc
    config: NPUConfig
    default: MacPlan | RowPlan | SoftmaxPlan | MeanPlan
    labels: list[str]
    weight: int  # operators (times call sites) of the model with this workload
    double_buffer: bool = True
    dtypes: tuple | None = None  # a vector operator's operand DRAM dtypes (None: the memory plan's default)

    @property
    def name(self) -> str:
        d = self.desc
        shapes = "x".join(str(s) for s in d.output.shape)
        return f"{d.composite}_{shapes}_{self.key[:8]}"


def _final_layers(part: tvm.IRModule, report) -> dict[tuple, int]:
    """(symbol, label) -> how many times the final NPU functions run it (call sites)."""
    out: dict[tuple, int] = {}
    mods = part.attrs["external_mods"] if part.attrs is not None and "external_mods" in part.attrs else []
    for m in mods:
        for npu in find_npu_modules(m):
            for symbol in npu["npu_symbols"]():
                art = Artifact.deserialize(bytes(npu["npu_artifact"](str(symbol))))
                places = int(report.functions.get(str(symbol), {}).get("places", 1))
                for layer in art.producer.get("layers", []):
                    key = (str(symbol), layer["binding"])
                    out[key] = out.get(key, 0) + places
    return out


def extract_tasks(mod: tvm.IRModule, target="npu-edge", options: CompileOptions = None) -> list[Task]:
    """The model's tuning tasks: MAC operators heaviest first (weight x MACs), then vector operators
    (heaviest first by weight x output elements)."""
    from ..target import config_of, is_npu_target

    tgt = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    config = config_of(tgt) if is_npu_target(tgt) else get_config(target)
    options = options or current_options()
    with collecting() as seen:
        part, report = compile_model(mod, config, options)
    final = _final_layers(part, report)
    tasks: dict[str, Task] = {}
    for symbol, label, desc, dtypes in seen:
        runs = final.get((symbol, label), 0)
        if not runs:
            continue  # compiled in an earlier round, or its function was not offloaded
        final[(symbol, label)] = 0  # an operator counts once even if compiled again
        key = workload_key(desc, config, options.double_buffer, dtypes)
        if key in tasks:
            tasks[key].weight += runs
            tasks[key].labels.append(label)
            continue
        default = tile_plan(desc, config, options, dtypes or None)
        if not isinstance(default, (MacPlan, RowPlan, SoftmaxPlan, MeanPlan)):
            continue  # refused by the tiling stage (the operator ran on the CPU)
        tasks[key] = Task(key, desc, config, default, [label], runs, options.double_buffer, dtypes)
    return sorted(tasks.values(),
                  key=lambda t: (-t.weight * macs_of(t.desc), -t.weight * math.prod(t.desc.output.shape)))


__all__ = ["Task", "extract_tasks"]
