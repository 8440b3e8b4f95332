"""`tvm-npu tune MODEL`: tune a model's tile plans (MAC operators, and the float vector operators whose
tiles matter) into a MetaSchedule database (docs/TUNING.md).

    tvm-npu tune model.tflite --target npu-edge --trials 200 --db tuning_db [--cost-model xgb] [--json r.json]
        [--rpc-tracker HOST:PORT --rpc-key KEY]

A progress bar shows the measured trials and the best weighted cycles so far; at the end, one line per
task (default and tuned cycles, plans, trials). Rerunning with the same --db continues. Compile with
the database: `with ms.database.JSONDatabase(work_dir=DIR): tvm.compile(mod, target=...)`.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="auto-tune the NPU tile plans of a model into a tuning database")
    p.add_argument("model", help="an .onnx, .tflite or .pt2 (torch.export.save) file")
    p.add_argument("--target", default="npu-edge", help="npu, npu-nano, npu-edge or npu-pro")
    p.add_argument("--shape", action="append", help="NAME=D1,D2,... for inputs with dynamic dims")
    p.add_argument("--trials", type=int, default=64,
                   help="measured candidates the database should hold for the model in total (default 64)")
    p.add_argument("--db", default="tuning_db", help="the database directory (JSONDatabase; created if missing)")
    p.add_argument("--cost-model", default="xgb", choices=("xgb", "random", "mlp"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials-per-iter", type=int, default=8, help="candidates measured per search round (default 8)")
    p.add_argument("--reorder-float-sums", action="store_true",
                   help="let tuning change the K chunking of multi-tap float convolutions, which reorders their "
                        "fp32 sums: outputs then differ within rounding (by default they stay byte-identical)")
    p.add_argument("--json", metavar="PATH", help="write the per-task results as JSON ('-': stdout)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on the RPC servers of this tracker "
                   "(scripts/npu_rpc_server.py) instead of in this process")
    p.add_argument("--rpc-key", default="npu", help="the servers' key at the tracker (default npu)")
    p.set_defaults(func=run)
    return p


def _shapes(items):
    out = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        out[name] = tuple(int(d) for d in dims.split(","))
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..importer import load
    from .api import open_database, summarize, tune
    from .tasks import extract_tasks

    mod = load(args.model, _shapes(args.shape)).mod
    tasks = extract_tasks(mod, args.target)
    if not tasks:
        print(f"tvm-npu tune: {args.model}: no tunable operator runs on the NPU for {args.target}: nothing to tune")
        return 0
    weights = {t.name: t.weight for t in tasks}
    bar = tqdm(total=args.trials, unit="trial", desc="tuning", file=sys.stderr, dynamic_ncols=True)
    bar.update(summarize(tasks, open_database(args.db)).trials)

    def progress(ev):
        bar.update(ev["batch"])
        bar.set_postfix_str(f"best {sum(weights[n] * c for n, c in ev['best_cycles'].items())} cycles "
                            f"({len(ev['best_cycles'])}/{len(tasks)} tasks)")

    runner = None
    if args.rpc_tracker:
        from .rpc import rpc_runner

        runner = rpc_runner(args.rpc_tracker, args.rpc_key)
    try:
        res = tune(mod, args.target, args.trials, args.db, cost_model=args.cost_model, seed=args.seed,
                   num_trials_per_iter=args.trials_per_iter, tasks=tasks, progress=progress, runner=runner,
                   reorder_sums=args.reorder_float_sums)
    finally:
        bar.close()
    print(f"{'task':44s} {'x':>3s} {'trials':>6s} {'default':>9s} {'tuned':>9s} {'gain':>6s}  plan (default -> tuned)")
    for t in res.tasks:
        print(f"{t.name[:44]:44s} {t.weight:3d} {t.measured:6d} {t.default_cycles:9d} {t.best_cycles:9d} "
              f"{t.speedup:5.2f}x  {t.default_plan} -> {t.best_plan}")
    gain = res.default_cycles / res.tuned_cycles if res.tuned_cycles else 0.0
    print(f"weighted operator cycles: default {res.default_cycles}, tuned {res.tuned_cycles} ({gain:.3f}x); "
          f"{res.trials} trials in {args.db} ({res.new_trials} measured now)")
    if args.json:
        text = json.dumps(res.to_dict(), indent=2, sort_keys=True)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0


__all__ = ["add_parser", "run"]
