"""What a new user trips over in the store (issue 11), each through the API and the CLI:
skl2onnx regressors, identical bytes with new metadata, ``models set``, missing column
maps, removing aliased versions, import version numbers, forced versions, Windows names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from modelforge.cli.app import app
from modelforge.errors import InvalidNameError, UsageError
from modelforge.store.add import add_model
from modelforge.store.archive import export_version, import_archive
from modelforge.store.catalog import find
from modelforge.store.edit import set_metadata
from modelforge.store.layout import Store
from modelforge.store.names import validate_name
from modelforge.store.ops import verify
from tests.builders import add_two, linear, save

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---- 1. skl2onnx regressors (default-domain opset imported twice, same version) ----------


def _regressors():
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.tree import DecisionTreeRegressor

    return [
        RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0),
        GradientBoostingRegressor(n_estimators=3, max_depth=2, random_state=0),
        DecisionTreeRegressor(max_depth=3, random_state=0),
        Ridge(),
        LinearRegression(),
    ]


@pytest.mark.parametrize("target", [None, {"": 17, "ai.onnx.ml": 3}], ids=["default", "17"])
def test_skl2onnx_regressors_are_accepted(tmp_path, target):
    from skl2onnx import to_onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    for est in _regressors():
        name = type(est).__name__.lower()
        onx = to_onnx(est.fit(x, y), x[:1], target_opset=target)
        defaults = [o.version for o in onx.opset_import if o.domain in ("", "ai.onnx")]
        assert len(defaults) == 2 and len(set(defaults)) == 1, "skl2onnx 1.20 repeats it"
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(onx.SerializeToString())
        added = invoke("models", "add", path, "--name", name, "--json")
        assert added.exit_code == 0, (name, added.stderr)
        report = json.loads(invoke("validate", path, "--json").stdout)["result"]
        parse = next(c for c in report["checks"] if c["name"] == "parse")
        assert (parse["status"], parse["code"]) == ("warn", "repeated_opset_import"), name
        # skipped: parity (not requested) and examples (none stored with a plain file)
        assert report["ok"] and report["counts"]["fail"] == 0 and report["counts"]["skip"] == 2
        pred = tmp_path / f"{name}.csv"
        pred.write_text("a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in x[:5]) + "\n")
        out = invoke("predict", name, pred)
        assert out.exit_code == 0, (name, out.stderr)


def test_conflicting_default_opsets_still_fail(tmp_path):
    from onnx import helper

    model = linear()
    model.opset_import.append(helper.make_opsetid("", 13))
    path = save(model, tmp_path / "dup.onnx")
    r = invoke("validate", path, "--json")
    assert r.exit_code == 9
    parse = json.loads(r.stdout)["result"]["checks"][1]
    assert (parse["status"], parse["code"]) == ("fail", "duplicate_opset_import")
    assert "17, 13" in parse["message"]


# ---- 3. identical bytes, new metadata; models set ------------------------------------------


def test_identical_bytes_say_what_was_not_applied(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    add_model(path, "lin")
    again = add_model(
        path,
        "lin",
        description="new",
        labels={"team": "ml"},
        columns=list("abcd"),
        aliases=["prod"],
    )
    assert not again.created and again.version == 1 and again.aliases == ["prod"]
    assert again.not_applied == ["--columns", "--description", "--label"]
    meta = find(Store(), "lin:1").meta
    assert meta["description"] is None and meta["columns"] is None
    r = invoke("models", "add", path, "--name", "lin", "--description", "other")
    assert r.exit_code == 0
    assert "already stored as lin:1" in r.stdout
    assert "not applied: --description" in r.stderr and "models set lin:1" in r.stderr


def test_models_set_records_history_and_never_touches_files(tmp_path):
    path = save(linear(), tmp_path / "m.onnx")
    add_model(path, "lin", labels={"keep": "1"})
    before = find(Store(), "lin:1")
    files_before = {p.name: p.read_bytes() for p in (before.directory / "files").iterdir()}
    r = set_metadata("lin", columns=list("abcd"), description="iris", labels={"team": "ml"})
    assert r.ref == "lin:1" and set(r.changed) == {"columns", "description", "labels"}
    assert r.changed["columns"] == {"old": None, "new": ["a", "b", "c", "d"]}
    mv = find(Store(), "lin:1")
    assert mv.meta["labels"] == {"keep": "1", "team": "ml"} and mv.meta["description"] == "iris"
    assert len(mv.meta["metadata_history"]) == 1
    assert {p.name: p.read_bytes() for p in (mv.directory / "files").iterdir()} == files_before
    assert verify("lin").ok
    assert set_metadata("lin:1", description="iris").changed == {}  # no-op: no history
    assert len(find(Store(), "lin").meta["metadata_history"]) == 1
    cli = invoke("models", "set", "lin:1", "--unset-label", "keep", "--clear-columns", "--json")
    assert cli.exit_code == 0, cli.stderr
    changed = json.loads(cli.stdout)["result"]["changed"]
    assert changed["labels"]["new"] == {"team": "ml"} and changed["columns"]["new"] is None
    assert len(find(Store(), "lin").meta["metadata_history"]) == 2


def test_models_set_refuses_bad_requests(tmp_path):
    add_model(save(linear(), tmp_path / "m.onnx"), "lin")
    with pytest.raises(UsageError, match="nothing to change"):
        set_metadata("lin")
    with pytest.raises(UsageError, match="takes 4"):
        set_metadata("lin", columns=["a", "b"])
    r = invoke("models", "set", "lin", "--label", "novalue")
    assert r.exit_code == 2 and "KEY=VALUE" in r.stderr
    assert invoke("models", "set", "nosuch", "--description", "x").exit_code == 3


# ---- 6. single 2-D input without a column map --------------------------------------------


def test_add_says_when_a_single_2d_input_has_no_column_map(tmp_path):
    path = save(linear(n_features=30), tmp_path / "m.onnx")
    r = add_model(path, "wide")
    assert len(r.notes) == 1 and "[N, 30]" in r.notes[0] and "--columns-from" in r.notes[0]
    cli = invoke("models", "add", save(linear(n_features=30, seed=1), tmp_path / "b.onnx"),
                 "--name", "wide")  # fmt: skip
    assert cli.exit_code == 0 and "--columns-from DATA" in cli.stderr
    two = add_model(save(add_two(), tmp_path / "two.onnx"), "two")
    assert two.notes == []  # inputs mapped by name: nothing to say


def test_columns_from_csv_and_parquet_headers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "train.csv"
    csv.write_text('\ufeffpetal_w,sepal_l,"a,b",d\n1,2,3,4\n', encoding="utf-8")
    path = save(linear(), tmp_path / "m.onnx")
    r = add_model(path, "lin", columns_from=csv)
    assert r.notes == []
    assert find(Store(), "lin").meta["columns"] == ["petal_w", "sepal_l", "a,b", "d"]
    table = pa.table({c: [1.0] for c in ("w", "x", "y", "z")})
    pq.write_table(table, tmp_path / "train.parquet")
    cli = invoke("models", "set", "lin", "--columns-from", tmp_path / "train.parquet")
    assert cli.exit_code == 0, cli.stderr
    assert find(Store(), "lin").meta["columns"] == ["w", "x", "y", "z"]
    bad = invoke("models", "add", save(linear(seed=3), tmp_path / "n.onnx"), "--name", "lin",
                 "--columns", "a,b")  # fmt: skip
    assert bad.exit_code == 2 and "takes 4" in bad.stderr
    missing = invoke("models", "add", path, "--name", "x", "--columns-from", tmp_path / "no.csv")
    assert missing.exit_code == 3 and "no.csv" in missing.stderr


# ---- 7. removing an aliased version --------------------------------------------------------


def test_rm_of_an_aliased_version_needs_yes(tmp_path):
    add_model(save(linear(), tmp_path / "m.onnx"), "lin", aliases=["prod", "stable"])
    r = invoke("models", "rm", "lin:prod")
    assert r.exit_code == 2 and r.stdout == ""
    assert "lin:prod" in r.stderr and "lin:stable" in r.stderr and "--yes" in r.stderr
    assert find(Store(), "lin:1").version == 1  # still there
    ok = invoke("models", "rm", "lin:prod", "--yes")
    assert ok.exit_code == 0 and "removed lin:1" in ok.stdout
    add_model(save(linear(seed=2), tmp_path / "n.onnx"), "lin")
    plain = invoke("models", "rm", "lin:2")  # no alias: no question
    assert plain.exit_code == 0, plain.stderr


# ---- 15. import keeps a free version number ------------------------------------------------


def test_import_keeps_the_version_number_when_it_is_free(tmp_path):
    for seed in range(4):
        add_model(save(linear(seed=seed), tmp_path / f"m{seed}.onnx"), "lin")
    archive = tmp_path / "lin4.tar.gz"
    export_version("lin:4", archive)
    other = Store(tmp_path / "other")
    r = import_archive(archive, store=other)
    assert (r.ref, r.renumbered_from) == ("lin:4", None)
    add_model(save(linear(seed=9), tmp_path / "x.onnx"), "copy")  # copy:1 taken
    archive1 = tmp_path / "lin1.tar.gz"
    export_version("lin:1", archive1)
    cli = invoke("models", "import", archive1, "--name", "copy", "--json")
    result = json.loads(cli.stdout)["result"]
    assert (result["ref"], result["renumbered_from"]) == ("copy:2", 1)
    text = invoke("models", "import", archive, "--name", "fresh")
    assert text.exit_code == 0 and "added fresh:4" in text.stdout
    again = invoke("models", "import", archive1, "--name", "copy")  # the same bytes again
    assert again.exit_code == 0 and "already stored as copy:2" in again.stdout
    assert "note:" not in again.stderr  # nothing was renumbered: nothing was imported


def test_import_of_a_missing_archive_names_the_path(tmp_path):
    r = invoke("models", "import", tmp_path / "nope.tar.gz")
    assert r.exit_code == 3 and "nope.tar.gz" in r.stderr
    assert "store reference" not in r.stderr


# ---- 16. forced versions are marked ----------------------------------------------------------


def test_list_marks_forced_versions_and_show_names_failed_checks(tmp_path):
    model = linear()
    model.graph.node[0].op_type = "NoSuchOp"
    path = save(model, tmp_path / "bad.onnx")
    assert invoke("models", "add", path, "--name", "bad").exit_code == 4
    assert invoke("models", "add", path, "--name", "bad", "--force").exit_code == 0
    add_model(save(linear(), tmp_path / "ok.onnx"), "good")
    listing = invoke("models", "list")
    assert listing.exit_code == 0
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "(forced)" in rows["bad"] and "(forced)" not in rows["good"]
    assert "--force" in listing.stderr
    summary = {
        m["name"]: m
        for m in json.loads(invoke("models", "list", "--json").stdout)["result"]["models"]
    }
    assert (summary["bad"]["forced"], summary["bad"]["failed_checks"]) == (True, ["structure"])
    assert (summary["good"]["forced"], summary["good"]["failed_checks"]) == (False, [])
    show = invoke("models", "show", "bad")
    assert "structure" in show.stdout and "yes: failed structure" in show.stdout
    assert "structure (checker_failed)" in show.stderr


# ---- Windows device names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["con", "prn", "aux", "nul", "com1", "com9", "lpt1", "lpt9", "nul.txt", "con.v2", "m."]
)
def test_names_that_cannot_be_files_on_windows_are_refused(tmp_path, name):
    with pytest.raises(InvalidNameError):
        validate_name(name)
    r = invoke("models", "add", save(linear(), tmp_path / "m.onnx"), "--name", name)
    assert r.exit_code == 2 and "Windows" in r.stderr


@pytest.mark.parametrize("name", ["console", "com10", "lpt0", "auxiliary", "con-1", "nul_x"])
def test_similar_names_are_fine(name):
    assert validate_name(name) == name


def test_models_list_of_a_name_not_in_the_store_says_so(tmp_path, store_root):
    add_model(save(linear(), tmp_path / "m.onnx"), "lin")
    r = invoke("models", "list", "nope")
    assert r.exit_code == 0
    assert "no model named 'nope' in the store" in r.output
    assert "no models in the store" not in r.output  # the store does hold models
