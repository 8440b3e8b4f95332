"""The `tvm-npu` command line: explain / compile / run models; configurations; assembler,
disassembler and artifact tools."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .artifact import MAGIC as ARTIFACT_MAGIC, Artifact
from .config import PRESETS, get_config
from .isa import Program, assemble, disassemble


def _cmd_config(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else sorted(PRESETS)
    cfgs = [get_config(n).to_dict() for n in names]
    print(json.dumps(cfgs[0] if args.name else cfgs, indent=2, sort_keys=True))
    return 0


def _cmd_asm(args: argparse.Namespace) -> int:
    Path(args.output).write_bytes(assemble(Path(args.input).read_text()))
    return 0


def _program_bytes(path: str) -> bytes:
    blob = Path(path).read_bytes()
    return Artifact.deserialize(blob).program if blob[:4] == ARTIFACT_MAGIC else blob


def _cmd_disasm(args: argparse.Namespace) -> int:
    text = disassemble(_program_bytes(args.input))
    if args.number:
        text = "\n".join(f"{i:6d}  {line}" for i, line in enumerate(text.splitlines())) + "\n"
    sys.stdout.write(text)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    art = Artifact.deserialize(Path(args.input).read_bytes())
    meta = art.meta()
    meta["instructions"] = len(Program.decode(art.program))
    meta["program_bytes"] = len(art.program)
    meta["constant_bytes"] = len(art.constants)
    meta["golden"] = sorted(art.golden) if art.golden else []
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(f"artifact for {art.config.name} (ISA v{meta['isa_version']}, format v{meta['format_version']})")
    print(f"  program: {meta['instructions']} instructions, {len(art.program)} bytes; constants {len(art.constants)} "
          f"bytes; scratch {art.scratch_bytes} bytes; IO region {art.io_bytes} bytes")
    for t in art.io:
        q = f" quant scale={list(t.quant.scale)[:4]} zp={list(t.quant.zero_point)[:4]}" if t.quant else ""
        print(f"  {t.kind:6s} {t.name}: {t.dtype}{list(t.shape)} {t.layout} @ {t.offset}{q}")
    for p in art.provenance:
        print(f"  [{p.start:5d}, {p.end:5d}) {p.op:28s} <- {p.source}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    art = Artifact.deserialize(Path(args.input).read_bytes())
    diffs = art.verify()
    for name, d in diffs.items():
        print(f"{name}: max |npu - golden| = {d}")
    return 0 if all(d == 0 for d in diffs.values()) else 1


def _compile(args: argparse.Namespace):
    import tvm

    from . import compile_options, last_report, npu_target
    from .frontend import load, parse_shapes

    loaded = load(args.model, parse_shapes(args.shape))
    target = npu_target(args.target) if args.target.startswith("npu") or args.target.endswith(".json") \
        else tvm.target.Target(args.target)
    t0 = time.perf_counter()
    with compile_options(should_run=not args.force_offload):
        ex = tvm.compile(loaded.mod, target=target)
    seconds = time.perf_counter() - t0
    return loaded, ex, last_report() if "npu" in [str(k) for k in target.keys] else None, seconds


def _cmd_explain(args: argparse.Namespace) -> int:
    _, _, report, seconds = _compile(args)
    if report is None:
        print("not an NPU target: nothing was partitioned")
        return 0
    print(report.to_json() if args.json else report.summary())
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    _, ex, report, seconds = _compile(args)
    if report is not None:
        print(report.summary())
    ex.export_library(args.output)
    print(f"compiled in {seconds:.2f} s -> {args.output}")
    if args.report and report is not None:
        Path(args.report).write_text(report.to_json())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np
    import tvm
    from tvm import relax

    from . import enable_trace, profile
    from .frontend import random_inputs

    loaded, ex, report, seconds = _compile(args)
    if report is not None:
        print(report.summary())
        print(f"compiled in {seconds:.2f} s")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    enable_trace(vm.module)
    feeds = [np.load(f) for f in args.input] if args.input else random_inputs(loaded.inputs, args.seed)
    t0 = time.perf_counter()
    out = vm["main"](*[tvm.runtime.tensor(x) for x in feeds])
    wall = time.perf_counter() - t0
    outs = [o.numpy() for o in out] if isinstance(out, (list, tuple)) or not hasattr(out, "numpy") else [out.numpy()]
    for i, o in enumerate(outs):
        print(f"output {i}: {o.dtype}{list(o.shape)} min {o.min():.4g} max {o.max():.4g} mean {o.mean():.4g}")
    prof = profile(vm.module)
    if prof.counters:
        print(prof.table())
    print(f"host wall time of the run: {wall * 1e3:.1f} ms (the emulator included)")
    if args.trace:
        Path(args.trace).write_text(json.dumps({"traceEvents": [
            e for sym in prof.counters for e in __import__("tvm_npu").runtime_module.NPUProfile(
                vm.module, sym).chrome_trace(prof.clock_mhz)["traceEvents"]]}))
        print(f"Chrome/Perfetto trace -> {args.trace}")
    if args.json:
        Path(args.json).write_text(json.dumps({"report": report.to_dict() if report else None,
                                               "profile": prof.to_dict(), "compile_s": seconds, "run_s": wall},
                                              indent=2, sort_keys=True))
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    """A real model from the zoo: fetch, compile, say where each operator runs, run its real inputs,
    print the NPU profile and the comparison with the reference runtime."""
    import tvm
    from tvm import relax

    from . import compile_options, enable_trace, last_report, npu_target, profile
    from model_zoo.fetch import fetch
    from model_zoo.registry import MODELS, all_sources, get_model
    from model_zoo.runner import run_model

    if args.model is None:
        print("models: " + ", ".join(MODELS))
        return 0
    model = get_model(args.model)
    target = npu_target(args.target)
    result = run_model(model, target=args.target, force_offload=args.force_offload, quick=not args.all_inputs,
                       log=print)
    report = last_report()
    if report is not None:
        print(report.summary())
    # one traced run of the first input for the per-layer NPU profile
    from model_zoo.runner import load_relax

    path = fetch(model.source, progress=False, also=all_sources())
    if model.derive is not None:  # the profiled file is the one the run used (e.g. the int8 QDQ model)
        path = model.derive(path, None, False)
    mod, _ = load_relax(model, path)
    with compile_options(should_run=not args.force_offload):
        ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    enable_trace(vm.module)
    vm["main"](tvm.runtime.tensor(model.samples(True, False)[0].array))
    print(profile(vm.module).table())
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps({"result": result.to_dict(), "report": report.to_dict() if report
                                               else None, "profile": profile(vm.module).to_dict()}, indent=2))
    return 0 if result.status in ("pass", "xfail", "xpass") else 1


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx or .tflite file")
    p.add_argument("--target", default="npu", help="npu, npu-nano, npu-edge, npu-pro, a config JSON file, or llvm")
    p.add_argument("--shape", action="append", help="NAME=D1,D2,... for inputs with dynamic dims")
    p.add_argument("--force-offload", action="store_true",
                   help="offload everything the NPU can run, ignoring the performance model's should-run decision")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tvm-npu", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config", help="print a configuration (or all presets) as JSON")
    p.add_argument("name", nargs="?", help="preset name or JSON file")
    p.set_defaults(func=_cmd_config)
    p = sub.add_parser("asm", help="assemble a text program into binary")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_asm)
    p = sub.add_parser("disasm", help="disassemble a binary program or an artifact's program")
    p.add_argument("input")
    p.add_argument("-n", "--number", action="store_true", help="prefix instruction indices")
    p.set_defaults(func=_cmd_disasm)
    p = sub.add_parser("inspect", help="describe an artifact (IO table, provenance, sizes)")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("explain", help="partition a model and say where every operator runs and why")
    _model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser("compile", help="compile a model into an exported library")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="the library (.so) to write")
    p.add_argument("--report", help="write the partition report as JSON here")
    p.set_defaults(func=_cmd_compile)
    p = sub.add_parser("run", help="compile and run a model; print placements and the NPU profile")
    _model_args(p)
    p.add_argument("--input", action="append", help=".npy file per input, in order (default: random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", help="write a Chrome/Perfetto trace JSON here")
    p.add_argument("--json", help="write the report and profile as JSON here")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("zoo", help="run a real model of the zoo on the NPU against its reference runtime")
    p.add_argument("model", nargs="?", help="zoo model name (omit to list them)")
    p.add_argument("--target", default="npu")
    p.add_argument("--force-offload", action="store_true")
    p.add_argument("--all-inputs", action="store_true", help="every input of the model's data, not the quick set")
    p.add_argument("--json", help="write result, report and profile as JSON here")
    p.set_defaults(func=_cmd_zoo)
    p = sub.add_parser("verify", help="replay an artifact's golden inputs on the emulator")
    p.add_argument("input")
    p.set_defaults(func=_cmd_verify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"tvm-npu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
