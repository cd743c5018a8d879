"""A ModelForge function for Spark's ``DataFrame.mapInArrow`` (Spark >= 3.3).

    from modelforge.cluster.spark import arrow_predictor

    fn = arrow_predictor("churn:prod", keep=["id"], columns=[...])
    scores = df.mapInArrow(fn, fn.spark_schema(df.limit(1).toArrow()))   # or a DDL string

The model is resolved and read once, on the driver (its sha256 pins the version); its bytes
travel inside the pickled function. Each Python worker process builds one onnxruntime
session, cached in :mod:`modelforge.cluster.worker`. Output columns are those of
``modelforge predict -o file.parquet``. Spark itself is not a ModelForge dependency and this
hook is tested on Arrow batches (the ``mapInArrow`` contract), not inside Spark; Spark's own
task retries and output commit apply (no ``_SUCCESS`` manifest of ours).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from modelforge.cluster.part import (
    ModelSpec,
    job_options,
    predict_record_batches,
    resolve,
)


class ArrowPredictor:
    """Picklable callable: ``Iterator[pyarrow.RecordBatch] -> Iterator[RecordBatch]``."""

    def __init__(self, spec: ModelSpec, blob: bytes, options: Any, session: Any,
                 no_upgrade: bool) -> None:  # fmt: skip
        self.spec, self.blob = spec, blob
        self.options, self.session, self.no_upgrade = options, session, no_upgrade

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        return predict_record_batches(self.spec, self.blob, self.options, self.session,
                                      self.no_upgrade, batches)  # fmt: skip

    def arrow_schema(self, sample: Any) -> Any:
        """The output schema, from a sample (a pyarrow Table or RecordBatch with ≥ 1 row)."""
        if type(sample).__module__.split(".")[0] != "pyarrow":
            from modelforge.errors import ArgumentError

            raise ArgumentError(
                f"sample must be a pyarrow Table or RecordBatch, got {type(sample).__name__}",
                hint="pass df.limit(1).toArrow() (Spark), polars_df.to_arrow() or "
                "pyarrow.Table.from_pandas(pandas_df)",
            )
        batches = sample.to_batches() if hasattr(sample, "to_batches") else [sample]
        first = next(iter(self(iter(b for b in batches if b.num_rows))), None)
        if first is None:
            from modelforge.errors import UsageError

            raise UsageError(
                "arrow_schema needs a sample with at least one row (the output schema comes "
                "from predicting it)",
                hint="pass df.limit(1).toArrow() of a DataFrame that has rows, or give "
                "mapInArrow the schema as a DDL string",
                code="invalid_option",
            )
        return first.schema

    def spark_schema(self, sample: Any) -> Any:
        """:meth:`arrow_schema` as a Spark StructType (needs pyspark)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self.arrow_schema(sample))


def arrow_predictor(model: str | os.PathLike[str], options: Any = None, *,
                    session_config: Any = None, no_upgrade: bool = False,
                    **kw: Any) -> ArrowPredictor:  # fmt: skip
    """A function for ``df.mapInArrow``; ``options``/``kw`` as for ``modelforge.predict_to``
    (``columns=``, ``maps=``, ``keep=``, ``cast=``, ``batch_size=``, ``outputs=`` ...)."""
    opts, cfg = job_options(options, kw, session_config)
    spec, lm = resolve(model)
    if not spec.inline:
        from modelforge.errors import UsageError

        raise UsageError(
            "arrow_predictor ships the model inside the function: models with external data "
            "or over the inline limit are not supported",
            hint="pack the model into one file (modelforge convert), or raise "
            "MODELFORGE_CLUSTER_INLINE_MB",
            code="invalid_option",
        )
    return ArrowPredictor(spec, lm.data, opts, cfg, no_upgrade)
