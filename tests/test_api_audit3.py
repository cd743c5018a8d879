"""Audit of the Python library as a user calls it: wrong argument types and values are
ModelForgeErrors naming the argument (ArgumentError is also a TypeError), documented
snippets run, results serialise to JSON, ``import modelforge`` stays light."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelforge as mf
from modelforge.errors import ArgumentError, ModelForgeError, ModelNotFoundError, UsageError
from tests.builders import linear, save


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(linear(), tmp_path / "m.onnx")


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    p = tmp_path / "data.csv"
    p.write_text("a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    return p


def test_argument_error_is_usage_and_type_error():
    assert issubclass(ArgumentError, UsageError) and issubclass(ArgumentError, TypeError)
    assert mf.ModelForgeError is ModelForgeError


@pytest.mark.parametrize("bad", [None, 3, np.ones(2), {"x": 1}])
def test_model_reference_of_wrong_type_names_the_argument(bad, csv):
    for call in (
        lambda: mf.predict(bad, csv),
        lambda: mf.validate_model(bad),
        lambda: mf.inspect_model(bad),
        lambda: mf.resolve_model(bad),
        lambda: mf.remove_model(bad),
        lambda: mf.tag_model(bad, "prod"),
    ):
        with pytest.raises(ArgumentError, match="^model must be"):
            call()


def test_predict_data_of_wrong_type(model, csv):
    with pytest.raises(ArgumentError, match="iterator"):
        mf.predict(model, (p for p in [csv]))
    with pytest.raises(ArgumentError, match="got int"):
        mf.predict(model, 5)


@pytest.mark.parametrize(
    ("kw", "arg"),
    [({"batch_size": "10"}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
     ({"batch_size": True}, "batch_size"), ({"keep": 3}, "keep"),
     ({"columns": ["a", 1]}, "columns entries"), ({"encoding": 8}, "encoding")],
)  # fmt: skip
def test_predict_option_types(kw, arg, model, csv):
    with pytest.raises(ArgumentError, match=f"^{arg} must be"):
        mf.predict(model, csv, **kw)


def test_unknown_keyword_is_argument_error_listing_the_options(model, csv):
    with pytest.raises(ArgumentError, match="colums") as info:
        mf.predict(model, csv, colums=["a"])
    assert "columns" in (info.value.hint or "")
    with pytest.raises(ArgumentError, match="options must be a PredictOptions"):
        mf.predict(model, csv, options={"batch_size": 1})


def test_predict_to_output_type_and_single_path(model, csv, tmp_path):
    import pandas as pd

    with pytest.raises(ArgumentError, match="^output must be"):
        mf.predict_to(model, csv, pd.DataFrame({"a": [1]}))
    out = tmp_path / "o.csv"
    s = mf.predict_to(model, csv, out, columns=list("abcd"), isolate=True)
    assert s.rows == 2 and out.read_text().startswith("y_0")
    json.dumps(s.to_dict())


def test_add_model_arguments(model, csv):
    r = mf.add_model(model, "churn", aliases="prod")  # one alias, not p, r, o, d
    assert mf.resolve_model("churn:prod").version == r.version
    with pytest.raises(ModelNotFoundError, match="has no alias 'p'"):
        mf.resolve_model("churn:p")
    with pytest.raises(ArgumentError, match="^path must be"):
        mf.add_model(None, "x")
    with pytest.raises(ArgumentError, match="bogus"):
        mf.add_model(model, "x", bogus=1)
    with pytest.raises(ArgumentError, match="^example_rows must be"):
        mf.add_model(model, "x", example=csv, example_rows="5")
    with pytest.raises(ArgumentError, match="^example must be"):
        mf.add_model(model, "x", example=np.ones((2, 4)))


def test_validate_options_type(model):
    with pytest.raises(ArgumentError, match="^options must be a ValidateOptions"):
        mf.validate_model(model, {"stop_after": "smoke"})


def test_diff_arguments(model, csv):
    import pandas as pd

    with pytest.raises(ArgumentError, match="^a must be"):
        mf.diff_models(None, model, data=csv)
    with pytest.raises(ArgumentError, match="^data must be"):
        mf.diff_models(model, model, data=pd.read_csv(csv))
    with pytest.raises(ArgumentError, match="^fail_on must be"):
        mf.diff_models(model, model, data=csv, fail_on=[1])
    with pytest.raises(ArgumentError, match="^rtol must be"):
        mf.diff_models(model, model, data=csv, rtol="0.1")
    d = mf.diff_models(model, model, data=[csv], providers="cpu")  # one provider
    assert d.equal
    json.dumps(d.to_dict())


def test_create_app_arguments(model):
    app = mf.create_app(str(model), load=False)  # one model, not one per character
    assert list(app.registry.models) == ["m"]
    with pytest.raises(ArgumentError, match="^options must be a ServeOptions"):
        mf.create_app([model], {"max_batch_size": 3}, load=False)
    with pytest.raises(ArgumentError, match="^models must be"):
        mf.create_app([None], load=False)


def _readme_library_snippet() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Python library", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_library_snippet_runs(tmp_path, monkeypatch, capsys):
    import polars as pl

    from tests.golden_builders import iris_csv, mlp

    monkeypatch.chdir(tmp_path)
    mlp(tmp_path / "model.onnx")
    mlp(tmp_path / "new.onnx", scale_layer2=1.5)
    iris_csv(tmp_path / "data.csv")
    pl.read_csv(tmp_path / "data.csv").write_parquet(tmp_path / "big.parquet")
    exec(compile(_readme_library_snippet(), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("True [('file'") and lines[-1].startswith("False ")


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    import polars as pl

    p = tmp_path / "p.parquet"
    pl.DataFrame({c: np.arange(10, dtype=np.float32) for c in "abcd"}).write_parquet(p)
    return p


def test_predict_partitioned_arguments(model, parquet, tmp_path):
    import polars as pl

    out = tmp_path / "out"
    s = mf.predict_partitioned(model, (p for p in [parquet]), out, cluster=None)
    assert s.rows == 10
    json.dumps(s.to_dict())
    with pytest.raises(ArgumentError, match="^inputs must be"):
        mf.predict_partitioned(model, pl.read_parquet(parquet), tmp_path / "o2")
    with pytest.raises(ArgumentError, match="^out_dir must be"):
        mf.predict_partitioned(model, [parquet], None)
    with pytest.raises(ArgumentError, match="^cluster must be"):
        mf.predict_partitioned(model, [parquet], tmp_path / "o3", cluster=2)


def test_arrow_predictor_arguments(model):
    import polars as pl
    import pyarrow as pa

    from modelforge.cluster.spark import arrow_predictor

    fn = arrow_predictor(model, columns=list("abcd"))
    table = pa.table({c: np.ones(2, np.float32) for c in "abcd"})
    assert fn.arrow_schema(table).names == ["y_0"]
    with pytest.raises(ArgumentError, match="^sample must be a pyarrow"):
        fn.arrow_schema(pl.from_arrow(table))
    with pytest.raises(ArgumentError, match=r"^<Arrow batch 2> must be a pyarrow RecordBatch"):
        list(fn(iter([table.to_batches()[0], table])))


@pytest.mark.parametrize(
    ("kw", "field"), [({"port": "80"}, "port"), ({"access_log": "yes"}, "access_log"),
                      ({"request_timeout_s": "5"}, "request_timeout_s")],
)  # fmt: skip
def test_serve_options_field_types(kw, field, model):
    with pytest.raises(ArgumentError, match=f"^{field} must be"):
        mf.create_app([model], mf.ServeOptions(**kw), load=False)
    app = mf.create_app([model], mf.ServeOptions(request_timeout_s=None, threads=2), load=False)
    assert list(app.registry.models) == ["m"]


def test_export_import_argument_types(model, tmp_path):
    mf.add_model(model, "churn")
    with pytest.raises(ArgumentError, match="^output must be"):
        mf.export_model("churn:1", None)
    with pytest.raises(ArgumentError, match="^model must be"):
        mf.export_model(None, tmp_path / "a.tar.gz")
    with pytest.raises(ArgumentError, match="^path must be"):
        mf.import_model(None)
    r = mf.export_model("churn:1", tmp_path / "a.tar.gz")
    json.dumps(r.to_dict())


def test_prediction_batch_is_frozen_and_json_serialisable(model, csv, tmp_path):
    import dataclasses

    import orjson

    from tests.golden_builders import iris_csv, mlp

    c = mlp(tmp_path / "c.onnx")
    data = iris_csv(tmp_path / "iris.csv", n=15, extra=True)
    batches = list(mf.iter_predict(c, data, keep=["id", "note"], batch_size=6))
    assert [b.rows for b in batches] == [6, 6, 3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        batches[0].rows = 3  # type: ignore[misc]
    d = batches[2].to_dict()
    # CSV has no types: kept CSV columns come back as their text
    assert d["start"] == 12 and d["keep"] == {"id": ["12", "13", "14"], "note": ["r"] * 3}
    assert isinstance(d["outputs"]["label"][0], int) and len(d["outputs"]["logits"][0]) == 3
    assert json.loads(json.dumps(d)) == orjson.loads(orjson.dumps(d))


def test_all_matches_the_readme_and_import_stays_light():
    import re
    import subprocess
    import sys

    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Python library", 1)[1].split("\n## ", 1)[0]
    listed = section.split("(`modelforge.__all__`):", 1)[1].lstrip().split("\n\n", 1)[0]
    documented = set(re.findall(r"`([A-Za-z_]+)`", listed))
    assert documented == set(mf.__all__) - {"__version__"}
    code = (
        "import sys, modelforge\n"
        "from modelforge import ModelForgeError, ArgumentError, DataError, ExitCode\n"
        "heavy = ('numpy', 'onnx', 'onnxruntime', 'pandas', 'polars', 'pyarrow', 'uvicorn',"
        " 'distributed')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_concurrent_threads_and_a_running_event_loop(model, csv):
    import asyncio
    import threading

    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(mf.predict(model, csv, columns=list("abcd"))["y_0"].tolist())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 and all(r == results[0] for r in results)

    async def in_loop() -> tuple[list[float], bool, int]:  # as in a notebook cell
        df = mf.predict(model, csv, columns=list("abcd"))
        app = mf.create_app([model])
        return df["y_0"].tolist(), mf.validate_model(model).ok, len(app.registry.models)

    assert asyncio.run(in_loop()) == (results[0], True, 1)


def test_iter_predict_abandoned_half_way_closes_its_files(model, parquet):
    import gc
    import os
    import threading

    def open_fds() -> set[str]:
        return {os.readlink(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{f}")}  # fmt: skip

    threads = threading.active_count()
    g = mf.iter_predict(model, parquet, columns=list("abcd"), batch_size=3)
    next(g)
    g.close()
    g2 = mf.iter_predict(model, parquet, columns=list("abcd"), batch_size=3)
    next(g2)
    del g2
    gc.collect()
    assert str(parquet) not in open_fds()
    assert threading.active_count() == threads


@pytest.mark.parametrize("isolate", [False, True])
def test_keyboard_interrupt_propagates_and_leaves_nothing(isolate, model, parquet, tmp_path):
    import threading

    out_dir = tmp_path / "kb"
    out_dir.mkdir()
    calls: list[dict] = []

    def progress(info: dict) -> None:
        calls.append(info)
        raise KeyboardInterrupt  # Ctrl-C while the first batch is being written

    threads = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        mf.predict_to(model, [parquet, parquet], out_dir / "o.parquet", columns=list("abcd"),
                      progress=progress, isolate=isolate)  # fmt: skip
    assert calls and list(out_dir.iterdir()) == []
    assert threading.active_count() == threads


def test_convert_bench_list_open_argument_types(model, tmp_path):
    with pytest.raises(ArgumentError, match="^opset must be"):
        mf.convert_model(model, "18", tmp_path / "o.onnx")
    with pytest.raises(ArgumentError, match="^output must be"):
        mf.convert_model(model, 18, None)
    with pytest.raises(ArgumentError, match="^runs must be"):
        mf.run_bench(model, mf.BenchOptions(runs="5"))
    with pytest.raises(ArgumentError, match="^batch_sizes must be"):
        mf.run_bench(model, mf.BenchOptions(batch_sizes="1"))
    with pytest.raises(ArgumentError, match="^options must be a BenchOptions"):
        mf.run_bench(model, {"runs": 5})
    with pytest.raises(ArgumentError, match="name='NAME'"):
        mf.list_models("churn")  # the first parameter is the store
    assert mf.list_models(name=None).models == []
    with pytest.raises(ArgumentError, match="^path must be"):
        mf.open_model(None)
    with pytest.raises(ArgumentError, match="^progress must be a callable"):
        mf.validate_model(model, progress=3)
    report = mf.run_bench(str(model), mf.BenchOptions(runs=3, batch_sizes=(1,), rounds=1))
    json.dumps(report.to_dict())
