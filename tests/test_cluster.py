"""Partitioned predict in this process: plan, parts, manifest, resume, CLI hook, lazy imports.
(Real Dask scheduler/worker processes: tests/test_cluster_dask.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from modelforge import predict_to
from modelforge.cli.app import app
from modelforge.cluster import predict_partitioned, worker
from modelforge.cluster.plan import make_plan
from modelforge.errors import DataError, OutputError, UsageError
from tests import builders
from tests import cluster_builders as cb

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def job(tmp_path):
    model = str(cb.mlp(tmp_path / "mlp.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [1000, 1337, 501], row_group=250)
    return model, inputs


def _single(model, inputs, tmp_path, **kw):
    out = tmp_path / "single.parquet"
    predict_to(model, inputs, str(out), columns=cb.FEATURES, keep=["id"], **kw)
    return pq.read_table(out)


def test_parts_concatenate_to_single_process_predict(job, tmp_path):
    model, inputs = job
    out = tmp_path / "out"
    s = predict_partitioned(model, inputs, str(out) + "/", columns=cb.FEATURES, keep=["id"],
                            partition_rows=600)  # fmt: skip
    # row groups of 250 packed up to 600 rows, never across files
    assert [p["rows"] for p in json.loads((out / "_SUCCESS").read_text())["parts"]] == [
        500,
        500,
        500,
        500,
        337,
        501,
    ]
    single = _single(model, inputs, tmp_path)
    assert cb.read_parts(out).equals(single)  # value for value, --keep column carried
    assert s.rows == 2838 and s.parts == 6 and s.parts_run == 6 and s.attempts == 6
    assert s.columns == ["id", "y_0", "y_1"]
    manifest = json.loads((out / "_SUCCESS").read_text())
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert manifest["model"]["sha256"] == digest and manifest["plan_hash"] == s.plan_hash
    assert manifest["total_rows"] == 2838
    for i, p in enumerate(manifest["parts"]):
        assert p["file"] == f"part-{i:06d}.parquet"
        assert p["bytes"] == (out / p["file"]).stat().st_size
        assert pq.ParquetFile(out / p["file"]).metadata.num_rows == p["rows"]
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-{i:06d}.parquet" for i in range(6)]


def test_one_session_per_model_per_process(job, tmp_path):
    model, inputs = job
    import modelforge as mf

    worker.clear()
    mf.predict_partitioned(model, inputs, str(tmp_path / "o") + "/", columns=cb.FEATURES,
                        partition_rows=300)  # fmt: skip
    assert worker.cache_size() == 1
    # in this process the session is local predict's: onnxruntime's own spinning default
    assert [c["spinning"] for c in worker.session_configs()] == [None]


def test_rerunning_a_part_gives_the_same_bytes(job, tmp_path):
    model, inputs = job
    for name in ("a", "b"):
        predict_partitioned(model, inputs, str(tmp_path / name) + "/", columns=cb.FEATURES,
                            keep=["id"], partition_rows=700)  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "a").glob("part-*"))
    assert names and all(
        (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names
    )


def test_different_schemas_are_refused_naming_the_file(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    a = cb.parquet_inputs(tmp_path, [10], row_group=5)[0]
    b = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": [1], "f0": [1.0], "f1": [1.0], "f2": [1.0], "f3": ["x"]}), b)
    with pytest.raises(DataError, match="other.parquet") as err:
        predict_partitioned(model, [a, str(b)], str(tmp_path / "out") + "/")
    assert err.value.code == "schema_mismatch" and not (tmp_path / "out").exists()
    assert "'f0' float -> double" in err.value.message  # what differs, column by column
    assert "(+1 more)" in err.value.message  # f3 float -> string: at most 3 are listed


@pytest.mark.parametrize(
    ("other", "words"),
    [
        ("a: float\nc: int64", ["missing column(s): 'b'", "extra column(s): 'c'"]),
        ("b: int64\na: float", ["another order"]),
        ("a: double\nb: int64", ["'a' float -> double"]),
    ],
)
def test_schema_difference_names_the_columns(other, words):
    from modelforge.cluster.plan import schema_difference

    got = schema_difference("a: float\nb: int64", other)
    for w in words:
        assert w in got, got


def test_non_parquet_inputs_get_a_clear_error(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    csv = tmp_path / "d.csv"
    csv.write_text("f0,f1,f2,f3\n1,2,3,4\n")
    with pytest.raises(UsageError, match="reads Parquet inputs") as err:
        predict_partitioned(model, [str(csv)], str(tmp_path / "out") + "/")
    assert err.value.code == "partition_needs_parquet"


def test_bad_data_names_the_file_and_commits_no_success(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [300, 300], row_group=100, extra=None)
    cols = {"id": [0, 1], "f0": [1.0, float("nan")], "f1": [1.0, 1.0], "f2": [1.0, 1.0]}
    bad = pa.table({**cols, "f3": [1.0, 1.0]}).cast(pq.read_schema(inputs[0]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="bad.parquet") as err:
        predict_partitioned(model, [*inputs, str(tmp_path / "bad.parquet")], str(out) + "/",
                            columns=cb.FEATURES, partition_rows=100)  # fmt: skip
    assert err.value.code == "nan_value" and err.value.details["part"] == 6
    assert not (out / "_SUCCESS").exists()
    assert len(list(out.glob("part-*.parquet"))) == 6  # the parts before it, committed
    assert json.loads((out / "_temporary" / "manifest.json").read_text())["total_rows"] == 600


def test_interrupted_run_resumes_without_rewriting_committed_parts(job, tmp_path):
    model, inputs = job
    out = tmp_path / "out"
    kw = {"columns": cb.FEATURES, "keep": ["id"], "partition_rows": 500}

    def stop_after_three(p):
        if p.event == "part" and p.parts_done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_partitioned(model, inputs, str(out) + "/", progress=stop_after_three, **kw)
    assert not (out / "_SUCCESS").exists()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*")}
    assert len(before) == 3
    with pytest.raises(UsageError, match="--resume") as err:
        predict_partitioned(model, inputs, str(out) + "/", **kw)
    assert err.value.code == "output_exists"
    s = predict_partitioned(model, inputs, str(out) + "/", resume=True, **kw)
    assert s.parts_resumed == 3 and s.parts_run == s.parts - 3
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("part-*")}
    assert all(after[n] == v for n, v in before.items())
    assert cb.read_parts(out).equals(_single(model, inputs, tmp_path))
    assert not (out / "_temporary").exists()
    again = predict_partitioned(model, inputs, str(out) + "/", resume=True, **kw)
    assert again.parts_run == 0 and again.parts_resumed == s.parts


def test_resume_says_what_changed(job, tmp_path):
    model, inputs = job
    out = str(tmp_path / "out") + "/"
    predict_partitioned(model, inputs, out, columns=cb.FEATURES, partition_rows=500)
    other = str(cb.mlp(tmp_path / "other.onnx", seed=1))
    cases = [
        ({"model": other}, "the model changed"),
        ({"keep": ["id"]}, "options changed: keep"),
        ({"partition_rows": 400}, "--partition-rows changed"),
        ({"inputs": inputs[:2]}, "the list of inputs changed"),
    ]
    for change, text in cases:
        kw = {"model": model, "inputs": inputs, "columns": cb.FEATURES, "partition_rows": 500,
              **change}  # fmt: skip
        with pytest.raises(UsageError, match=text) as err:
            predict_partitioned(out_dir=out, resume=True, **kw)
        assert err.value.code == "resume_mismatch"
    pq.write_table(pq.read_table(inputs[1]).slice(1), inputs[1], row_group_size=250)
    with pytest.raises(UsageError, match="in1.parquet' changed"):
        predict_partitioned(model, inputs, out, columns=cb.FEATURES, partition_rows=500,
                            resume=True)  # fmt: skip


def test_a_folder_with_other_files_is_refused(job, tmp_path):
    model, inputs = job
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError) as err:
        predict_partitioned(model, inputs, str(out), columns=cb.FEATURES)
    assert err.value.code == "output_not_empty" and (out / "notes.txt").read_text() == "mine"


def test_row_group_selection_in_the_reader(tmp_path):
    from modelforge.data.options import PredictOptions
    from modelforge.data.plan import build_plan
    from modelforge.data.sources import ParquetSource
    from modelforge.model.schema import extract_schema

    model = cb.mlp(tmp_path / "m.onnx")
    path = cb.parquet_inputs(tmp_path, [1000], row_group=300)[0]
    import onnx

    schema = extract_schema(onnx.load(model))
    source = ParquetSource(path, row_groups=[1, 2])
    plan = build_plan([source], schema, PredictOptions(columns=cb.FEATURES, keep=["id"]))
    ids = np.concatenate([b.keep["id"] for b in plan.batches()])
    assert ids.tolist() == list(range(300, 900))
    source = ParquetSource(path, row_groups=[2, 0])
    plan = build_plan([source], schema, PredictOptions(columns=cb.FEATURES, keep=["id"]))
    got = [(int(b.keep["id"][0]), b.rows) for b in plan.batches()]
    assert got == [(600, 300), (0, 300)]
    file_rows = [cb_.file_row for cb_ in source.batches(["id"], {})]
    assert file_rows == [600, 0]  # messages count rows from the start of the file
    with pytest.raises(DataError, match="row group 7 does not exist"):
        ParquetSource(path, row_groups=[7])
    csv = tmp_path / "d.csv"
    csv.write_text("f0,f1,f2,f3\n1,2,3,4\n")
    with pytest.raises(DataError) as err:
        ParquetSource(str(csv), row_groups=[0])
    assert err.value.code == "invalid_parquet"


def test_a_bad_value_in_a_part_is_named_by_its_row_in_the_file(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    n = 1000
    cols = {f: np.ones(n) for f in cb.FEATURES}
    cols[cb.FEATURES[0]][850] = np.nan
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"id": np.arange(n), **cols}), path, row_group_size=300)
    with pytest.raises(DataError, match=r"row 851, column 'f0'") as err:
        predict_partitioned(model, [str(path)], str(tmp_path / "out") + "/",
                            columns=cb.FEATURES, partition_rows=300)  # fmt: skip
    assert err.value.code == "nan_value" and err.value.details["part"] == 2


def test_plan_packs_row_groups_in_input_order(tmp_path):
    inputs = cb.parquet_inputs(tmp_path, [1000, 200], row_group=400)
    plan = make_plan(inputs, 500)
    assert [(p.input.endswith("in0.parquet"), p.row_groups, p.rows, p.first_row)
            for p in plan.parts] == [
        (True, (0,), 400, 0), (True, (1,), 400, 400), (True, (2,), 200, 800),
        (False, (0,), 200, 1000),
    ]  # fmt: skip
    assert [p.rows for p in make_plan(inputs, 10_000).parts] == [1000, 200]


# --- CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", ["0", "-5"])
def test_partition_rows_below_one_is_refused(job, tmp_path, rows):
    model, inputs = job
    res = runner.invoke(app, ["predict", model, *inputs, "--columns", ",".join(cb.FEATURES),
                              "-o", f"{tmp_path / 'out'}/", "--partition-rows", rows])  # fmt: skip
    assert res.exit_code == 2 and "--partition-rows must be at least 1" in res.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_cli_partitioned_json_summary(job, tmp_path):
    model, inputs = job
    out = tmp_path / "out"
    args = ["predict", model, *inputs, "--columns", ",".join(cb.FEATURES), "--keep", "id",
            "-o", f"{out}/", "--partition-rows", "1000", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.stderr
    env = json.loads(res.stdout)
    assert env["status"] == "ok" and env["result"]["parts"] == 4
    assert env["result"]["rows"] == 2838 and env["result"]["workers_lost"] == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and json.loads(res.stdout)["error"]["code"] == "output_exists"
    res = runner.invoke(app, [*args[:-1], "--resume"])
    assert res.exit_code == 0 and "4 kept from an earlier run" in res.stderr and not res.stdout


def test_cli_cluster_options_need_a_folder(job, tmp_path):
    model, inputs = job
    res = runner.invoke(app, ["predict", model, *inputs, "-o", str(tmp_path / "x.parquet"),
                              "--resume"])  # fmt: skip
    assert res.exit_code == 2 and "trailing slash" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _run_py(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELFORGE_HOME": str(tmp_path / "store"),
           "MODELFORGE_PREDICT_IN_PROCESS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def test_help_and_plain_predict_do_not_import_distributed(tmp_path):
    model = builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")
    data = cb.parquet_inputs(tmp_path, [10], row_group=5)[0]
    code = f"""
import sys
from modelforge.cli.app import main
for argv in (["--help"], ["predict", {str(model)!r}, {data!r}, "--columns", "f0,f1,f2,f3",
             "-o", {str(tmp_path / "o.csv")!r}],
             ["predict", {str(model)!r}, {data!r}, "--columns", "f0,f1,f2,f3",
             "-o", {str(tmp_path / "parts")!r} + "/"]):
    sys.argv = ["modelforge", *argv]
    try:
        main()
    except SystemExit as e:
        assert not e.code, e.code
bad = [m for m in ("distributed", "dask") if m in sys.modules]
print("IMPORTED", bad)
"""
    res = _run_py(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "IMPORTED []" in res.stdout and (tmp_path / "parts" / "_SUCCESS").exists()


def test_cluster_without_dask_is_a_one_line_error_with_the_hint(tmp_path):
    model = builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")
    data = cb.parquet_inputs(tmp_path, [10], row_group=5)[0]
    code = f"""
import sys
sys.modules["distributed"] = None  # as if not installed: importing it raises ImportError
from modelforge.cli.app import main
sys.argv = ["modelforge", "predict", {str(model)!r}, {data!r}, "--columns", "f0,f1,f2,f3",
            "-o", {str(tmp_path / "parts")!r} + "/", "--cluster", "local:1"]
main()
"""
    res = _run_py(code, tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "pip install 'modelforge[dask]'" in res.stderr


# --- the model: resolved once, by digest -----------------------------------------------


def test_alias_moving_mid_run_cannot_split_versions(tmp_path):
    from modelforge import add_model, tag_model

    v1 = cb.mlp(tmp_path / "v1.onnx", seed=1)
    v2 = cb.mlp(tmp_path / "v2.onnx", seed=2)
    add_model(v1, "scorer", aliases=["prod"])
    add_model(v2, "scorer")
    inputs = cb.parquet_inputs(tmp_path, [900], row_group=100)

    def move_alias(p):
        if p.event == "part" and p.parts_done == 1:
            tag_model("scorer:2", "prod")

    out = tmp_path / "out"
    s = predict_partitioned("scorer:prod", inputs, f"{out}/", columns=cb.FEATURES,
                            keep=["id"], partition_rows=100, progress=move_alias)  # fmt: skip
    assert s.model["version"] == 1 and s.parts == 9
    assert s.model["sha256"] == hashlib.sha256(v1.read_bytes()).hexdigest()
    assert cb.read_parts(out).equals(_single(str(v1), inputs, tmp_path))


def test_models_with_external_data_go_by_shared_path(tmp_path):
    model = str(builders.with_external_data(tmp_path / "ext"))
    inputs = cb.parquet_inputs(tmp_path, [300], row_group=100)
    out = tmp_path / "out"
    s = predict_partitioned(model, inputs, f"{out}/", columns=cb.FEATURES, keep=["id"],
                            partition_rows=100)  # fmt: skip
    assert s.model["transfer"] == "shared path" and s.parts == 3
    assert cb.read_parts(out).equals(_single(model, inputs, tmp_path))


def test_a_worker_refuses_a_model_whose_bytes_changed(tmp_path, monkeypatch):
    from modelforge.cluster import part as part_mod
    from modelforge.cluster.plan import make_plan as plan_of
    from modelforge.engine.session import SessionConfig
    from modelforge.inference import PredictOptions

    monkeypatch.setenv(part_mod.INLINE_MB_ENV, "0")  # every model by path
    path = cb.mlp(tmp_path / "m.onnx")
    inputs = cb.parquet_inputs(tmp_path, [10], row_group=10)
    spec, _ = part_mod.resolve(str(path))
    assert not spec.inline
    cb.mlp(path, seed=5)  # replaced on "shared storage" after the client resolved it
    (tmp_path / "o").mkdir()
    o = tmp_path / "o"
    opts = PredictOptions(columns=cb.FEATURES)
    part = plan_of(inputs, 100).parts[0]
    task = part_mod.PartTask(part, spec, opts, SessionConfig(), False, str(o), str(o / part.name))
    worker.clear()  # a session cached under this digest would be used without reading
    res = part_mod.run_part(task, None)
    assert res["error"]["code"] == "model_changed" and "m.onnx" in res["error"]["message"]
    assert not (tmp_path / "o" / "part-000000.parquet").exists()


def test_arrow_predictor_for_spark_map_in_arrow(tmp_path):
    import pickle

    from modelforge.cluster.spark import arrow_predictor

    model = str(cb.mlp(tmp_path / "m.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [2500], row_group=1000)
    fn = pickle.loads(pickle.dumps(arrow_predictor(model, columns=cb.FEATURES, keep=["id"])))
    batches = pq.read_table(inputs[0]).to_batches(max_chunksize=700)  # as Spark hands them
    got = pa.Table.from_batches(list(fn(iter(batches))))
    single = _single(model, inputs, tmp_path)
    assert got.equals(single)
    assert fn.arrow_schema(pq.read_table(inputs[0]).slice(0, 1)) == single.schema


@settings(max_examples=200, deadline=None)
@given(
    files=st.lists(st.lists(st.integers(0, 50), max_size=8), min_size=1, max_size=5),
    limit=st.integers(1, 120),
)
def test_pack_covers_every_row_group_once_in_order(files, limit):
    from modelforge.cluster.plan import InputFile, pack

    inputs = [InputFile(f"/d/{i}", 0, sum(g), tuple(g), "", "") for i, g in enumerate(files)]
    parts = pack(inputs, limit)
    covered = [(p.input, g) for p in parts for g in p.row_groups]
    expected = [(f.path, i) for f in inputs for i, n in enumerate(f.row_groups) if n]
    assert covered == expected  # every non-empty row group once, in input order
    row = 0
    for k, p in enumerate(parts):
        f = next(f for f in inputs if f.path == p.input)
        sizes = [f.row_groups[g] for g in p.row_groups]
        assert p.index == k and p.rows == sum(sizes) and p.first_row == row
        assert p.rows <= limit or len(sizes) == 1  # only a lone big row group exceeds it
        span = range(p.row_groups[0], p.row_groups[-1] + 1)  # consecutive, but for empty ones
        assert all(f.row_groups[g] == 0 for g in span if g not in p.row_groups)
        row += p.rows


def test_prewarm_runs_blank_rows_of_the_first_input(tmp_path, monkeypatch):
    """The warm-up runs one batch, then (when that was quick) as many rows as the part
    (up to two reader batches), with the first input's schema but no user values: a NaN
    there (refused without --allow-nan) does not stop it, and is left to the part."""
    from modelforge.cluster import part
    from modelforge.cluster.plan import make_plan

    model = str(cb.mlp(tmp_path / "m.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [1000, 10], row_group=250)
    table = pq.read_table(inputs[0]).to_pandas()
    table.loc[3, "f1"] = float("nan")
    table.to_parquet(inputs[0], index=False, row_group_size=250)
    spec, lm = part.resolve(model)
    opts, cfg = part.job_options(None, {"columns": cb.FEATURES, "batch_size": 300}, None)
    plan = make_plan(inputs, 500, None)
    task = part.PartTask(plan.parts[0], spec, opts, cfg, False, "", "")
    assert task.part.rows == 500
    assert part.prewarm(task, lm.data) == {"warm_rows": 500}
    monkeypatch.setattr(part, "WARM_BYTES", 1)  # rows too wide for the larger pass
    assert part.prewarm(task, lm.data) == {"warm_rows": 300}
    monkeypatch.undo()
    monkeypatch.setattr(part, "WARM_BUDGET_S", 0.0)  # a slow model: one batch only
    assert part.prewarm(task, lm.data) == {"warm_rows": 300}
    with pytest.raises(DataError, match="in0.parquet") as err:
        predict_partitioned(model, inputs, f"{tmp_path}/out/", columns=cb.FEATURES)
    assert err.value.code == "nan_value"


def test_a_workers_footer_cache_sees_a_rewritten_file(tmp_path):
    path = cb.parquet_inputs(tmp_path, [100], row_group=10)[0]
    first, size = worker.footer(path)
    assert first is not None and size == os.path.getsize(path)
    assert worker.footer(path)[0] is first  # parsed once
    pq.write_table(pq.read_table(path).slice(0, 60), path, row_group_size=10)
    again, _ = worker.footer(path)
    assert again is not first and again.num_rows == 60
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert worker.footer(str(tmp_path / "junk.parquet"))[0] is None  # the reader names it
    assert worker.footer(str(tmp_path / "missing.parquet")) == (None, None)
