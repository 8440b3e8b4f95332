"""onnxruntime's quantiser as the zoo drives it: calibration reader, opset upgrade, its warnings and prints aside."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, List, Sequence

from ..data import Sample


def opset_of(model) -> int:
    """The default-domain opset of an ONNX model (0 when it imports none)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def upgrade_opset(model, min_opset: int):
    """The model converted to `min_opset` when it is older: onnxruntime 1.32 writes per-channel
    DequantizeLinear with an `axis` attribute even into opset-12 models, which then fail to load."""
    if opset_of(model) >= min_opset:
        return model
    import onnx.version_converter

    return onnx.version_converter.convert_version(model, min_opset)


class CalibrationReader:
    """onnxruntime CalibrationDataReader over samples, with a tqdm bar. `set_range` is what the
    strided calibration (CalibStridedMinMax) calls to read the samples in slices."""

    fresh = False

    def __init__(self, input_name: str, samples: Sequence[Sample], progress: bool, desc: str):
        self.input_name, self.samples, self.i = input_name, list(samples), 0
        self.end = len(self.samples)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.samples), desc=desc, unit="img", leave=False, file=sys.stderr)

    def get_next(self):
        if self.bar is not None and self.i and not self.fresh:
            self.bar.update(1)  # the previous image has been run
        self.fresh = False
        if self.i >= self.end:
            if self.bar is not None and self.end >= len(self.samples):
                self.bar.close()
                self.bar = None
            return None
        s = self.samples[self.i]
        self.i += 1
        return {self.input_name: s.array}

    def set_range(self, start_index: int, end_index: int):
        self.i, self.end, self.fresh = start_index, min(end_index, len(self.samples)), True

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.get_next, None)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage().strip())


@contextlib.contextmanager
def collected_warnings() -> Iterator[List[str]]:
    """The warnings onnxruntime's quantiser logs (through the root logger) while the block runs."""
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    try:
        yield collect.messages
    finally:
        root.removeHandler(collect)


def prints_to_stderr():
    """Around quantize_static: the percentile calibrator prints its range to stdout."""
    return contextlib.redirect_stdout(sys.stderr)
