"""Progress of a compilation, for whoever shows it (the command line's bar).

The driver reports each stage and each operator it lowers to the sink set around the compilation
(`reporting(fn)`: `fn(stage, done, total)`); without one, a report is a context-variable lookup.
`compile_bar` is the command line's sink: a tqdm bar over the NPU operators, the stage as its
postfix, shown on a terminal only.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Callable, Iterator, Optional

__all__ = ["reporting", "report", "compile_bar"]

Sink = Callable[[str, int, int], None]
_SINK: contextvars.ContextVar[Optional[Sink]] = contextvars.ContextVar("tvm_npu_progress", default=None)


@contextlib.contextmanager
def reporting(sink: Optional[Sink]) -> Iterator[None]:
    """Sends the progress reports of compilations in this context to `sink(stage, done, total)`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def report(stage: str, done: int = 0, total: int = 0) -> None:
    sink = _SINK.get()
    if sink is not None:
        sink(stage, done, total)


@contextlib.contextmanager
def compile_bar(desc: str, enabled: Optional[bool] = None) -> Iterator[None]:
    """A tqdm bar for the compilations in this context: NPU operators lowered out of those
    planned, with the current stage. `enabled=None`: only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, total=0, unit="op", leave=False, file=sys.stderr, mininterval=0.2,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} NPU operators [{elapsed}] {postfix}")

    def sink(stage: str, done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        if done and done != bar.n:
            bar.n = done
        bar.set_postfix_str(stage, refresh=False)
        bar.refresh()

    try:
        with reporting(sink):
            yield
    finally:
        bar.close()
