"""`tvm_npu.tune(mod, target, trials, database)`: MetaSchedule over the tile plans of a model's MAC
operators and float vector operators (tasks.py).

Per task (tasks.py) a TuneContext with the NPU design space (space.py: sch_rules=[], the SRAM
postprocessor, the tile-decision mutator), evolutionary search, and `ms.tune_tasks` with the gradient
task scheduler, our builder and runner (measure.py) and the chosen cost model (XGBoost by default,
`num_warmup_samples=0`, seeded). Before searching, each task's default plan is measured and committed
to the database, so the best record is never worse than the default. `trials` is the total number of
measured candidates the database should hold for the model's tasks: a rerun with the same database
continues from what it holds, and never measures a plan twice.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable

import numpy as np
import tvm

from .records import plan_of_trace, workload
from . import vector_space
from .records import MAC_KINDS
from .space import MacSpace, space_of
from .tasks import Task, extract_tasks

COST_MODELS = ("xgb", "random", "mlp")


@dataclasses.dataclass
class TaskResult:
    name: str
    key: str
    labels: list[str]
    weight: int
    space_size: int
    default_plan: dict
    default_cycles: int
    best_plan: dict
    best_cycles: int
    measured: int  # records the database holds for this workload

    @property
    def speedup(self) -> float:
        return self.default_cycles / self.best_cycles if self.best_cycles else 0.0


@dataclasses.dataclass
class TuneResult:
    config: str
    cost_model: str
    trials: int  # records the database holds for the model's tasks after this run
    new_trials: int  # measured by this run (emulator runs)
    tasks: list[TaskResult]
    database: str
    emulated: list[tuple] = dataclasses.field(default_factory=list)  # (workload key, plan) run by this run

    @property
    def default_cycles(self) -> int:
        return sum(t.weight * t.default_cycles for t in self.tasks)

    @property
    def tuned_cycles(self) -> int:
        return sum(t.weight * t.best_cycles for t in self.tasks)

    def to_dict(self) -> dict:
        return {"config": self.config, "cost_model": self.cost_model, "trials": self.trials,
                "new_trials": self.new_trials, "database": self.database,
                "weighted_default_cycles": self.default_cycles, "weighted_tuned_cycles": self.tuned_cycles,
                "tasks": [dict(dataclasses.asdict(t), speedup=round(t.speedup, 4)) for t in self.tasks],
                "emulated": [[k, p.to_dict()] for k, p in self.emulated]}


def _ms():
    from tvm.s_tir import meta_schedule as ms

    return ms


def open_database(database) -> object:
    """A MetaSchedule database: a directory (JSONDatabase, created if missing) or a Database."""
    ms = _ms()
    if isinstance(database, ms.database.Database):
        return database
    os.makedirs(str(database), exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(database))


def cost_model_of(kind: str, seed: int):
    ms = _ms()
    if kind == "xgb":
        np.random.seed(seed)  # XGBModel's warm-up and data split use the global numpy generator
        return ms.cost_model.XGBModel(num_warmup_samples=0, num_tuning_cores=1, tree_method="auto",
                                      config=ms.cost_model.xgb_model.XGBConfig(seed=seed, nthread=1))
    if kind == "random":
        return ms.cost_model.RandomModel(seed=seed)
    if kind == "mlp":
        return ms.cost_model.MLPModel()
    raise ValueError(f"cost model {kind!r}: one of {', '.join(COST_MODELS)}")


def _target(config) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "keys": ["npu", "cpu"], "model": config.name})


def _records(db, mod) -> list:
    if not db.has_workload(mod):
        return []
    return list(db.get_top_k(db.commit_workload(mod), 1 << 30))


def task_space(task: Task, reorder_sums: bool = False):
    """The task's design space: space.MacSpace or vector_space.VectorSpace (size, plans, design_spaces,
    schedule_of_plan)."""
    if task.desc.kind in MAC_KINDS:
        kernel, _ = workload(task.desc, task.config, task.double_buffer, task.dtypes)
        return MacSpace(kernel, space_of(task.desc, task.config, task.double_buffer, reorder_sums), task.double_buffer)
    return vector_space.space_of(task.desc, task.config, task.double_buffer, task.dtypes)


def _context(task: Task, seed: int, population: int, reorder_sums: bool = False):
    ms = _ms()
    from .measure import FitsSram, MutateTileDecision

    _, mod = workload(task.desc, task.config, task.double_buffer, task.dtypes)
    space = task_space(task, reorder_sums)
    gen = ms.space_generator.ScheduleFn(lambda sch: space.design_spaces(sch.mod),
                                        sch_rules=[], postprocs=[FitsSram(task.desc, task.config, task.dtypes)],
                                        mutator_probs={MutateTileDecision(seed): 1.0})
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population, init_measured_ratio=0.2,
                                                     init_min_unmeasured=min(population, 16), genetic_num_iters=3,
                                                     genetic_max_fail_count=10, eps_greedy=0.1)
    return ms.TuneContext(mod=mod, target=_target(task.config), space_generator=gen, search_strategy=strategy,
                          task_name=task.name, rand_state=seed, num_threads=1)


def _measure_default(task: Task, db, builder, runner, reorder_sums: bool = False) -> None:
    """Measures the task's default plan and commits it (unless the database already holds it)."""
    ms = _ms()
    _, mod = workload(task.desc, task.config, task.double_buffer, task.dtypes)
    for rec in _records(db, mod):
        if plan_of_trace(mod, rec.trace) == task.default:
            return
    sch = task_space(task, reorder_sums).schedule_of_plan(mod, task.default)
    built = builder.build([ms.builder.BuilderInput(sch.mod, _target(task.config))])[0]
    if built.error_msg:
        raise RuntimeError(f"{task.name}: the default plan {task.default.to_dict()} does not build: {built.error_msg}")
    res = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", [])])[0].result()
    if res.error_msg:
        raise RuntimeError(f"{task.name}: the default plan does not run: {res.error_msg}")
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), list(res.run_secs),
                                              _target(task.config),
                                              ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    shutil.rmtree(os.path.dirname(str(built.artifact_path)), ignore_errors=True)


def tune(mod: tvm.IRModule, target="npu-edge", trials: int = 64, database: str | object = "tuning_db",
         cost_model: str = "xgb", seed: int = 0, num_trials_per_iter: int = 8, population: int = 64,
         tasks: list[Task] | None = None, progress: Callable[[dict], None] | None = None,
         runner=None, measure_default: bool = True, reorder_sums: bool = False) -> TuneResult:
    """Tunes the tile plans of `mod`'s operators for an NPU target; records go to `database` (a directory for
    a JSONDatabase, or a MetaSchedule Database). `trials`: measured candidates the database should hold
    for the model's tasks in total (defaults included). `progress(event)` is called after every batch;
    `runner`: a MetaSchedule runner (default: the emulator in this process; see rpc.rpc_runner);
    `measure_default=False` only to study the search itself (the result may then be worse than the default);
    `reorder_sums=True` lets the search change the K chunking of multi-tap float convolutions, which
    reorders their fp32 sums (outputs then differ within rounding; by default they stay byte-identical)."""
    ms = _ms()
    from .measure import EagerUpdate, EmulatorRunner, Measurements, NPUBuilder

    tasks = tasks if tasks is not None else extract_tasks(mod, target)
    db = open_database(database)
    if not tasks:
        return TuneResult("", cost_model, 0, 0, [], str(database))
    config = tasks[0].config
    measurements = Measurements()
    for t in tasks:  # the builder-side cache: what the database already measured
        _, wmod = workload(t.desc, t.config, t.double_buffer, t.dtypes)
        for rec in _records(db, wmod):
            plan = plan_of_trace(wmod, rec.trace)
            if plan is not None and rec.run_secs:
                measurements.add(t.key, plan, round(min(float(s) for s in rec.run_secs) * config.clock_mhz * 1e6))
    by_key = {t.key: t for t in tasks}
    model = cost_model_of(cost_model, seed)
    # measuring in this process: the cost model learns from each batch at once (measure.EagerUpdate)
    eager = EagerUpdate(model) if runner is None else None
    builder = NPUBuilder(by_key, measurements, eager)
    runner = runner if runner is not None else EmulatorRunner(config.clock_mhz * 1e6, measurements, eager)
    for t in tasks if measure_default else ():
        _measure_default(t, db, builder, runner, reorder_sums)
    held = sum(len(_records(db, workload(t.desc, t.config, t.double_buffer, t.dtypes)[1])) for t in tasks)
    remaining = trials - held
    if remaining > 0:
        contexts = [_context(t, seed + i, population, reorder_sums) for i, t in enumerate(tasks)]
        callbacks = ms.measure_callback.MeasureCallback.create("default")
        if eager is not None:  # the cost model is updated by the runner, not again when a task is joined
            eager.contexts = {t.key: c for t, c in zip(tasks, contexts)}
            callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact()]
        if progress is not None:
            callbacks = list(callbacks) + [_progress_callback(progress, tasks, config)]
        ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in tasks],
                      work_dir=str(getattr(db, "path_workload", "") and os.path.dirname(db.path_workload)) or ".",
                      max_trials_global=remaining, max_trials_per_task=remaining,
                      num_trials_per_iter=min(num_trials_per_iter, remaining), builder=builder, runner=runner, database=db,
                      cost_model=model, measure_callbacks=callbacks,
                      task_scheduler="gradient")
    result = summarize(tasks, db, cost_model, len(measurements.emulated), str(database), reorder_sums)
    result.emulated = list(measurements.emulated)
    return result


def summarize(tasks: list[Task], db, cost_model: str = "", new_trials: int = 0, name: str = "",
              reorder_sums: bool = False) -> TuneResult:
    """Per task: the default's and the best record's cycles and plans, from the database."""
    out, total = [], 0
    for t in tasks:
        _, wmod = workload(t.desc, t.config, t.double_buffer, t.dtypes)
        clock = t.config.clock_mhz * 1e6
        recs = [(min(float(s) for s in r.run_secs), plan_of_trace(wmod, r.trace)) for r in _records(db, wmod)
                if r.run_secs]
        total += len(recs)
        default = next((round(s * clock) for s, p in recs if p == t.default), 0)
        best_s, best_p = min(recs, key=lambda r: r[0]) if recs else (0.0, None)
        out.append(TaskResult(t.name, t.key, t.labels, t.weight, task_space(t, reorder_sums).size(),
                              t.default.to_dict(), default, best_p.to_dict() if best_p else {}, round(best_s * clock),
                              len(recs)))
    return TuneResult(tasks[0].config.name if tasks else "", cost_model, total, new_trials, out, name)


def _progress_callback(progress: Callable[[dict], None], tasks: list[Task], config):
    ms = _ms()
    from tvm.ir.utils import derived_object

    clock = config.clock_mhz * 1e6
    best: dict[int, float] = {}

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            secs = [min(float(s) for s in r.run_secs) for r in runner_results if r.run_secs]
            if secs:
                best[task_id] = min(best.get(task_id, float("inf")), *secs)
            progress({"task": tasks[task_id].name, "batch": len(runner_results),
                      "best_cycles": {tasks[i].name: round(s * clock) for i, s in best.items()}})

    return Progress()


__all__ = ["COST_MODELS", "TaskResult", "TuneResult", "open_database", "summarize", "tune"]
