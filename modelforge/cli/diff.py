"""``modelforge models diff A B``: structure and behaviour of two models compared.

Registered on the ``models`` group by cli/models.py. The comparison runs in predict's
forked child when possible (the models are untrusted and are run), like bench.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import JobMemoryLimitOpt, JobTimeoutOpt, JsonOpt, run

if TYPE_CHECKING:
    from modelforge.render import Renderer


def _shape(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join("?" if d is None else str(d) for d in value) + "]"
    if isinstance(value, dict):
        shape = value.get("shape")
        return f"{value.get('type')} {_shape(shape) if shape is not None else '(no shape)'}"
    return "(no shape)" if value is None else str(value)


def _render_schema(out: Renderer, r: Any) -> None:
    from modelforge.text import safe

    if not r.schema_changes:
        out.line("schema: inputs and outputs unchanged")
        return
    out.line(f"schema: {len(r.schema_changes)} change(s)")
    for c in r.schema_changes:
        side, _, what = c["kind"].partition("_")
        name = safe(c["name"], 80)
        if what == "renamed":
            out.line(f"  {side} renamed: {name} -> {safe(c['b'], 80)}")
        elif what in ("added", "removed"):
            spec = c["b"] if what == "added" else c["a"]
            out.line(f"  {side} {what}: {name} {safe(_shape(spec))}")
        else:
            label = what.replace("_changed", "")
            out.line(f"  {side} {name}: {label} {safe(_shape(c['a']))} -> {safe(_shape(c['b']))}")


def _render_structure(out: Renderer, r: Any) -> None:
    from modelforge.text import safe

    lines = []
    if r.ir_version["a"] != r.ir_version["b"]:
        lines.append(f"ir_version {r.ir_version['a']} -> {r.ir_version['b']}")
    for dom, (va, vb) in r.opsets["changed"].items():
        lines.append(f"opset {safe(dom)} {va} -> {vb}")
    for dom, v in r.opsets["added"].items():
        lines.append(f"opset {safe(dom)} {v} added")
    for dom, v in r.opsets["removed"].items():
        lines.append(f"opset {safe(dom)} {v} removed")
    if r.producer["a"] != r.producer["b"]:
        lines.append(f"producer '{safe(r.producer['a'])}' -> '{safe(r.producer['b'])}'")
    meta = r.metadata_props
    for key, label in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for k in meta[key]:
            lines.append(f"metadata_props {label}{safe(k, 60)}")
    if r.ops["delta"]:
        delta = ", ".join(f"{safe(k)} {v:+d}" for k, v in r.ops["delta"].items())
        lines.append(f"ops {delta}")
    pa, pb = r.parameters["a"], r.parameters["b"]
    if pa != pb:
        lines.append(
            f"parameters {pa['count']:,} -> {pb['count']:,} ({pb['count'] - pa['count']:+,}), "
            f"{pa['bytes']:,} -> {pb['bytes']:,} bytes"
        )
    ext = r.external_data
    if ext["added"] or ext["removed"]:
        lines.append(
            f"external data +{', '.join(map(safe, ext['added'])) or '-'} "
            f"-{', '.join(map(safe, ext['removed'])) or '-'}"
        )
    w = getattr(r, "weights", None) or {}
    if w.get("changed_count"):
        names = ", ".join(safe(n, 60) for n in w["changed"][:5])
        more = ", ..." if w["changed_count"] > 5 else ""
        lines.append(
            f"weights: {w['changed_count']} of {w['compared']} initializers have other "
            f"values ({names}{more})"
        )
    if w.get("nodes_changed"):
        names = ", ".join(safe(n, 60) for n in w["nodes"][:5])
        more = ", ..." if w["nodes_changed"] > 5 else ""
        lines.append(f"weights: {w['nodes_changed']} node(s) have other attributes ({names}{more})")
    out.line("structure: " + ("unchanged" if not lines else f"{len(lines)} change(s)"))
    for line in lines:
        out.line(f"  {line}")


def _num(value: Any, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def _render_outputs(out: Renderer, r: Any) -> None:
    from modelforge.model.compare import describe
    from modelforge.render import table
    from modelforge.text import safe

    b = r.behaviour
    if b["status"] != "compared":
        out.line(f"outputs: not compared: {safe(b['reason'], 600)}")
        return
    source = {"data": "--data", "examples:A": "A's golden examples"}.get(
        b["source"], "B's golden examples"
    )
    out.line(f"outputs: {r.rows_compared} rows from {source} (rtol {r.rtol:g}, atol {r.atol:g})")
    t = table("OUTPUT", "KIND", "MAX ABS", "MAX REL", "MEAN ABS", "BEYOND TOL", "CHANGED", "WORST")
    for name, rec in r.outputs.items():
        worst = ", ".join(str(w["row"]) for w in rec["worst_rows"][:3]) or "-"
        if rec.get("classes_added") or rec.get("classes_removed"):
            added = ",".join(map(str, rec["classes_added"])) or "-"
            removed = ",".join(map(str, rec["classes_removed"])) or "-"
            worst = safe(f"classes +{added} -{removed}", 80)
        if not rec["comparable"]:
            worst = safe(rec["reason"], 80)
        t.add_row(
            safe(name, 60),
            rec["kind"],
            _num(rec["max_abs_diff"]),
            _num(rec["max_rel_diff"]),
            _num(rec["mean_abs_diff"]),
            _num(rec["mismatch_fraction"], ".1%"),
            _num(rec["changed_fraction"], ".1%"),
            worst,
        )
    out.print(t)
    for rec in r.outputs.values():
        if not rec["comparable"]:
            out.line(f"  {describe(rec)}")


def render_diff(out: Renderer, r: Any) -> None:
    from modelforge.text import safe

    out.line(f"diff A {safe(r.a['display'], 200)}  B {safe(r.b['display'], 200)}")
    _render_schema(out, r)
    _render_structure(out, r)
    _render_outputs(out, r)
    differing = [k for k, v in r.differences.items() if v]
    if r.equal:
        notes = [f"ignored: {', '.join(differing)}"] if differing else []
        if r.behaviour["status"] != "compared":
            notes.append("outputs not compared")  # structure alone never makes a difference
        out.line("EQUAL" + (f" ({'; '.join(notes)})" if notes else ""))
    else:
        counted = [k for k in differing if k in r.fail_on]
        out.line(f"DIFFERENT: {', '.join(counted)}")


def diff_cmd(
    ctx: typer.Context,
    a: Annotated[
        str,
        typer.Argument(metavar="A", help="Reference model: path or NAME[:VERSION|:ALIAS]."),
    ],
    b: Annotated[
        str,
        typer.Argument(metavar="B", help="Candidate model: path or NAME[:VERSION|:ALIAS]."),
    ],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            metavar="FILE",
            help="Data both models run on (any format predict reads; default: A's golden "
            "examples); repeat.",
        ),
    ] = None,
    allow_nan: Annotated[
        bool, typer.Option("--allow-nan", help="Pass NaN/empty cells of --data to the models.")
    ] = False,
    rtol: Annotated[
        float, typer.Option("--rtol", metavar="X", help="Relative tolerance for float outputs.")
    ] = 1e-5,
    atol: Annotated[
        float, typer.Option("--atol", metavar="X", help="Absolute tolerance for float outputs.")
    ] = 1e-6,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            metavar="KINDS",
            help="Differences that make the exit status 9: schema,outputs,labels (default all).",
            show_default=False,
        ),
    ] = None,
    timeout: JobTimeoutOpt = None,
    memory_limit: JobMemoryLimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare two models: inputs/outputs, opsets, ops, parameters, and outputs on the same rows.

    Exit 0 when nothing differs beyond tolerance, 9 when something does (an output of A
    that cannot be compared with B's counts), 5 when --data cannot be read or mapped.

    Example: modelforge models diff iris:prod new.onnx --fail-on labels
    """
    with run(ctx, "models diff", json_out) as out:
        from modelforge.diff.core import DiffResult, diff_job, parse_fail_on
        from modelforge.engine.isolate import Limits, run_isolated
        from modelforge.errors import CheckFailedError

        kinds = parse_fail_on(fail_on)
        limits = Limits.for_jobs(memory_limit, timeout)
        raw = run_isolated(
            diff_job,
            a,
            b,
            data or None,
            rtol,
            atol,
            None if fail_on is None else kinds,  # an explicit gate must be checkable
            allow_nan,
            what="models diff",
            limits=limits,
        )
        result = DiffResult.from_dict(raw)
        for w in result.warnings:
            out.warning(w)
        if result.equal:
            out.emit(result, render_diff)
            return
        counted = [k for k, v in result.differences.items() if v and k in result.fail_on]
        out.emit_failure(
            result,
            CheckFailedError(
                f"models differ ({', '.join(counted)}): "
                f"A {result.a['display']}, B {result.b['display']}",
                hint="see the report; --fail-on narrows which kinds of difference count",
                code="models_differ",
            ),
            render_diff,
        )


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)
