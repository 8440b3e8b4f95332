"""Chrome / Perfetto trace export of an emulator timeline (``RunResult.trace``)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["to_chrome_trace", "QUEUE_NAMES"]

QUEUE_NAMES = ("LOAD", "COMPUTE", "STORE")


def to_chrome_trace(trace: np.ndarray, mnemonics: Optional[Sequence[str]] = None,
                    clock_mhz: Optional[float] = None) -> dict:
    """Chrome trace event JSON (load it in chrome://tracing or ui.perfetto.dev).

    One complete ("X") event per instruction on thread ``queue`` of process 0. ``mnemonics[i]`` names
    instruction ``i`` (default ``"#i"``). Timestamps are cycles, or microseconds when ``clock_mhz``
    is given (Chrome's unit is the microsecond, so without a clock one cycle shows as 1 us).
    """
    rows = np.asarray(trace, dtype=np.int64).reshape(-1, 4)
    scale = 1.0 / float(clock_mhz) if clock_mhz else 1.0
    events = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "NPU"}}]
    for q, name in enumerate(QUEUE_NAMES):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": q, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": q, "args": {"sort_index": q}})
    for index, queue, start, end in rows.tolist():
        name = mnemonics[index] if mnemonics is not None and 0 <= index < len(mnemonics) else f"#{index}"
        ts, dur = start * scale, (end - start) * scale
        events.append({"name": name, "ph": "X", "pid": 0, "tid": int(queue),
                       "ts": ts if clock_mhz else int(ts), "dur": dur if clock_mhz else int(dur),
                       "args": {"index": index, "start_cycle": start, "end_cycle": end}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"time_unit": "us" if clock_mhz else "cycles"}}
