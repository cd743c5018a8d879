"""Checks 2-6 of validate (parse, external data, structure, shapes, runtime compatibility),
run in the guarded child process; none of them creates an onnxruntime session for the model.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.model.checks.context import Check, Ctx, one_line, opsets
from modelforge.model.checks.graph import structure_problems, walk_graphs
from modelforge.model.opset import format_opsets
from modelforge.text import safe

if TYPE_CHECKING:
    from onnx import ModelProto


# ---- 2. parse ---------------------------------------------------------------------------------


def duplicate_opsets(model: ModelProto) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Domains imported more than once: (same version repeated, conflicting versions).

    skl2onnx 1.20 writes the default-domain import twice with the same version for every
    regressor; onnx.checker and onnxruntime accept that, so it is only worth a warning.
    """
    seen: dict[str, list[int]] = {}
    for o in model.opset_import:
        seen.setdefault(canonical(o.domain), []).append(int(o.version))
    repeated = {d: v for d, v in seen.items() if len(v) > 1}
    conflicting = {d: v for d, v in repeated.items() if len(set(v)) > 1}
    same = {d: v for d, v in repeated.items() if d not in conflicting}
    return same, conflicting


def canonical(domain: str) -> str:
    return "ai.onnx" if domain in ("", "ai.onnx") else domain


def check_parse(ctx: Ctx) -> Check:
    from modelforge.model.open import open_model

    opened = open_model(
        ctx.path,
        trusted=ctx.opts.trusted,
        expected_sha256=ctx.expected_sha256,
        auto_parse=False,
    )
    model = opened.parse_unchecked()
    info: dict[str, Any] = {
        "ir_version": int(model.ir_version),
        "opset_import": opsets(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    ctx.extra["model_info"] = info
    same, conflicting = duplicate_opsets(model)
    if conflicting:
        dom, versions = next(iter(conflicting.items()))
        return Check(
            "parse", "fail", "duplicate_opset_import",
            f"domain '{safe(dom, 80)}' is imported with conflicting versions "
            f"{', '.join(map(str, versions))} in opset_import",
            "each domain may have one opset version; re-export the model", info,
        )  # fmt: skip
    if not model.opset_import:
        return Check(
            "parse", "fail", "no_opset_import", "the model imports no opset at all",
            "re-export the model; every model needs an ai.onnx opset import", info,
        )  # fmt: skip
    from modelforge.model.schema import extract_schema

    ctx.schema = extract_schema(model)
    ctx.extra["schema"] = ctx.schema.to_dict()
    ctx.model = model
    ctx.model_bytes = opened.data
    listed = format_opsets(info["opset_import"])
    if same:
        dom, versions = next(iter(same.items()))
        info["duplicate_opset_import"] = same
        return Check(
            "parse", "warn", "repeated_opset_import",
            f"ONNX IR {model.ir_version}; opsets {listed}; domain '{safe(dom, 80)}' is "
            f"imported {len(versions)} times with the same version {versions[0]} "
            "(onnx and onnxruntime accept this; skl2onnx 1.20 writes it)",
            "harmless; to clean the file, keep one entry per domain in model.opset_import",
            info,
        )  # fmt: skip
    return Check("parse", "pass", "ok", f"ONNX IR {model.ir_version}; opsets {listed}", None, info)


# ---- 3. external data -------------------------------------------------------------------------


def check_external(ctx: Ctx) -> Check:
    from modelforge.model.external import check_external_data

    files = check_external_data(
        ctx.model, Path(ctx.path).parent, allow_hardlinks=ctx.opts.trusted, model_path=ctx.path
    )
    ctx.has_external = bool(files)
    ctx.external_files = files
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


def _without_external_data(model: ModelProto) -> ModelProto:
    """A copy for onnx.checker in which external tensors are empty placeholders.

    The external references were already checked, more strictly, by check 3; onnx's own
    check would open the files (relative to the working directory for an in-memory model)
    and refuses the store's hard-linked blobs.
    """
    import onnx

    from modelforge.model.external import iter_tensors

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for t in iter_tensors(copy):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
            del t.dims[:]
            t.dims.append(0)
    return copy


def check_structure(ctx: Ctx) -> Check:
    import onnx

    problem, details = structure_problems(
        ctx.model, max_nodes=ctx.opts.max_nodes, max_depth=ctx.opts.max_depth
    )
    if problem is not None:
        return Check("structure", "fail", problem.code, problem.message, problem.hint, details)
    if ctx.model.ir_version > onnx.IR_VERSION:
        return Check(
            "structure", "fail", "ir_too_new",
            f"the model's IR version {ctx.model.ir_version} is newer than onnx "
            f"{onnx.__version__} can check (max {onnx.IR_VERSION})",
            "upgrade onnx and onnxruntime (pip install -U onnx onnxruntime), or re-export "
            "the model with the older onnx that this environment has",
            details,
        )  # fmt: skip
    try:
        onnx.checker.check_model(
            _without_external_data(ctx.model) if ctx.has_external else ctx.model
        )
    except onnx.checker.ValidationError as exc:
        return Check(
            "structure", "fail", "checker_failed", f"onnx.checker: {one_line(exc)}",
            "the converter produced an invalid model; re-export it (or upgrade the converter)",
            details,
        )  # fmt: skip
    return Check(
        "structure", "pass", "ok",
        f"{details['nodes']} nodes, nesting depth {details['max_nesting']}; onnx.checker passed",
        None, details,
    )  # fmt: skip


# ---- 5. shapes --------------------------------------------------------------------------------


_INVENTED = re.compile(r"unk__\d+")


def _forget_invented_dims(model: Any, inferred: Any) -> None:
    """Shape inference names the dims it cannot tell ``unk__0``, ``unk__1``...; shown as
    they are, ``output_label [unk__4]`` reads like a dimension of the model. A name the
    model does not use itself is shown as an unknown dim (``?``) instead."""
    declared = {
        d.dim_param
        for vi in [*model.graph.input, *model.graph.output]
        if vi.type.HasField("tensor_type")
        for d in vi.type.tensor_type.shape.dim
    }
    for vi in inferred.graph.output:
        if not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if _INVENTED.fullmatch(d.dim_param) and d.dim_param not in declared:
                d.ClearField("dim_param")


def check_shapes(ctx: Ctx) -> Check:
    import onnx

    from modelforge.model.schema import spec_from_value_info

    try:
        inferred = onnx.shape_inference.infer_shapes(
            ctx.model, check_type=True, strict_mode=True, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        return Check(
            "shapes", "fail", "shape_inference_failed", f"shape inference: {one_line(exc)}",
            "types or shapes disagree inside the graph; re-export the model", {},
        )  # fmt: skip
    _forget_invented_dims(ctx.model, inferred)
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


def check_runtime(ctx: Ctx) -> Check:
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
            if canonical_domain(op.domain) == "":
                hint = (
                    f"upgrade onnxruntime, or try 'modelforge convert MODEL --opset {limit} "
                    "-o new.onnx'"
                )
            else:
                hint = f"upgrade onnxruntime, or re-export targeting {name} opset {limit} or lower"
            return Check(
                "runtime_compat", "fail", "opset_too_new",
                f"the model imports {safe(name, 60)} opset {op.version}; onnxruntime {ort_v} "
                f"supports up to {limit}",
                hint, details,
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
