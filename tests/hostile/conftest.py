"""Fixtures for the hostile-input corpus (see tests/hostile/README.md)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: long hostile-input cases, skipped unless `-m slow` or MODELFORGE_SLOW_TESTS=1",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("-m") or "") or os.environ.get("MODELFORGE_SLOW_TESTS"):
        return
    skip = pytest.mark.skip(reason="slow: run with `-m slow` or MODELFORGE_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def folder(tmp_path):
    """A folder for the hostile file(s) of one case."""
    path = tmp_path / "case"
    path.mkdir()
    return path
