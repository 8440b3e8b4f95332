"""The `tvm-npu` command line: explain / compile / run models; configurations; assembler,
disassembler and artifact tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import numpy as np

# Module-level imports stay light (argparse and the standard library): `tvm-npu --help` and the zoo
# listing must not pay for TVM. Each command imports what it needs (tvm_npu_launcher.py runs this
# file before the tvm_npu package is imported).

EPILOG = """conventions:
  --json [PATH]   every command that reports writes its report as JSON to PATH; "-" or no PATH:
                  to stdout (the human-readable text then goes to stderr)
  -v, --verbose   reports are summary-first; --verbose adds one row per operator / layer / range
  --debug         on an error, the full traceback, then the one-line message
  exit status     0 ok; 1 a check failed (verify, zoo); 2 bad option, shape or input; 3 bad model
                  file; 4 unsupported operator or frontend failure; 5 bad artifact; 6 profile
                  error; 7 compilation failed; 8 run refused (fp16 overflow policy); 70 internal
                  error (a bug: please report it); 141 stdout closed early (| head)
  docs/ERRORS.md lists every bad-input case with its message."""

PRESET_NAMES = ("npu", "npu-nano", "npu-edge", "npu-pro")  # tvm_npu.config.PRESETS, without importing it


class _Out:
    """Where the human-readable text goes: stdout, or stderr when --json writes to stdout."""

    def __init__(self, args: argparse.Namespace):
        self.json_to_stdout = getattr(args, "json", None) == "-"

    def __call__(self, *text) -> None:
        print(*text, file=sys.stderr if self.json_to_stdout else sys.stdout)


def _writable(path: str, what: str) -> None:
    """Refuses, before anything is compiled or run, an output path that cannot be written."""
    from .errors import UsageError

    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory, {what} must be a file", fix=f"give a file name for {what}")
    if not parent.is_dir():
        raise UsageError(f"{path}: the directory {parent} does not exist", fix=f"create it or choose another {what}")
    existed = p.exists()
    try:  # (opening it is the one test that holds for root, read-only file systems and ACLs alike)
        with open(p, "ab"):
            pass
    except OSError as e:
        raise UsageError(f"{path}: cannot be written ({e.strerror})", fix=f"choose a writable location for {what}") from None
    if not existed:
        p.unlink()


def _write_json(args: argparse.Namespace, data: Any) -> None:
    """--json PATH ("-": stdout)."""
    text = json.dumps(data, indent=2, sort_keys=True)
    if args.json == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        Path(args.json).write_text(text)


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import PRESETS, get_config

    names = [args.name] if args.name else sorted(PRESETS)
    cfgs = [get_config(n).to_dict() for n in names]
    print(json.dumps(cfgs[0] if args.name else cfgs, indent=2, sort_keys=True))
    return 0


def _cmd_asm(args: argparse.Namespace) -> int:
    from .isa import assemble

    _writable(args.output, "-o")
    Path(args.output).write_bytes(assemble(Path(args.input).read_text()))
    return 0


def _artifacts(path: str, symbol: Optional[str] = None) -> Dict[str, Any]:
    """{symbol: Artifact} of an artifact file or of a compiled library (.so: every NPU function in
    it, tvm_npu/library.py); `symbol` selects one of them."""
    from .errors import UsageError
    from .library import read_artifacts

    arts = read_artifacts(path)
    if symbol is None:
        return arts
    if symbol not in arts:
        raise UsageError(f"{path}: no NPU function {symbol!r}", fix=f"one of {', '.join(sorted(arts))}")
    return {symbol: arts[symbol]}


def _program_bytes(path: str, symbol: Optional[str] = None) -> List[Tuple[str, bytes]]:
    """(name, program) of a raw program file, an artifact or each NPU function of a library."""
    from .artifact import MAGIC as ARTIFACT_MAGIC
    from .errors import ModelFileError

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ModelFileError(path, f"cannot read: {e.strerror or e}") from None
    if head == ARTIFACT_MAGIC or head == b"\x7fELF" or path.endswith((".so", ".tar")):
        return [(sym, art.program) for sym, art in sorted(_artifacts(path, symbol).items())]
    return [(Path(path).name, Path(path).read_bytes())]


def _cmd_disasm(args: argparse.Namespace) -> int:
    from .isa import disassemble

    programs = _program_bytes(args.input, args.symbol)
    for name, program in programs:
        text = disassemble(program)
        if args.number:
            text = "\n".join(f"{i:6d}  {line}" for i, line in enumerate(text.splitlines())) + "\n"
        if len(programs) > 1:
            sys.stdout.write(f"; ---- NPU function {name}\n")
        sys.stdout.write(text)
    return 0


def _describe(art) -> Dict[str, Any]:
    from .isa import Program

    meta = art.meta()
    meta["instructions"] = len(Program.decode(art.program))
    meta["program_bytes"] = len(art.program)
    meta["constant_bytes"] = len(art.constants)
    meta["golden"] = sorted(art.golden) if art.golden else []
    return meta


def _cmd_inspect(args: argparse.Namespace) -> int:
    arts = _artifacts(args.input, args.symbol)
    metas = {sym: _describe(art) for sym, art in sorted(arts.items())}
    if args.json:
        # an artifact file: its metadata; a library: {symbol: metadata}
        _write_json(args, next(iter(metas.values())) if len(metas) == 1 and args.input_is_artifact else metas)
        if args.json == "-":
            return 0
    if len(arts) > 1 or not args.input_is_artifact:
        print(f"{args.input}: {len(arts)} NPU function(s): {', '.join(sorted(arts))}")
    for sym, art in sorted(arts.items()):
        meta = metas[sym]
        head = f"artifact for {art.config.name} (ISA v{meta['isa_version']}, format v{meta['format_version']})"
        print(head if args.input_is_artifact and len(arts) == 1 else f"{sym}: {head}")
        print(f"  program: {meta['instructions']} instructions, {len(art.program)} bytes; constants "
              f"{len(art.constants)} bytes; scratch {art.scratch_bytes} bytes; IO region {art.io_bytes} bytes"
              + (f"; golden data for {len(meta['golden'])} tensor(s)" if meta["golden"] else ""))
        for t in art.io:
            q = f" quant scale={list(t.quant.scale)[:4]} zp={list(t.quant.zero_point)[:4]}" if t.quant else ""
            print(f"  {t.kind:6s} {t.name}: {t.dtype}{list(t.shape)} {t.layout} @ {t.offset}{q}")
        if not args.verbose:
            print(f"  provenance: {len(art.provenance)} instruction range(s) (--verbose lists them)")
            continue
        for p in art.provenance:
            print(f"  [{p.start:5d}, {p.end:5d}) {p.op:28s} <- {p.source}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .errors import UsageError

    arts = _artifacts(args.input, args.symbol)
    missing = [sym for sym, art in sorted(arts.items()) if not art.golden]
    if missing:
        raise UsageError(f"{args.input}: no golden data in {', '.join(missing)}",
                         fix="compile with `tvm-npu compile --golden` (or compile_options(golden=True))")
    ok = True
    for sym, art in sorted(arts.items()):
        diffs = art.verify()
        exact = all(d == 0 for d in diffs.values())
        ok &= exact
        for name, d in diffs.items():
            print(f"{sym}: {name}: " + ("byte-exact" if d == 0 else f"max |npu - golden| = {d:.6g}"))
    print("verify: " + ("every output byte-exact" if ok else "outputs differ from the golden data"))
    return 0 if ok else 1


def _cmd_extract(args: argparse.Namespace) -> int:
    from .library import extract

    for path in extract(args.input, args.output):
        print(path)
    return 0


# ---- models: loading, targets, compile options ----------------------------------------------------

def parse_shapes(items: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """--shape NAME=D1,D2,... (repeated) -> {name: shape}; dimensions are positive integers (the
    model's loader checks names, ranks and sizes against the model)."""
    from .errors import InputError

    shapes = {}
    for item in items or []:
        name, eq, dims = item.partition("=")
        try:
            if not eq or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise InputError(f"--shape takes NAME=D1,D2,... with integer dimensions, got {item!r}") from None
        if any(d <= 0 for d in shapes[name]):
            raise InputError(f"--shape {item}: every dimension must be a positive integer")
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
    """The model file through tvm_npu's loader (which refuses bad files, shapes and operators with
    typed errors); the .pt2 frontend's own failures are bad inputs too."""
    import tvm

    from .errors import FrontendError, ShapeError, UnsupportedOperatorError, one_line
    from .importer import load

    shapes = parse_shapes(args.shape)
    try:
        return load(args.model, shapes)
    except ShapeError as e:
        zoo = _zoo_model_of(args.model)
        if zoo is None or e.fix:
            raise
        shape = ",".join(map(str, zoo.input_shape))
        raise ShapeError(e.what, e.reason, fix=f"this is the file of the zoo model {zoo.name}: give its zoo shape "
                                               f"(--shape {zoo.input_name}={shape}; the same fixed-shape preparation "
                                               f"as the zoo then runs), or run `tvm-npu zoo {zoo.name}`") from None
    except tvm.error.OpError as e:
        raise UnsupportedOperatorError(args.model, str(e).strip().splitlines()[-1]) from None
    except AssertionError as e:  # the Relax PyTorch frontend asserts that it can convert every operator
        if not str(e).startswith("Unsupported function types"):
            raise FrontendError(args.model, f"the PyTorch frontend failed: {one_line(e)}") from e
        raise UnsupportedOperatorError(args.model, f"the Relax PyTorch frontend cannot convert these operators: "
                                       f"{str(e).removeprefix('Unsupported function types').strip()}") from None


def _zoo_model_of(path: str):
    """The zoo model whose file `path` is (by its file name), or None."""
    from model_zoo.registry import MODELS

    name = Path(path).name
    return next((m for m in MODELS.values() if m.derive is None and Path(m.source.member).name == name), None)


def _npu_target(name: str):
    """The NPU target of a configuration: a preset name, "npu" (the default) or a JSON file."""
    from .errors import UsageError
    from .target import npu_target

    looks_like_file = name.endswith(".json") or os.sep in name
    if looks_like_file and not Path(name).is_file():
        raise UsageError(f"{name}: no such NPU configuration file")
    try:
        return npu_target(name)
    except (ValueError, KeyError, TypeError) as e:
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise UsageError(f"{name}: not an NPU configuration ({reason})" if looks_like_file else str(reason)) from None


def _target(name: str):
    """--target: an NPU configuration (never a silent fallback to the default one) or a TVM target."""
    import tvm

    from .config import PRESETS
    from .errors import UsageError
    from .target import config_of, is_npu_target

    if name.startswith("npu") or name in PRESETS or name.endswith(".json") or Path(name).is_file():
        return _npu_target(name)
    try:
        target = tvm.target.Target(name)
    except Exception as e:  # noqa: BLE001 - TVM's reasons are ValueErrors of several lines
        raise UsageError(f"unknown target {name!r}: not an NPU configuration (npu, {', '.join(sorted(PRESETS))} or "
                         f"a JSON file) and not a TVM target ({str(e).splitlines()[0]})") from None
    if is_npu_target(target):
        config_of(target)  # an NPU target of an unknown configuration is refused here, not mid-compilation
    return target


def _options(args: argparse.Namespace) -> Dict[str, Any]:
    """compile_options(...) of the flags --force-offload, --no-double-buffer, --plan."""
    opts: Dict[str, Any] = {"should_run": not args.force_offload, "double_buffer": not args.no_double_buffer}
    if getattr(args, "golden", False):
        opts["golden"] = True
    if getattr(args, "tuning_db", None):
        opts["tuning_db"] = args.tuning_db
    if args.plan:
        from .errors import UsageError
        from .options import load_plan_overrides

        try:
            opts["plan_overrides"] = load_plan_overrides(args.plan)
        except ValueError as e:
            raise UsageError(str(e) if args.plan in str(e) else f"{args.plan}: {e}") from None
        except (KeyError, TypeError) as e:
            raise UsageError(f"{args.plan}: not a plan override file ({e})") from None
    return opts


def _outputs_writable(args: argparse.Namespace) -> None:
    """Every file a command will write, checked before it compiles anything."""
    for flag in ("output", "json", "report", "trace"):
        path = getattr(args, flag, None)
        if path and path != "-":
            _writable(path, "-o" if flag == "output" else f"--{flag}")


def _prepare(args: argparse.Namespace):
    """(loaded model, target, compile options) of explain / compile / run: every bad input is
    refused here, before anything compiles."""
    target = _target(args.target)
    options = _options(args)
    _outputs_writable(args)
    return _load(args), target, options


def _tuning_database(path: Optional[str]):
    """`with` this around compilation: the JSONDatabase at `path` as MetaSchedule's current database
    (what the compile path consults), or nothing."""
    import contextlib

    if not path:
        return contextlib.nullcontext()
    from .errors import UsageError

    if not Path(path).is_dir():
        raise UsageError(f"{path}: no tuning database directory", fix="create one with `tvm-npu tune MODEL --db DIR`")
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=path)


def _build(loaded, target, options: Dict[str, Any]):
    """(executable, partition report or None, compile seconds); a compiler failure is a CompileError."""
    import tvm

    from .errors import CompileError, NPUError, one_line
    from .report import last_report
    from .options import compile_options
    from .target import is_npu_target

    from .progress import compile_bar

    options = dict(options)
    database = _tuning_database(options.pop("tuning_db", None))
    t0 = time.perf_counter()
    try:  # a progress bar on a terminal (stderr): stages and NPU operators lowered
        with compile_options(**options), database, \
                compile_bar(f"compiling for {getattr(target, 'kind', target)}"):
            ex = tvm.compile(loaded.mod, target=target)
    except NPUError:
        raise
    except Exception as e:  # noqa: BLE001 - the error boundary: the compiler's reason in one line
        raise CompileError(f"compiling for {target.kind.name if hasattr(target, 'kind') else target} failed: "
                           f"{one_line(e)}", fix="rerun with --debug for the traceback and report it") from e
    seconds = time.perf_counter() - t0
    return ex, last_report() if is_npu_target(target) else None, seconds


def check_feeds(feeds: Sequence["np.ndarray"], inputs, what: str, names: Sequence[str] = ()) -> List["np.ndarray"]:
    """Arrays for a model's inputs (TensorInfo list) checked before anything runs: their count, shapes
    and dtypes (a cast within the same kind, e.g. float64 -> float32, is done; another kind is refused).
    `names` name the arrays in messages (e.g. their .npy files)."""
    import numpy as np

    from .errors import InputError

    if len(feeds) != len(inputs):
        raise InputError(f"{len(feeds)} input array(s) for the {len(inputs)} input(s) of {what} "
                         f"({', '.join(t.name for t in inputs)})", fix="give one --input per model input, in order")
    out = []
    for i, (x, (name, shape, dtype)) in enumerate(zip(feeds, inputs)):
        label = names[i] if i < len(names) else f"input array {i}"
        if shape is not None and (len(shape) != x.ndim or any(d is not None and d != n for d, n in zip(shape, x.shape))):
            raise InputError(f"{label}: shape {list(x.shape)}, input {name!r} of {what} takes {list(shape)}")
        if dtype and x.dtype != np.dtype(dtype):
            want = np.dtype(dtype)
            if x.dtype.kind != want.kind and {x.dtype.kind, want.kind} != {"i", "u"} or not np.can_cast(
                    x.dtype, want, "same_kind"):
                raise InputError(f"{label}: dtype {x.dtype}, input {name!r} of {what} takes {dtype}",
                                 fix=f"save the array as {dtype}")
            x = x.astype(dtype)
        out.append(x)
    return out


def _feeds(args: argparse.Namespace, loaded) -> List["np.ndarray"]:
    """--input .npy files (one per model input, in order), checked against the model; else random."""
    import numpy as np

    from .errors import InputError

    if not args.input:
        return random_inputs(loaded.inputs, args.seed)
    if len(args.input) != len(loaded.inputs):
        check_feeds([None] * len(args.input), loaded.inputs, args.model)
    arrays = []
    for path in args.input:
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a .npy array ({e})") from None
        if not isinstance(arrays[-1], np.ndarray):
            raise InputError(f"{path}: an .npz archive, not one .npy array", fix="save each input with np.save")
    return check_feeds(arrays, loaded.inputs, args.model, args.input)


def _cmd_explain(args: argparse.Namespace) -> int:
    say = _Out(args)
    _, report, _ = _build(*_prepare(args))
    if report is None:
        say("not an NPU target: nothing was partitioned")
    else:
        say(report.summary(verbose=args.verbose))
    if args.json:
        _write_json(args, report.to_dict() if report else None)
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    if args.report:
        print("tvm-npu compile: warning: --report PATH is deprecated, use --json PATH", file=sys.stderr)
        if args.json and args.json != args.report:
            from .errors import UsageError

            raise UsageError("--report is the deprecated spelling of --json: give one of them")
        args.json, args.report = args.report, None
    say = _Out(args)
    ex, report, seconds = _build(*_prepare(args))
    if report is not None:
        say(report.summary(verbose=args.verbose))
    ex.export_library(args.output)
    say(f"compiled in {seconds:.2f} s -> {args.output}")
    if args.json:
        _write_json(args, {"report": report.to_dict() if report else None, "compile_s": seconds,
                           "output": args.output})
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import tvm
    from tvm import relax

    from .profiling import enable_trace, profile

    say = _Out(args)
    loaded, target, options = _prepare(args)
    feeds = _feeds(args, loaded)
    ex, report, seconds = _build(loaded, target, options)
    if report is not None:
        say(report.summary(verbose=args.verbose))
    say(f"compiled in {seconds:.2f} s")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    enable_trace(vm.module)
    t0 = time.perf_counter()
    out = vm["main"](*[tvm.runtime.tensor(x) for x in feeds])
    wall = time.perf_counter() - t0
    outs = [o.numpy() for o in out] if isinstance(out, (list, tuple)) or not hasattr(out, "numpy") else [out.numpy()]
    for i, o in enumerate(outs):
        say(f"output {i}: {o.dtype}{list(o.shape)} min {o.min():.4g} max {o.max():.4g} mean {o.mean():.4g}")
    prof = profile(vm.module)
    if prof.counters:
        say(prof.table() if args.verbose else prof.table().splitlines()[0] + " (--verbose: per layer)")
    say(f"host wall time of the run: {wall * 1e3:.1f} ms" + (" (the emulator included)" if prof.counters else ""))
    if args.trace:
        from .runtime_module import NPUProfile

        Path(args.trace).write_text(json.dumps({"traceEvents": [
            e for sym in prof.counters
            for e in NPUProfile(vm.module, sym).chrome_trace(prof.clock_mhz)["traceEvents"]]}))
        say(f"Chrome/Perfetto trace -> {args.trace}")
    if args.json:
        _write_json(args, {"report": report.to_dict() if report else None, "profile": prof.to_dict(),
                           "compile_s": seconds, "run_s": wall})
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    """A real model from the zoo: fetch, compile, say where each operator runs, run its real inputs,
    print the NPU profile and the comparison with the reference runtime."""
    from model_zoo.registry import MODELS, get_model  # (light: the listing imports no TVM)

    say = _Out(args)
    if args.model is None:
        if args.json:
            _write_json(args, {"models": list(MODELS)})
        if args.json != "-":
            print("models: " + ", ".join(MODELS))
        return 0
    model = get_model(args.model)  # an unknown name: a UsageError listing the known ones

    import tvm
    from tvm import relax

    from .profiling import enable_trace, profile
    from .report import last_report
    from .options import compile_options
    from model_zoo.runner import load_relax, model_path, run_model

    target = _npu_target(args.target)
    options = _options(args)
    database = _tuning_database(options.pop("tuning_db", None))
    _outputs_writable(args)
    with compile_options(**options), database:  # (run_model sets should_run from force_offload inside)
        result = run_model(model, target=args.target if args.target in PRESET_NAMES else target,
                           force_offload=args.force_offload, quick=not args.all_inputs, log=say)
    report = last_report()
    if report is not None:
        say(report.summary(verbose=args.verbose))
    if result.status == "error":  # nothing compiled to profile: the error says why
        say(result.summary())
        if args.json:
            _write_json(args, {"result": result.to_dict(), "report": report.to_dict() if report else None,
                               "profile": None})
        return 1
    # one traced run of the first input for the per-layer NPU profile, of the file the run used
    # (e.g. the int8 QDQ model)
    mod, _ = load_relax(model, model_path(model, progress=False))
    with compile_options(**options):
        ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    enable_trace(vm.module)
    vm["main"](tvm.runtime.tensor(model.samples(True, False)[0].array))
    prof = profile(vm.module)
    say(prof.table() if args.verbose else prof.table().splitlines()[0] + " (--verbose: per layer)")
    say(result.summary())
    if args.json:
        _write_json(args, {"result": result.to_dict(), "report": report.to_dict() if report else None,
                           "profile": prof.to_dict()})
    return 0 if result.status in ("pass", "xfail", "xpass") else 1


def _compile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force-offload", action="store_true",
                   help="offload everything the NPU can run, ignoring the performance model's should-run decision")
    p.add_argument("--no-double-buffer", action="store_true",
                   help="one SRAM slot per tile buffer (load, compute and store serialised)")
    p.add_argument("--plan", metavar="FILE.json",
                   help="tile plan overrides {operator label: {field: value}} (labels as the report shows them)")
    p.add_argument("--tuning-db", metavar="DIR",
                   help="a tuning database (`tvm-npu tune --db DIR`): MAC operators take its best plans")


def _json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help=f"write {what} as JSON to PATH (\"-\" or no PATH: stdout, the text then goes to stderr)")


def _verbose_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help=what)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx, .tflite or .pt2 (torch.export.save) file")
    p.add_argument("--target", default="npu", help="npu, npu-nano, npu-edge, npu-pro, a config JSON file, or llvm")
    p.add_argument("--shape", action="append", help="NAME=D1,D2,... for inputs with dynamic dims")
    _verbose_flag(p, "the partitioning report with one line per operator (default: one line per reason an "
                     "operator stayed on the CPU, with its count and the operators it covers)")
    _compile_flags(p)


def _starts_with_artifact_magic(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"NPUA"
    except OSError:
        return False


def _symbol_flag(p) -> None:
    p.add_argument("--symbol", help="one NPU function of a library (default: all of them)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tvm-npu", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config", help="print a configuration (or all presets) as JSON")
    p.add_argument("name", nargs="?", help="preset name or JSON file")
    p.set_defaults(func=_cmd_config)
    p = sub.add_parser("asm", help="assemble a text program into binary")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_asm)
    p = sub.add_parser("disasm", help="disassemble a binary program, an artifact's, or every NPU function's of a "
                                      "compiled library (.so)")
    p.add_argument("input")
    p.add_argument("-n", "--number", action="store_true", help="prefix instruction indices")
    _symbol_flag(p)
    p.set_defaults(func=_cmd_disasm)
    p = sub.add_parser("inspect", help="describe an artifact, or the NPU functions of a compiled library (.so): IO "
                                       "table, provenance, sizes")
    p.add_argument("input")
    _json_flag(p, "the artifact's metadata (a library: {function: metadata})")
    _verbose_flag(p, "list every provenance range (default: their count)")
    _symbol_flag(p)
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("extract", help="write the NPU artifacts of a compiled library (.so) to a directory")
    p.add_argument("input", help="a library written by `tvm-npu compile` or export_library")
    p.add_argument("-o", "--output", required=True, help="the directory (<function>.npua files)")
    p.set_defaults(func=_cmd_extract)
    p = sub.add_parser("explain", help="partition a model and say where every operator runs and why")
    _model_args(p)
    _json_flag(p, "the partition report")
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser("compile", help="compile a model into an exported library")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="the library (.so) to write")
    _json_flag(p, "the partition report and compile time")
    p.add_argument("--report", metavar="PATH", help="deprecated spelling of --json PATH")
    p.add_argument("--golden", action="store_true", help="store golden inputs and outputs in every NPU function "
                                                         "(seeded random inputs, the emulator's outputs) for `verify`")
    p.set_defaults(func=_cmd_compile)
    p = sub.add_parser("run", help="compile and run a model; print placements and the NPU profile")
    _model_args(p)
    p.add_argument("--input", action="append", help=".npy file per input, in order (default: random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", help="write a Chrome/Perfetto trace JSON here")
    _json_flag(p, "the report, the profile and the times")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("zoo", help="run a real model of the zoo on the NPU against its reference runtime")
    p.add_argument("model", nargs="?", help="zoo model name (omit to list them)")
    p.add_argument("--target", default="npu", help="npu, npu-nano, npu-edge, npu-pro or a config JSON file")
    _compile_flags(p)
    p.add_argument("--all-inputs", action="store_true", help="every input of the model's data, not the quick set")
    _json_flag(p, "the result, report and profile (the model list without a model)")
    _verbose_flag(p, "the partitioning report per operator and the profile per layer")
    p.set_defaults(func=_cmd_zoo)
    p = sub.add_parser("verify", help="replay the golden inputs of an artifact, or of every NPU function of a "
                                      "library compiled with --golden, on the emulator")
    p.add_argument("input")
    _symbol_flag(p)
    p.set_defaults(func=_cmd_verify)
    _tuning_cli().add_parser(sub)  # `tune` lives in tvm_npu/tuning/cli.py
    _common_flags(sub)
    return ap


def _tuning_cli():
    """tvm_npu/tuning/cli.py, loaded the way tvm_npu_launcher.py loads this file (its parser needs the
    standard library only): `tvm-npu --help` still imports no TVM."""
    if "tvm_npu.tuning.cli" not in sys.modules and "tvm_npu" not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location("tvm_npu.tuning.cli", Path(__file__).parent / "tuning" / "cli.py")
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "tvm_npu.tuning"  # its relative imports resolve in the real package when it runs
        sys.modules["tvm_npu.tuning.cli"] = module
        spec.loader.exec_module(module)
    import importlib

    return importlib.import_module("tvm_npu.tuning.cli")


def _common_flags(sub) -> None:
    """--debug after the command too (`tvm-npu run m.onnx --debug`), on every subcommand."""
    for p in sub.choices.values():
        if "--debug" not in p._option_string_actions:
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="on an error, print the traceback too")
            p.epilog, p.formatter_class = p.epilog or EPILOG, argparse.RawDescriptionHelpFormatter


def main(argv: list[str] | None = None) -> int:
    """The error boundary: every failure is one line `tvm-npu CMD: error: ...` on stderr and the
    exit status of its error class (tvm_npu.errors); --debug adds the traceback."""
    args = build_parser().parse_args(argv)
    if getattr(args, "input", None) and args.command in ("inspect", "disasm", "verify"):
        args.input_is_artifact = _starts_with_artifact_magic(args.input)
    try:
        return args.func(args)
    except BrokenPipeError:  # `tvm-npu inspect --json - x | head`: the reader left; nothing more to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (so the final flush is quiet)
        except (OSError, ValueError):  # (a stdout without a file descriptor)
            pass
        return 141  # 128 + SIGPIPE, as a command killed by the signal
    except KeyboardInterrupt:
        print(f"tvm-npu {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the error boundary
        from .errors import as_npu_error

        err = as_npu_error(e)
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"tvm-npu {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
