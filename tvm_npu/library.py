"""Compiled libraries and the NPU artifacts inside them.

`tvm.compile(mod, target="npu")` packs one artifact per NPU function (docs/ARTIFACT.md) into a runtime
module of kind "npu" inside the Relax executable; `export_library` writes it into a shared library.
This module reads them back from any of these:

* a path to an exported library (`.so`, or any file `tvm.runtime.load_module` opens),
* a path to one artifact file (it starts with the artifact magic ``NPUA``),
* a Relax executable, a VM, or a runtime module in memory,

so that `tvm-npu inspect | disasm | verify | extract` work on what `compile` writes. It also makes
golden data: `with_golden` runs an artifact on the emulator with seeded random inputs and stores
inputs and outputs in its ``GOLD`` section, which `Artifact.verify` replays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from .artifact import MAGIC, Artifact, ArtifactError

__all__ = ["read_artifacts", "with_golden", "extract", "LibraryError"]


class LibraryError(ArtifactError):
    """A file or object that holds no NPU artifact, or a library TVM cannot open."""


Source = Union[str, Path, Any]


def read_artifacts(source: Source) -> Dict[str, Artifact]:
    """{symbol: Artifact} of every NPU function in `source` (see the module docstring), validated;
    an artifact file gives one entry under its producer's symbol (or the file's stem)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            head = path.open("rb").read(4)
        except OSError as e:
            raise LibraryError(f"cannot read: {e.strerror or e}", file=str(path)) from None
        if head == MAGIC:
            art = Artifact.deserialize(path.read_bytes())
            return {str(art.producer.get("symbol") or path.stem): art}
        if head != b"\x7fELF" and path.suffix not in (".so", ".tar", ".dylib", ".dll"):
            raise LibraryError(f"neither an NPU artifact nor a compiled library (it starts with {head!r})",
                               file=str(path), fix="give the .so that `tvm-npu compile` or export_library wrote")
        module = _load_library(path)
        what = str(path)
    else:
        module, what = source, type(source).__name__
    from .runtime_module import find_npu_modules

    out: Dict[str, Artifact] = {}
    for m in find_npu_modules(module):
        for sym in m["npu_symbols"]():
            out[str(sym)] = Artifact.deserialize(bytes(m["npu_artifact"](str(sym))))
    if not out:
        raise LibraryError("holds no NPU function (everything was compiled for the CPU)", file=what)
    return out


def _load_library(path: Path):
    import tvm

    from .runtime_module import load_library

    load_library()  # registers the loader of "npu" modules before TVM opens the library
    try:
        return tvm.runtime.load_module(str(path))
    except Exception as e:  # noqa: BLE001 - TVM raises several kinds; one message either way
        reason = (str(e).strip().splitlines() or ["unknown error"])[-1][:300]
        raise LibraryError(f"TVM cannot load it as a compiled library: {reason}", file=str(path)) from None


def _random_input(dtype: np.dtype, shape, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":  # a typical activation range; fp16 inputs stay finite
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(dtype)


def with_golden(art: Artifact, seed: int = 0) -> Artifact:
    """A copy of `art` carrying golden data: seeded random inputs in the IO table's dtypes and
    shapes, and the outputs the emulator computes for them (what `verify` replays)."""
    import dataclasses

    rng = np.random.default_rng(seed)
    inputs = {t.name: _random_input(t.dtype, t.shape, rng) for t in art.inputs}
    outputs, _ = art.run(inputs)
    return dataclasses.replace(art, golden={**inputs, **outputs})


def extract(source: Source, out_dir: Union[str, Path]) -> List[Path]:
    """Writes every NPU artifact of `source` to `out_dir/<symbol>.npua`; returns the paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LibraryError(f"cannot create the output directory: {e.strerror or e}", file=str(out)) from None
    paths = []
    for sym, art in sorted(read_artifacts(source).items()):
        p = out / f"{sym}.npua"
        p.write_bytes(art.serialize())
        paths.append(p)
    return paths
