"""The CLI fuzz target's words: argv lists drawn from the command line's own vocabulary (commands,
flags, good and bad values) against small files made by make_files(); never a zoo model name (a zoo
run fetches and runs a real model for minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COMMANDS = ("config", "asm", "disasm", "inspect", "explain", "compile", "run", "zoo", "verify", "bogus", "")
FILES = ("conv.onnx", "conv.tflite", "custom.tflite", "unknown_op.onnx", "random.onnx", "art.npua", "prog.txt",
         "prog.bin", "missing.onnx", "cfg.json", "bad.json", "plan.json", "x.npy", "small.npy", "sub", "out.so",
         "out.json", "no-dir/out.so", "-", "", "npu-nano")
FLAGS = ("--shape", "--target", "--json", "--input", "-o", "--output", "--report", "--plan", "--force-offload",
         "--no-double-buffer", "--seed", "--trace", "-v", "--verbose", "--debug", "--all-inputs", "-n", "--number",
         "--help", "-h")
VALUES = ("x=1,3,8,8", "x=1,8,8,3", "x=0,3,8,8", "x=1,3,8", "x=1,3,8,8,1", "y=1,3,8,8", "x=a,b", "x=", "=1",
          "x=99999,99999,9999,9999", "x=-1,3,8,8", "npu", "npu-nano", "npu-pro", "llvm", "tpu", "cfg.json",
          "bad.json", "1", "-1", "99999999999999999999", "nan", "\u00e9\u00e8", "x" * 300, "no-such-model",
          "mediapipe", "--", "--json=-")


# flags of each command with the values they take (good and bad ones), None: a switch
_MODEL_FLAGS = {"--shape": ("x=1,3,8,8", "x=1,8,8,3", "x=0,3,8,8", "x=1,3,8", "x=1,3,8,8,1", "y=1,3,8,8", "x=a,b",
                            "x=", "=1", "x=99999,99999,9999,9999", "x=2,3,8,8"),
                "--target": ("npu", "npu-nano", "npu-pro", "llvm", "tpu", "cfg.json", "bad.json", "missing.json"),
                "--plan": ("plan.json", "bad.json", "missing.json"), "--force-offload": None,
                "--no-double-buffer": None, "-v": None, "--json": ("-", "out.json", "sub", "no-dir/o.json")}
FLAGS_OF = {
    "explain": _MODEL_FLAGS,
    "compile": {**_MODEL_FLAGS, "-o": ("out.so", "sub", "no-dir/out.so", "-"), "--report": ("out.json", "sub")},
    "run": {**_MODEL_FLAGS, "--input": ("x.npy", "small.npy", "conv.onnx", "missing.npy"), "--seed": ("1", "-1", "x"),
            "--trace": ("t.json", "sub")},
    "zoo": {"--json": ("-", "out.json"), "--all-inputs": None, "-v": None, "--target": ("npu", "tpu")},
    "inspect": {"--json": ("-", "out.json", "sub"), "-v": None}, "disasm": {"-n": None}, "verify": {},
    "asm": {"-o": ("out.bin", "sub", "no-dir/x")}, "config": {}, "bogus": {}, "": {},
}
POSITIONAL = {"explain": FILES[:8], "compile": FILES[:8], "run": FILES[:8], "inspect": ("art.npua", "prog.bin", "conv.onnx",
              "missing.npua", "sub"), "disasm": ("art.npua", "prog.bin", "conv.onnx"), "verify": ("art.npua", "prog.bin"),
              "asm": ("prog.txt", "conv.onnx"), "config": ("npu-nano", "cfg.json", "bad.json", "nope"),
              "zoo": ("no-such-model", "mediapipe"), "bogus": FILES, "": FILES}


def random_argv(rng: np.random.Generator) -> list:
    """A command, usually its positional argument, then flags of that command with values drawn from
    their pools; now and then a word from anywhere (a flag of another command, a stray value)."""
    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    cmd = pick(COMMANDS)
    argv = [cmd] if cmd else []
    if rng.random() < 0.9 and cmd not in ("zoo",) or rng.random() < 0.3:
        argv.append(pick(POSITIONAL[cmd]))
    flags = FLAGS_OF[cmd]
    if cmd == "compile" and rng.random() < 0.8:
        argv += ["-o", pick(flags["-o"])]
    for _ in range(int(rng.integers(0, 5))):
        if rng.random() < 0.1 or not flags:
            argv.append(pick(FLAGS + VALUES + FILES))
            continue
        flag = pick(list(flags))
        argv.append(flag)
        if flags[flag] is not None:
            argv.append(pick(flags[flag]))
    if rng.random() < 0.05:
        argv.insert(int(rng.integers(len(argv) + 1)), "--debug")
    return argv


def make_files(workdir: str) -> None:
    """The files the words name, in `workdir`."""
    import seeds
    from helpers import sample_artifact

    d = Path(workdir)
    (d / "conv.onnx").write_bytes(seeds.onnx_conv())
    (d / "unknown_op.onnx").write_bytes(seeds.onnx_conv("FooBar"))
    (d / "conv.tflite").write_bytes(seeds.tflite_int8_conv())
    (d / "custom.tflite").write_bytes(seeds.tflite_custom_op())
    (d / "random.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    art = sample_artifact()[0]
    (d / "art.npua").write_bytes(art.serialize())
    (d / "prog.bin").write_bytes(art.program)
    (d / "prog.txt").write_text("end\n")
    (d / "cfg.json").write_text(json.dumps({"name": "npu-nano"}))
    (d / "bad.json").write_text("{not json")
    (d / "plan.json").write_text(json.dumps({"c": {"rows": 4}}))
    np.save(d / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    np.save(d / "small.npy", np.zeros((1, 3, 4, 4), np.float32))
    (d / "sub").mkdir(exist_ok=True)
