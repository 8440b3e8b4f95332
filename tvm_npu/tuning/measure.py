"""MetaSchedule's custom parts for the NPU: the SRAM postprocessor, the tile-decision mutator, the
builder (candidate -> NPU program) and the runner (program -> emulator cycles).

The builder tensorizes the candidate's schedule for its plan (never recorded in the trace), walks it
with the code generator's walker, and refuses it unless its events are those the compile path lowers
for that plan; the program is then the compile path's (lowering.plan_and_lower with the plan as an
override, operands placed in DRAM as the memory plan stores them). Each artifact gets a temporary
directory of its own (MetaSchedule's RemoveBuildArtifact deletes the artifact's parent directory).
The runner times the program with `Emulator.check` (cycles do not depend on data) and reports
cycles / clock as run_secs. Measurements are cached by (workload, plan): the builder skips what the
database already holds, so a resumed run does not measure a plan twice.
"""

from __future__ import annotations

import json
import os
import random
import tempfile

from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.mutator import PyMutator
from tvm.s_tir.meta_schedule.postproc import PyPostproc
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

from ..config import NPUConfig
from ..ir.desc import OpDesc
from ..ir.plan import MacPlan, Refusal, TilePlan, plan_from_dict, plan_to_dict
from ..lowering import lower_alone
from ..lowering.mac import tir_events
from ..options import CompileOptions
from ..tiling import plan as tile_plan
from ..tir_schedules.walker import Walker
from . import vector_space
from .records import WORKLOAD_KEY, plan_of_schedule, unpadded_kernel
from .space import tensorize

ARTIFACT = "npu_candidate.json"


def fits(desc: OpDesc, plan: TilePlan | None, config: NPUConfig, dtypes=None) -> str | None:
    """Why `plan` cannot tile `desc` on `config` with its operands stored as `dtypes` (None: it can):
    the tiling stage's check of a plan override, as the compile path makes it of a database record."""
    if plan is None:
        return "not a schedule of the NPU design space (no plan annotations)"
    checked = tile_plan(desc, config, CompileOptions(double_buffer=plan.double_buffer), dtypes or None, override=plan)
    return checked.reason if isinstance(checked, Refusal) else None


@derived_object
class FitsSram(PyPostproc):
    """Rejects candidates the tiling stage refuses as an override (illegal, or over the SRAM budget)."""

    def __init__(self, desc: OpDesc, config: NPUConfig, dtypes=None):
        super().__init__()
        self.desc, self.config, self.dtypes = desc, config, dtypes

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, sch: s_tir.Schedule) -> bool:
        return fits(self.desc, plan_of_schedule(sch), self.config, self.dtypes) is None

    def clone(self):
        return FitsSram(self.desc, self.config, self.dtypes)


@derived_object
class MutateTileDecision(PyMutator):
    """Changes one `sample_categorical` decision (a tile size) to another candidate: with probability
    `p_local` to a neighbour (index +-1 or +-2 in the candidate list, which space.py sorts largest
    first), otherwise to any other candidate."""

    def __init__(self, seed: int = 0, p_local: float = 0.8, radius: int = 2):
        super().__init__()
        self.seed, self.p_local, self.radius = seed, p_local, radius
        self.rng = random.Random(seed)

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, trace, _rand_state=None):
        insts = [i for i in trace.insts if i.kind.name == "SampleCategorical" and len(i.attrs[0]) > 1]
        if not insts:
            return None
        inst = self.rng.choice(insts)
        n = len(inst.attrs[0])
        old = int(trace.decisions[inst])
        if self.rng.random() < self.p_local:
            steps = [d for d in range(-self.radius, self.radius + 1) if d and 0 <= old + d < n]
            return trace.with_decision(inst, old + self.rng.choice(steps), True)
        new = self.rng.randrange(n - 1)
        return trace.with_decision(inst, new + (new >= old), True)

    def clone(self):
        return MutateTileDecision(self.rng.randrange(1 << 30), self.p_local, self.radius)


def lower_standalone(desc: OpDesc, config: NPUConfig, plan: TilePlan, dtypes=None) -> tuple[bytes, int, int]:
    """(program, const bytes, io bytes) of the operator alone with `plan`, through the compile path's
    lowering: inputs then output in IO, weights in CONST, in the memory plan's storage dtypes (or
    `dtypes`, the operands' DRAM dtypes in the compiled model)."""
    low, _, out = lower_alone(desc, config, plan, dtypes)
    return low.program.encode(), len(low.consts.data), out.offset + out.nbytes


def candidate_events(mod, desc: OpDesc, plan: MacPlan):
    """The walker's events of a candidate's scheduled workload, tensorized for `plan`."""
    sch = s_tir.Schedule(mod)
    kernel = unpadded_kernel(desc)
    tensorize(sch, kernel, plan)
    return Walker(sch.mod["main"], kernel.valid).events()


def build_candidate(mod, desc: OpDesc, config: NPUConfig, dtypes=None) -> tuple[TilePlan, bytes, int, int]:
    """(plan, program, const bytes, io bytes) of a candidate; raises if it is not a legal NPU schedule
    or its TIR is not what the compile path lowers for its plan."""
    plan = plan_of_schedule(s_tir.Schedule(mod), bool(int(mod["main"].attrs["npu.double_buffer"])))
    why = fits(desc, plan, config, dtypes)
    if why:
        raise ValueError(why)
    if isinstance(plan, MacPlan):
        same = candidate_events(mod, desc, plan) == tir_events(desc, plan, plan.double_buffer)[1]
    else:
        geom = vector_space.geometry(desc, dtypes)
        same = geom.candidate_events(mod) == geom.events(plan)
    if not same:
        raise ValueError(f"the candidate's TIR for {plan.to_dict()} differs from the compile path's schedule")
    return (plan, *lower_standalone(desc, config, plan, dtypes))


class Measurements:
    """Measured cycles by (workload key, plan), shared by builder and runner (and seeded from the
    database, so a resumed run does not measure again), and the count of emulator runs."""

    def __init__(self):
        self.cycles: dict[tuple[str, MacPlan], int] = {}
        self.emulated: list[tuple[str, MacPlan]] = []

    def add(self, key: str, plan: MacPlan, cycles: int) -> None:
        old = self.cycles.get((key, plan))
        self.cycles[(key, plan)] = cycles if old is None else min(old, cycles)


def _workload_key(mod) -> str:
    return str(mod["main"].attrs[WORKLOAD_KEY])


class EagerUpdate:
    """Updates the cost model as soon as a batch is measured. MetaSchedule updates it when it joins a
    task's measurements, i.e. when the task is scheduled again: in the gradient scheduler's first
    round over the tasks, an XGBoost model has then seen nothing and ranks candidates at random (the
    same draws as RandomModel). Measuring in this process, the runner knows the results at once;
    `contexts` (workload key -> TuneContext) is set once the contexts exist."""

    def __init__(self, cost_model):
        self.cost_model = cost_model
        self.contexts: dict[str, object] = {}
        self.built: dict[str, object] = {}  # artifact path -> the candidate's scheduled module

    def measured(self, pairs) -> None:
        """pairs: (artifact path, run_secs or None) of one runner batch."""
        from tvm.s_tir import meta_schedule as ms

        by_key: dict[str, tuple[list, list]] = {}
        for path, secs in pairs:
            mod = self.built.pop(path, None)
            if mod is None or secs is None:
                continue
            ctx = self.contexts.get(_workload_key(mod))
            if ctx is None:
                continue  # a default plan measured before the search
            cands, results = by_key.setdefault(_workload_key(mod), ([], []))
            cands.append(ms.MeasureCandidate(s_tir.Schedule(mod), ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
            results.append(RunnerResult(secs, None))
        for key, (cands, results) in by_key.items():
            self.cost_model.update(self.contexts[key], cands, results)


@derived_object
class NPUBuilder(PyBuilder):
    """Candidate schedule -> NPU program (or the cached measurement of its plan)."""

    def __init__(self, tasks: dict[str, object], measurements: Measurements, eager: EagerUpdate | None = None):
        super().__init__()
        self.tasks, self.measurements, self.eager = tasks, measurements, eager

    def build(self, build_inputs) -> list[BuilderResult]:
        out = [self._build(bi.mod) for bi in build_inputs]
        if self.eager is not None:
            for bi, res in zip(build_inputs, out):
                if res.artifact_path is not None:
                    self.eager.built[str(res.artifact_path)] = bi.mod
        return out

    def _build(self, mod) -> BuilderResult:
        try:
            key = _workload_key(mod)
            task = self.tasks[key]
            plan = plan_of_schedule(s_tir.Schedule(mod), task.double_buffer)
            meta = {"key": key, "config": task.config.to_json()}
            cached = self.measurements.cycles.get((key, plan))
            if cached is not None:
                meta["cached_cycles"] = cached
                program = b""
            else:
                plan, program, meta["const_bytes"], meta["io_bytes"] = build_candidate(mod, task.desc, task.config,
                                                                                       task.dtypes)
                meta["plan"] = plan_to_dict(plan)
        except Exception as e:  # noqa: BLE001 - any failure is this candidate's build error
            return BuilderResult(None, f"{type(e).__name__}: {e}")
        d = tempfile.mkdtemp(prefix="npu_candidate_")
        with open(os.path.join(d, "program.bin"), "wb") as f:
            f.write(program)
        path = os.path.join(d, ARTIFACT)
        with open(path, "w") as f:
            json.dump(meta, f)
        return BuilderResult(path, None)


@derived_object
class _Done(PyRunnerFuture):
    def __init__(self, result: RunnerResult):
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self._result


def measure_artifact(path: str, measurements: Measurements | None = None) -> tuple[int, bool]:
    """(cycles, whether the emulator ran) of a builder artifact."""
    import npu_emulator

    with open(path) as f:
        meta = json.load(f)
    if "cached_cycles" in meta:
        return int(meta["cached_cycles"]), False
    with open(os.path.join(os.path.dirname(path), "program.bin"), "rb") as f:
        program = f.read()
    config = NPUConfig.from_json(meta["config"])
    counters = npu_emulator.Emulator(config).check(program, const_bytes=meta["const_bytes"],
                                                   io_bytes=meta["io_bytes"], scratch_bytes=0)
    cycles = int(counters.cycles)
    if measurements is not None:
        plan = plan_from_dict(meta["plan"])
        measurements.add(meta["key"], plan, cycles)
        measurements.emulated.append((meta["key"], plan))
    return cycles, True


@derived_object
class EmulatorRunner(PyRunner):
    """Builder artifact -> emulator cycles / clock, as run_secs."""

    def __init__(self, clock_hz: float, measurements: Measurements, eager: EagerUpdate | None = None):
        super().__init__()
        self.clock_hz, self.measurements, self.eager = clock_hz, measurements, eager

    def run(self, runner_inputs) -> list:
        out, pairs = [], []
        for ri in runner_inputs:
            try:
                cycles, _ = measure_artifact(str(ri.artifact_path), self.measurements)
                out.append(_Done(RunnerResult([cycles / self.clock_hz], None)))
                pairs.append((str(ri.artifact_path), [cycles / self.clock_hz]))
            except Exception as e:  # noqa: BLE001 - a failed run is this candidate's error
                out.append(_Done(RunnerResult(None, f"{type(e).__name__}: {e}")))
        if self.eager is not None:
            self.eager.measured(pairs)
        return out


__all__ = [
    "EagerUpdate",
    "EmulatorRunner",
    "FitsSram",
    "Measurements",
    "MutateTileDecision",
    "NPUBuilder",
    "build_candidate",
    "fits",
    "lower_standalone",
    "measure_artifact",
]
