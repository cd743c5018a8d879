"""Checks 2-9 of validate, run inside the guarded child process.

Each check is a function of a shared :class:`_Ctx`; before a check starts the child sends
``{"stage": name}`` and when it ends ``{"check": {...}}`` to the parent, so a crash keeps
everything reported so far. Nothing here prints (stdout/stderr are /dev/null in the child).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.engine import sandbox
from modelforge.errors import ModelForgeError
from modelforge.model.checks.graph import structure_problems, walk_graphs
from modelforge.model.validate import PREREQUISITES, Check, ValidateOptions
from modelforge.text import escape, safe, truncate

if TYPE_CHECKING:
    from onnx import ModelProto

UPGRADE_TARGET_OPSET = 17


@dataclass
class _Ctx:
    path: str
    opts: ValidateOptions
    results: dict[str, Check] = field(default_factory=dict)
    model: Any = None
    has_external: bool = False
    schema: Any = None
    session: Any = None
    feeds: dict[str, Any] | None = None
    outputs: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip() or type(exc).__name__
    return truncate(escape(" ".join(text.split())), limit)


def _opsets(model: ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


# ---- 2. parse ---------------------------------------------------------------------------------


def check_parse(ctx: _Ctx) -> Check:
    from modelforge.model.files import read_capped
    from modelforge.model.load import parse_model_bytes

    model = parse_model_bytes(read_capped(ctx.path), ctx.path)
    counts = Counter((o.domain or "ai.onnx") for o in model.opset_import)
    info = {
        "ir_version": int(model.ir_version),
        "opset_import": _opsets(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    ctx.extra["model_info"] = info
    dup = [d for d, n in counts.items() if n > 1]
    if dup:
        return Check(
            "parse", "fail", "duplicate_opset_import",
            f"domain '{safe(dup[0], 80)}' is imported {counts[dup[0]]} times in opset_import",
            "each domain may appear once in opset_import; re-export the model", info,
        )  # fmt: skip
    if not model.opset_import:
        return Check(
            "parse", "fail", "no_opset_import", "the model imports no opset at all",
            "re-export the model; every model needs an ai.onnx opset import", info,
        )  # fmt: skip
    ctx.model = model
    opsets = ", ".join(f"{safe(d, 60)} {v}" for d, v in info["opset_import"].items())
    return Check("parse", "pass", "ok", f"ONNX IR {model.ir_version}; opsets {opsets}", None, info)


# ---- 3. external data -------------------------------------------------------------------------


def check_external(ctx: _Ctx) -> Check:
    from modelforge.model.external import check_external_data

    files = check_external_data(
        ctx.model, Path(ctx.path).parent, allow_hardlinks=ctx.opts.trusted
    )
    ctx.has_external = bool(files)
    details = {"files": [f.to_dict() for f in files]}
    if not files:
        return Check("external_data", "pass", "ok", "no external data", None, details)
    total = sum(f.size for f in files)
    return Check(
        "external_data", "pass", "ok",
        f"{len(files)} external data file(s), {total} bytes, all inside the model's folder",
        None, details,
    )  # fmt: skip


# ---- 4. structure -----------------------------------------------------------------------------


def check_structure(ctx: _Ctx) -> Check:
    import onnx

    problem, details = structure_problems(
        ctx.model, max_nodes=ctx.opts.max_nodes, max_depth=ctx.opts.max_depth
    )
    if problem is not None:
        return Check("structure", "fail", problem.code, problem.message, problem.hint, details)
    try:
        # with external data, let onnx see the files (already checked) through the path
        onnx.checker.check_model(ctx.path if ctx.has_external else ctx.model)
    except onnx.checker.ValidationError as exc:
        return Check(
            "structure", "fail", "checker_failed", f"onnx.checker: {_one_line(exc)}",
            "the converter produced an invalid model; re-export it (or upgrade the converter)",
            details,
        )  # fmt: skip
    return Check(
        "structure", "pass", "ok",
        f"{details['nodes']} nodes, nesting depth {details['max_nesting']}; onnx.checker passed",
        None, details,
    )  # fmt: skip


# ---- 5. shapes --------------------------------------------------------------------------------


def check_shapes(ctx: _Ctx) -> Check:
    import onnx

    from modelforge.model.schema import spec_from_value_info

    try:
        inferred = onnx.shape_inference.infer_shapes(
            ctx.model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        return Check(
            "shapes", "fail", "shape_inference_failed", f"shape inference: {_one_line(exc)}",
            "types or shapes disagree inside the graph; re-export the model", {},
        )  # fmt: skip
    outs = [spec_from_value_info(vi) for vi in inferred.graph.output]
    ctx.extra["inferred_outputs"] = [o.to_dict() for o in outs]
    text = "; ".join(f"{safe(o.name, 60)}: {o.type} {o.shape_str()}" for o in outs[:8])
    unknown = [o.name for o in outs if o.is_tensor and o.shape is None]
    details = {"outputs": ctx.extra["inferred_outputs"]}
    if unknown:
        return Check(
            "shapes", "warn", "output_rank_unknown",
            f"the rank of output '{safe(unknown[0], 80)}' cannot be inferred ({text})",
            "consumers cannot check shapes; declare output shapes when exporting", details,
        )  # fmt: skip
    return Check("shapes", "pass", "ok", f"inferred outputs: {text}", None, details)


# ---- 6. runtime compatibility -----------------------------------------------------------------


def _custom_ops(model: ModelProto, known: set[str]) -> dict[str, Counter[str]]:
    local = {fn.domain for fn in model.functions}
    found: dict[str, Counter[str]] = {}
    for graph, _d, _o, _l in walk_graphs(model):
        for node in graph.node:
            dom = node.domain or ""
            if dom in ("", "ai.onnx") or dom in known or dom in local:
                continue
            found.setdefault(dom, Counter())[node.op_type] += 1
    return found


def check_runtime(ctx: _Ctx) -> Check:
    from modelforge.model.capabilities import canonical_domain, runtime_capabilities

    caps = runtime_capabilities()
    model = ctx.model
    details: dict[str, Any] = {"onnxruntime": caps.to_dict()}
    ort_v = caps.onnxruntime_version
    if model.ir_version > caps.max_ir_version:
        return Check(
            "runtime_compat", "fail", "ir_too_new",
            f"the model's IR version {model.ir_version} is newer than onnxruntime {ort_v} "
            f"supports (max {caps.max_ir_version})",
            "upgrade onnxruntime (pip install -U onnxruntime) or re-export with an older onnx",
            details,
        )  # fmt: skip
    for op in model.opset_import:
        limit = caps.opset_limit(op.domain)
        if limit is not None and op.version > limit:
            name = op.domain or "ai.onnx"
            return Check(
                "runtime_compat", "fail", "opset_too_new",
                f"the model imports {safe(name, 60)} opset {op.version}; onnxruntime {ort_v} "
                f"supports up to {limit}",
                f"run 'modelforge convert MODEL --opset {limit} -o new.onnx' or upgrade "
                "onnxruntime",
                details,
            )  # fmt: skip
    known = {canonical_domain(d) for d in caps.max_opset}
    custom = _custom_ops(model, known)
    if custom:
        listing = "; ".join(
            f"{safe(dom, 60)}: " + ", ".join(f"{safe(op, 60)} ({n})" for op, n in ops.items())
            for dom, ops in custom.items()
        )
        details["custom_ops"] = {dom: dict(ops) for dom, ops in custom.items()}
        if ctx.opts.custom_ops:
            return Check(
                "runtime_compat", "warn", "custom_ops_loaded",
                f"ops from custom domains need the custom-op library you passed: {listing}",
                "loading a custom-op library runs its code; use only libraries you trust",
                details,
            )  # fmt: skip
        return Check(
            "runtime_compat", "fail", "custom_ops_required",
            f"ops from custom domains need a custom-op library: {listing}",
            "pass the library that implements them with --custom-ops PATH (it runs code: "
            "only a library you trust)",
            details,
        )  # fmt: skip
    return Check(
        "runtime_compat", "pass", "ok",
        f"IR {model.ir_version} and all opsets are within onnxruntime {ort_v}'s limits "
        f"(IR <= {caps.max_ir_version}, ai.onnx <= {caps.opset_limit('')})",
        None, details,
    )  # fmt: skip


# ---- 7. session -------------------------------------------------------------------------------


def _upgraded_session(ctx: _Ctx, cfg: Any) -> tuple[Any, int]:
    from modelforge.engine.session import create_session
    from modelforge.model.convert import convert_opset

    upgraded = convert_opset(ctx.model, UPGRADE_TARGET_OPSET)
    data = upgraded.SerializeToString()
    base = Path(ctx.path).parent if ctx.has_external else None
    return create_session(data, cfg, external_data_dir=base), UPGRADE_TARGET_OPSET


def check_session(ctx: _Ctx) -> Check:
    from modelforge.engine.providers import short_name
    from modelforge.engine.session import SessionConfig, create_session

    opts = ctx.opts
    cfg = SessionConfig(
        providers=opts.providers,
        provider_options=dict(opts.provider_options),
        fallback=not opts.require_provider,
        custom_ops=tuple(opts.custom_ops),
    )
    status, code, note, hint = "pass", "ok", "", None
    try:
        session = create_session(ctx.path, cfg)
    except ModelForgeError as err:
        if err.code != "opset_too_old":
            raise
        try:
            session, target = _upgraded_session(ctx, cfg)
        except Exception:
            raise err from None
        status, code = "warn", "opset_too_old"
        hint = (
            f"run 'modelforge convert MODEL --opset {target} -o new.onnx' to fix the file "
            "(predict upgrades in memory automatically)"
        )
        note = f"; {err.message}, but works after an in-memory upgrade to opset {target}"
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


def check_smoke(ctx: _Ctx) -> Check:
    import numpy as np

    from modelforge.engine.session import translate_error
    from modelforge.model.schema import extract_schema
    from modelforge.model.synth import synthesize_inputs

    schema = ctx.schema
    try:
        feeds = synthesize_inputs(schema, ctx.opts.dims)
    except ModelForgeError as err:
        return Check("smoke", "skip", err.code, f"not run: {err.message}", err.hint)
    ctx.feeds = feeds
    start = time.perf_counter()
    try:
        outputs = ctx.session.inner.run(None, feeds)
    except Exception as exc:
        if sandbox.is_allocation_failure(exc):
            raise
        raise translate_error(exc, "running the model on synthesized inputs") from None
    run_ms = (time.perf_counter() - start) * 1000
    ctx.outputs = outputs
    declared = extract_schema(ctx.model).outputs
    summary: list[dict[str, Any]] = []
    problems: list[str] = []
    non_finite: list[str] = []
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
    if non_finite:
        return Check(
            "smoke", "warn", "nan_or_inf",
            f"output '{safe(non_finite[0], 80)}' contains NaN or Inf on synthesized inputs",
            "check the conversion (or pass --dim values that match real data)", details,
        )  # fmt: skip
    return Check(
        "smoke", "pass", "ok", f"ran in {run_ms:.1f} ms; outputs: {shapes}", None, details
    )


# ---- driver -----------------------------------------------------------------------------------


def _parity(ctx: _Ctx) -> Check:
    from modelforge.model.checks.parity import check_parity

    return check_parity(ctx)


CHECKS = {
    "parse": check_parse,
    "external_data": check_external,
    "structure": check_structure,
    "shapes": check_shapes,
    "runtime_compat": check_runtime,
    "session": check_session,
    "smoke": check_smoke,
    "parity": _parity,
}


def _run_one(name: str, ctx: _Ctx) -> Check:
    try:
        return CHECKS[name](ctx)
    except ModelForgeError as err:
        return Check(name, "fail", err.code, err.message, err.hint, dict(err.details))
    except RecursionError:
        return Check(
            name, "fail", "nesting_too_deep", "the model is nested too deeply to check",
            "the file is malformed or hostile",
        )  # fmt: skip
    except Exception as exc:
        if sandbox.is_allocation_failure(exc):
            return Check(
                name, "fail", "memory_limit", f"ran out of memory: {_one_line(exc, 200)}",
                "raise --memory-limit for a legitimately large model",
            )  # fmt: skip
        return Check(
            name, "fail", "check_error", f"{type(exc).__name__}: {_one_line(exc)}",
            "onnx/onnxruntime could not process the model; if it is valid, report this",
        )  # fmt: skip


def run_checks(path: str, opts: ValidateOptions, wanted: list[str]) -> dict[str, Any]:
    """Entry point in the guarded child: run checks 2.. in order, streaming each result."""
    from modelforge.model.schema import extract_schema

    ctx = _Ctx(path=path, opts=opts)
    ctx.results["file"] = Check("file", "pass", "ok", "")
    for name in wanted:
        if name == "file":
            continue
        if name == "parity" and not (opts.reference or opts.inputs):
            continue
        prereq = PREREQUISITES[name]
        if any(ctx.results.get(p) is None or ctx.results[p].status in ("fail", "skip")
               for p in prereq):  # fmt: skip
            continue
        sandbox.progress({"stage": name})
        check = _run_one(name, ctx)
        ctx.results[name] = check
        if name == "parse" and ctx.model is not None:
            ctx.schema = extract_schema(ctx.model)
            ctx.extra["schema"] = ctx.schema.to_dict()
        sandbox.progress({"check": check.to_dict()})
    return ctx.extra
