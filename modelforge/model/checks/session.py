"""Checks 7-8 of validate (session, smoke run), run in the guarded child process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from modelforge.engine import isolate
from modelforge.errors import ModelForgeError
from modelforge.model.checks.context import Check, Ctx
from modelforge.text import safe

# ---- 7. session -------------------------------------------------------------------------------


def check_session(ctx: Ctx) -> Check:
    from modelforge.engine.providers import short_name
    from modelforge.engine.session import SessionConfig, create_session
    from modelforge.engine.upgrade import create_upgrading

    opts = ctx.opts
    cfg = SessionConfig(
        providers=opts.providers,
        provider_options=dict(opts.provider_options),
        fallback=not opts.require_provider,
        custom_ops=tuple(opts.custom_ops),
    )
    status, code, note, hint = "pass", "ok", "", None
    folder = Path(ctx.path).parent
    try:
        session, target, why = (
            create_session(ctx.model_bytes, cfg, external_data_dir=folder),
            None,
            "",
        )
    except ModelForgeError as err:
        if err.code != "opset_too_old":
            raise
        # the same in-memory upgrade predict applies when onnxruntime lacks old kernels
        session, target = create_upgrading(ctx.model_bytes, ctx.model, cfg, folder=folder)
        why = err.message
    if target is not None:
        status, code = "warn", "opset_too_old"
        hint = (
            f"run 'modelforge convert MODEL --opset {target} -o new.onnx' to fix the file "
            "(predict upgrades in memory automatically)"
        )
        note = f"; {why}, but it runs after an in-memory upgrade to opset {target}"
    ctx.session = session
    used = [short_name(p) for p in session.providers_used]
    requested = [short_name(p) for p in session.plan.requested]
    ctx.extra["providers_used"] = used
    details = {"providers_requested": requested, "providers_used": used}
    missing = [r for r in requested if r not in used]
    if missing and opts.require_provider:
        return Check(
            "session", "fail", "provider_fallback",
            f"the session fell back from {', '.join(missing)} to {', '.join(used)}{note}",
            "the provider cannot run this model; drop --require-provider to accept the fallback",
            details,
        )  # fmt: skip
    if missing:
        status, code = "warn", code if code != "ok" else "provider_fallback"
        note += f"; requested {', '.join(missing)} is not used"
        hint = hint or "install the matching onnxruntime build, or pass --require-provider to fail"
    return Check(
        "session", status, code, f"session created; providers used: {', '.join(used)}{note}",
        hint, details,
    )  # fmt: skip


# ---- 8. smoke run -----------------------------------------------------------------------------


def check_smoke(ctx: Ctx) -> Check:
    import numpy as np

    from modelforge.engine.session import translate_error
    from modelforge.model.schema import extract_schema
    from modelforge.model.synth import (
        MAX_SYNTH_BYTES,
        dim_names,
        synthesize_inputs,
        with_synthesized_sizes,
    )

    schema = ctx.schema
    try:
        feeds = synthesize_inputs(schema, ctx.opts.dims, max_bytes=MAX_SYNTH_BYTES)
    except ModelForgeError as err:
        return Check("smoke", "skip", err.code, f"not run: {err.message}", err.hint)
    ctx.feeds = feeds
    start = time.perf_counter()
    try:
        outputs = ctx.session.inner.run(None, feeds)
    except Exception as exc:
        if isolate.is_allocation_failure(exc):
            raise
        failure = translate_error(exc, "running the model on synthesized inputs")
        raise with_synthesized_sizes(failure, schema, feeds, ctx.opts.dims) from None
    run_ms = (time.perf_counter() - start) * 1000
    ctx.outputs = outputs
    declared = extract_schema(ctx.model).outputs
    summary: list[dict[str, Any]] = []
    problems: list[str] = []
    non_finite: list[str] = []
    other_dims: list[str] = []  # a fixed declared dim the run did not produce
    for spec, value in zip(declared, outputs, strict=False):
        entry: dict[str, Any] = {"name": spec.name, "type": spec.type}
        if isinstance(value, np.ndarray):
            entry.update(shape=list(value.shape), dtype=str(value.dtype))
            if spec.is_tensor and spec.dtype is not None:
                want = np.dtype(object) if spec.dtype == "str" else np.dtype(spec.dtype)
                if value.dtype != want and not (spec.dtype == "str" and value.dtype.kind == "U"):
                    problems.append(
                        f"output '{safe(spec.name, 80)}' is {value.dtype}, declared {spec.dtype}"
                    )
            if spec.rank is not None and value.ndim != spec.rank:
                problems.append(
                    f"output '{safe(spec.name, 80)}' has rank {value.ndim}, declared {spec.rank}"
                )
            elif spec.shape is not None and any(
                isinstance(d, int) and d >= 0 and d != got
                for d, got in zip(spec.shape, value.shape, strict=False)
            ):
                other_dims.append(
                    f"output '{safe(spec.name, 80)}' is {list(value.shape)}, declared "
                    f"{spec.shape_str()}"
                )
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                non_finite.append(spec.name)
        else:
            entry["python_type"] = type(value).__name__
        summary.append(entry)
    details = {
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "outputs": summary,
        "run_ms": round(run_ms, 3),
    }
    if len(outputs) != len(declared):
        problems.insert(0, f"the run returned {len(outputs)} outputs, declared {len(declared)}")
    if problems:
        return Check(
            "smoke", "fail", "output_mismatch", "; ".join(problems[:3]),
            "the model's declared outputs disagree with what it computes; re-export it",
            details,
        )  # fmt: skip
    shapes = ", ".join(
        f"{safe(e['name'], 60)} {e.get('shape', e.get('python_type'))}" for e in summary[:8]
    )
    if other_dims:
        return Check(
            "smoke", "warn", "output_shape_mismatch",
            f"{'; '.join(other_dims[:3])}: the declared fixed dimension is not what the "
            "model computes",
            "clients that trust the declared shape (serve's /config, Triton tools) will "
            "misread the output; fix the output shapes when exporting", details,
        )  # fmt: skip
    unknown = sorted(set(ctx.opts.dims or {}) - dim_names(schema))
    if unknown:
        known = ", ".join(safe(n, 40) for n in sorted(dim_names(schema))[:8]) or "none"
        return Check(
            "smoke", "warn", "unknown_dim",
            f"ran in {run_ms:.1f} ms; outputs: {shapes}; but --dim "
            f"{', '.join(safe(n, 40) for n in unknown)} names no symbolic dimension of the "
            f"inputs (theirs: {known}), so it was not used",
            "check the spelling against 'modelforge inspect MODEL'", details,
        )  # fmt: skip
    if non_finite:
        return Check(
            "smoke", "warn", "nan_or_inf",
            f"output '{safe(non_finite[0], 80)}' contains NaN or Inf on synthesized inputs",
            "check the conversion (or pass --dim values that match real data)", details,
        )  # fmt: skip
    return Check("smoke", "pass", "ok", f"ran in {run_ms:.1f} ms; outputs: {shapes}", None, details)
