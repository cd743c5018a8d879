"""Plan a partitioned predict on the client, from the inputs' Parquet footers only.

A part is a run of consecutive row groups of ONE input file, packed until the next row
group would take it past ``partition_rows`` (a row group larger than that is a part on its
own). Parts are numbered in input order, so concatenating ``part-000000.parquet``,
``part-000001.parquet``, ... gives the rows in the order of the inputs.

The plan's identity (model digest, options, inputs, partition size) is hashed: ``--resume``
continues only a run with the same hash, and says which component changed otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from modelforge.errors import DataError, NotFoundError, UsageError
from modelforge.text import safe

DEFAULT_PARTITION_ROWS = 1_000_000
MAX_PARTS = 999_999  # part-NNNNNN.parquet
PLAN_VERSION = 2  # 2: inputs' modification times are part of the identity


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    size: int
    rows: int
    row_groups: tuple[int, ...]  # rows per row group
    footer_sha256: str
    schema: str  # the Arrow schema, as text (the same for every input)
    mtime_ns: int = 0  # a rewrite that keeps the size and the footer still changes this

    def identity(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "rows": self.rows,
                "footer_sha256": self.footer_sha256, "mtime_ns": self.mtime_ns}  # fmt: skip


@dataclass(frozen=True)
class Part:
    index: int
    input: str  # absolute path of the input file
    row_groups: tuple[int, ...]  # consecutive row-group indices of that file
    rows: int
    first_row: int  # 0-based row of the part's first row over all inputs

    @property
    def name(self) -> str:
        return part_name(self.index)

    def describe(self) -> str:
        rg = self.row_groups
        groups = f"row group {rg[0]}" if len(rg) == 1 else f"row groups {rg[0]}-{rg[-1]}"
        return f"part {self.index} ('{safe(self.input)}', {groups})"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "file": self.name, "input": self.input,
                "row_groups": list(self.row_groups), "rows": self.rows,
                "first_row": self.first_row}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    inputs: list[InputFile]
    parts: list[Part]
    partition_rows: int
    identity: dict[str, Any] = field(default_factory=dict)  # see with_identity

    @property
    def total_rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def plan_hash(self) -> str:
        return plan_hash(self.identity)


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def plan_hash(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def footer_sha256(path: str, size: int) -> str:
    """sha256 of the Parquet footer (schema, row groups, column statistics and offsets):
    a rewrite of the file almost always changes it (the identity also holds the size and
    the modification time), and reading it costs one seek."""
    with open(path, "rb") as fh:
        if size < 12:
            raise DataError(
                f"'{safe(path)}' is too short to be Parquet ({size} bytes)",
                hint="check the file (an empty or truncated download?); partitioned output "
                "reads Parquet inputs",
                code="invalid_parquet",
            )
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise DataError(
                f"'{safe(path)}' is not a Parquet file (no PAR1 footer)",
                hint="partitioned output reads Parquet inputs; a truncated file (an "
                "interrupted copy) also lacks it",
                code="invalid_parquet",
            )
        length = int.from_bytes(tail[:4], "little")
        if length > size - 12:  # "PAR1" + footer + length + "PAR1"
            raise DataError(
                f"'{safe(path)}' is not a readable Parquet file: its footer claims "
                f"{length:,} bytes of a {size:,}-byte file",
                hint="the file is truncated or corrupt; write it again",
                code="invalid_parquet",
            )
        fh.seek(size - 8 - length)
        return hashlib.sha256(fh.read(length) + tail).hexdigest()


def read_input(path: str) -> InputFile:
    import pyarrow.parquet as pq

    full = os.path.abspath(path)
    try:
        st = os.stat(full)
    except FileNotFoundError:
        pattern = any(c in os.path.basename(path) for c in "*?[")
        raise NotFoundError(
            f"input file '{safe(path)}' does not exist"
            + (" (a pattern that matched no file: the shell passed it as it is)" if pattern
               else ""),
            hint="check the path" + (" and the pattern" if pattern else ""),
            code="input_not_found",
        ) from None  # fmt: skip
    if not os.path.isfile(full):
        what = "a directory" if os.path.isdir(full) else "not a regular file"
        raise DataError(
            f"input '{safe(path)}' is {what}",
            hint="pass the Parquet files themselves, e.g. 'data/*.parquet' (a folder is not "
            "read as a dataset)",
            code="input_not_file",
        )
    size = st.st_size
    try:
        footer = footer_sha256(full, size)
        meta = pq.ParquetFile(full).metadata
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(
            f"cannot read input '{safe(path)}': {safe(exc.strerror)}",
            hint="check its permissions",
            code="input_unreadable",
        ) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad footers
        raise DataError(
            f"'{safe(path)}' is not a readable Parquet file: {safe(str(exc), 120)}",
            hint="pass Parquet files only (partitioned output reads Parquet); check that the "
            "file is complete",
            code="invalid_parquet",
        ) from None
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    schema = schema_text(meta.schema.to_arrow_schema())
    return InputFile(full, size, meta.num_rows, groups, footer, schema, st.st_mtime_ns)


def schema_text(schema: Any) -> str:
    """The columns and types that must match across inputs: names, order and types, not
    metadata (pandas', a field's comment) nor a column's ``not null`` flag (one writer sets
    it, another not; the parts' columns are the same either way)."""
    import pyarrow as pa

    loose = pa.schema([pa.field(f.name, f.type) for f in schema])
    return str(loose.to_string(show_field_metadata=False, show_schema_metadata=False))


def check_format(paths: list[str], fmt: str | None) -> None:
    from modelforge.data.formats import STDIO, input_format

    if not paths:
        raise UsageError(
            "partitioned output needs input files (stdin cannot be split)",
            hint="pass Parquet files: modelforge predict MODEL data/*.parquet -o out/",
            code="partition_needs_files",
        )
    for p in paths:
        kind = "stdin" if p == STDIO else input_format(p, fmt)
        if kind != "parquet":
            raise UsageError(
                f"partitioned output reads Parquet inputs; '{safe(p)}' is {kind}",
                hint="convert it to Parquet, or write one file with -o FILE (no trailing /)",
                code="partition_needs_parquet",
            )


def pack(inputs: list[InputFile], partition_rows: int) -> list[Part]:
    if partition_rows < 1:
        raise UsageError(f"--partition-rows must be at least 1, not {partition_rows}",
                         hint="e.g. --partition-rows 1000000 (the default)",
                         code="invalid_option")  # fmt: skip
    parts: list[Part] = []
    row = 0
    for f in inputs:
        group: list[int] = []
        rows = 0
        for i, n in enumerate(f.row_groups):
            if n == 0:
                continue
            if group and rows + n > partition_rows:
                parts.append(Part(len(parts), f.path, tuple(group), rows, row))
                row += rows
                group, rows = [], 0
            group.append(i)
            rows += n
        if group:
            parts.append(Part(len(parts), f.path, tuple(group), rows, row))
            row += rows
    return parts


def schema_difference(first: str, other: str, limit: int = 3) -> str:
    """What differs between two Arrow schemas (as text): missing, extra and retyped columns,
    in column order, at most ``limit`` of each."""

    def columns(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in text.splitlines():
            if line and not line.startswith(" ") and ": " in line:  # top-level fields only
                name, _, kind = line.partition(": ")
                out[name] = kind
        return out

    a, b = columns(first), columns(other)
    notes: list[str] = []

    def note(what: str, items: list[str]) -> None:
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            notes.append(f"{what} {', '.join(items[:limit])}{more}")

    note(
        "column type changed:",
        [f"'{safe(n)}' {a[n]} -> {b[n]}" for n in a if n in b and a[n] != b[n]],
    )
    note("missing column(s):", [f"'{safe(n)}'" for n in a if n not in b])
    note("extra column(s):", [f"'{safe(n)}'" for n in b if n not in a])
    if not notes and list(a) != list(b):
        notes.append("the same columns in another order")
    return "; ".join(notes) or "nested field types differ"


def _warn_repeats(paths: list[str], full: list[str]) -> None:
    """One file given twice (``a.parquet ./a.parquet``) is predicted twice, as in local
    predict; say so, since it is rarely meant."""
    from modelforge.log import warn

    seen: dict[str, int] = {}
    for path in full:
        seen[path] = seen.get(path, 0) + 1
    for path, n in seen.items():
        if n > 1:
            given = paths[full.index(path)]
            warn(f"input '{safe(given)}' is given {n} times: its rows are predicted {n} times")


def make_plan(paths: list[str], partition_rows: int, fmt: str | None = None) -> Plan:
    """Read every footer; refuse inputs whose schema differs from the first, naming it."""
    check_format(paths, fmt)
    inputs = [read_input(p) for p in paths]
    _warn_repeats(paths, [f.path for f in inputs])
    first = inputs[0]
    for f, p in zip(inputs[1:], paths[1:], strict=True):
        if f.schema != first.schema:
            raise DataError(
                f"input '{safe(p)}' has a different schema from '{safe(paths[0])}': "
                f"{schema_difference(first.schema, f.schema)}",
                hint="all inputs of one partitioned run need the same columns and types",
                code="schema_mismatch",
            )
    parts = pack(inputs, partition_rows)
    if len(parts) > MAX_PARTS:  # part-1000000 would sort before part-999999 in a listing
        raise UsageError(
            f"{len(parts):,} parts is more than {MAX_PARTS:,} (--partition-rows "
            f"{partition_rows:,})",
            hint="raise --partition-rows (parts are numbered with 6 digits, so that a sorted "
            "listing is their order)",
            code="invalid_option",
        )
    if not parts:
        raise DataError(
            f"no rows to predict in {', '.join(safe(p) for p in paths)}",
            hint="pass data with at least one row",
            code="no_rows",
        )
    return Plan(inputs, parts, partition_rows)


def with_identity(plan: Plan, model_digest: str, options: dict[str, Any]) -> Plan:
    identity = {
        "plan_version": PLAN_VERSION,
        "model": model_digest,
        "options": options,
        "inputs": [f.identity() for f in plan.inputs],
        "partition_rows": plan.partition_rows,
    }
    return Plan(plan.inputs, plan.parts, plan.partition_rows, identity)


def _list_change(old: list[Any], new: list[Any]) -> str:
    gone = [p for p in old if p not in new]
    added = [p for p in new if p not in old]
    said = [f"{what} {', '.join(repr(safe(str(p))) for p in ps[:3])}"
            + (f" and {len(ps) - 3} more" if len(ps) > 3 else "")
            for what, ps in (("removed", gone), ("added", added)) if ps]  # fmt: skip
    if said:
        return "; ".join(said)
    if sorted(map(str, old)) == sorted(map(str, new)):
        return "the same files in another order"
    return "a file is given another number of times"


_INPUT_PARTS = (("size", "size"), ("rows", "rows"), ("footer_sha256", "Parquet footer"),
                ("mtime_ns", "modification time"))  # fmt: skip


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A short phrase naming what differs between two plan identities."""
    if old.get("plan_version") != new.get("plan_version"):
        return "the output was written by another ModelForge plan version"
    if old.get("model") != new.get("model"):
        return f"the model changed (sha256 {str(old.get('model'))[:12]} -> {new['model'][:12]})"
    if old.get("options") != new.get("options"):
        a, b = old.get("options") or {}, new["options"]
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        shown = [f"{k} ({safe(str(a.get(k)), 40)} -> {safe(str(b.get(k)), 40)})" for k in keys]
        return "options changed: " + ", ".join(shown)
    if old.get("partition_rows") != new.get("partition_rows"):
        return f"--partition-rows changed ({old.get('partition_rows')} -> {new['partition_rows']})"
    a_in, b_in = old.get("inputs") or [], new["inputs"]
    a_paths, b_paths = [i.get("path") for i in a_in], [i["path"] for i in b_in]
    if a_paths != b_paths:
        return "the list of inputs changed: " + _list_change(a_paths, b_paths)
    for a_i, b_i in zip(a_in, b_in, strict=False):
        if a_i != b_i:
            what = [w for k, w in _INPUT_PARTS if a_i.get(k) != b_i.get(k)]
            return (
                f"input '{safe(b_i['path'])}' changed since the first run "
                f"({', '.join(what) or 'identity'})"
            )
    return "the plan changed"
