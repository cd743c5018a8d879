"""Check 9, parity: onnxruntime against onnx.reference and/or golden outputs from an .npz.

NPZ files are loaded with ``allow_pickle=False`` (object arrays are refused), in the guarded
child process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError
from modelforge.model.checks.context import raised_by_dependency
from modelforge.model.checks.types import Check
from modelforge.text import escape, safe

if TYPE_CHECKING:
    import numpy as np


def load_npz(path: str, what: str) -> dict[str, np.ndarray]:
    """Arrays of an .npz (or a single .npy) file; never unpickles."""
    import zipfile

    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{what} file '{escape(path)}' contains object arrays (a pickle payload)",
                hint="save plain numeric or string arrays; ModelForge never unpickles data",
                code="npz_object_array",
            ) from None
        raise DataError(
            f"{what} file '{escape(path)}' is not a readable .npz: {escape(exc)}",
            code="invalid_npz",
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{what} file '{escape(path)}' is not a readable .npz: {escape(exc)}",
            hint="write it with numpy.savez(path, name=array, ...)",
            code="invalid_npz",
        ) from None
    if isinstance(loaded, np.ndarray):
        raise DataError(
            f"{what} file '{escape(path)}' is a single .npy array, not an .npz of named arrays",
            hint="write it with numpy.savez(path, input_name=array)",
            code="invalid_npz",
        )
    with loaded:
        try:
            return {name: loaded[name] for name in loaded.files}
        except ValueError as exc:
            raise DataError(
                f"{what} file '{escape(path)}' holds an object array ({escape(exc)})",
                hint="save plain numeric or string arrays; ModelForge never unpickles data",
                code="npz_object_array",
            ) from None


def compare(name: str, got: Any, want: Any, rtol: float, atol: float) -> dict[str, Any]:
    """Max abs / rel error of one output; ``ok`` against the tolerances."""
    import numpy as np

    entry: dict[str, Any] = {"name": name}
    if not isinstance(got, np.ndarray) or not isinstance(want, np.ndarray):
        try:
            equal = bool(got == want)
        except (TypeError, ValueError):  # e.g. an ambiguous array truth value
            equal = False
        entry.update(ok=equal, note="non-tensor output compared for equality")
        return entry
    if got.shape != want.shape:
        entry.update(ok=False, note=f"shape {list(got.shape)} vs expected {list(want.shape)}")
        return entry
    if got.dtype.kind in "OUSb" or want.dtype.kind in "OUSb":
        mismatched = int(np.sum(got.astype(str) != want.astype(str)))
        entry.update(ok=mismatched == 0, mismatched=mismatched)
        return entry
    a = got.astype(np.float64)
    b = want.astype(np.float64)
    # NaN on both sides, and the same infinity on both sides, are equal (as diff does); a
    # NaN or an infinity against anything else is an unbounded error
    with np.errstate(invalid="ignore"):
        equal = (a == b) | (np.isnan(a) & np.isnan(b))
        finite = np.isfinite(a) & np.isfinite(b)
        diff = np.where(equal, 0.0, np.where(finite, np.abs(a - b), np.inf))
    denom = np.where(finite, np.abs(b), 0.0)
    rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), np.where(diff > 0, np.inf, 0))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    ok = bool(np.all(equal | (finite & (diff <= atol + rtol * denom))))
    entry.update(ok=ok, max_abs=max_abs, max_rel=max_rel)
    return entry


def reference_unavailable(exc: BaseException) -> str:
    """One complete line saying why onnx.reference cannot run the model (its messages span
    several lines; a missing operator is named, not cut off mid-sentence)."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    found = re.search(
        r"No registered implementation for operator '([^']*)' and domain '([^']*)'", text
    )
    if found:
        op, domain = found.group(1), found.group(2) or "ai.onnx"
        return (
            f"onnx.reference has no implementation of {safe(domain, 60)} operator "
            f"'{safe(op, 60)}', so it cannot run this model"
        )
    return f"onnx.reference cannot run this model: {safe(text, 300)}"


def _reference(ctx: Any) -> Any:
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = ctx.model
    if ctx.has_external:
        from modelforge.model.external_load import load_checked_external_data

        model = onnx.ModelProto()
        model.CopyFrom(ctx.model)
        load_checked_external_data(model, ctx.external_files)
    return ReferenceEvaluator(model)


def _run_golden(ctx: Any, feeds: dict[str, Any]) -> list[Any]:
    """Run onnxruntime on the golden inputs in batches the model accepts (a fixed batch
    dimension gets exact-size runs, the last one padded), like predict does."""
    from modelforge.data.batch import Batch
    from modelforge.engine.runner import Runner, fixed_batch

    if fixed_batch(ctx.schema) is None:
        from modelforge.engine.session import translate_error

        try:
            return list(ctx.session.inner.run(None, feeds))
        except Exception as exc:  # onnxruntime raises pybind exception types
            raise translate_error(exc, "running the model on --inputs") from None
    rows = {int(v.shape[0]) for v in feeds.values() if getattr(v, "ndim", 0) >= 1}
    if len(rows) != 1:
        raise DataError(
            "the --inputs arrays have different numbers of rows "
            f"({', '.join(map(str, sorted(rows)))}), so they cannot be fed in batches",
            hint="give every input array the same first dimension",
            code="parity_inputs_mismatch",
        )
    values = Runner(ctx.session, ctx.schema).run(Batch(0, rows.pop(), feeds, {}, 0))
    return [v.value for v in values]


def _golden(ctx: Any) -> tuple[list[dict[str, Any]], list[str], dict[str, Any], dict[str, Any]]:
    import numpy as np

    opts = ctx.opts
    inputs = load_npz(opts.inputs, "--inputs")
    expected = load_npz(opts.expected, "--expected")
    specs = {s.name: s for s in ctx.schema.inputs}
    missing = [n for n in specs if n not in inputs]
    if missing:
        raise DataError(
            f"--inputs file lacks model input '{safe(missing[0], 80)}' "
            f"(found: {', '.join(safe(k, 40) for k in list(inputs)[:10])})",
            hint="name the arrays after the model inputs: numpy.savez(path, x=array)",
            code="parity_inputs_mismatch",
        )
    feeds = {}
    for name, spec in specs.items():
        arr = inputs[name]
        if spec.dtype not in (None, "str") and arr.dtype != np.dtype(spec.dtype):
            arr = arr.astype(spec.dtype)
        feeds[name] = arr
    outs = [o.name for o in ctx.schema.outputs]
    unknown = [k for k in expected if k not in outs]
    if unknown:
        raise DataError(
            f"--expected file has array '{safe(unknown[0], 80)}', which is not a model output "
            f"(outputs: {', '.join(safe(o, 40) for o in outs[:10])})",
            hint="name the arrays after the model outputs",
            code="parity_outputs_mismatch",
        )
    got = _run_golden(ctx, feeds)
    results = [
        {**compare(name, value, expected[name], opts.rtol, opts.atol), "against": "expected"}
        for name, value in zip(outs, got, strict=False)
        if name in expected
    ]
    not_compared = [o for o in outs if o not in expected]
    return results, not_compared, feeds, expected


def _error_text(r: dict[str, Any]) -> str:
    if "max_abs" in r:
        return f"max abs error {r['max_abs']:.3g}, max rel error {r['max_rel']:.3g}"
    return str(r.get("note") or f"{r.get('mismatched', '?')} values differ")


def _reference_vs_expected(
    ctx: Any, evaluator: Any, feeds: dict[str, Any], expected: dict[str, Any]
) -> list[dict[str, Any]] | None:
    """onnx.reference on the golden inputs against --expected (None: it cannot run them)."""
    try:
        ref = list(evaluator.run(None, feeds))
    except Exception as exc:  # onnx.reference lacks many ops
        if not raised_by_dependency(exc):
            raise
        return None
    names = [s.name for s in ctx.schema.outputs]
    return [
        {**compare(n, value, expected[n], ctx.opts.rtol, ctx.opts.atol), "against": "expected"}
        for n, value in zip(names, ref, strict=False)
        if n in expected
    ]


def check_parity(ctx: Any) -> Check:
    opts = ctx.opts
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    evaluator = None
    if opts.reference:
        if ctx.feeds is None or ctx.outputs is None:
            notes.append("reference comparison not run: no smoke-run outputs")
        else:
            try:
                evaluator = _reference(ctx)
                ref = list(evaluator.run(None, ctx.feeds))
            except Exception as exc:  # onnx.reference lacks many ops (ai.onnx.ml, contrib)
                if not raised_by_dependency(exc):
                    raise  # a bug of ours (or a ModelForgeError) is not a reference limitation
                evaluator = None
                notes.append(reference_unavailable(exc))
            else:
                names = [s.name for s in ctx.schema.outputs]
                for name, got, want in zip(names, ctx.outputs, ref, strict=False):
                    results.append(
                        {**compare(name, got, want, opts.rtol, opts.atol), "against": "reference"}
                    )
    ref_expected: list[dict[str, Any]] | None = None
    if opts.inputs:
        golden, not_compared, feeds, expected = _golden(ctx)
        results.extend(golden)
        if not_compared:
            notes.append("not in --expected: " + ", ".join(safe(n, 40) for n in not_compared))
        if evaluator is not None:
            ref_expected = _reference_vs_expected(ctx, evaluator, feeds, expected)
    details: dict[str, Any] = {
        "outputs": results, "rtol": opts.rtol, "atol": opts.atol, "notes": notes,
    }  # fmt: skip
    if ref_expected is not None:
        details["reference_vs_expected"] = ref_expected
    verdict = _verdict(results, ref_expected, bool(opts.inputs), opts, details)
    if verdict is not None:
        return verdict
    if not results:
        return Check(
            "parity", "warn", "parity_not_compared",
            "nothing was compared: " + ("; ".join(notes) or "no comparable outputs"),
            "pass --inputs/--expected with golden outputs from the source framework", details,
        )  # fmt: skip
    worst = max((r.get("max_abs", 0.0) for r in results), default=0.0)
    text = f"{len(results)} output comparison(s) within tolerance (max abs error {worst:.3g})"
    if notes:
        text += "; " + "; ".join(notes)
    return Check("parity", "pass", "ok", text, None, details)


def _verdict(
    results: list[dict[str, Any]],
    ref_expected: list[dict[str, Any]] | None,
    golden: bool,
    opts: Any,
    details: dict[str, Any],
) -> Check | None:
    """A failed or disagreeing comparison, said the way it is: onnxruntime against the
    golden outputs, and onnxruntime against onnx.reference (which is itself wrong for some
    old-opset models, so a disagreement with it is not proof the model is wrong)."""
    tol = f"(rtol {opts.rtol:g}, atol {opts.atol:g})"
    bad_expected = [r for r in results if r["against"] == "expected" and not r.get("ok")]
    bad_reference = [r for r in results if r["against"] == "reference" and not r.get("ok")]
    ref_ok = ref_expected is not None and all(r.get("ok") for r in ref_expected)
    if bad_expected:
        r = bad_expected[0]
        also = (
            "; onnx.reference matches --expected, so onnxruntime's result is the odd one out"
            if ref_ok
            else ""
        )
        return Check(
            "parity", "fail", "parity_mismatch",
            f"output '{safe(r['name'], 80)}' differs from the expected outputs: "
            f"{_error_text(r)} {tol}{also}",
            "the conversion changed the results; check the exporter's opset and options, or "
            "loosen --rtol/--atol if the difference is expected",
            details,
        )  # fmt: skip
    if not bad_reference:
        return None
    r = bad_reference[0]
    disagree = (
        f"onnxruntime and onnx.reference disagree on output '{safe(r['name'], 80)}' on "
        f"synthesized inputs: {_error_text(r)} {tol}"
    )
    if golden:
        judged = (
            "onnx.reference does not, so onnx.reference is wrong for this model"
            if ref_expected is not None and not ref_ok
            else "so onnx.reference is likely wrong for this model"
        )
        return Check(
            "parity", "warn", "reference_disagrees",
            f"{disagree}; onnxruntime matches the --expected outputs, {judged}",
            "trust the golden comparison; onnx.reference is wrong for some old-opset models "
            "(drop --reference to silence this)",
            details,
        )  # fmt: skip
    return Check(
        "parity", "fail", "parity_mismatch",
        f"{disagree}; without golden outputs it cannot tell which one is right",
        "pass --inputs/--expected with outputs from the source framework to tell which is "
        "right (onnx.reference itself is wrong for some old-opset models)",
        details,
    )  # fmt: skip
