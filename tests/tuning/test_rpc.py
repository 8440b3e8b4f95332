"""Distributed measurement: a tracker and two NPU measure servers on 127.0.0.1; tuning through
them records the cycles the emulator gives in this process for the same programs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tuning_models import MODELS

from tvm_npu.options import CompileOptions
from tvm_npu.tuning import records as R
from tvm_npu.tuning.tasks import extract_tasks

pytestmark = pytest.mark.slow  # servers and MetaSchedule start in their own processes
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _servers_up(port: int, key: str) -> int:
    from tvm import rpc

    try:
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
    except Exception:  # noqa: BLE001 - the tracker is still starting
        return 0
    return sum(1 for s in summary.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == key)


def test_tuning_through_a_tracker_and_two_servers(tmp_path):
    pytest.importorskip("tornado")
    from tvm.s_tir import meta_schedule as ms

    import npu_emulator
    from tvm_npu.tuning.api import tune
    from tvm_npu.tuning.measure import build_candidate
    from tvm_npu.tuning.rpc import rpc_runner
    from tvm_npu.tuning.space import schedule_of_plan, space_of

    port, key = _free_port(), "npu-test"
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                               "--port", str(port), "--port-end", str(port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, str(REPO / "scripts" / "npu_rpc_server.py"),
                                           "--tracker", f"127.0.0.1:{port}", "--key", key,
                                           "--port", str(_free_port())],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(600):  # polls until both servers registered (not a timing assertion)
            if _servers_up(port, key) >= 2:
                break
            assert all(p.poll() is None for p in procs), "tracker or server exited"
            time.sleep(0.5)
        assert _servers_up(port, key) >= 2
        tasks = extract_tasks(MODELS["matmul"](), "npu-edge", CompileOptions(should_run=False))
        res = tune(None, "npu-edge", 6, str(tmp_path), cost_model="random", num_trials_per_iter=3, population=16,
                   tasks=tasks, runner=rpc_runner(f"127.0.0.1:{port}", key, max_workers=2))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    assert res.trials >= 6
    (task,) = tasks
    kernel, mod = R.workload(task.desc, task.config)
    space = space_of(task.desc, task.config)
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    records = db.get_top_k(db.commit_workload(mod), 100)
    assert len(records) >= 6
    emu = npu_emulator.Emulator(task.config)
    clock = task.config.clock_mhz * 1e6
    for rec in records:  # what the servers measured is what this process measures for the same program
        plan = R.plan_of_trace(mod, rec.trace)
        _, program, cb, iob = build_candidate(schedule_of_plan(mod, kernel, space, plan).mod, task.desc, task.config)
        cycles = emu.check(program, const_bytes=cb, io_bytes=iob, scratch_bytes=0).cycles
        assert round(float(rec.run_secs[0]) * clock) == cycles, plan
