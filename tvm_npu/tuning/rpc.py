"""Measuring candidates through TVM's RPC tracker: the servers' measure function and the runner.

A server (scripts/npu_rpc_server.py) registers `MEASURE` with `server_init_callback`: it times an NPU
program with the emulator (`Emulator.check`) for the configuration it is given. The runner is
MetaSchedule's `RPCRunner` with our session steps: "upload" reads the builder's artifact (the program
and its region sizes), no arguments are allocated, and "run" calls `MEASURE` in the session and
returns cycles / clock as the run time. A plan the database already measured is not sent (the
builder marks it cached). Each candidate costs an RPC session (about 0.35 s on loopback).
"""

from __future__ import annotations

import json
import os

MEASURE = "tvm_npu.tuning.measure_program"


def register_measure() -> None:
    """server_init_callback: registers MEASURE(config_json, program, const_bytes, io_bytes) -> cycles."""
    import tvm_ffi

    import npu_emulator
    from tvm_npu.config import NPUConfig

    def measure(config_json: str, program, const_bytes: int, io_bytes: int) -> int:
        emu = npu_emulator.Emulator(NPUConfig.from_json(str(config_json)))
        return int(emu.check(bytes(program), const_bytes=int(const_bytes), io_bytes=int(io_bytes),
                             scratch_bytes=0).cycles)

    tvm_ffi.register_global_func(MEASURE, measure, override=True)


def upload(session, local_path: str, remote_path: str):
    """The artifact's metadata and program (read locally: the server needs only the bytes)."""
    with open(local_path) as f:
        meta = json.load(f)
    program = b""
    if "cached_cycles" not in meta:
        with open(os.path.join(os.path.dirname(local_path), "program.bin"), "rb") as f:
            program = f.read()
    return meta, program


def no_arguments(session, device, args_info, alloc_repeat):
    return [[]]


def no_cleanup(session, remote_path) -> None:
    """Nothing was uploaded, so there is nothing to remove on the server."""


def run_remote(session, rt_mod, device, evaluator_config, repeated_args):
    from tvm_npu.config import NPUConfig

    meta, program = rt_mod
    clock = NPUConfig.from_json(meta["config"]).clock_mhz * 1e6
    if "cached_cycles" in meta:
        return [int(meta["cached_cycles"]) / clock]
    cycles = session.get_function(MEASURE)(meta["config"], bytearray(program), meta["const_bytes"], meta["io_bytes"])
    return [int(cycles) / clock]


def rpc_runner(tracker: str, key: str, max_workers: int = 2, timeout_sec: int = 120):
    """An RPCRunner measuring on the servers registered at `tracker` (HOST:PORT) under `key`."""
    from tvm.s_tir import meta_schedule as ms

    host, _, port = tracker.rpartition(":")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                 session_timeout_sec=timeout_sec)
    return ms.runner.RPCRunner(config, ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0),
                               f_upload_module=upload, f_alloc_argument=no_arguments, f_run_evaluator=run_remote,
                               f_cleanup=no_cleanup, max_workers=max_workers)


__all__ = ["MEASURE", "register_measure", "rpc_runner"]
