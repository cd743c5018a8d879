"""Check 9, parity: onnxruntime against onnx.reference and/or golden outputs from an .npz.

NPZ files are loaded with ``allow_pickle=False`` (object arrays are refused), in the guarded
child process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError
from modelforge.model.validate import Check
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
        except Exception:
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
    same_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(same_nan, 0.0, np.abs(a - b))
    denom = np.abs(b)
    rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), np.where(diff > 0, np.inf, 0))
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    ok = bool(np.all(diff <= atol + rtol * denom)) and not bool(np.isnan(diff).any())
    entry.update(ok=ok, max_abs=max_abs, max_rel=max_rel)
    return entry


def _run_reference(ctx: Any) -> list[Any]:
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = ctx.model
    if ctx.has_external:
        from modelforge.model.external_load import load_checked_external_data

        model = onnx.ModelProto()
        model.CopyFrom(ctx.model)
        load_checked_external_data(model, ctx.external_files)
    return list(ReferenceEvaluator(model).run(None, ctx.feeds))


def _golden(ctx: Any) -> tuple[list[dict[str, Any]], list[str]]:
    import numpy as np

    from modelforge.engine.session import translate_error

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
    outs = [o.name for o in ctx.session.inner.get_outputs()]
    unknown = [k for k in expected if k not in outs]
    if unknown:
        raise DataError(
            f"--expected file has array '{safe(unknown[0], 80)}', which is not a model output "
            f"(outputs: {', '.join(safe(o, 40) for o in outs[:10])})",
            hint="name the arrays after the model outputs",
            code="parity_outputs_mismatch",
        )
    try:
        got = ctx.session.inner.run(None, feeds)
    except Exception as exc:
        raise translate_error(exc, "running the model on --inputs") from None
    results = [
        {**compare(name, value, expected[name], opts.rtol, opts.atol), "against": "expected"}
        for name, value in zip(outs, got, strict=False)
        if name in expected
    ]
    not_compared = [o for o in outs if o not in expected]
    return results, not_compared


def check_parity(ctx: Any) -> Check:
    opts = ctx.opts
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    if opts.reference:
        if ctx.feeds is None or ctx.outputs is None:
            notes.append("reference comparison not run: no smoke-run outputs")
        else:
            try:
                ref = _run_reference(ctx)
            except Exception as exc:  # onnx.reference lacks many ops (ai.onnx.ml, contrib)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                notes.append(f"onnx.reference cannot run this model: {safe(reason, 160)}")
            else:
                names = [s.name for s in ctx.schema.outputs]
                for name, got, want in zip(names, ctx.outputs, ref, strict=False):
                    results.append(
                        {**compare(name, got, want, opts.rtol, opts.atol), "against": "reference"}
                    )
    if opts.inputs:
        golden, not_compared = _golden(ctx)
        results.extend(golden)
        if not_compared:
            notes.append("not in --expected: " + ", ".join(safe(n, 40) for n in not_compared))
    details = {"outputs": results, "rtol": opts.rtol, "atol": opts.atol, "notes": notes}
    bad = [r for r in results if not r.get("ok")]
    if bad:
        r = bad[0]
        err = (
            f"max abs error {r['max_abs']:.3g}, max rel error {r['max_rel']:.3g}"
            if "max_abs" in r
            else str(r.get("note") or f"{r.get('mismatched', '?')} values differ")
        )
        return Check(
            "parity", "fail", "parity_mismatch",
            f"output '{safe(r['name'], 80)}' differs from the {r['against']} outputs: {err} "
            f"(rtol {opts.rtol:g}, atol {opts.atol:g})",
            "the conversion changed the results; check the exporter's opset and options, or "
            "loosen --rtol/--atol if the difference is expected",
            details,
        )  # fmt: skip
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
