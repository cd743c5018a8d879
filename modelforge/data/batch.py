"""The units that flow from sources to the runner and on to writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ColumnBatch:
    """Rows ``start .. start+rows`` (0-based, over all inputs) of one source, as read.

    ``columns``: column (or array) name -> numpy array or polars text Series, not yet cast
    (casting happens in one place, :func:`modelforge.data.mapping.assemble`); a reader may
    already have parsed text as the dtype it was told the column feeds (CSV fast path).
    ``keep``: the ``--keep`` columns, split off by the plan.
    """

    source: str
    start: int
    rows: int
    columns: dict[str, Any]
    keep: dict[str, Any] = field(default_factory=dict)
    file_row: int = 0  # row number of the first row inside its own file (0-based)
    bytes_read: int = 0  # progress: bytes of the source consumed so far
    line_of: Any = None  # row -> 1-based physical line (CSV), for messages
    finite: frozenset[str] = frozenset()  # columns the reader already saw are all finite
    frame: Any = None  # the polars DataFrame the ``finite`` columns came from (CSV fast path)


@dataclass
class Batch:
    """Feeds for one model run: input name -> array of exactly the model's dtype."""

    start: int
    rows: int
    feeds: dict[str, np.ndarray]
    keep: dict[str, Any] = field(default_factory=dict)
    bytes_read: int = 0


@dataclass
class OutputValue:
    """One model output for one run.

    ``value``: a numpy array (a tensor; a ZipMap list of dicts becomes [N, K] with ``keys``),
    a list of arrays (a sequence output), a dict (a map output) or None (an empty optional).
    """

    name: str
    value: Any
    keys: list[Any] | None = None

    @property
    def kind(self) -> str:
        import numpy as np

        if isinstance(self.value, np.ndarray):
            return "tensor"
        if isinstance(self.value, list):
            return "sequence"
        if isinstance(self.value, dict):
            return "map"
        return "none"

    @property
    def array(self) -> np.ndarray:
        """The tensor (per-row writers only see tensors)."""
        assert self.kind == "tensor", self.kind
        return self.value  # type: ignore[no-any-return]

    def per_row(self, rows: int) -> bool:
        """One entry per input row: a tensor whose first dimension is ``rows``."""
        return self.kind == "tensor" and self.value.ndim >= 1 and self.value.shape[0] == rows

    def shape_text(self) -> str:
        if self.kind == "tensor":
            return str(list(self.value.shape))
        if self.kind == "sequence":
            return f"a sequence of {len(self.value)} tensors"
        return "a map" if self.kind == "map" else "empty (optional)"
