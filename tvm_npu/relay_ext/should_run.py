"""Should-run: per merged NPU function, whether offloading pays. Its predicted NPU time (the
performance model's cycles of the compiled program) plus the cost of crossing the boundary (one
call, the fp32 <-> fp16 conversion of its inputs and outputs on the host) is compared with the
predicted CPU time of the same operators (`CpuModel`)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

from tvm import relax

from ..config import NPUConfig
from ..options import CpuModel
from ..report import OpRecord
from .partition import calls, io_elems


def decide(fn: relax.Function, records: Sequence[OpRecord], config: NPUConfig, cpu: CpuModel,
           covers: List[str]) -> Dict[str, Any]:
    """The should-run figures of one NPU function and the verdict (`offloaded`)."""
    cycles = sum(r.predicted_cycles for r in records)
    npu_s = cycles / (config.clock_mhz * 1e6) + cpu.call_overhead_s + io_elems(fn) / cpu.convert_elems_per_s
    macs = sum(r.macs for r in records)
    elems = sum(math.prod(int(v) for v in b.var.ty.shape.values) for b in calls(fn))
    cpu_s = macs / cpu.macs_per_s + elems / cpu.elems_per_s
    return {"operators": [r.composite for r in records], "macs": macs, "covers": covers,
            "predicted_npu_cycles": cycles, "predicted_npu_us": round(npu_s * 1e6, 3),
            "predicted_cpu_us": round(cpu_s * 1e6, 3), "offloaded": npu_s < cpu_s}
