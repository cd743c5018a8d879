"""The allowed import directions between ModelForge's packages, so the layering cannot rot.

Every module under ``modelforge/`` is parsed with ``ast``; every import counts, including
lazy imports inside functions and ``TYPE_CHECKING`` blocks (a type is a dependency too).
Each module belongs to one layer (the longest matching prefix in ``LAYERS``), and
``FORBIDDEN`` lists, per layer, the layers it must never import. Lower layers first::

    base         errors, text, log, paths, progress: depend on nothing else
    model.core   reading, parsing, external data, schema, opsets, synthesized inputs
    data         readers, mapping, casting (data.writers is the output side)
    engine       providers, sessions, the batched runner, the guarded child
    model        validate and its checks, inspect, convert, capabilities
    store        the model store: uses model (admission) but never the reverse
    edge         the public API that resolves store references: api, inference, bench, diff
    render       the only module that prints, for the fronts
    fronts       cli, serve, cluster, __main__: may import everything
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "modelforge"

LAYERS: dict[str, str] = {
    "modelforge": "base",  # the package __init__ (its _API table is resolved lazily)
    "modelforge.errors": "base",
    "modelforge.text": "base",
    "modelforge.log": "base",
    "modelforge.paths": "base",
    "modelforge.progress": "base",
    "modelforge.model.files": "model.core",
    "modelforge.model.load": "model.core",
    "modelforge.model.open": "model.core",
    "modelforge.model.external": "model.core",
    "modelforge.model.external_load": "model.core",
    "modelforge.model.schema": "model.core",
    "modelforge.model.opset": "model.core",
    "modelforge.model.synth": "model.core",
    "modelforge.data": "data",
    "modelforge.data.writers": "data.writers",
    "modelforge.engine": "engine",
    "modelforge.model": "model",
    "modelforge.store": "store",
    "modelforge.api": "edge",
    "modelforge.inference": "edge",
    "modelforge.bench": "edge",
    "modelforge.diff": "edge",
    "modelforge.render": "render",
    "modelforge.cli": "cli",
    "modelforge.serve": "serve",
    "modelforge.cluster": "cluster",
    "modelforge.__main__": "cli",
}

FRONTS = {"cli", "serve", "cluster"}
ABOVE_STORE = {"edge", "render", *FRONTS}
FORBIDDEN: dict[str, set[str]] = {
    "base": {layer for layer in set(LAYERS.values()) if layer != "base"},
    "model.core": {"data", "data.writers", "engine", "model", "store", *ABOVE_STORE},
    "data": {"engine", "model", "store", *ABOVE_STORE},
    "data.writers": {"engine", "model", "store", *ABOVE_STORE},
    "engine": {"data.writers", "model", "store", *ABOVE_STORE},
    "model": {"data.writers", "store", *ABOVE_STORE},
    "store": {"data", "data.writers", "engine", *ABOVE_STORE},
    "edge": {"render", *FRONTS},
    "render": {layer for layer in set(LAYERS.values()) if layer not in ("base", "render")},
    # a front is the top: another front is not its library
    "serve": {"cli", "cluster"},
    "cluster": {"cli", "serve"},
    "cli": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


MODULES = _modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every modelforge module ``name`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # ``from modelforge.model import open`` names a module
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in MODULES else module)
    return {m for m in found if m == "modelforge" or m.startswith("modelforge.")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:i]))
        if layer is not None:
            return layer
    raise AssertionError(f"module {module} has no layer in LAYERS")


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in sorted(MODULES.items()):
        for target in sorted(imports_of(name, path)):
            src, dst = layer_of(name), layer_of(target)
            if src != dst:
                edges[(src, dst)].append(f"{name} -> {target}")
    return edges


def test_every_module_has_a_layer():
    for name in MODULES:
        layer = layer_of(name)
        assert layer in FORBIDDEN, f"{name}: layer {layer} has no rules"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_import_directions(layer):
    bad = [
        line
        for (src, dst), lines in _edges().items()
        if src == layer and dst in FORBIDDEN[layer]
        for line in lines
    ]
    assert not bad, f"{layer} must not import {sorted(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_only_fronts_import_fronts():
    bad = [
        line
        for (src, dst), lines in _edges().items()
        if dst in FRONTS and src not in FRONTS
        for line in lines
    ]
    assert not bad, "only cli/serve/cluster may import a front:\n" + "\n".join(bad)


# module-level rules inside a layer: (importer prefix, forbidden target prefix, why)
MODULE_RULES = [
    ("modelforge.model.checks", "modelforge.model.validate", "check types live in checks.types"),
    ("modelforge.store", "modelforge.api", "the API edge uses the store, not the reverse"),
    ("modelforge.engine", "modelforge.inference", "prediction uses the engine"),
]


@pytest.mark.parametrize("src,dst,why", MODULE_RULES)
def test_module_rules(src, dst, why):
    bad = [
        f"{name} -> {target}"
        for name, path in sorted(MODULES.items())
        if name == src or name.startswith(src + ".")
        for target in sorted(imports_of(name, path))
        if target == dst or target.startswith(dst + ".")
    ]
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_layers_form_no_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in _edges():
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("layer cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser itself: imports inside functions and relative imports are found."""
    pkg = tmp_path / "modelforge" / "model"
    pkg.mkdir(parents=True)
    src = pkg / "probe.py"
    src.write_text(
        "def f():\n    from modelforge.store.resolve import resolve_model\n"
        "from . import schema\nfrom ..store import layout\nimport modelforge.cli.app\n",
        encoding="utf-8",
    )
    found = imports_of("modelforge.model.probe", src)
    assert {
        "modelforge.store.resolve",
        "modelforge.model.schema",
        "modelforge.store.layout",
        "modelforge.cli.app",
    } <= found
    assert layer_of("modelforge.model.probe") == "model"
    assert "store" in FORBIDDEN["model"] and "cli" in FORBIDDEN["model"]
