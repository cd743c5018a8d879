"""The one options object for reading, mapping, casting and batching input data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modelforge.data.cast import CastPolicy, check_policy
from modelforge.errors import ArgumentError, UsageError, check_type

DEFAULT_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class PredictOptions:
    """How data is read, mapped, cast and batched: shared by ``predict``, ``iter_predict``,
    ``predict_to``, ``explain`` and the server/cluster fronts (each also takes these as
    keyword arguments). Validated once, when built."""

    fmt: str | None = None  # input format (default: from the extension; stdin: sniffed/CSV)
    maps: dict[str, list[str]] | None = None  # input name -> columns (--map)
    columns: list[str] | None = None  # ordered columns of the single 2-D input
    keep: list[str] | None = None  # columns copied to the output, never fed
    cast: CastPolicy = "safe"  # safe | strict | force
    allow_nan: bool = False
    encoding: str | None = None
    delimiter: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    outputs: list[str] | None = None  # model outputs to produce (default: all)
    data_json: str | None = None  # inline JSON instead of INPUT files (--data)
    whole: bool = False  # run once on the whole arrays (--whole), not in batches of rows

    def __post_init__(self) -> None:
        check_policy(self.cast)
        check_type(self.batch_size, int, "batch_size", "a whole number of rows (an int >= 1)")
        for name in ("encoding", "delimiter", "data_json", "fmt"):
            if getattr(self, name) is not None:
                check_type(getattr(self, name), str, name, "a str")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1", code="invalid_option")
        if self.fmt is not None:
            from modelforge.data.formats import normalize_format

            object.__setattr__(self, "fmt", normalize_format(self.fmt))
        object.__setattr__(self, "maps", dict(self.maps or {}))
        for name in ("keep", "columns", "outputs"):  # keep="id" is one column, not "i", "d"
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, [value])
            elif value is not None:
                check_type(value, (list, tuple), name, "a list of column or output names")
                for v in value:
                    check_type(v, str, f"{name} entries", "str names")
                object.__setattr__(self, name, list(value))
        object.__setattr__(self, "keep", list(self.keep or []))

    @property
    def keep_columns(self) -> list[str]:
        return list(self.keep or [])

    @classmethod
    def build(cls, options: PredictOptions | None, kw: dict[str, Any]) -> PredictOptions:
        """``options`` with the keyword arguments ``kw`` applied; unknown keys are a
        ArgumentError (a TypeError, as for any function)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in kw if k not in names]
        if unknown:
            raise ArgumentError(
                f"unexpected keyword argument(s): {', '.join(unknown)}",
                hint=f"the data options are: {', '.join(sorted(names))}",
            )
        if options is not None:
            check_type(options, cls, "options", "a PredictOptions")
        if options is not None and not kw:
            return options
        return dataclasses.replace(options or cls(), **kw)
