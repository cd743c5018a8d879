"""An outside tester's audit of the CLI: hostile outputs (devices, FIFOs, symlinks, the input
file itself, a full disk) and hostile data the corpus in tests/hostile did not cover
(nested JSON Lines values, Parquet list columns, JSON nested beyond Python's recursion limit).

Every refusal: a documented exit, one ``error:`` line naming the problem, no traceback; no
special file is ever replaced by a rename (``-o /dev/null`` run as root used to turn
/dev/null into a regular file).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import builders
from tests.hostile.harness import assert_ok, assert_refused, cli, mf

pytestmark = pytest.mark.timeout(120)

CSV = "f0,f1,f2,f3\n1,2,3,4\n5,6,7,8\n"
COLS = "f0,f1,f2,f3"


@pytest.fixture
def model(tmp_path):
    return builders.save(builders.linear(4, 1), tmp_path / "lin.onnx")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(CSV)
    return path


def _fifo(tmp_path):
    """A FIFO held open for reading and writing by the test (so nobody blocks on it)."""
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path, os.open(path, os.O_RDWR | os.O_NONBLOCK)


# outputs ----------------------------------------------------------------------------------


def test_predict_into_a_fifo_streams_into_it_instead_of_replacing_it(model, data, tmp_path):
    fifo, fd = _fifo(tmp_path)
    try:
        out = mf("predict", model, data, "--columns", COLS, "-o", fifo, "--output-format", "csv")
        assert_ok(out)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a file"
        assert os.read(fd, 65536).decode().startswith("y_0\n")
    finally:
        os.close(fd)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_predict_through_a_symlink_keeps_the_link_and_writes_its_target(model, data, tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert_ok(cli("predict", model, data, "--columns", COLS, "-o", link))
    assert link.is_symlink()
    assert target.read_text().startswith("y_0\n")


def test_predict_output_that_is_the_input_is_refused(model, data):
    line = assert_refused(
        cli("predict", model, data, "--columns", COLS, "-o", data), 2, "d.csv", "input"
    )
    assert "Hint:" in line
    assert data.read_text() == CSV


def test_predict_output_that_is_the_input_by_another_path_is_refused(model, data, tmp_path):
    (tmp_path / "sub").mkdir()
    other = tmp_path / "sub" / ".." / "d.csv"
    assert_refused(cli("predict", model, data, "--columns", COLS, "-o", other), 2, "input")
    assert data.read_text() == CSV


@pytest.mark.parametrize("command", ["convert", "export"])
def test_convert_and_export_refuse_a_fifo_output(command, model, tmp_path):
    fifo, fd = _fifo(tmp_path)
    try:
        if command == "convert":
            out = cli("convert", model, "--opset", "17", "-o", fifo)
        else:
            assert_ok(cli("models", "add", model, "--name", "lin", "--columns", COLS))
            out = cli("models", "export", "lin", "-o", fifo)
        assert_refused(out, 10, "pipe.csv", "not a regular file")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    finally:
        os.close(fd)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".pipe")]


def _to_dev_full(*args):
    env = {k: v for k, v in os.environ.items() if k != "MODELFORGE_DEBUG"}
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "modelforge", *map(str, args)],
            stdout=full, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, timeout=60,
        )  # fmt: skip
    return proc.returncode, proc.stderr.decode()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("json_mode", [False, True])
def test_reports_to_a_full_stdout_are_output_errors(model, json_mode):
    rc, err = _to_dev_full("inspect", model, *(["--json"] if json_mode else []))
    assert rc == 10, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1 and "stdout" in err


# data -------------------------------------------------------------------------------------


def test_jsonl_object_in_a_scalar_column_names_the_column(model, tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"f0": {"a": 1}, "f1": 2, "f2": 3, "f3": 4}\n')
    assert_refused(cli("predict", model, path, "--columns", COLS), 5, "n.jsonl", "'f0'")


def test_parquet_list_column_fed_as_one_value_per_row_names_the_column(model, tmp_path):
    path = tmp_path / "l.parquet"
    table = pa.table({"f0": [[1.0], [2.0]], "f1": [1.0, 2], "f2": [1.0, 2], "f3": [1.0, 2]})
    pq.write_table(table, path)
    assert_refused(cli("predict", model, path, "--columns", COLS), 5, "l.parquet", "'f0'")


def test_jsonl_nested_deeper_than_python_can_parse_is_a_data_error(model, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"f0": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert_refused(cli("predict", model, path, "--columns", COLS), 5, "deep.jsonl", "line 1")


def test_json_mode_error_envelope_for_nested_jsonl(model, tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"f0": [1, 2], "f1": 2, "f2": 3, "f3": 4}\n')
    out = cli("predict", model, path, "--columns", COLS, "-o", tmp_path / "o.csv", "--json")
    assert out.rc == 5, str(out)
    assert json.loads(out.stdout)["error"]["exit_code"] == 5
    assert not (tmp_path / "o.csv").exists()


def test_export_to_a_folder_or_an_unwritable_place_is_an_output_error(model, tmp_path):
    assert_ok(cli("models", "add", model, "--name", "lin", "--columns", COLS))
    assert_refused(cli("models", "export", "lin", "-o", tmp_path), 10, "is a directory")
    line = assert_refused(cli("models", "export", "lin", "-o", "/proc/x.tar.gz"), 10, "/proc")
    assert "cannot write" in line


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_object_cells_are_not_fed_in_key_order(fmt, model, tmp_path):
    # {"d": 4, "a": 1, ...} used to be fed as [4, 1, 2, 3]: the order of the keys in the file
    rows = [{"d": 4.0, "a": 1.0, "b": 2.0, "c": 3.0}]
    path = tmp_path / f"s.{fmt}"
    if fmt == "jsonl":
        path.write_text(json.dumps({"x": rows[0]}) + "\n")
    else:
        pq.write_table(pa.table({"x": rows}), path)
    assert_refused(cli("predict", model, path), 5, "column 'x'", "objects")


def test_jsonl_list_in_a_scalar_column_names_the_column(model, tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"f0": [1], "f1": 2, "f2": 3, "f3": 4}\n')
    line = assert_refused(cli("predict", model, path, "--columns", COLS), 5, "l.jsonl", "'f0'")
    assert "lists" in line


# options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "1e300"])
@pytest.mark.parametrize("command", ["predict", "validate"])
def test_timeouts_that_are_not_finite_are_usage_errors(command, value, model, data):
    args = [model, data, "--columns", COLS] if command == "predict" else [model]
    assert_refused(cli(command, *args, "--timeout", value), 2, "--timeout")


def test_a_nan_timeout_in_the_environment_is_a_usage_error(model, monkeypatch):
    monkeypatch.setenv("MODELFORGE_TIMEOUT", "nan")
    assert_refused(cli("validate", model), 2, "MODELFORGE_TIMEOUT")


@pytest.mark.parametrize(
    ("content", "encoding"),
    [(CSV.encode(), "utf-16"), (CSV.encode("utf-16-le") + b"\x00", "utf-16-le")],
    ids=["utf8-read-as-utf16", "odd-byte-at-the-end"],
)
def test_csv_that_is_not_in_the_given_encoding_is_a_data_error(content, encoding, model, tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(content)
    out = cli("predict", model, path, "--columns", COLS, "--encoding", encoding)
    assert_refused(out, 5, "e.csv", encoding)


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_absurd_thread_counts_are_usage_errors_not_crashes(command, model, data):
    # --threads 100000 crashed onnxruntime (SIGSEGV, reported as a hostile model); 2048 hung
    args = [model, data, "--columns", COLS] if command == "predict" else [model]
    assert_refused(cli(command, *args, "--threads", "100000"), 2, "--threads")


DEEP = "[" * 100_000 + "]" * 100_000


def test_inline_data_nested_too_deeply_is_a_usage_error(model):
    assert_refused(cli("predict", model, "--data", '{"x": ' + DEEP + "}"), 2, "--data", "JSON")


def test_json_file_nested_too_deeply_is_a_data_error(model, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"x": ' + DEEP + "}")
    assert_refused(cli("predict", model, path), 5, "deep.json", "JSON")


def test_archive_whose_manifest_is_nested_too_deeply_is_refused(tmp_path, store_root):
    import io
    import tarfile

    archive = tmp_path / "deep.tar.gz"
    payload = DEEP.encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("modelforge-export.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert_refused(cli("models", "import", archive), 4, "manifest")


@pytest.mark.parametrize("entry", [{"path": 5}, "lin.onnx", {"path": "lin.onnx", "size": "1"}])
def test_archive_with_a_malformed_file_list_is_refused(entry, model, tmp_path, store_root):
    import io
    import tarfile

    assert_ok(cli("models", "add", model, "--name", "lin", "--columns", COLS))
    good = tmp_path / "good.tar.gz"
    assert_ok(cli("models", "export", "lin", "-o", good))
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    manifest = json.loads(members["modelforge-export.json"])
    manifest["meta"]["files"] = [entry]
    members["modelforge-export.json"] = json.dumps(manifest).encode()
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert_refused(cli("models", "import", bad, "--name", "other"), 4, "'files'")


# predict --cluster ------------------------------------------------------------------------


@pytest.fixture
def parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({c: [1.0, 2.0] for c in COLS.split(",")}), path)
    return path


@pytest.mark.parametrize(
    "address",
    [
        "tcp://[::1",
        "http://127.0.0.1:1",
        "tcp://host",
        "sched",
        "tcp://127.0.0.1:1?x",
        "tcp://127.0.0.1:1/x",
        "tcp://127.0.0.1:1#f",
        "tcp://u@127.0.0.1:1",
        "tcp://127.0.0.1:0",
    ],
)
def test_cluster_addresses_that_are_not_addresses_are_usage_errors(
    address, model, parquet, tmp_path
):
    if address == "sched":  # a scheduler file that is not JSON
        address = str(tmp_path / "sched.json")
        (tmp_path / "sched.json").write_text("{")
    out = cli(
        "predict", model, parquet, "--columns", COLS, "-o", f"{tmp_path}/o/", "--cluster", address
    )
    assert_refused(out, 2, "--cluster", bound=15)
    assert not (tmp_path / "o").exists()


# stdin ------------------------------------------------------------------------------------


def _closed_stdin(*args):
    env = {k: v for k, v in os.environ.items() if k != "MODELFORGE_DEBUG"}
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-m", "modelforge", *map(str, args)],
        capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    return proc.returncode, proc.stderr.decode()


def test_predict_from_a_closed_stdin_is_a_data_error(model):
    rc, err = _closed_stdin("predict", model, "-")
    assert rc == 5, err
    assert err.startswith("error: ") and "stdin is closed" in err and "Traceback" not in err


def test_models_rm_with_a_closed_stdin_asks_for_yes(model):
    assert_ok(cli("models", "add", model, "--name", "lin", "--columns", COLS))
    assert_ok(cli("models", "tag", "lin:1", "prod"))
    rc, err = _closed_stdin("models", "rm", "lin:1")
    assert rc == 2, err
    assert "--yes" in err and "Traceback" not in err


def test_a_relative_custom_op_library_is_loaded_from_here_not_the_library_path(
    model, data, tmp_path, monkeypatch
):
    # dlopen("lib.so") searches LD_LIBRARY_PATH, so a file in the current folder was "missing"
    (tmp_path / "notalib.so").write_bytes(b"not an ELF file")
    monkeypatch.chdir(tmp_path)
    out = cli("predict", model, data, "--columns", COLS, "--custom-ops", "notalib.so")
    line = assert_refused(out, 7, "notalib.so")
    assert "cannot open shared object file" not in line


# the store root ---------------------------------------------------------------------------


def test_an_empty_store_option_is_a_usage_error_not_the_current_folder(
    model, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = cli("--store", "", "models", "add", model, "--name", "lin", "--columns", COLS)
    assert out.rc == 2 and "--store" in out.stderr, str(out)
    assert not (tmp_path / "models").exists() and not (tmp_path / "store.json").exists()


@pytest.mark.parametrize(
    "command", [("models", "list"), ("models", "show", "lin"), ("inspect", "lin")]
)
def test_a_store_root_that_is_a_file_is_a_store_error(command, tmp_path):
    root = tmp_path / "store-file"
    root.write_text("")
    assert_refused(cli("--store", root, *command), 6, "not a folder")


@pytest.mark.parametrize("command", ["validate", "convert"])
@pytest.mark.parametrize("option", ["--rtol", "--atol"])
def test_nan_tolerances_are_usage_errors(command, option, model, tmp_path):
    extra = ["--opset", "18", "-o", tmp_path / "c.onnx"] if command == "convert" else []
    assert_refused(cli(command, model, *extra, option, "nan"), 2, "--rtol and --atol")
    assert not (tmp_path / "c.onnx").exists()
