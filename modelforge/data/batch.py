"""The unit that flows from readers to the runner and on to writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ColumnBatch:
    """Rows ``start .. start+rows`` (0-based, over all inputs) of one source.

    ``columns``: column (or array) name -> numpy array, already coerced when the reader
    could do it (CSV); ``keep``: the ``--keep`` columns, name -> array, copied to the output.
    """

    source: str
    start: int
    rows: int
    columns: dict[str, np.ndarray]
    keep: dict[str, Any] = field(default_factory=dict)
    file_row: int = 0  # row number of the first row inside its own file (0-based)
    coerced: bool = False  # True when the reader applied the cast policy already
    bytes_read: int = 0  # progress: bytes of the source consumed so far


@dataclass
class Batch:
    """Feeds for one model run: input name -> array of exactly the model's dtype."""

    start: int
    rows: int
    feeds: dict[str, np.ndarray]
    keep: dict[str, Any] = field(default_factory=dict)
    bytes_read: int = 0
