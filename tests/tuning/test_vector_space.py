"""The vector operators' design spaces (tuning/vector_space.py): a candidate's program is the one
`tvm.compile` produces for the same plan, a candidate whose TIR is not the compile path's is refused,
and tuning finds faster tiles that compilation with the database reproduces, with the same output bytes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tuning_models import VECTOR_MODELS
from tvm import relax

import tvm_npu
from tvm_npu.artifact import Artifact
from tvm_npu.config import get_config
from tvm_npu.ir.plan import SoftmaxPlan
from tvm_npu.options import CompileOptions
from tvm_npu.runtime_module import find_npu_modules
from tvm_npu.tuning import measure as M
from tvm_npu.tuning import records as R
from tvm_npu.tuning import vector_space as VS
from tvm_npu.tuning.api import task_space
from tvm_npu.tuning.tasks import extract_tasks

EDGE = get_config("npu-edge")
NO_VETO = CompileOptions(should_run=False)


def _tasks(name):
    return extract_tasks(VECTOR_MODELS[name](), "npu-edge", NO_VETO)


def _compile(name, overrides=None, db=None):
    import contextlib

    with (db if db is not None else contextlib.nullcontext()), \
            tvm_npu.compile_options(should_run=False, plan_overrides=overrides or {}):
        return tvm.compile(VECTOR_MODELS[name](), target="npu-edge")


def _artifacts(ex):
    out = []
    for m in find_npu_modules(ex.mod):
        for s in m["npu_symbols"]():
            out.append(Artifact.deserialize(bytes(m["npu_artifact"](str(s)))))
    return out


def _run(ex, name, trace=False):
    shape = [int(d) for d in VECTOR_MODELS[name]()["main"].params[0].ty.shape]
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    if trace:
        tvm_npu.enable_trace(vm.module)
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    return (y, tvm_npu.profile(vm.module)) if trace else y


def test_tasks_and_spaces():
    (sm,) = _tasks("softmax")
    assert isinstance(sm.default, SoftmaxPlan) and VS.tunable(sm.desc)
    from tvm_npu.isa import DType

    assert sm.dtypes == (DType.FP32,)  # the model's float32 input stays fp32 at the NPU boundary
    assert R.workload_key(sm.desc, EDGE, True, sm.dtypes) != R.workload_key(sm.desc, EDGE, True, (DType.FP16,))
    kinds = {t.desc.kind for t in _tasks("transpose")}
    assert "layout" in kinds
    space = task_space(sm)
    # every plan of the space is a distinct tile count of the 768 rows, or the default
    assert sm.default in space.plans() and space.size() == len(space.values[0]) > 10
    assert VS.tile_counts(10) == (10, 5, 4, 3, 2, 1)


@pytest.mark.parametrize("name", sorted(VECTOR_MODELS))
def test_builder_program_is_the_compile_paths_program(name):
    for task in _tasks(name):
        _, mod = R.workload(task.desc, task.config, dtypes=task.dtypes)
        space = task_space(task)
        plans = [p for p in space.plans() if M.fits(task.desc, p, EDGE, task.dtypes) is None]
        for plan in (task.default, plans[len(plans) // 3], plans[-1]):
            sch = space.schedule_of_plan(mod, plan)
            assert R.plan_of_trace(mod, sch.trace) == plan
            built, program, const_bytes, io_bytes = M.build_candidate(sch.mod, task.desc, task.config, task.dtypes)
            assert built == plan
            (art,) = _artifacts(_compile(name, {task.labels[0]: plan}))
            if len(_tasks(name)) == 1:  # the operator alone in its function: the same program
                assert program == art.program, plan
            layer = next(la for la in art.producer["layers"] if la["binding"] == task.labels[0])
            assert layer["plan"] == plan.to_dict() and layer["plan_source"] == "override"


def test_a_candidate_whose_tir_is_not_the_compile_paths_is_refused():
    (task,) = _tasks("softmax")
    _, mod = R.workload(task.desc, task.config, dtypes=task.dtypes)
    space = task_space(task)
    sch = tvm.s_tir.Schedule(mod)
    space.geom.tile(sch, [64], True)
    blk = sch.get_sblock("store")
    sch.annotate(blk, "npu.rows", 32)  # says 32 rows per tile, is tiled by 64
    sch.annotate(blk, VS.FAMILY_KEY, "softmax")
    with pytest.raises(ValueError, match="differs from the compile path"):
        M.build_candidate(sch.mod, task.desc, task.config, task.dtypes)
    built = M.build_candidate(space.schedule_of_plan(mod, SoftmaxPlan(32)).mod, task.desc, task.config, task.dtypes)
    assert built[0] == SoftmaxPlan(32)


def _standalone_cycles(task, plan):
    import npu_emulator

    _, mod = R.workload(task.desc, task.config, dtypes=task.dtypes)
    sch = task_space(task).schedule_of_plan(mod, plan)
    _, program, const_bytes, io_bytes = M.build_candidate(sch.mod, task.desc, task.config, task.dtypes)
    return int(npu_emulator.Emulator(task.config).check(program, const_bytes=const_bytes, io_bytes=io_bytes).cycles)


def test_tuned_vector_tiles_are_reproduced_by_compilation(tmp_path):
    """A search over the softmax's rows and the transpose's tiles (without the default seeded, so the
    records hold other plans): compiling with the database uses the best records, its cycles move by
    exactly the measured differences, and the output bytes are the default's."""
    import npu_emulator
    from tvm.s_tir import meta_schedule as ms

    from tvm_npu.tuning.api import tune

    changed = 0
    for name in sorted(VECTOR_MODELS):
        tasks = _tasks(name)
        res = tune(None, "npu-edge", 6 * len(tasks), str(tmp_path / name), cost_model="random", seed=0,
                   num_trials_per_iter=3, population=16, tasks=tasks, measure_default=False)
        ex0 = _compile(name)
        ex1 = _compile(name, db=ms.database.JSONDatabase(work_dir=str(tmp_path / name)))
        (a0,), (a1,) = _artifacts(ex0), _artifacts(ex1)
        cyc = [int(npu_emulator.Emulator(a.config).check(a.program, const_bytes=len(a.constants), io_bytes=a.io_bytes,
                                                         scratch_bytes=a.scratch_bytes).cycles) for a in (a0, a1)]
        layers = {la["binding"]: la for la in a1.producer["layers"]}
        gain = 0
        for task, r in zip(tasks, res.tasks):
            best = next(p for p in task_space(task).plans() if p.to_dict() == r.best_plan)
            assert r.best_cycles == _standalone_cycles(task, best)
            gain += task.weight * (_standalone_cycles(task, task.default) - r.best_cycles)
            for label in task.labels:
                assert layers[label]["plan"] == r.best_plan
                assert layers[label]["plan_source"] == "database"
            changed += best != task.default
        assert cyc[0] - cyc[1] == gain, name
        y1, prof = _run(ex1, name, trace=True)
        assert np.array_equal(_run(ex0, name), y1)
        for task, r in zip(tasks, res.tasks):  # the profile says where each plan came from, with both figures
            (row,) = [rw for rw in prof.layers if rw.source.endswith(f": {task.labels[0]}")]
            assert row.plan_source == "database" and row.plan == r.best_plan
            assert row.default_predicted_cycles - row.predicted_cycles == \
                _standalone_cycles(task, task.default) - r.best_cycles
    assert changed >= 2
