"""The `tvm-npu` command line: explain / compile / run models; configurations; assembler,
disassembler and artifact tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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


# ---- models: loading, targets, compile options ----------------------------------------------------

def parse_shapes(items: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """--shape NAME=D1,D2,... (repeated) -> {name: shape}."""
    shapes = {}
    for item in items or []:
        name, eq, dims = item.partition("=")
        try:
            if not eq or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise ValueError(f"--shape takes NAME=D1,D2,... with integer dimensions, got {item!r}") from None
    return shapes


def random_inputs(inputs, seed: int = 0) -> List["np.ndarray"]:
    """One random array per (name, shape, dtype): normal floats, integers in [-128, 127]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _, shape, dtype in inputs:
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def _load(args: argparse.Namespace):
    """The model file through tvm_npu's loader; a frontend that cannot import it is a bad input too."""
    import tvm

    from .importer import ModelLoadError, load

    try:
        return load(args.model, parse_shapes(args.shape))
    except tvm.error.OpError as e:
        raise ModelLoadError(args.model, str(e).strip().splitlines()[-1]) from None
    except AssertionError as e:  # the Relax PyTorch frontend asserts that it can convert every operator
        if not str(e).startswith("Unsupported function types"):
            raise
        raise ModelLoadError(args.model, f"the Relax PyTorch frontend cannot convert these operators: "
                                         f"{str(e).removeprefix('Unsupported function types').strip()}") from None


def _npu_target(name: str):
    """The NPU target of a configuration: a preset name, "npu" (the default) or a JSON file."""
    from .target import npu_target

    looks_like_file = name.endswith(".json") or os.sep in name
    if looks_like_file and not Path(name).is_file():
        raise ValueError(f"{name}: no such NPU configuration file")
    try:
        return npu_target(name)
    except (ValueError, KeyError, TypeError) as e:
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"{name}: not an NPU configuration ({reason})" if looks_like_file else str(reason)) from None


def _target(name: str):
    """--target: an NPU configuration (never a silent fallback to the default one) or a TVM target."""
    import tvm

    from .target import config_of, is_npu_target

    if name.startswith("npu") or name in PRESETS or name.endswith(".json") or Path(name).is_file():
        return _npu_target(name)
    try:
        target = tvm.target.Target(name)
    except Exception as e:  # noqa: BLE001 - TVM's reasons are ValueErrors of several lines
        raise ValueError(f"unknown target {name!r}: not an NPU configuration (npu, {', '.join(sorted(PRESETS))} or "
                         f"a JSON file) and not a TVM target ({str(e).splitlines()[0]})") from None
    if is_npu_target(target):
        config_of(target)  # an NPU target of an unknown configuration is refused here, not mid-compilation
    return target


def _options(args: argparse.Namespace) -> Dict[str, Any]:
    """compile_options(...) of the flags --force-offload, --no-double-buffer, --plan."""
    opts: Dict[str, Any] = {"should_run": not args.force_offload, "double_buffer": not args.no_double_buffer}
    if args.plan:
        from .options import load_plan_overrides

        try:
            opts["plan_overrides"] = load_plan_overrides(args.plan)
        except ValueError as e:
            raise ValueError(str(e) if args.plan in str(e) else f"{args.plan}: {e}") from None
        except (KeyError, TypeError) as e:
            raise ValueError(f"{args.plan}: not a plan override file ({e})") from None
    return opts


def _prepare(args: argparse.Namespace):
    """(loaded model, target, compile options) of explain / compile / run: every bad input is
    refused here, before anything compiles."""
    target = _target(args.target)
    options = _options(args)
    return _load(args), target, options


def _build(loaded, target, options: Dict[str, Any]):
    """(executable, partition report or None, compile seconds)."""
    import tvm

    from .report import last_report
    from .options import compile_options
    from .target import is_npu_target

    t0 = time.perf_counter()
    with compile_options(**options):
        ex = tvm.compile(loaded.mod, target=target)
    seconds = time.perf_counter() - t0
    return ex, last_report() if is_npu_target(target) else None, seconds


def _feeds(args: argparse.Namespace, loaded) -> List["np.ndarray"]:
    """--input .npy files (one per model input, in order), checked against the model; else random."""
    import numpy as np

    if not args.input:
        return random_inputs(loaded.inputs, args.seed)
    if len(args.input) != len(loaded.inputs):
        raise ValueError(f"{len(args.input)} --input file(s) for the {len(loaded.inputs)} input(s) of {args.model} "
                         f"({', '.join(t.name for t in loaded.inputs)})")
    feeds = []
    for path, (name, shape, dtype) in zip(args.input, loaded.inputs):
        try:
            x = np.load(path)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path}: not a .npy array ({e})") from None
        if shape is not None and tuple(x.shape) != tuple(shape):
            raise ValueError(f"{path}: shape {list(x.shape)}, input {name!r} of {args.model} takes {list(shape)}")
        feeds.append(x.astype(dtype, copy=False) if dtype else x)
    return feeds


def _cmd_explain(args: argparse.Namespace) -> int:
    _, report, _ = _build(*_prepare(args))
    if report is None:
        print("not an NPU target: nothing was partitioned")
        return 0
    print(report.to_json() if args.json else report.summary(verbose=args.verbose))
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    ex, report, seconds = _build(*_prepare(args))
    if report is not None:
        print(report.summary(verbose=args.verbose))
    ex.export_library(args.output)
    print(f"compiled in {seconds:.2f} s -> {args.output}")
    if args.report and report is not None:
        Path(args.report).write_text(report.to_json())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import tvm
    from tvm import relax

    from .profiling import enable_trace, profile

    loaded, target, options = _prepare(args)
    feeds = _feeds(args, loaded)
    ex, report, seconds = _build(loaded, target, options)
    if report is not None:
        print(report.summary(verbose=getattr(args, 'verbose', False)))
        print(f"compiled in {seconds:.2f} s")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    enable_trace(vm.module)
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

    from .profiling import enable_trace, profile
    from .report import last_report
    from .options import compile_options
    from model_zoo.registry import MODELS, get_model
    from model_zoo.runner import load_relax, model_path, run_model

    if args.model is None:
        print("models: " + ", ".join(MODELS))
        return 0
    try:
        model = get_model(args.model)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    target = _npu_target(args.target)
    options = _options(args)
    with compile_options(**options):  # (run_model sets should_run from force_offload inside)
        result = run_model(model, target=args.target if args.target in ("npu", *PRESETS) else target,
                           force_offload=args.force_offload, quick=not args.all_inputs, log=print)
    report = last_report()
    if report is not None:
        print(report.summary(verbose=getattr(args, 'verbose', False)))
    if result.status == "error":  # nothing compiled to profile: the error says why
        print(result.summary())
        return 1
    # one traced run of the first input for the per-layer NPU profile, of the file the run used
    # (e.g. the int8 QDQ model)
    mod, _ = load_relax(model, model_path(model, progress=False))
    with compile_options(**options):
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


def _compile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force-offload", action="store_true",
                   help="offload everything the NPU can run, ignoring the performance model's should-run decision")
    p.add_argument("--no-double-buffer", action="store_true",
                   help="one SRAM slot per tile buffer (load, compute and store serialised)")
    p.add_argument("--plan", metavar="FILE.json",
                   help="tile plan overrides {operator label: {field: value}} (labels as the report shows them)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx, .tflite or .pt2 (torch.export.save) file")
    p.add_argument("--target", default="npu", help="npu, npu-nano, npu-edge, npu-pro, a config JSON file, or llvm")
    p.add_argument("--shape", action="append", help="NAME=D1,D2,... for inputs with dynamic dims")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="the partitioning report with one line per operator (default: one line per reason an "
                        "operator stayed on the CPU, with its count and the operators it covers)")
    _compile_flags(p)


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
    p.add_argument("--target", default="npu", help="npu, npu-nano, npu-edge, npu-pro or a config JSON file")
    _compile_flags(p)
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
