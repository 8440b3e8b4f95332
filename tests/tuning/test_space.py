"""The NPU design space and its MetaSchedule parts, without a search: the builder's program is the
program `tvm.compile` produces for the same plan, candidates whose TIR is not the compile path's are
refused, the postprocessor keeps plans within the SRAMs, the mutator changes one tile decision, and
workloads carry the configuration so that records never cross configurations."""

from __future__ import annotations

import pytest
import tvm
from tuning_models import MODELS
from tvm_ffi.structural import structural_equal

import tvm_npu
from tvm_npu.artifact import Artifact
from tvm_npu.config import get_config
from tvm_npu.ir.plan import INPUTS_RESIDENT, MacPlan
from tvm_npu.options import CompileOptions
from tvm_npu.runtime_module import find_npu_modules
from tvm_npu.tuning import measure as M
from tvm_npu.tuning import records as R
from tvm_npu.tuning import space as SP
from tvm_npu.tuning.tasks import extract_tasks

EDGE = get_config("npu-edge")
NO_VETO = CompileOptions(should_run=False)


def _task(name):
    (task,) = extract_tasks(MODELS[name](), "npu-edge", NO_VETO)
    return task


def _compiled_program(name, label, plan):
    with tvm_npu.compile_options(should_run=False, plan_overrides={label: plan}):
        ex = tvm.compile(MODELS[name](), target="npu-edge")
    (m,) = find_npu_modules(ex.mod)
    (symbol,) = list(m["npu_symbols"]())
    return Artifact.deserialize(bytes(m["npu_artifact"](str(symbol))))


PLANS = {"conv": [None, MacPlan(5, 32, 16), MacPlan(3, 16, 8, order=INPUTS_RESIDENT), MacPlan(14, 16, 4)],
         "matmul": [None, MacPlan(32, 16, 64), MacPlan(16, 40, 16, order=INPUTS_RESIDENT), MacPlan(98, 16, 32)]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builder_program_is_the_compile_paths_program(name):
    """The candidate's schedule, tensorized and walked by the builder, gives the bytes `tvm.compile`
    gives with the same plan as a user override (the whole-model path, memory plan included)."""
    task = _task(name)
    kernel, mod = R.workload(task.desc, task.config)
    space = SP.space_of(task.desc, task.config, reorder_sums=True)  # the K-chunked plans too
    for plan in PLANS[name]:
        plan = plan or task.default
        sch = SP.schedule_of_plan(mod, kernel, space, plan)
        assert R.plan_of_trace(mod, sch.trace) == plan
        built, program, const_bytes, io_bytes = M.build_candidate(sch.mod, task.desc, task.config)
        art = _compiled_program(name, task.labels[0], plan)
        assert built == plan
        assert program == art.program, plan
        assert (const_bytes, io_bytes) == (len(art.constants), art.io_bytes)


def test_a_candidate_whose_tir_is_not_the_compile_paths_is_refused():
    """A schedule built with the whole-K structure but annotated with a K-chunked plan: the weight
    tile sits at the wrong loop, so its events differ from the compile path's and the builder says so."""
    task = _task("conv")
    kernel, mod = R.workload(task.desc, task.config)
    sch = tvm.s_tir.Schedule(mod)
    SP.apply_plan(sch, kernel, SP.Structure("weights_resident", False), 7, 16, 8)
    with pytest.raises(ValueError, match="differs from the compile path"):
        M.build_candidate(sch.mod, task.desc, task.config)
    sch = tvm.s_tir.Schedule(mod)
    SP.apply_plan(sch, kernel, SP.Structure("weights_resident", True), 7, 16, 8)
    assert M.build_candidate(sch.mod, task.desc, task.config)[0] == MacPlan(7, 16, 8)


def test_postproc_keeps_plans_within_the_srams():
    task = _task("conv")
    kernel, mod = R.workload(task.desc, task.config)
    space = SP.space_of(task.desc, task.config, reorder_sums=True)
    nano = get_config("npu-nano")
    big = MacPlan(space.rows[0], space.cols[0], space.k)
    assert M.fits(task.desc, big, nano) and "needs" in M.fits(task.desc, big, nano)
    post_nano, post_edge = M.FitsSram(task.desc, nano), M.FitsSram(task.desc, EDGE)
    assert not post_nano.apply(SP.schedule_of_plan(mod, kernel, space, big))
    assert post_edge.apply(SP.schedule_of_plan(mod, kernel, space, task.default))


def test_mutator_changes_exactly_one_tile_decision():
    task = _task("matmul")
    kernel, mod = R.workload(task.desc, task.config)
    space = SP.space_of(task.desc, task.config)
    sch = SP.schedule_of_plan(mod, kernel, space, MacPlan(32, 16, 32))
    mut = M.MutateTileDecision(seed=3)
    seen = set()
    for _ in range(20):
        new = mut.apply(sch.trace)
        after = tvm.s_tir.Schedule(mod)
        new.apply_to_schedule(after, remove_postproc=True)
        plan = R.plan_of_schedule(after)
        diff = [f for f in ("rows", "cols", "depth") if getattr(plan, f) != getattr(MacPlan(32, 16, 32), f)]
        assert len(diff) == 1, (plan, diff)
        seen.add(plan)
    assert len(seen) > 3


def test_workloads_carry_configuration_isa_and_buffering():
    task = _task("conv")
    _, edge = R.workload(task.desc, EDGE)
    _, nano = R.workload(task.desc, get_config("npu-nano"))
    _, single = R.workload(task.desc, EDGE, double_buffer=False)
    f = edge["main"]
    assert str(f.attrs["npu.config"]) == "npu-edge" and int(f.attrs["npu.isa_version"]) >= 1
    assert not structural_equal(edge, nano) and not structural_equal(edge, single)
    assert R.workload_key(task.desc, EDGE) != R.workload_key(task.desc, get_config("npu-nano"))
    # the workload does not depend on any plan: two tasks of one operator are one workload
    assert structural_equal(edge, R.workload(task.desc, EDGE)[1])


def test_an_illegal_record_is_refused_with_the_reason(tmp_path):
    """A record whose plan does not fit npu-nano's SRAMs, committed for npu-nano: the compile path
    uses the default plan and its report says why."""
    from tvm.s_tir import meta_schedule as ms

    nano = get_config("npu-nano")
    (task,) = extract_tasks(MODELS["conv"](), "npu-nano", NO_VETO)
    kernel, mod = R.workload(task.desc, nano)
    space = SP.space_of(task.desc, nano, reorder_sums=True)
    big = MacPlan(space.rows[0], space.cols[0], space.k)
    assert M.fits(task.desc, big, nano)
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    sch = SP.schedule_of_plan(mod, kernel, space, big)
    target = tvm.target.Target({"kind": "llvm", "keys": ["npu", "cpu"], "model": "npu-nano"})
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), [1e-9], target))
    (layer,) = _layers("npu-nano", db)
    assert layer["plan_source"] == "default"
    assert "tuning record refused" in layer["plan_note"] and "does not fit" in layer["plan_note"]
    assert layer["plan"] == task.default.to_dict()


def _layers(target, db=None):
    import contextlib

    with (db if db is not None else contextlib.nullcontext()), tvm_npu.compile_options(should_run=False):
        ex = tvm.compile(MODELS["conv"](), target=target)
    (m,) = find_npu_modules(ex.mod)
    (symbol,) = list(m["npu_symbols"]())
    return Artifact.deserialize(bytes(m["npu_artifact"](str(symbol)))).producer["layers"]


def test_without_a_database_the_report_says_default():
    (layer,) = _layers("npu-edge")
    assert layer["plan_source"] == "default" and layer["default_predicted_cycles"] == layer["predicted_cycles"]


def test_compile_path_imports_no_tensor_intrinsics():
    import subprocess
    import sys

    code = ("import sys, tvm, tvm_npu\nfrom tvm.s_tir import meta_schedule as ms\nimport tempfile\n"
            "sys.path.insert(0, {!r})\nfrom tuning_models import conv_model\n"
            "with ms.database.JSONDatabase(work_dir=tempfile.mkdtemp()), tvm_npu.compile_options(should_run=False):\n"
            "    tvm.compile(conv_model(), target='npu-edge')\n"
            "print('tvm.s_tir.tensor_intrin' in sys.modules, tvm_npu.last_report() is not None)\n"
            ).format(str(__import__("pathlib").Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "True"]  # compiled, and TuneContext's tensor intrinsics never imported


def test_plans_of_the_space_are_the_tiling_stages_candidates():
    task = _task("matmul")
    space = SP.space_of(task.desc, task.config)
    from tvm_npu.tiling import mac

    legal = set(mac.candidates(task.desc, task.config, True, ("weights_resident", INPUTS_RESIDENT)))
    assert set(SP.enumerate_plans(space)) == legal
    assert task.default in legal


def _run(name, plan, x):
    import numpy as np
    from tvm import relax

    with tvm_npu.compile_options(should_run=False, plan_overrides={_task(name).labels[0]: plan}):
        ex = tvm.compile(MODELS[name](), target="npu-edge")
    return np.asarray(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())


def test_float_conv_space_keeps_the_order_of_its_sums():
    """A 3x3 float convolution adds its products in (ky, kx, ci) order per instruction, so another K
    chunking reorders its fp32 sums. Its default space holds only the default's chunking, and every
    plan of it gives the default's output bytes; the K-chunked plans of `reorder_sums=True` do not."""
    import numpy as np

    task = _task("conv")
    assert SP.sums_reorder(task.desc) and not SP.sums_reorder(_task("matmul").desc)
    space, wide = SP.space_of(task.desc, task.config), SP.space_of(task.desc, task.config, reorder_sums=True)
    assert space.depth == (task.default.depth,) and len(wide.depth) > 1 and space.size() < wide.size()
    plans = [p for p in SP.enumerate_plans(space) if M.fits(task.desc, p, EDGE) is None]
    assert {p.depth for p in plans} == {task.default.depth} and len(plans) > 10
    x = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype("float32")
    y0 = _run("conv", task.default, x)
    others = [p for p in plans if p != task.default]
    for plan in (others[0], others[len(others) // 2], others[-1]):
        assert np.array_equal(_run("conv", plan, x), y0), plan
    chunked = next(p for p in SP.enumerate_plans(wide) if p.depth != task.default.depth and p.rows == task.default.rows
                   and p.cols == task.default.cols and M.fits(task.desc, p, EDGE) is None)
    y1 = _run("conv", chunked, x)
    assert not np.array_equal(y1, y0)  # the restriction matters: the same maths, other roundings
    assert np.abs(y1.astype(np.float64) - y0).max() <= 2e-3 * np.abs(y0).max()


def test_the_runner_updates_the_cost_model_as_each_batch_is_measured():
    """measure.EagerUpdate: the runner hands each measured batch to the cost model at once (with the
    task's context), so an XGBoost model is trained before the scheduler's first round ends; plans
    measured before the search (no context yet) are not fed."""
    from tvm.s_tir import meta_schedule as ms

    task = _task("matmul")
    kernel, mod = R.workload(task.desc, task.config)
    space = SP.space_of(task.desc, task.config)

    class Recorder:
        def __init__(self):
            self.calls = []

        def update(self, context, candidates, results):
            self.calls.append((context, [R.plan_of_schedule(c.sch) for c in candidates],
                               [float(r.run_secs[0]) for r in results]))

    rec = Recorder()
    eager = M.EagerUpdate(rec)
    measurements = M.Measurements()
    builder = M.NPUBuilder({task.key: task}, measurements, eager)
    runner = M.EmulatorRunner(task.config.clock_mhz * 1e6, measurements, eager)
    target = tvm.target.Target({"kind": "llvm", "keys": ["npu", "cpu"], "model": "npu-edge"})

    def measure(plans):
        built = builder.build([ms.builder.BuilderInput(SP.schedule_of_plan(mod, kernel, space, p).mod, target)
                               for p in plans])
        return [r.result() for r in runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", []) for b in built])]

    measure([task.default])
    assert rec.calls == []  # no context: the default plan, measured before the search
    eager.contexts = {task.key: "ctx"}
    plans = [MacPlan(32, 16, 32), MacPlan(16, 40, 16, order=INPUTS_RESIDENT)]
    res = measure(plans)
    ((ctx, seen, secs),) = rec.calls
    assert ctx == "ctx" and seen == plans and secs == [float(r.run_secs[0]) for r in res]
    assert secs[0] != secs[1] and eager.built == {}
