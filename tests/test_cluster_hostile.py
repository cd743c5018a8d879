"""Partitioned predict on hostile and awkward inputs: messy Parquet, odd output folders,
--resume after damage, odd --cluster addresses. In this process where a cluster adds
nothing; one test on real ``dask scheduler`` / ``dask worker`` processes."""

from __future__ import annotations

import decimal
import glob
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from modelforge import predict_to
from modelforge.cli.app import app
from modelforge.cluster import plan as plan_mod
from modelforge.cluster import predict_partitioned
from modelforge.errors import DataError, OutputError, UsageError
from tests import cluster_builders as cb

runner = CliRunner()
COLS = ",".join(cb.FEATURES)


def _features(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f: rng.normal(size=n).astype(np.float32) for f in cb.FEATURES}


def _write(path: Path, cols: dict, row_group: int = 100) -> str:
    pq.write_table(pa.table(cols), path, row_group_size=row_group)
    return str(path)


def _single(model: str, inputs: list[str], out: Path, keep: list[str]) -> pa.Table:
    predict_to(model, inputs, str(out), columns=cb.FEATURES, keep=keep)
    return pq.read_table(out)


def _parts(out: Path) -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted(glob.glob(str(out / "part-*.parquet")))]


@pytest.fixture
def model(tmp_path):
    return str(cb.mlp(tmp_path / "mlp.onnx"))


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "a.parquet", {"id": np.arange(1000), **_features(1000)})


def _ids(n: int, null_at: int | None) -> pa.Array:
    ids = list(range(n))
    if null_at is not None:
        ids[null_at] = None  # type: ignore[call-overload]
    return pa.array(ids, pa.int64())


def test_kept_columns_keep_their_type_and_nulls_in_every_part(model, tmp_path):
    """A nullable int64 id became float64 with NaN in the part holding the null and int64
    elsewhere (parts of different schemas), and one-file predict an internal error; struct,
    list and fixed-size list columns could not be kept at all."""
    n = 600

    def cols(null_at):
        return {
            "id": _ids(n, null_at),
            "cat": pa.array([f"c{i % 3}" for i in range(n)]).dictionary_encode(),
            "st": pa.array([{"a": i, "b": str(i)} for i in range(n)]),
            "fsl": pa.array([[float(i), 1.0] for i in range(n)], pa.list_(pa.float32(), 2)),
            "ts": pa.array(np.arange(n) * 10**9, pa.timestamp("ns", tz="Europe/Paris")),
            "dec": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(10, 2)),
            "nul": pa.nulls(n),
            **_features(n, seed=0 if null_at is None else 1),
        }

    a = _write(tmp_path / "a.parquet", cols(None))
    b = _write(tmp_path / "b.parquet", cols(n - 3))
    keep = ["id", "cat", "st", "fsl", "ts", "dec", "nul"]
    single = _single(model, [a, b], tmp_path / "single.parquet", keep)
    predict_partitioned(model, [a, b], str(tmp_path / "out"), columns=cb.FEATURES, keep=keep,
                        partition_rows=250)  # fmt: skip
    parts = _parts(tmp_path / "out")
    assert len(parts) == 6 and {p.schema for p in parts} == {single.schema}
    assert pa.concat_tables(parts).equals(single)
    assert single.schema.field("id").type == pa.int64()
    assert single.column("id").null_count == 1 and single.column("id")[n + n - 3].as_py() is None
    for name in ("ts", "dec", "fsl"):
        assert single.schema.field(name).type == pq.read_schema(a).field(name).type
    assert single.column("st")[5].as_py() == {"a": 5, "b": "5"}


@pytest.mark.parametrize(
    ("column", "ext", "fmt"),
    [("st", "csv", "CSV"), ("lst", "tsv", "TSV"), ("bin", "jsonl", "JSONL"), ("lst", "npz", "NPZ")],
)
def test_a_kept_column_the_format_cannot_hold_is_refused_naming_it(model, tmp_path, column,
                                                                    ext, fmt):  # fmt: skip
    """Were internal errors (polars: 'CSV format does not support nested data'), and for
    binary to JSON Lines a Rust panic with its backtrace on stderr."""
    n = 50
    src = _write(tmp_path / "a.parquet", {
        "id": np.arange(n), "st": pa.array([{"a": i} for i in range(n)]),
        "lst": pa.array([[i, i] for i in range(n)]), "bin": pa.array([b"\xff"] * n),
        **_features(n),
    })  # fmt: skip
    out = tmp_path / f"p.{ext}"
    res = runner.invoke(app, ["predict", model, src, "--columns", COLS, "--keep", f"id,{column}",
                              "-o", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 10, res.stderr
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "column_not_writable"
    assert f"'{column}'" in err["message"] and fmt in err["message"]
    assert "Parquet" in err["hint"] and not out.exists()


def test_duplicate_column_names_are_refused_before_any_work(model, tmp_path):
    n = 100
    path = tmp_path / "dup.parquet"
    feats = _features(n)
    table = pa.table([np.arange(n), *feats.values(), np.arange(n)], names=["id", *feats, "id"])
    pq.write_table(table, path)
    for target in (tmp_path / "one.parquet", tmp_path / "out"):
        with pytest.raises(DataError) as exc:
            if target.suffix:
                predict_to(model, [str(path)], str(target), columns=cb.FEATURES, keep=["id"])
            else:
                predict_partitioned(model, [str(path)], str(target), columns=cb.FEATURES)
        assert exc.value.code == "duplicate_column" and "2 columns named 'id'" in exc.value.message
        assert not target.exists()


def test_a_refused_output_folder_is_left_as_found(model, data, tmp_path):
    """A refusal created _temporary/.lock in the user's folder (or the inputs' folder)."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    messages = []
    for folder in (user, tmp_path):  # a folder with other files; the inputs' own folder
        before = sorted(os.listdir(folder))
        with pytest.raises(OutputError) as exc:
            predict_partitioned(model, [data], str(folder), columns=cb.FEATURES)
        assert exc.value.code == "output_not_empty"
        assert sorted(os.listdir(folder)) == before  # no _temporary/ left behind
        messages.append(exc.value.message)
    assert "(found: notes.txt)" in messages[0] and "a.parquet" in messages[1]


@pytest.mark.parametrize("content", ["", '{"spark": true}'])
def test_another_tools_success_file_is_not_taken_for_a_run(model, data, tmp_path, content):
    """Spark and Hadoop write an empty _SUCCESS: it was 'not a readable ModelForge
    manifest'; a JSON one without our kind was 'an earlier run (plan None)'."""
    out = tmp_path / "spark"
    out.mkdir()
    (out / "_SUCCESS").write_text(content)
    (out / "part-00000-3f2a.snappy.parquet").write_bytes(b"x")
    for resume in (False, True):
        with pytest.raises(OutputError) as exc:
            predict_partitioned(model, [data], str(out), columns=cb.FEATURES, resume=resume)
        assert exc.value.code == "output_not_empty" and "part-00000-3f2a" in exc.value.message
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000-3f2a.snappy.parquet"]


def _flip(path: Path, at: int = 20) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF  # inside the first data page; the footer stays intact
    path.write_bytes(bytes(raw))


def test_resume_reruns_a_part_damaged_in_place_and_refuses_strangers(model, data, tmp_path,
                                                                     caplog):  # fmt: skip
    """A part whose footer is intact but whose pages were damaged was kept (same row
    count) and _SUCCESS vouched for it; a stray part-000099.parquet sat next to the parts."""
    out = tmp_path / "out"
    kw = {"columns": cb.FEATURES, "keep": ["id"], "partition_rows": 300}
    predict_partitioned(model, [data], str(out), **kw)
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"])
    whole = pa.concat_tables(_parts(out))
    _flip(out / "part-000001.parquet")
    with pytest.raises(Exception):  # noqa: B017 - any reader error: the part is damaged
        pq.read_table(out / "part-000001.parquet")
    s = predict_partitioned(model, [data], str(out), resume=True, **kw)
    assert (s.parts_run, s.parts_resumed) == (1, 3)
    assert "part-000001.parquet does not match the sha256" in caplog.text
    assert pa.concat_tables(_parts(out)).equals(whole)
    (out / "part-000099.parquet").write_bytes((out / "part-000000.parquet").read_bytes())
    with pytest.raises(OutputError) as exc:
        predict_partitioned(model, [data], str(out), resume=True, **kw)
    assert exc.value.code == "output_not_empty" and "part-000099.parquet" in exc.value.message


def test_resume_notices_an_input_rewritten_with_an_identical_footer(model, tmp_path):
    """Rows swapped inside a row group (same size, statistics and footer bytes): the
    modification time now tells; the message says which part of the input changed."""
    n = 400
    feats = _features(n)
    path = tmp_path / "a.parquet"
    opts = {"row_group_size": 100, "compression": "none", "use_dictionary": False}
    pq.write_table(pa.table({"id": np.arange(n), **feats}), path, **opts)
    out = tmp_path / "out"
    kw = {"columns": cb.FEATURES, "keep": ["id"], "partition_rows": 200}
    predict_partitioned(model, [str(path)], str(out), **kw)
    footer = plan_mod.read_input(str(path)).footer_sha256
    swapped = {k: v[np.r_[1, 0, 2:n]] for k, v in feats.items()}
    pq.write_table(pa.table({"id": np.arange(n), **swapped}), path, **opts)
    assert plan_mod.read_input(str(path)).footer_sha256 == footer  # the footer cannot tell
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 10**9))
    with pytest.raises(UsageError) as exc:
        predict_partitioned(model, [str(path)], str(out), resume=True, **kw)
    assert exc.value.code == "resume_mismatch" and "(modification time)" in exc.value.message
    with pytest.raises(UsageError) as exc:
        predict_partitioned(model, [str(path)], str(out), resume=True, batch_size=7, **kw)
    assert "options changed: batch_size (10000 -> 7)" in exc.value.message


def test_cli_folder_output_refuses_other_output_formats(model, data, tmp_path):
    """-o DIR/ --output-format csv silently wrote Parquet parts."""
    out = tmp_path / "out"
    res = runner.invoke(app, ["predict", model, data, "--columns", COLS, "-o", f"{out}/",
                              "--output-format", "csv", "--json"])  # fmt: skip
    assert res.exit_code == 2 and json.loads(res.stdout)["error"]["code"] == "invalid_option"
    assert "written as Parquet, not csv" in res.stderr and not out.exists()
    res = runner.invoke(app, ["predict", model, data, "--columns", COLS, "-o", f"{out}/",
                              "--output-format", "pq"])  # fmt: skip
    assert res.exit_code == 0, res.stderr


def test_inputs_that_cannot_be_planned_name_the_fix(model, data, tmp_path):
    folder = tmp_path / "dataset.parquet"
    folder.mkdir()
    with pytest.raises(DataError) as exc:
        predict_partitioned(model, [data, str(folder)], str(tmp_path / "o1"), columns=cb.FEATURES)
    assert exc.value.code == "input_not_file" and "is a directory" in exc.value.message
    assert "*.parquet" in (exc.value.hint or "")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        predict_partitioned(model, [str(empty)], str(tmp_path / "o2"), columns=cb.FEATURES)
    assert "too short to be Parquet (0 bytes)" in exc.value.message and exc.value.hint
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_api_arguments_of_the_wrong_shape(model, data, tmp_path, monkeypatch):
    """One input as a str was split into characters ('input file 'm' does not exist'),
    keep='id' looked for columns 'i' and 'd', partition_rows=2.5 made parts of 2.5 rows."""
    s = predict_partitioned(model, data, tmp_path / "o1", columns=cb.FEATURES, keep="id")
    assert s.parts == 1 and s.columns == ["id", "y_0", "y_1"]
    for rows in (2.5, "100", True):
        with pytest.raises(UsageError, match="whole number of rows"):
            predict_partitioned(model, [data], tmp_path / "o2", partition_rows=rows)
    monkeypatch.setattr(plan_mod, "MAX_PARTS", 3)  # part-1000000 would sort first
    with pytest.raises(UsageError, match="more than 3") as exc:
        predict_partitioned(model, [data], tmp_path / "o3", columns=cb.FEATURES,
                            partition_rows=200)  # fmt: skip
    assert "raise --partition-rows" in (exc.value.hint or "")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("tls://127.0.0.1:1", "needs TLS certificates"),
        ("ucx://127.0.0.1:1", "needs UCX support"),
        ("nowhere/scheduler.json", "scheduler file 'nowhere/scheduler.json' does not exist"),
        ("local:TOO_MANY", "worker processes on this machine's"),
    ],
)
def test_odd_cluster_addresses_are_usage_errors_at_once(model, data, tmp_path, address, words):
    """tls:// without certificates and ucx:// without UCX were internal errors (a
    TypeError inside Dask) followed by a 20 s hang; local:999 forked 999 workers (here one
    more than the limit, so that a regression starts few processes)."""
    pytest.importorskip("distributed")
    from modelforge.cluster.dask_setup import MAX_LOCAL_PER_CORE
    from modelforge.cluster.worker import host_cores

    address = address.replace("TOO_MANY", str(MAX_LOCAL_PER_CORE * host_cores() + 1))
    with pytest.raises(UsageError) as exc:
        predict_partitioned(model, [data], str(tmp_path / "out"), columns=cb.FEATURES,
                            cluster=address)  # fmt: skip
    assert exc.value.code == "invalid_option" and words in exc.value.message
    assert not (tmp_path / "out").exists()


def test_real_workers_relative_output_and_awkward_kept_columns(model, tmp_path, monkeypatch):
    """On a ``dask worker`` started in another directory: a relative -o failed in the
    worker ('output folder does not exist'); nullable and nested kept columns match
    one-process predict; no dashboard link without bokeh on the scheduler."""
    import importlib.util

    pytest.importorskip("distributed")
    from tests.test_cluster_dask import dask_cluster

    n = 1000
    src = _write(tmp_path / "a.parquet", {"id": _ids(n, 7),
                 "st": pa.array([{"q": i} for i in range(n)]), **_features(n)}, 250)  # fmt: skip
    single = _single(model, [src], tmp_path / "single.parquet", ["id", "st"])
    client_dir = tmp_path / "client"
    (client_dir / "rel").mkdir(parents=True)
    events = []
    with dask_cluster(tmp_path / "dask") as sched:
        monkeypatch.chdir(client_dir)  # the workers run in the directory the test started in
        s = predict_partitioned(model, [src], "rel/out/", columns=cb.FEATURES,
                                keep=["id", "st"], cluster=str(sched), partition_rows=300,
                                progress=events.append)  # fmt: skip
    assert s.output == str(client_dir / "rel" / "out") and s.workers == 2
    assert pa.concat_tables(_parts(client_dir / "rel" / "out")).equals(single)
    if importlib.util.find_spec("bokeh") is None:
        assert events[0].event == "start" and events[0].dashboard is None


def test_nullability_and_field_metadata_do_not_make_another_schema(model, data, tmp_path):
    """A file whose id is declared 'not null' (Spark, some writers) or carries a field
    comment was a schema_mismatch ('nested field types differ'); one-file predict reads
    them together."""
    n = 1000
    feats = {f: pq.read_table(data).column(f) for f in cb.FEATURES}
    fields = [pa.field(f, pa.float32()) for f in cb.FEATURES]
    strict = tmp_path / "strict.parquet"
    pq.write_table(pa.table({"id": np.arange(n), **feats},
                            schema=pa.schema([pa.field("id", pa.int64(), nullable=False),
                                              *fields])), strict)  # fmt: skip
    noted = tmp_path / "noted.parquet"
    pq.write_table(pa.table({"id": np.arange(n), **feats},
                            schema=pa.schema([pa.field("id", pa.int64(), metadata={"c": "x"}),
                                              *fields])), noted)  # fmt: skip
    inputs = [data, str(strict), str(noted)]
    single = _single(model, inputs, tmp_path / "single.parquet", ["id"])
    predict_partitioned(model, inputs, str(tmp_path / "out"), columns=cb.FEATURES, keep=["id"],
                        partition_rows=400)  # fmt: skip
    assert pa.concat_tables(_parts(tmp_path / "out")).equals(single)
    with pytest.raises(DataError, match="column type changed: 'id' int64 -> int32"):
        other = _write(tmp_path / "i32.parquet", {"id": np.arange(n, dtype=np.int32), **feats})
        predict_partitioned(model, [data, other], str(tmp_path / "o2"), columns=cb.FEATURES)


def test_one_file_predict_over_inputs_whose_kept_column_types_differ(model, tmp_path):
    """int32 ids in one file and int64 in the next: the Parquet writer's schema mismatch
    was an internal error; now a lossless cast, or an error naming the column."""
    n = 100
    small = _write(tmp_path / "a.parquet", {"id": np.arange(n, dtype=np.int32), **_features(n)})
    wide = _write(tmp_path / "b.parquet", {"id": np.arange(n, dtype=np.int64), **_features(n)})
    out = _single(model, [small, wide], tmp_path / "ok.parquet", ["id"])
    assert out.schema.field("id").type == pa.int32() and out.num_rows == 2 * n
    big = _write(tmp_path / "c.parquet", {"id": np.arange(n) + 2**40, **_features(n)})
    with pytest.raises(DataError) as exc:
        _single(model, [small, big], tmp_path / "bad.parquet", ["id"])
    assert exc.value.code == "column_type_changed" and "'id' is int64" in exc.value.message
    assert not (tmp_path / "bad.parquet").exists()


def test_odd_output_paths(model, data, tmp_path):
    """A name too long was an internal error (OSError from Path.exists); a dangling link
    was 'File exists, check permissions'; a newline in the folder's name reached the
    summary line raw."""
    with pytest.raises(OutputError) as exc:
        predict_partitioned(model, [data], str(tmp_path / ("x" * 300)), columns=cb.FEATURES)
    assert exc.value.code == "output_unwritable" and "File name too long" in exc.value.message
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError) as exc:
        predict_partitioned(model, [data], str(tmp_path / "dangling"), columns=cb.FEATURES)
    assert exc.value.code == "output_folder_missing" and "nowhere" in exc.value.message
    odd = tmp_path / "two\nlines"
    res = runner.invoke(app, ["predict", model, data, "--columns", COLS, "--keep", "id",
                              "-o", f"{odd}/"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "two\\nlines" in res.stderr
    assert sorted(os.listdir(odd)) == ["_SUCCESS", "part-000000.parquet"]


@pytest.mark.parametrize("change", ["same_shape", "deleted", "garbage"])
def test_an_input_rewritten_during_the_run_stops_it(model, tmp_path, change):
    """A file rewritten with row groups of the same sizes gave its later parts the new
    rows and its earlier ones the old, under one _SUCCESS; a removed one said 'check the
    path'. Each part now checks its input's size and footer against the plan's."""
    n = 400
    a = _write(tmp_path / "a.parquet", {"id": np.arange(n), **_features(n, seed=1)})
    b = tmp_path / "b.parquet"
    _write(b, {"id": np.arange(n), **_features(n, seed=2)})

    def rewrite(event):
        if event.event == "part" and event.parts_done == 5:  # in the middle of b's parts
            if change == "same_shape":
                _write(b, {"id": np.arange(n), **_features(n, seed=3)})
            elif change == "deleted":
                b.unlink()
            else:
                b.write_bytes(b"not parquet" * 100)

    out = tmp_path / "out"
    with pytest.raises(DataError) as exc:
        predict_partitioned(model, [a, str(b)], str(out), columns=cb.FEATURES,
                            partition_rows=100, progress=rewrite)  # fmt: skip
    assert exc.value.code == "input_changed" and exc.value.message.startswith("part 5 (")
    assert str(b) in exc.value.message and exc.value.details["part"] == 5
    assert not (out / "_SUCCESS").exists() and len(_parts(out)) == 5


def test_a_footer_length_beyond_the_file_is_refused_without_reading_it(model, data, tmp_path):
    raw = bytearray(Path(data).read_bytes())
    raw[-8:-4] = (2**32 - 1).to_bytes(4, "little")  # a footer of 4 GiB in a small file
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError) as exc:
        predict_partitioned(model, [data, str(bad)], str(tmp_path / "out"), columns=cb.FEATURES)
    assert exc.value.code == "invalid_parquet" and "footer claims 4,294,967,295" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_decimal256_columns(model, tmp_path):
    """polars panics on 256-bit decimals (a Rust backtrace, then an internal error):
    narrowed when they fit 38 digits, refused naming the column otherwise, before any
    part runs."""
    n = 60
    ok = _write(
        tmp_path / "ok.parquet",
        {
            "id": np.arange(n),
            "d": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal256(20, 2)),
            **_features(n),
        },
    )
    single = _single(model, [ok], tmp_path / "single.parquet", ["id", "d"])
    assert single.column("d").to_pylist() == pq.read_table(ok).column("d").to_pylist()
    predict_partitioned(model, [ok], str(tmp_path / "o1"), columns=cb.FEATURES,
                        keep=["id", "d"], partition_rows=20)  # fmt: skip
    assert pa.concat_tables(_parts(tmp_path / "o1")).equals(single)
    wide = _write(
        tmp_path / "wide.parquet",
        {
            "id": np.arange(n),
            "d": pa.array([decimal.Decimal(10**39 + i) for i in range(n)], pa.decimal256(45, 0)),
            **_features(n),
        },
    )
    with pytest.raises(DataError) as exc:
        predict_partitioned(model, [wide], str(tmp_path / "o2"), columns=cb.FEATURES,
                            keep=["id", "d"])  # fmt: skip
    assert exc.value.code == "unsupported_type" and "column 'd' is decimal256(45, 0)" in str(
        exc.value
    )
    assert not (tmp_path / "o2").exists()
