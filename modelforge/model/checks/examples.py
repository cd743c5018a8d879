"""Check 10, examples: rerun the golden examples stored with a version (``models add
--example``) and compare with the stored outputs. Runs in the guarded child, on the
session of the ``session`` check (so on the providers validate was asked for).

Floats within ``rtol``/``atol`` (default 1e-5 / 1e-6, validate's --rtol/--atol when given);
integers and strings exactly. The examples file's sha256 is checked before it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelforge.model.checks.context import Check, Ctx
from modelforge.text import safe

EXAMPLES_RTOL = 1e-5
EXAMPLES_ATOL = 1e-6


def _feeds(ctx: Ctx, stored: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    specs = {s.name: s for s in ctx.schema.inputs}
    feeds = {}
    for name, arr in stored.items():
        spec = specs.get(name)
        feeds[name] = arr.astype(object) if spec is not None and spec.dtype == "str" else arr
        if spec is not None and spec.dtype not in (None, "str"):
            feeds[name] = np.asarray(arr, dtype=spec.dtype)
    return feeds


def check_examples(ctx: Ctx) -> Check:
    from modelforge.data.batch import Batch
    from modelforge.engine.runner import Runner
    from modelforge.errors import StoreCorruptError
    from modelforge.model.compare import compare_output, describe
    from modelforge.model.golden import load

    rec: dict[str, Any] = dict(ctx.opts.examples or {})
    rtol = EXAMPLES_RTOL if ctx.opts.examples_rtol is None else ctx.opts.examples_rtol
    atol = EXAMPLES_ATOL if ctx.opts.examples_atol is None else ctx.opts.examples_atol
    try:
        stored_in, stored_out = load(Path(str(rec.get("path"))), rec, "this version")
    except StoreCorruptError as err:
        return Check("examples", "fail", err.code, err.message, err.hint)
    names = {s.name for s in ctx.schema.inputs}
    missing = sorted(names - set(stored_in))
    if missing:
        return Check(
            "examples", "fail", "examples_mismatch",
            f"the stored examples lack input '{safe(missing[0], 80)}' of the model",
            "the examples belong to another model; add the version again with --example",
        )  # fmt: skip
    wanted = [o.name for o in stored_out]
    rows = int(rec.get("rows") or 0)
    runner = Runner(ctx.session, ctx.schema, outputs=wanted, batch_size=max(1, rows))
    got = runner.run(Batch(0, rows, _feeds(ctx, stored_in)))
    results = [
        compare_output(w.name, w, g, rtol=rtol, atol=atol)
        for w, g in zip(stored_out, got, strict=True)
    ]
    details = {
        "rows": rows,
        "rtol": rtol,
        "atol": atol,
        "recorded_with": {"onnxruntime": rec.get("onnxruntime"), "provider": rec.get("provider")},
        "outputs": results,
    }
    bad = [r for r in results if r["differs"]]
    if bad:
        return Check(
            "examples", "fail", "examples_mismatch",
            f"{describe(bad[0])} (rtol {rtol:g}, atol {atol:g}; recorded with onnxruntime "
            f"{safe(rec.get('onnxruntime'))} on {safe(rec.get('provider'))})",
            "onnxruntime or the provider computes different results than when the examples "
            "were recorded; check the upgrade, or loosen --rtol/--atol if it is expected",
            details,
        )  # fmt: skip
    worst = max((r["max_abs_diff"] or 0.0 for r in results), default=0.0)
    return Check(
        "examples", "pass", "ok",
        f"{rows} stored rows reproduced on {len(results)} output(s) (max abs diff {worst:.3g})",
        None, details,
    )  # fmt: skip
