"""Behavioural comparison: run both models on the same rows and compare every output they
share.

The rows are, in order of preference: ``data`` (mapped onto each model exactly as predict
maps it, with each model's stored columns), A's stored golden examples, B's. Stored
examples are fed as stored (they are the inputs as fed when they were recorded); when the
other model's inputs do not accept them (a missing input, another dtype or fixed
dimension) the reasons are listed and nothing is run from them.
"""

from __future__ import annotations

import os
import re
from shlex import quote
from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError, RuntimeFailure
from modelforge.model.compare import compare_output, missing_output
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.model.schema import ModelSchema


def _shape_text(shape: list[Any] | tuple[Any, ...] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def feed_problems(side: str, schema: ModelSchema, feeds: dict[str, np.ndarray]) -> list[str]:
    """Why stored feeds cannot be given to a model (empty: they can)."""
    problems = []
    for spec in schema.inputs:
        arr = feeds.get(spec.name)
        name = safe(spec.name, 80)
        if arr is None:
            held = ", ".join(safe(k, 40) for k in feeds) or "nothing"
            problems.append(f"{side}'s input '{name}' is not in the examples (they hold {held})")
            continue
        have = "str" if arr.dtype.kind in "UO" else str(arr.dtype)
        if not spec.is_tensor or spec.dtype is None:
            problems.append(f"{side}'s input '{name}' is {spec.type}, not a tensor")
        elif spec.dtype != have:
            problems.append(
                f"{side}'s input '{name}' expects {spec.dtype}; the examples hold {have}"
            )
        elif spec.shape is not None and (
            len(spec.shape) != arr.ndim
            or any(
                isinstance(d, int) and d != arr.shape[i] for i, d in enumerate(spec.shape) if i > 0
            )
        ):
            problems.append(
                f"{side}'s input '{name}' expects {spec.dtype} {_shape_text(spec.shape)}; "
                f"the examples hold {have} {_shape_text(list(arr.shape))}"
            )
    return problems


def _run_data(model: str, data: list[str], options: Any, providers: list[str] | None) -> list[Any]:
    import numpy as np

    from modelforge.data.batch import OutputValue
    from modelforge.inference import iter_predict

    parts = list(iter_predict(model, data, options, providers=providers or ["cpu"]))
    return [
        OutputValue(o.name, np.concatenate([p.outputs[i].array for p in parts]), o.keys)
        for i, o in enumerate(parts[0].outputs)
    ]


def _mapped(
    side: Any, label: str, data: list[str], options: Any, providers: list[str] | None
) -> list[Any]:
    """A data or mapping problem is the data's fault, not a difference: it propagates."""
    try:
        return _run_data(side.ref, data, options, providers)
    except DataError as err:
        raise DataError(
            f"--data cannot be mapped onto {label} ({side.info['display']}): {err.message}",
            hint=_diff_hint(err.hint, side.ref, data),
            code=err.code,
        ) from None
    except RuntimeFailure as err:
        raise _named(err, side, label) from None


def _named(err: RuntimeFailure, side: Any, label: str) -> RuntimeFailure:
    """Say which of the two models onnxruntime failed on."""
    return type(err)(
        f"{label} ({side.info['display']}): {err.message}",
        hint=err.hint,
        code=err.code,
        details=err.details,
    )


def _run_examples(side: Any, label: str, feeds: dict[str, Any], providers: Any) -> list[Any]:
    from modelforge.inference.examples import run_feeds

    wanted = {s.name for s in side.schema.inputs}
    try:
        return run_feeds(
            os.fspath(side.ref), {k: v for k, v in feeds.items() if k in wanted}, providers
        )
    except RuntimeFailure as err:
        raise _named(err, side, label) from None


_DIFF_OPTIONS = frozenset({"--allow-nan", "--data"})


def _diff_hint(hint: str | None, ref: str, data: list[str]) -> str | None:
    """predict's hints name predict's options (--columns, --map, --cast, --explain...);
    models diff has none of them, so point at what does work here."""
    if hint is None or set(re.findall(r"--[a-z][a-z-]*", hint)) <= _DIFF_OPTIONS:
        return hint
    return (
        "models diff maps --data as predict does (the file's columns and each model's "
        f"stored column map): check the mapping with 'modelforge predict {quote(ref)} "
        f"{quote(data[0])} --explain', store a column map with 'modelforge models set "
        "NAME:VERSION --columns a,b,...', or pass a file whose columns match the inputs"
    )


def _pairs(out_a: list[Any], out_b: list[Any]) -> list[tuple[Any, Any | None]]:
    """Each output of A with the output of B it is compared with: the one of the same name,
    else the one at the same position when neither name exists on the other side (a
    rename); None when B has nothing to compare it with."""
    names_a = {o.name for o in out_a}
    by_b = {o.name: o for o in out_b}
    pairs: list[tuple[Any, Any | None]] = []
    for i, o in enumerate(out_a):
        if o.name in by_b:
            pairs.append((o, by_b[o.name]))
        elif i < len(out_b) and out_b[i].name not in names_a:
            pairs.append((o, out_b[i]))
        else:
            pairs.append((o, None))
    return pairs


def _compare(
    out_a: list[Any], out_b: list[Any], rtol: float, atol: float
) -> tuple[dict[str, Any], int]:
    records: dict[str, Any] = {}
    for oa, ob in _pairs(out_a, out_b):
        if ob is None:
            held = ", ".join(safe(o.name, 40) for o in out_b) or "no outputs"
            reason = f"B has no output '{safe(oa.name, 80)}' nor a renamed one (B gives {held})"
            records[oa.name] = missing_output(oa, reason)
        elif ob.name == oa.name:
            records[oa.name] = compare_output(oa.name, oa, ob, rtol=rtol, atol=atol)
        else:
            key = f"{oa.name} -> {ob.name}"
            rec = compare_output(key, oa, ob, rtol=rtol, atol=atol)
            records[key] = {**rec, "compared_with": ob.name}
    rows = max((int(o.array.shape[0]) for o in out_a if o.array.ndim), default=0)
    return records, rows


def _subset(feeds: dict[str, Any], schema: ModelSchema) -> dict[str, Any]:
    names = {s.name for s in schema.inputs}
    return {k: v for k, v in feeds.items() if k in names}


def _skipped(source: str | None, reason: str, problems: list[str]) -> dict[str, Any]:
    return {"source": source, "status": "skipped", "reason": reason, "problems": problems}


def behaviour(
    a: Any,
    b: Any,
    *,
    data: list[str] | None,
    rtol: float,
    atol: float,
    providers: list[str] | None = None,
    options: Any = None,
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(behaviour summary, per-output records, rows compared). ``a``/``b``: diff.core.Side."""
    if data:
        out_a = _mapped(a, "A", data, options, providers)
        out_b = _mapped(b, "B", data, options, providers)
        records, rows = _compare(out_a, out_b, rtol, atol)
        summary = {"source": "data", "sources": data, "status": "compared", "reason": None}
        return {**summary, "problems": []}, records, rows
    donor, other, label = (a, b, "B") if a.examples is not None else (b, a, "A")
    if donor.examples is None:
        reason = "neither model has stored golden examples; pass --data DATA to compare outputs"
        return _skipped(None, reason, []), {}, 0
    feeds, _ = donor.examples
    source = "examples:" + ("A" if donor is a else "B")
    problems = feed_problems(label, other.schema, feeds)
    if problems:
        reason = (
            f"{'A' if donor is a else 'B'}'s stored examples cannot feed {label}: "
            + "; ".join(problems)
            + "; pass --data DATA to compare on a data file mapped onto each model"
        )
        return _skipped(source, reason, problems), {}, 0
    out_a = _run_examples(a, "A", feeds, providers)
    out_b = _run_examples(b, "B", feeds, providers)
    records, rows = _compare(out_a, out_b, rtol, atol)
    return {"source": source, "status": "compared", "reason": None, "problems": []}, records, rows


def differences(records: dict[str, Any], summary: dict[str, Any]) -> dict[str, bool]:
    """Which kinds of output differ: ``labels`` (integer/string/bool) or ``outputs`` (the
    rest). An output of A that cannot be compared with anything in B differs (as its
    kind). Stored examples that cannot feed the other model count as both (nothing that
    was promised could be checked); no examples and no data at all count as neither."""
    outputs = any(r["differs"] and r["kind"] != "label" for r in records.values())
    labels = any(r["differs"] and r["kind"] == "label" for r in records.values())
    if summary["status"] == "skipped" and summary["problems"]:
        outputs = labels = True
    return {"outputs": outputs, "labels": labels}
