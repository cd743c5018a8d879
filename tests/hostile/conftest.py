"""Fixtures for the hostile-input corpus (see tests/hostile/README.md)."""

from __future__ import annotations

import pytest


@pytest.fixture
def folder(tmp_path):
    """A folder for the hostile file(s) of one case."""
    path = tmp_path / "case"
    path.mkdir()
    return path
