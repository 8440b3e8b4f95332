"""Tuning records on the compile path: the workload of a MAC operator, the plan a record holds, and
the lookup `tvm.compile` makes in `ms.database.Database.current()`.

A workload is the operator's *unpadded* TensorIR kernel (the PrimFunc of a 1x1x1 plan), so it does
not depend on the plan the search chooses, with the NPU configuration, the ISA version, the double
buffering and the operator's signature as function attributes: MetaSchedule's database ignores the
target in lookups, so these attributes are what keep an npu-edge record from serving npu-nano.

A record's plan is read back by replaying its trace on the workload: the design space (space.py)
annotates the `mac` block with `npu.rows`, `npu.cols`, `npu.depth` (sampled values) and
`npu.order`. Nothing here imports MetaSchedule: a database can only be current if the user has
imported it (`with ms.database.JSONDatabase(...)`), so the compile path looks in `sys.modules`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import sys

import tvm
from tvm import s_tir

from ..config import NPUConfig
from ..ir.desc import OpDesc, signature
from ..ir.plan import MAC_ORDERS, MacPlan
from ..isa import ISA_VERSION
from ..tir_schedules.default import quant_key
from ..tir_schedules.kernels import Kernel, conv2d_kernel, gemm_kernel
from . import vector_space

MAC_KINDS = ("conv2d", "matmul")
PLAN_KEYS = ("npu.rows", "npu.cols", "npu.depth")
ORDER_KEY = "npu.order"
WORKLOAD_KEY = "npu.workload"  # function attribute: the hash of everything below


def _config_digest(config: NPUConfig) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:16]


def workload_key(desc: OpDesc, config: NPUConfig, double_buffer: bool = True, dtypes=None) -> str:
    """What a tuning record may be reused for: the operator's signature (and quantisation halo and
    epilogue), the configuration (by name and content), the ISA version and the double buffering; for
    a vector operator also how its operands are stored in DRAM (`dtypes`: a float32 model input stays
    fp32 at the NPU boundary, and the schedule and the SRAM needs differ)."""
    extra = () if desc.kind in MAC_KINDS else vector_space.operand_dtypes(desc, dtypes)
    ident = repr((signature(desc), quant_key(desc), config.name, _config_digest(config), ISA_VERSION,
                  bool(double_buffer), *extra))
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def unpadded_kernel(desc: OpDesc) -> Kernel:
    """The operator's PrimFunc for a 1x1x1 plan (no tile padding): the plan-independent workload."""
    one = MacPlan(1, 1, 1)
    return conv2d_kernel(desc, one) if desc.kind == "conv2d" else gemm_kernel(desc, one)


def tunable(desc: OpDesc) -> bool:
    """Whether the tuner searches the operator's plan: MAC operators, and the float vector operators
    of vector_space.VECTOR_KINDS."""
    return desc.kind in MAC_KINDS or vector_space.tunable(desc)


def workload(desc: OpDesc, config: NPUConfig, double_buffer: bool = True,
             dtypes=None) -> tuple[Kernel | None, tvm.IRModule]:
    """(unpadded kernel, the IRModule MetaSchedule tunes and the database stores); a vector operator
    has no Kernel: (None, its unscheduled PrimFunc's module)."""
    kernel = unpadded_kernel(desc) if desc.kind in MAC_KINDS else None
    func = kernel.func if kernel is not None else vector_space.workload_func(desc, dtypes)
    func = func.with_attr({"global_symbol": "main", "npu.config": config.name,
                                  "npu.config_digest": _config_digest(config), "npu.isa_version": ISA_VERSION,
                                  "npu.double_buffer": int(bool(double_buffer)),
                                  WORKLOAD_KEY: workload_key(desc, config, double_buffer, dtypes)})
    return kernel, tvm.IRModule({"main": func})


def mac_block(sch: s_tir.Schedule):
    """The accumulation block (`mac_update` once its zeroing is split off), or None."""
    for name in ("mac_update", "mac"):
        try:
            return sch.get_sblock(name)
        except Exception:  # noqa: BLE001, S112 - TVM raises its own error type for a missing block
            continue
    return None


def plan_of_schedule(sch: s_tir.Schedule, double_buffer: bool = True):
    """The plan a scheduled workload was built for (a MacPlan from its `mac` block's annotations, a
    vector plan from its `store` block's), or None."""
    block = mac_block(sch)
    if block is None:
        return vector_space.plan_of_schedule(sch, double_buffer)
    ann = sch.get(block).annotations
    if any(k not in ann for k in PLAN_KEYS) or ORDER_KEY not in ann:
        return None
    rows, cols, depth = (int(ann[k]) for k in PLAN_KEYS)
    order = str(ann[ORDER_KEY])
    return MacPlan(rows, cols, depth, double_buffer, order) if order in MAC_ORDERS else None


def plan_of_trace(mod: tvm.IRModule, trace) -> MacPlan | None:
    """The plan a record's trace makes of its workload (replayed, postprocessors included)."""
    sch = s_tir.Schedule(mod)
    trace.apply_to_schedule(sch, remove_postproc=False)
    return plan_of_schedule(sch, bool(int(mod["main"].attrs["npu.double_buffer"])))


def current_database():
    """`ms.database.Database.current()` when MetaSchedule is loaded (None otherwise: without it no
    `with database:` can be active, and importing it would cost the compile path seconds)."""
    ms = sys.modules.get("tvm.s_tir.meta_schedule")
    return None if ms is None else ms.database.Database.current()


def database_identity(db) -> tuple | None:
    """What the caches keyed on plans include: which database, and how many records it holds."""
    if db is None:
        return None
    return (type(db).__name__, getattr(db, "path_tuning_record", None) or id(db), len(db))


class TunedPlans:
    """The plans a tuning database holds for MAC operators, looked up per workload."""

    def __init__(self, db, config: NPUConfig, double_buffer: bool = True):
        self.db, self.config, self.double_buffer = db, config, double_buffer
        self.identity = database_identity(db)
        self._target = tvm.target.Target({"kind": "llvm", "keys": ["npu", "cpu"], "model": config.name})
        self._hits: dict[str, tuple[MacPlan | None, float | None]] = {}

    def lookup(self, desc: OpDesc, dtypes=None) -> tuple[object | None, float | None]:
        """(the best record's plan, its measured seconds), or (None, None) when the database has none;
        `dtypes`: how the operands are stored in DRAM."""
        if not tunable(desc):
            return None, None
        dtypes = None if desc.kind in MAC_KINDS else dtypes
        key = workload_key(desc, self.config, self.double_buffer, dtypes)
        if key not in self._hits:
            _, mod = workload(desc, self.config, self.double_buffer, dtypes)
            rec = self.db.query_tuning_record(mod, self._target, "main")
            if rec is None:
                self._hits[key] = (None, None)
            else:
                secs = [float(s) for s in rec.run_secs] if rec.run_secs is not None else []
                self._hits[key] = (plan_of_trace(mod, rec.trace), min(secs) if secs else None)
        return self._hits[key]


_COLLECTING: contextvars.ContextVar[list | None] = contextvars.ContextVar("tvm_npu_tuning_collect", default=None)


@contextlib.contextmanager
def collecting():
    """Task extraction: inside, every tunable operator the driver lowers is appended to the yielded list
    as (function symbol, operator label, OpDesc, operand DRAM dtypes or None for MAC operators)."""
    seen: list = []
    token = _COLLECTING.set(seen)
    try:
        yield seen
    finally:
        _COLLECTING.reset(token)


def observe(symbol: str, label: str, desc: OpDesc, dtypes=None) -> None:
    """The driver reports an operator it lowers and its operands' DRAM dtypes (a tunable one is kept
    while `collecting`)."""
    seen = _COLLECTING.get()
    if seen is not None and tunable(desc):
        seen.append((symbol, label, desc, None if desc.kind in MAC_KINDS else tuple(dtypes or ())))


def tuned_plans(config: NPUConfig, double_buffer: bool = True) -> TunedPlans | None:
    """The plans of the current tuning database for this configuration (None: no database)."""
    db = current_database()
    return None if db is None else TunedPlans(db, config, double_buffer)
