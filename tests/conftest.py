"""Shared pytest setup: deterministic hypothesis profile, emulator fixture, configurations."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reference.py, helpers.py

settings.register_profile(
    "npu", deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "npu-long", deadline=None, database=None, max_examples=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "npu"))


def _emulator_or_reason():
    try:
        import npu_emulator
    except Exception as e:  # noqa: BLE001 - any import failure means "not built"
        return None, f"npu_emulator does not import: {e}"
    if not hasattr(npu_emulator, "Emulator"):
        return None, "npu_emulator.Emulator is not built yet"
    return npu_emulator, ""


@pytest.fixture(scope="session")
def npu_emulator():
    """The emulator module. Skips locally when it is not built; in CI a missing emulator fails."""
    mod, reason = _emulator_or_reason()
    if mod is None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return mod


@pytest.fixture(scope="session")
def presets():
    from tvm_npu.config import PRESETS
    return PRESETS
