"""Hostile store names and references: refused with one line, nothing created."""

from __future__ import annotations

import pytest

from tests import builders
from tests.hostile.harness import assert_ok, assert_refused, cli, store_entries

pytestmark = pytest.mark.timeout(60)

BAD_NAMES = {
    "traversal": "../../etc",
    "traversal_dotdot": "..",
    "dot": ".",
    "slash": "a/b",
    "backslash": "a\\b",
    "empty": "",
    "leading_dot": ".hidden",
    "nul": "a\x00b",
    "newline": "a\nb",
    "ansi": "a\x1b[2Jb",
    "very_long": "a" * 300,
    "non_nfc": "cafe\u0301",
    "nfc_non_ascii": "caf\u00e9",
    "uppercase": "Iris",
    "colon": "a:b",
    "space": "a b",
}


@pytest.fixture
def model(folder):
    return builders.save(builders.linear(), folder / "m.onnx")


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_bad_store_names_are_refused(case, model, store_root):
    before = store_entries(store_root)
    out = cli("models", "add", model, "--name", BAD_NAMES[case])
    assert_refused(out, 2, "name")
    assert store_entries(store_root) == before
    assert_refused(cli("models", "add", model, "--name", "ok", "--alias", BAD_NAMES[case]), 2)
    assert store_entries(store_root) == before


@pytest.fixture
def stored(model):
    assert_ok(cli("models", "add", model, "--name", "iris", "--alias", "prod"))
    return "iris"


REFS = {
    "missing_name": ("nosuch", 3, "nosuch"),
    "close_match": ("irs", 3, "iris"),  # unknown names list close matches
    "missing_version": ("iris:7", 3, "7"),
    "version_zero": ("iris:0", (2, 3), "0"),
    "negative_version": ("iris:-1", (2, 3), "-1"),
    "missing_alias": ("iris:staging", 3, "staging"),
    "empty_selector": ("iris:", 2, "iris"),
    "traversal_ref": ("../iris", (2, 3), "iris"),
    "ansi_ref": ("iris:\x1b[2J", (2, 3), "\\x1b"),
}


@pytest.mark.parametrize("case", list(REFS))
@pytest.mark.parametrize("command", ["validate", "inspect", "predict", "models show"])
def test_refs_to_missing_versions_and_aliases(case, command, stored, store_root):
    ref, rc, needle = REFS[case]
    before = store_entries(store_root)
    args = [*command.split(), ref]
    if command == "predict":
        args += ["--data", '{"x": [[1, 2, 3, 4]]}']
    assert_refused(cli(*args), rc, needle)
    assert store_entries(store_root) == before


def test_valid_refs_resolve(stored):
    for ref in ("iris", "iris:1", "iris:prod"):
        assert_ok(cli("inspect", ref))
