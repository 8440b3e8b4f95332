"""Tune models for the NPU and compare tuned with default whole-model cycles (docs/TUNING.md).

    python scripts/tune_models.py --vela-data ../shared/data/vela --models mobilenet_v2_035_96_int8 \
        --trials 200 --cost-model xgb random --out tuning_sweep

Per (model, configuration, cost model) a database under --out (resumable: a rerun continues it), then
the model compiled without and with the database: NPU cycles (the emulator's data-independent timing of
every NPU function), whether the output bytes agree, trials and wall time. Writes --out/sweep.json and,
with matplotlib, --out/best_so_far.png (best weighted cycles after each measured trial, per cost model).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def npu_cycles(ex) -> int:
    import npu_emulator
    from tvm_npu.artifact import Artifact
    from tvm_npu.runtime_module import find_npu_modules

    total = 0
    for m in find_npu_modules(ex.mod):
        for s in m["npu_symbols"]():
            art = Artifact.deserialize(bytes(m["npu_artifact"](str(s))))
            total += int(npu_emulator.Emulator(art.config).check(art.program, const_bytes=len(art.constants),
                                                                 io_bytes=art.io_bytes,
                                                                 scratch_bytes=art.scratch_bytes).cycles)
    return total


def run(ex, inputs):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    out = out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__len__") and not hasattr(out, "numpy") else out
    return out.numpy()


def random_inputs(mod, seed=0):
    rng = np.random.default_rng(seed)
    xs = []
    for p in mod["main"].params:
        shape = [int(d) for d in p.ty.shape]
        dt = str(p.ty.dtype)
        if "int" in dt:
            info = np.iinfo(dt)
            xs.append(rng.integers(info.min, info.max + 1, shape).astype(dt))
        else:
            xs.append(rng.standard_normal(shape).astype(dt))
    return xs


def largest_tile_plan(desc, config):
    """The tiling stage's former default (before the analytic cost model): the largest tiles that fit,
    whole K first, then wide, then tall, weights resident. The baseline the issue's gain is measured
    against ("today's heuristic"); a copy, since the tiling stage no longer chooses this way."""
    from tvm_npu.ir.geometry import conv_geom
    from tvm_npu.ir.memory import over_budget
    from tvm_npu.ir.plan import WEIGHTS_RESIDENT, MacPlan
    from tvm_npu.tiling import mac

    ow = conv_geom(desc).ow if desc.kind == "conv2d" else 1
    cands = [p for p in mac.candidates(desc, config, True, (WEIGHTS_RESIDENT,))]
    depths = sorted({p.depth for p in cands}, reverse=True)
    best = None
    for depth in depths:
        for p in cands:
            if p.depth != depth or over_budget(config, mac.needs(desc, p, config)) is not None:
                continue
            if best is None or (p.rows * p.cols * ow, p.cols) > (best.rows * best.cols * ow, best.cols):
                best = p
        if best is not None:
            return MacPlan(best.rows, best.cols, best.depth)
    return None


def baseline_cycles(mod, target, tasks) -> int:
    """NPU cycles of `mod` with every MAC operator tiled by largest_tile_plan (as plan overrides)."""
    import tvm

    import tvm_npu

    overrides = {}
    for t in tasks:
        plan = largest_tile_plan(t.desc, t.config)
        if plan is not None:
            overrides.update({label: plan for label in t.labels})
    with tvm_npu.compile_options(plan_overrides=overrides):
        return npu_cycles(tvm.compile(mod, target=target))


def best_so_far(row: dict) -> list:
    """The model's weighted MAC cycles after each measured batch: every task at the best plan measured
    so far, or its default plan until something better is measured (the first point: all defaults).
    The progress events give, per batch, the best cycles of the tasks measured so far."""
    tasks = {t["name"]: t for t in row["tasks"]}
    best = {n: t["default_cycles"] for n, t in tasks.items()}
    ys = [sum(tasks[n]["weight"] * best[n] for n in tasks)]
    for batch in row["curve"]:
        for n, v in batch.items():
            if n in best:
                best[n] = min(best[n], v)
        ys.append(sum(tasks[n]["weight"] * best[n] for n in tasks))
    return ys


def sweep_one(name, path, target, trials, cost_model, out_dir: Path, seed: int) -> dict:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    import tvm_npu
    from tvm_npu.importer import load
    from tvm_npu.tuning.api import tune

    mod = load(str(path)).mod
    db_dir = out_dir / f"{name}.{target}.{cost_model}"
    curve = []

    def progress(ev):
        curve.append(ev["best_cycles"])

    t0 = time.time()
    res = tune(mod, target, trials, str(db_dir), cost_model=cost_model, seed=seed, num_trials_per_iter=8,
               progress=progress)
    wall = time.time() - t0
    from tvm_npu.tuning.tasks import extract_tasks

    largest = baseline_cycles(mod, target, extract_tasks(mod, target))
    default_ex = tvm.compile(mod, target=target)
    with ms.database.JSONDatabase(work_dir=str(db_dir)):
        tuned_ex = tvm.compile(mod, target=target)
    layers = tvm_npu.last_report()
    xs = random_inputs(mod, seed)
    same = bool(np.array_equal(run(default_ex, xs), run(tuned_ex, xs)))
    return {"model": name, "target": target, "cost_model": cost_model, "trials": res.trials,
            "new_trials": res.new_trials, "wall_s": round(wall, 1), "largest_tile_cycles": largest,
            "default_cycles": npu_cycles(default_ex),
            "tuned_cycles": npu_cycles(tuned_ex), "same_output_bytes": same, "tasks": res.to_dict()["tasks"],
            "weighted_default": res.default_cycles, "weighted_tuned": res.tuned_cycles,
            "report_config": layers.config if layers else None, "curve": curve}


def search_quality(name, path, target, cost_models, fraction, out_dir: Path, seed: int, layer: str = "") -> dict:
    """One layer whose space can be enumerated: every legal plan measured (the exhaustive optimum),
    then a search per cost model with `fraction` of that trial count, from a fresh database."""
    import shutil

    import npu_emulator
    from tvm_npu.importer import load
    from tvm_npu.tuning.api import tune
    from tvm_npu.tuning.measure import build_candidate, fits
    from tvm_npu.tuning.records import workload
    from tvm_npu.tuning.space import enumerate_plans, schedule_of_plan, space_of
    from tvm_npu.tuning.tasks import extract_tasks

    tasks = extract_tasks(load(str(path)).mod, target)
    sized = [(space_of(t.desc, t.config).size(), t) for t in tasks]
    if layer:
        task = next(t for _, t in sized if layer in t.name)
    else:  # the largest space up to 1,200 plans (measurable exhaustively in minutes)
        task = max((x for x in sized if x[0] <= 1200), key=lambda x: x[0])[1]
    space = space_of(task.desc, task.config)
    kernel, wmod = workload(task.desc, task.config)
    cache = out_dir / f"exhaustive.{task.key}.json"
    measured = json.loads(cache.read_text()) if cache.exists() else {}
    emu = npu_emulator.Emulator(task.config)
    for plan in enumerate_plans(space):
        k = json.dumps([plan.rows, plan.cols, plan.depth, plan.order])
        if k in measured or fits(task.desc, plan, task.config):
            continue
        _, program, cb, iob = build_candidate(schedule_of_plan(wmod, kernel, space, plan).mod, task.desc, task.config)
        measured[k] = int(emu.check(program, const_bytes=cb, io_bytes=iob, scratch_bytes=0).cycles)
        if len(measured) % 50 == 0:
            cache.write_text(json.dumps(measured))
    cache.write_text(json.dumps(measured))
    optimum = min(measured.values())
    budget = max(2, int(len(measured) * fraction))
    row = {"model": name, "task": task.name, "space_plans": space.size(), "legal_plans": len(measured),
           "optimum_cycles": optimum, "optimum_plan": json.loads(min(measured, key=measured.get)),
           "default_cycles": measured.get(json.dumps([task.default.rows, task.default.cols, task.default.depth,
                                                      task.default.order])), "budget": budget, "searches": {}}
    for cm in cost_models:
        for seeded in (True, False):  # without the default: what the search finds on its own
            name_ = f"{cm}{'' if seeded else '_without_default'}"
            db = out_dir / f"quality.{task.key}.{name_}"
            shutil.rmtree(db, ignore_errors=True)
            res = tune(None, target, budget, str(db), cost_model=cm, seed=seed, num_trials_per_iter=8,
                       tasks=[task], measure_default=seeded)
            best = res.tasks[0].best_cycles
            row["searches"][name_] = {"trials": res.trials, "best_cycles": best, "best_plan": res.tasks[0].best_plan,
                                      "within_of_optimum": round(best / optimum - 1, 4)}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vela-data", default=str(REPO.parent / "shared" / "data" / "vela"))
    ap.add_argument("--models", nargs="+", default=None, help="file stems (default: every .tflite)")
    ap.add_argument("--targets", nargs="+", default=["npu-edge"])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--cost-model", nargs="+", default=["xgb", "random"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="tuning_sweep")
    ap.add_argument("--search-quality", action="store_true",
                    help="instead: exhaustive optimum vs search on one enumerable layer of the first model")
    ap.add_argument("--layer", default="", help="with --search-quality: a substring of the task name")
    ap.add_argument("--fraction", type=float, default=0.05, help="with --search-quality: trials / legal plans")
    args = ap.parse_args(argv)
    files = {p.stem: p for p in sorted(Path(args.vela_data).glob("*.tflite"))}
    models = args.models or sorted(files)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.search_quality:
        row = search_quality(models[0], files[models[0]], args.targets[0], args.cost_model, args.fraction, out_dir,
                             args.seed, args.layer)
        (out_dir / "search_quality.json").write_text(json.dumps(row, indent=1))
        print(json.dumps(row, indent=1))
        return 0
    table_path = out_dir / "sweep.json"
    rows = json.loads(table_path.read_text()) if table_path.exists() else []
    for name in models:
        for target in args.targets:
            for cm in args.cost_model:
                row = sweep_one(name, files[name], target, args.trials, cm, out_dir, args.seed)
                rows = [r for r in rows if (r["model"], r["target"], r["cost_model"]) != (name, target, cm)] + [row]
                table_path.write_text(json.dumps(rows, indent=1))
                print(f"{name:28s} {target:9s} {cm:6s} trials {row['trials']:5d}  largest-tile "
                      f"{row['largest_tile_cycles']:9d}  default {row['default_cycles']:9d}"
                      f"  tuned {row['tuned_cycles']:9d}  ({row['default_cycles'] / max(row['tuned_cycles'], 1):.3f}x)"
                      f"  same output bytes: {row['same_output_bytes']}  {row['wall_s']} s", flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in rows:
            ys = best_so_far(r)
            ax.plot(range(len(ys)), ys, label=f"{r['model']} {r['target']} {r['cost_model']}")
        ax.set_xlabel("measured batch (0: the default plans)")
        ax.set_ylabel("weighted MAC cycles, best so far")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "best_so_far.png", dpi=120)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
