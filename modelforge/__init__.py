"""ModelForge: a local store, validator, inspector and batch predictor for ONNX models.

The library is the product; the ``modelforge`` command is a thin layer over it. Heavy
dependencies (onnx, onnxruntime, pandas, polars, pyarrow) are imported only when used, so
``import modelforge`` stays cheap. Public names are resolved lazily from ``_API``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it ("module:attr" where the name differs)
_API: dict[str, str] = {
    "ModelForgeError": "modelforge.errors",
    "ExitCode": "modelforge.errors",
    "UsageError": "modelforge.errors",
    "ArgumentError": "modelforge.errors",
    "InvalidNameError": "modelforge.errors",
    "NotFoundError": "modelforge.errors",
    "ModelNotFoundError": "modelforge.errors",
    "InvalidModelError": "modelforge.errors",
    "UnsafeModelError": "modelforge.errors",
    "DataError": "modelforge.errors",
    "StoreError": "modelforge.errors",
    "StoreCorruptError": "modelforge.errors",
    "RuntimeFailure": "modelforge.errors",
    "ProviderUnavailableError": "modelforge.errors",
    "ResourceLimitError": "modelforge.errors",
    "CheckFailedError": "modelforge.errors",
    "OutputError": "modelforge.errors",
    "InternalError": "modelforge.errors",
    "Interrupted": "modelforge.errors",
    "ChildStartError": "modelforge.errors",
    "validate_model": "modelforge.api",
    "ValidateOptions": "modelforge.model.validate",
    "ValidationReport": "modelforge.model.validate",
    "inspect_model": "modelforge.api",
    "convert_model": "modelforge.api",
    "open_model": "modelforge.model.open",
    "OpenedModel": "modelforge.model.open",
    "open_stored": "modelforge.store.open",
    "synthesize_inputs": "modelforge.model.synth",
    "runtime_capabilities": "modelforge.model.capabilities",
    "predict": "modelforge.inference",
    "iter_predict": "modelforge.inference",
    "predict_to": "modelforge.inference",
    "explain_predict": "modelforge.inference",
    "PredictSummary": "modelforge.inference",
    "PredictOptions": "modelforge.inference",
    "PredictionBatch": "modelforge.inference",
    "predict_partitioned": "modelforge.cluster.run",
    "PartitionedSummary": "modelforge.cluster.run",
    "run_bench": "modelforge.bench",
    "BenchOptions": "modelforge.bench",
    "add_model": "modelforge.api",
    "list_models": "modelforge.store.catalog",
    "resolve_model": "modelforge.store.resolve",
    "ModelLocation": "modelforge.store.resolve",
    "Store": "modelforge.store.layout",
    "remove_model": "modelforge.store.ops:remove",
    "tag_model": "modelforge.store.ops:tag",
    "untag_model": "modelforge.store.ops:untag",
    "verify_store": "modelforge.store.ops:verify",
    "export_model": "modelforge.store.archive:export_version",
    "import_model": "modelforge.store.archive:import_archive",
    "serve_models": "modelforge.serve.server:serve",
    "create_app": "modelforge.serve.app",
    "ServeOptions": "modelforge.serve.options",
    "diff_models": "modelforge.diff.core",
    "DiffResult": "modelforge.diff.core",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'modelforge' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))


__all__ = ["__version__", *_API]
