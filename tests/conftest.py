"""Shared fixtures: every test gets its own store under tmp_path; hypothesis profiles.

Hypothesis profiles are defined here once: ``ci`` (the default: brief) and ``fuzz``
(``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/hostile/test_fuzz_data.py`` fuzzes longer).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from modelforge import paths

# tmp_path is reused across examples on purpose; the fuzzers' inputs are slow to build
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("fuzz", max_examples=5000, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    # Derived data (onnxruntime capability probes) is shared across tests to keep them fast.
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_store(tmp_path_factory, monkeypatch, _session_cache):
    """Point the store at a fresh folder for every test."""
    root = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("MODELFORGE_HOME", str(root))
    monkeypatch.setenv("MODELFORGE_CACHE", str(_session_cache))
    monkeypatch.delenv("NO_COLOR", raising=False)
    paths.set_store_override(None)
    yield root
    paths.set_store_override(None)


@pytest.fixture
def store_root(isolated_store):
    return isolated_store
