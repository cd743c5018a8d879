"""Shared fixtures: every test gets its own store under tmp_path."""

from __future__ import annotations

import pytest

from modelforge import paths


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
