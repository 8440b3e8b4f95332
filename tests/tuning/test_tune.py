"""Tuning end to end on a small convolution and a small matmul: the default plan is measured first
and the result is never worse; compiling with the database in a fresh process reproduces the tuned
cycles (emulator) and the plans, and computes what the default compile computes; a rerun continues
without measuring a plan twice; a run killed with SIGKILL leaves a database that opens and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tuning_models import MODELS

from tvm_npu.options import CompileOptions
from tvm_npu.tuning import records as R
from tvm_npu.tuning.api import tune
from tvm_npu.tuning.tasks import extract_tasks

HERE = Path(__file__).parent
# every test here builds MetaSchedule TuneContexts, whose first construction imports TVM's tensor
# intrinsics (11-80 s on these machines): slow, although the tuning itself takes seconds
pytestmark = pytest.mark.slow
NO_VETO = CompileOptions(should_run=False)
TRIALS = 14


def _tasks():
    return [t for name in sorted(MODELS) for t in extract_tasks(MODELS[name](), "npu-edge", NO_VETO)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    db = tmp_path_factory.mktemp("tuning_db")
    tasks = _tasks()
    return tasks, tune(None, "npu-edge", TRIALS, str(db), cost_model="xgb", seed=1, num_trials_per_iter=4,
                       population=16, tasks=tasks), db


def _plans_in(db_dir, tasks):
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    out = set()
    for t in tasks:
        _, mod = R.workload(t.desc, t.config)
        if db.has_workload(mod):
            out |= {(t.key, R.plan_of_trace(mod, r.trace)) for r in db.get_top_k(db.commit_workload(mod), 1 << 20)}
    return out


def test_the_default_is_measured_and_the_tuned_plan_is_never_worse(tuned):
    tasks, res, db = tuned
    assert res.trials >= TRIALS
    assert len(res.tasks) == 2
    for t, r in zip(tasks, res.tasks):
        assert r.default_plan == t.default.to_dict() and r.default_cycles > 0  # measured, in the database
        assert 0 < r.best_cycles <= r.default_cycles
        assert r.measured >= 2
    assert (tasks[0].key, tasks[0].default) in _plans_in(db, tasks)


FRESH = """
import json, sys
import numpy as np, tvm, npu_emulator
from tvm import relax
import tvm_npu
from tvm.s_tir import meta_schedule as ms
from tvm_npu.artifact import Artifact
from tvm_npu.runtime_module import find_npu_modules
sys.path.insert(0, sys.argv[2])
from tuning_models import MODELS

def compiled(name, db=None):
    with tvm_npu.compile_options(should_run=False):
        if db is None:
            ex = tvm.compile(MODELS[name](), target="npu-edge")
        else:
            with db:
                ex = tvm.compile(MODELS[name](), target="npu-edge")
    (m,) = find_npu_modules(ex.mod)
    (s,) = list(m["npu_symbols"]())
    art = Artifact.deserialize(bytes(m["npu_artifact"](str(s))))
    cycles = npu_emulator.Emulator(art.config).check(art.program, const_bytes=len(art.constants),
                                                    io_bytes=art.io_bytes, scratch_bytes=art.scratch_bytes).cycles
    return ex, int(cycles), art.producer["layers"]

def run(ex, x):
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

db = ms.database.JSONDatabase(work_dir=sys.argv[1])
out = {}
for name in sorted(MODELS):
    ex, cycles, layers = compiled(name, db)
    ex0, cycles0, layers0 = compiled(name)
    shape = [int(d) for d in MODELS[name]()["main"].params[0].ty.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    y, y0 = run(ex, x), run(ex0, x)
    out[name] = {"cycles": cycles, "default_cycles": cycles0, "layer": layers[0], "default_layer": layers0[0],
                 "max_abs_diff": float(np.abs(y.astype("float64") - y0).max()), "scale": float(np.abs(y0).max()),
                 "same_bytes": bool(np.array_equal(y, y0))}
print(json.dumps(out))
"""


def test_compiling_with_the_database_in_a_fresh_process_reproduces_the_tuned_cycles(tuned):
    tasks, res, db = tuned
    proc = subprocess.run([sys.executable, "-c", FRESH, str(db), str(HERE)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for t, r in zip(tasks, res.tasks):
        name = "conv" if t.desc.kind == "conv2d" else "matmul"
        g = got[name]
        assert g["layer"]["plan_source"] == "database"
        assert g["layer"]["plan"] == r.best_plan
        assert g["cycles"] == r.best_cycles  # the program the tuner measured is the one compiled
        assert g["default_cycles"] == r.default_cycles
        assert g["layer"]["default_predicted_cycles"] == g["default_layer"]["predicted_cycles"]
        assert g["default_layer"]["plan_source"] == "default"
        # the same bytes: the space keeps the order of the conv's float sums (space.sums_reorder)
        assert g["same_bytes"], (r.default_plan, r.best_plan, g["max_abs_diff"])


def test_a_rerun_continues_without_measuring_a_plan_twice(tuned):
    tasks, res, db = tuned
    before = _plans_in(db, tasks)
    again = tune(None, "npu-edge", res.trials + 6, str(db), cost_model="xgb", seed=2, num_trials_per_iter=3,
                 population=16, tasks=tasks)
    assert again.trials > res.trials
    assert again.emulated and not (set(again.emulated) & before)
    for old, new in zip(res.tasks, again.tasks):
        assert new.best_cycles <= old.best_cycles
    same = tune(None, "npu-edge", again.trials, str(db), tasks=tasks)  # nothing left to do
    assert same.emulated == [] and same.trials == again.trials


KILLED = """
import sys
sys.path.insert(0, sys.argv[2])
from tuning_models import MODELS
from tvm_npu.options import CompileOptions
from tvm_npu.tuning.api import tune
from tvm_npu.tuning.tasks import extract_tasks
tasks = extract_tasks(MODELS["matmul"](), "npu-edge", CompileOptions(should_run=False))
tune(None, "npu-edge", 100000, sys.argv[1], cost_model="random", num_trials_per_iter=2, population=16, tasks=tasks)
"""


def test_a_run_killed_with_sigkill_leaves_a_database_that_opens_and_resumes(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path), str(HERE)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    records = tmp_path / "database_tuning_record.json"
    try:
        deadline = 600  # polls, not a timing assertion: give up only if the child never writes
        while deadline and (not records.exists() or len(records.read_text().splitlines()) < 6):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(1)
            deadline -= 1
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))  # opens (every line replays)
    held = len(db.get_all_tuning_records())
    assert held >= 6
    tasks = extract_tasks(MODELS["matmul"](), "npu-edge", NO_VETO)
    before = _plans_in(tmp_path, tasks)
    res = tune(None, "npu-edge", held + 4, str(tmp_path), cost_model="random", num_trials_per_iter=2,
               population=16, tasks=tasks)
    assert res.trials >= held + 4 and res.emulated and not (set(res.emulated) & before)
