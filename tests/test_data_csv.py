"""CSV/TSV reader: streaming blocks, record boundaries, hostile input, float round trip."""

from __future__ import annotations

import io
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelforge.data.csv_reader import CsvReader
from modelforge.errors import DataError, UsageError


def read(data: bytes, targets=None, keep=(), *, policy="safe", allow_nan=False, **kw):
    """Read through the CSV reader, then cast in the one place every format is cast."""
    from modelforge.data.cast import cast_column

    r = CsvReader(io.BytesIO(data), "t.csv", **kw)
    targets = targets if targets is not None else {c: "float32" for c in r.columns}
    wanted = list(dict.fromkeys([*targets, *keep]))
    batches, parts = [], {c: [] for c in targets}
    for b in r.batches(wanted, targets):
        b.keep = {c: b.columns.pop(c) for c in keep}
        for c, dtype in targets.items():

            def where(row, col, b=b, c=c):
                return f"input '{b.source}' line {b.line_of(row)}, column '{c}'"

            parts[c].append(
                cast_column(
                    b.columns[c],
                    dtype,
                    policy=policy,
                    allow_nan=allow_nan,
                    where=where,
                    what=f"column '{c}'",
                )  # fmt: skip
            )
        batches.append(b)
    cols = {c: np.concatenate(v) for c, v in parts.items()}
    return r, batches, cols


def err(data: bytes, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        read(data, **kw)
    return info.value


def test_basic_and_bom_and_crlf():
    r, _, cols = read(b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4.5\r\n")
    assert r.columns == ["a", "b"]
    assert cols["b"].dtype == np.float32
    assert cols["b"].tolist() == [2.0, 4.5]


def test_blocks_split_inside_quoted_newlines():
    rows = [f'{i},"line one\nline {i}, with comma",{i * 0.5}' for i in range(500)]
    data = ("id,text,v\n" + "\n".join(rows) + "\n").encode()
    r, batches, cols = read(data, {"id": "int64", "v": "float32"}, keep=["text"], block_size=256)
    assert len(batches) > 5
    assert cols["id"].tolist() == list(range(500))
    texts = pl.concat([b.keep["text"] for b in batches]).to_list()
    assert texts[7] == "line one\nline 7, with comma"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=50)
)
def test_float32_round_trip_through_writer(values):
    from modelforge.data.writers import OutputValue, open_writer

    arr = np.array(values, dtype=np.float32)
    buf = io.BytesIO()
    w = open_writer(None, "csv", stdout=buf)
    w.write({}, [OutputValue("y", arr)], len(arr))
    w.close()
    _, _, cols = read(buf.getvalue())
    assert cols["y"].tobytes() == arr.tobytes() or np.array_equal(cols["y"], arr)
    assert np.array_equal(cols["y"].view(np.uint32) & 0x7FFFFFFF, arr.view(np.uint32) & 0x7FFFFFFF)


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty_input", "empty"),
        (b"   \n\n", "empty_input", "empty"),
        (b"a,b\n", "no_rows", "no data rows"),
        (b"a,a\n1,2\n", "duplicate_column", "duplicate column name 'a'"),
        (b"a,b\n1,2\n3\n", "ragged_row", "line 3 has 1 fields"),
        (b"a,b\n1,2\n3,4,5\n", "ragged_row", "line 3 has 3 fields"),
        (b"a,b\n1,2\n\n3,4\n", "ragged_row", "line 3 is blank"),
        (b'a,b\n1,"2\n3,4\n', "unbalanced_quote", "unbalanced double quote"),
        (b"a,b\n1,2\n3,abc\n", "non_numeric", "line 3, column 'b'"),
        (b"a,b\n1,2\n3,\n", "nan_value", "line 3, column 'b': the cell is empty"),
        (b"a,b\n1,NaN\n", "nan_value", "line 2, column 'b'"),
        (
            b"a,b\n1,2\n1,#N/A\n",
            "nan_value",
            "missing value at input 't.csv' line 3, column 'b': '#N/A' means a missing value",
        ),
        (b"a,b\n1,1e39\n", "out_of_range", "beyond float32 range"),
        (b"a,b\n1,-1e39\n", "out_of_range", "line 2, column 'b'"),
        (b"a,b\n1,2\n\xe9,3\n", "encoding_error", "offset 8 (line 3)"),
        (b"a,\x00b\n1,2\n", "binary_input", "NUL"),
    ],
)
def test_hostile_csv(data, code, words):
    e = err(data)
    assert e.code == code
    assert words in str(e)


def test_latin1_hint_and_encoding_option():
    data = "name,v\ncafé,1\n".encode("latin-1")
    e = err(data, targets={"v": "float32"}, keep=["name"])
    assert "--encoding latin-1" in str(e)
    _, batches, cols = read(data, {"v": "float32"}, keep=["name"], encoding="latin-1")
    assert batches[0].keep["name"].to_list() == ["café"]


def test_unknown_encoding_is_usage_error():
    with pytest.raises(UsageError):
        CsvReader(io.BytesIO(b"a\n1\n"), "t.csv", encoding="no-such-codec")


def test_allow_nan_passes_empty_and_nan_but_not_overflow():
    _, _, cols = read(b"a,b\n1,\n2,nan\n3,inf\n4,NA\n", allow_nan=True)
    assert np.isnan(cols["b"][[0, 1, 3]]).all() and np.isinf(cols["b"][2])
    assert err(b"a,b\n1,1e39\n", allow_nan=True).code == "out_of_range"
    assert err(b"a,b\n1,2\n3\n", allow_nan=True).code == "ragged_row"


def test_whitespace_and_int_columns_under_policies():
    data = b"a,b\n 1 ,2.0\n3,4\n"
    _, _, cols = read(data, {"a": "float32", "b": "int64"})
    assert cols["a"].tolist() == [1.0, 3.0] and cols["b"].tolist() == [2, 4]
    assert err(data, targets={"b": "int64"}, policy="strict").code == "dtype_mismatch"
    assert err(b"a\n2.5\n", targets={"a": "int64"}).code == "lossy_cast"
    _, _, forced = read(b"a\n2.5\n", {"a": "int64"}, policy="force")
    assert forced["a"].tolist() == [2]


def test_huge_single_line_refused_quickly():
    line = b",".join([b"1"] * 3_000_000)  # ~6 MB, 3 million fields
    t0 = time.perf_counter()
    e = err(line + b"\n1\n")
    assert e.code in ("too_many_columns", "line_too_long")
    data_line = b"a,b\n" + line + b"\n"
    e2 = err(data_line)
    assert e2.code == "ragged_row"
    assert time.perf_counter() - t0 < 5


def test_semicolon_file_gets_delimiter_hint():
    from modelforge.data.mapping import resolve_tabular
    from modelforge.model.schema import ModelSchema, TensorSpec

    r = CsvReader(io.BytesIO(b"a;b;c;d\n1;2;3;4\n"), "t.csv")
    schema = ModelSchema([TensorSpec("x", "tensor(float)", "float32", ["N", 4])], [])
    with pytest.raises(DataError) as info:
        resolve_tabular(schema, r.columns)
    assert "--delimiter ';'" in str(info.value)
    r2 = CsvReader(io.BytesIO(b"a;b;c;d\n1;2;3;4\n"), "t.csv", delimiter=";")
    assert r2.columns == ["a", "b", "c", "d"]


def test_tsv_and_empty_header_names():
    r, _, cols = read(b",x\tq\n1,2\n", fmt="csv")
    assert r.columns == ["column_1", "x\tq"]
    r2, _, cols2 = read(b"a\tb\n1\t2\n", fmt="tsv")
    assert cols2["b"].tolist() == [2.0]


@pytest.mark.parametrize("regular", [True, False])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_line_numbers_stay_right_after_many_clean_blocks(regular, eol):
    """Clean blocks are not scanned for newlines (one record per line): the count must
    still be exact for an error many blocks later, for files and pipes alike."""
    rows = [b"a,b"] + [f"{i},{i}.5".encode() for i in range(2000)] + [b"7,x"]
    data = eol.join(rows) + eol
    e = err(data, block_size=512, regular=regular)
    assert e.code == "non_numeric" and "line 2002, column 'b'" in e.message
    quoted = [b"a,b"] + [f'"{i}",{i}'.encode() for i in range(500)] + [b"7,x"]
    e = err(b"\n".join(quoted) + b"\n", block_size=512, regular=regular)
    assert "line 502, column 'b'" in e.message
