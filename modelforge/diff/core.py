"""``diff_models(a, b)``: what changed between two models, in structure and in behaviour.

A and B are store references (``name``, ``name:3``, ``name:prod``) or paths. The result
says whether they are ``equal``: no difference of a kind named in ``fail_on`` (default:
all of ``schema``, ``outputs``, ``labels``). IR, opsets, producer, metadata_props, ops,
parameters and external data are reported but never make models unequal on their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from modelforge.errors import UsageError, check_type
from modelforge.text import escape, safe

FAIL_KINDS = ("schema", "outputs", "labels")
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6


@dataclass
class Side:
    """One model as the diff sees it."""

    ref: str
    info: dict[str, Any]
    proto: Any
    schema: Any
    examples: tuple[dict[str, Any], list[Any]] | None  # (inputs, outputs) stored with it


@dataclass(frozen=True)
class DiffResult:
    a: dict[str, Any]
    b: dict[str, Any]
    equal: bool
    differences: dict[str, bool]
    fail_on: list[str]
    schema_changes: list[dict[str, Any]]
    structure_changes: list[str]
    ir_version: dict[str, Any]
    opsets: dict[str, Any]
    producer: dict[str, Any]
    metadata_props: dict[str, Any]
    ops: dict[str, Any]
    parameters: dict[str, Any]
    external_data: dict[str, Any]
    behaviour: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    rows_compared: int
    rtol: float
    atol: float
    warnings: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)  # initializers whose values differ

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffResult:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _refuse_unchecked_gate(fail_on: object, kinds: list[str], reason: str) -> None:
    """An explicit ``--fail-on`` naming outputs or labels promises a check of the outputs:
    when they could not be compared (no --data, no golden examples), passing would be a
    gate that cannot fail. (Without --fail-on, only the structure counts, with a warning.)"""
    asked = [k for k in kinds if k in ("outputs", "labels")]
    if fail_on is None or not asked:
        return
    raise UsageError(
        f"--fail-on {','.join(asked)}: the outputs were not compared ({reason})",
        hint="pass --data DATA (rows both models can read), record golden examples with "
        "'modelforge models add --example DATA', or use --fail-on schema",
        code="outputs_not_compared",
    )


def parse_fail_on(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if value is None:
        return list(FAIL_KINDS)
    items = value.split(",") if isinstance(value, str) else list(value)
    for k in items:
        check_type(k, str, "fail_on", "'schema', 'outputs' and/or 'labels' (a str or a list)")
    kinds = [k.strip() for k in items if k.strip()]
    bad = [k for k in kinds if k not in FAIL_KINDS]
    if bad or not kinds:
        raise UsageError(
            f"--fail-on {escape(','.join(bad) or '(empty)')} is not a kind of difference",
            hint="use a comma-separated subset of: " + ", ".join(FAIL_KINDS),
            code="invalid_option",
        )
    return list(dict.fromkeys(kinds))


def _open(ref: str | os.PathLike[str]) -> Side:
    from modelforge.inference import load
    from modelforge.store import examples as golden

    text = os.fspath(ref)
    lm = load(text, parse=True)
    loc = lm.location
    meta = loc.metadata or {}
    stored = None
    if meta.get("examples"):
        vdir = loc.path.parent.parent
        stored = golden.load(golden.examples_path(vdir), meta["examples"], loc.display)
    info = {
        "ref": text,
        "display": loc.display,
        "path": str(loc.path),
        "origin": loc.origin,
        "examples_rows": (meta.get("examples") or {}).get("rows"),
    }
    return Side(text, info, lm.proto, lm.schema, stored)


def _check_tolerances(rtol: float, atol: float) -> None:
    check_type(rtol, (int, float), "rtol", "a number >= 0")
    check_type(atol, (int, float), "atol", "a number >= 0")
    if not (rtol >= 0 and atol >= 0):  # also refuses NaN
        raise UsageError("--rtol and --atol must be >= 0", code="invalid_option")


def diff_models(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | list[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    fail_on: str | list[str] | tuple[str, ...] | None = None,
    providers: list[str] | None = None,
    allow_nan: bool = False,
) -> DiffResult:
    """Compare model ``a`` (the reference) with ``b``; see the module docstring.

    ``data``: data file(s) both models run on (any format predict reads); without it the
    models run on A's stored golden examples (or B's). A problem reading or mapping
    ``data`` onto either model raises its DataError (it is not a difference).
    ``allow_nan``: pass NaN/empty cells of ``data`` to the models. The models run in this
    process.
    """
    from modelforge.data.options import PredictOptions
    from modelforge.diff import behaviour as bh
    from modelforge.diff import structure as st

    kinds = parse_fail_on(fail_on)
    _check_tolerances(rtol, atol)
    ref = "a path or a store reference such as 'NAME:VERSION'"
    check_type(a, (str, os.PathLike), "a", ref)
    check_type(b, (str, os.PathLike), "b", ref)
    sources = None
    if data is not None:
        items = list(data) if isinstance(data, (list, tuple)) else [data]
        for d in items:
            check_type(d, (str, os.PathLike), "data", "a data file path (or a list of them)")
        sources = [os.fspath(d) for d in items]
    if isinstance(providers, str):  # providers="cpu" is one provider, not "c", "p", "u"
        providers = [providers]
    side_a, side_b = _open(a), _open(b)
    changes = st.schema_changes(side_a.schema, side_b.schema)
    struct = st.structure(side_a.proto, side_b.proto)
    summary, records, rows = bh.behaviour(
        side_a,
        side_b,
        data=sources,
        rtol=rtol,
        atol=atol,
        providers=providers,
        options=PredictOptions(allow_nan=allow_nan),
    )
    diffs = {"schema": bool(changes), **bh.differences(records, summary)}
    warnings = []
    if summary["status"] == "skipped" and not summary["problems"]:
        _refuse_unchecked_gate(fail_on, kinds, summary["reason"])
        warnings.append(f"outputs not compared: {summary['reason']}")
        w = struct["weights"]
        names = [*w["changed"], *w["nodes"]]
        if names:
            warnings.append(
                f"{w['changed_count']} initializer(s) and {w['nodes_changed']} node(s) have "
                f"other values in B ({', '.join(safe(n, 60) for n in names[:3])}"
                f"{', ...' if len(names) > 3 else ''}): the outputs probably differ, but "
                "only the structure was compared; pass --data DATA to compare outputs"
            )
        if w["external_not_compared"]:
            warnings.append(
                f"{w['external_not_compared']} initializer(s) in external data were not compared "
                "(external data is never loaded), so other weights there go unnoticed; pass "
                "--data DATA to compare outputs"
            )
    return DiffResult(
        a=side_a.info,
        b=side_b.info,
        equal=not any(diffs[k] for k in kinds),
        differences=diffs,
        fail_on=kinds,
        schema_changes=changes,
        structure_changes=st.structure_changed(struct),
        behaviour=summary,
        outputs=records,
        rows_compared=rows,
        rtol=rtol,
        atol=atol,
        warnings=warnings,
        **struct,
    )


def diff_job(
    a: str,
    b: str,
    data: list[str] | None,
    rtol: float,
    atol: float,
    fail_on: list[str] | None,
    allow_nan: bool = False,
) -> dict[str, Any]:
    """``models diff`` in its guarded child (module level, so a spawned child imports it)."""
    result = diff_models(
        a, b, data=data, rtol=rtol, atol=atol, fail_on=fail_on, allow_nan=allow_nan
    )
    return result.to_dict()
