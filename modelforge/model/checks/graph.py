"""Structural checks onnx.checker misses: cycles, undefined inputs, duplicate outputs,
negative dims, node-count and nesting-depth caps, recursive local functions.

Everything here is iterative (no Python recursion), so hostile nesting cannot exhaust the
interpreter stack; the depth cap is enforced before onnx's own (recursive) checker runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelforge.text import safe

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

DEFAULT_MAX_NODES = 2_000_000
DEFAULT_MAX_DEPTH = 64


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    hint: str


def _node_label(node: NodeProto) -> str:
    label = f"node '{safe(node.name, 80)}'" if node.name else "unnamed node"
    return f"{label} ({safe(node.op_type, 60)})"


def _subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def walk_graphs(model: ModelProto) -> Iterator[tuple[GraphProto, int, frozenset[str], str]]:
    """Every graph (main, subgraphs) with depth, names visible from outer scopes, and a label.

    Iterative, depth-first; stops descending below ``DEFAULT_MAX_DEPTH * 4`` as a guard.
    """
    stack: list[tuple[GraphProto, int, frozenset[str], str]] = [
        (model.graph, 0, frozenset(), "main graph")
    ]
    while stack:
        graph, depth, outer, label = stack.pop()
        yield graph, depth, outer, label
        if depth > DEFAULT_MAX_DEPTH * 4:
            continue
        visible: frozenset[str] | None = None
        for node in graph.node:
            if not node.attribute:
                continue  # the common case: no attributes, no subgraphs
            for sub in _subgraphs(node):
                if visible is None:
                    visible = outer | _defined_names(graph)
                stack.append((sub, depth + 1, visible, f"subgraph of {_node_label(node)}"))


def _defined_names(graph: GraphProto) -> frozenset[str]:
    names = {vi.name for vi in graph.input}
    names.update(t.name for t in graph.initializer)
    names.update(s.values.name for s in graph.sparse_initializer)
    for node in graph.node:
        names.update(o for o in node.output if o)
    return frozenset(names)


def count_nodes(model: ModelProto) -> tuple[int, int]:
    """(total nodes in all graphs and functions, deepest subgraph nesting)."""
    total, deepest = 0, 0
    for graph, depth, _outer, _label in walk_graphs(model):
        total += len(graph.node)
        deepest = max(deepest, depth)
    for fn in model.functions:
        total += len(fn.node)
    return total, deepest


def _graph_problems(graph: GraphProto, outer: frozenset[str], label: str) -> Problem | None:
    available = set(outer)
    available.update(vi.name for vi in graph.input)
    available.update(t.name for t in graph.initializer)
    available.update(s.values.name for s in graph.sparse_initializer)
    nodes = list(graph.node)
    inputs = [list(n.input) for n in nodes]
    outputs = [list(n.output) for n in nodes]
    producers: dict[str, int] = {}
    for i, outs in enumerate(outputs):
        for out in outs:
            if not out:
                continue
            if out in producers:
                return Problem(
                    "duplicate_output",
                    f"tensor '{safe(out, 80)}' in the {label} is produced by both "
                    f"{_node_label(nodes[producers[out]])} and {_node_label(nodes[i])}",
                    "every tensor must have exactly one producer; rename one output",
                )
            if out in available and out not in outer:
                return Problem(
                    "duplicate_output",
                    f"tensor '{safe(out, 80)}' in the {label} is produced by "
                    f"{_node_label(nodes[i])} but is also a graph input or initializer",
                    "rename the node output",
                )
            producers[out] = i
    # Kahn's algorithm over the nodes of this graph
    consumers: dict[str, list[int]] = {}
    missing_count = []
    for i, ins in enumerate(inputs):
        pending = 0
        for inp in ins:
            if not inp or inp in available:
                continue
            if inp not in producers:
                return Problem(
                    "undefined_input",
                    f"{_node_label(nodes[i])} in the {label} reads tensor '{safe(inp, 80)}', "
                    "which no node, graph input or initializer defines",
                    "the converter dropped a node or an initializer; re-export the model",
                )
            consumers.setdefault(inp, []).append(i)
            pending += 1
        missing_count.append(pending)
    ready = [i for i, n in enumerate(missing_count) if n == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for out in outputs[i]:
            for j in consumers.get(out, ()):
                missing_count[j] -= 1
                if missing_count[j] == 0:
                    ready.append(j)
    if done < len(nodes):
        stuck = next(nodes[i] for i, n in enumerate(missing_count) if n > 0)
        return Problem(
            "graph_cycle",
            f"the {label} has a cycle through {_node_label(stuck)}",
            "ONNX graphs must be acyclic; loops belong in a Loop/Scan subgraph",
        )
    for vi in graph.output:
        if vi.name not in producers and vi.name not in available:
            return Problem(
                "undefined_output",
                f"graph output '{safe(vi.name, 80)}' of the {label} is never produced",
                "re-export the model",
            )
    seen: set[str] = set()
    for vi in graph.output:
        if vi.name in seen:
            return Problem(
                "duplicate_output",
                f"graph output '{safe(vi.name, 80)}' of the {label} is listed twice",
                "list each graph output once",
            )
        seen.add(vi.name)
    return None


def _negative_dims(graph: GraphProto, label: str) -> Problem | None:
    for kind, infos in (
        ("input", graph.input),
        ("output", graph.output),
        ("value", graph.value_info),
    ):
        for vi in infos:
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None or not tt.HasField("shape"):
                continue
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    return Problem(
                        "negative_dim",
                        f"{kind} '{safe(vi.name, 80)}' of the {label} declares dimension "
                        f"{d.dim_value}",
                        "dimensions must be >= 0; use a symbolic name for a variable size",
                    )
    for t in graph.initializer:
        if any(d < 0 for d in t.dims):
            return Problem(
                "negative_dim",
                f"initializer '{safe(t.name, 80)}' of the {label} has dims {list(t.dims)}",
                "re-export the model",
            )
    return None


def _recursive_function(model: ModelProto) -> Problem | None:
    local = {(fn.domain, fn.name): fn for fn in model.functions}
    if not local:
        return None
    calls = {
        key: {(n.domain, n.op_type) for n in fn.node if (n.domain, n.op_type) in local}
        for key, fn in local.items()
    }
    state: dict[tuple[str, str], int] = {}
    for start in local:
        if state.get(start):
            continue
        stack: list[tuple[tuple[str, str], Iterator[tuple[str, str]]]] = [
            (start, iter(calls[start]))
        ]
        state[start] = 1
        while stack:
            key, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[key] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return Problem(
                    "recursive_function",
                    f"local function '{safe(nxt[1], 80)}' calls itself (directly or indirectly)",
                    "ONNX functions cannot be recursive; the file is malformed or hostile",
                )
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(calls[nxt])))
    return None


def structure_problems(
    model: ModelProto, *, max_nodes: int = DEFAULT_MAX_NODES, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Problem | None, dict[str, Any]]:
    """The first structural problem found (or None), plus counts for the report."""
    nodes, depth = count_nodes(model)
    details: dict[str, Any] = {"nodes": nodes, "max_nesting": depth}
    if depth > max_depth:
        return Problem(
            "nesting_too_deep",
            f"subgraphs are nested {depth} deep, over the limit of {max_depth}",
            "no converter produces such nesting; raise --max-depth only for a trusted model",
        ), details
    if nodes > max_nodes:
        return Problem(
            "too_many_nodes",
            f"the model has {nodes} nodes, over the limit of {max_nodes}",
            "raise the limit only for a trusted model",
        ), details
    if not model.graph.output:
        return Problem(
            "no_outputs",
            "the main graph declares no outputs, so the model cannot produce anything",
            "re-export the model with its outputs marked as graph outputs",
        ), details
    problem = _recursive_function(model)
    if problem:
        return problem, details
    for graph, _depth, outer, label in walk_graphs(model):
        problem = _graph_problems(graph, outer, label) or _negative_dims(graph, label)
        if problem:
            return problem, details
    return None, details
