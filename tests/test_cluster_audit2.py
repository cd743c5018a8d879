"""Defects found by the second acceptance pass over docs/cluster.md, each with its test:
ports that do not speak Dask (an HTTP server, garbage bytes, a worker's address), tampered
manifests, what --resume says about a changed input list, progress that names the parts,
the summary of a run that had nothing left to do, the Spark hook's edge cases, and an
embedded cluster whose workers cannot start. Real processes and sockets, no mocks of Dask."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelforge.cluster import predict_partitioned
from modelforge.errors import NotFoundError, OutputError, RuntimeFailure, UsageError
from tests import cluster_builders as cb

ROOT = Path(__file__).resolve().parents[1]
KW = {"columns": cb.FEATURES, "keep": ["id"]}


@pytest.fixture
def job(tmp_path):
    model = str(cb.mlp(tmp_path / "m.onnx"))
    inputs = cb.parquet_inputs(tmp_path, [300, 200], row_group=100)
    return model, inputs


@contextmanager
def _server(reply: bytes | None):
    """A TCP server on 127.0.0.1 that is not a Dask scheduler: it answers every connection
    with ``reply`` once something arrives (an HTTP server's 400), or never (None)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            if reply is not None:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(reply)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in conns:
            c.close()
        srv.close()


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (None, "accepted the connection but gave no answer in Dask's protocol"),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 40, "not as a Dask scheduler"),
    ],
)
def test_a_port_that_does_not_speak_dask_is_a_one_line_error_in_time(job, tmp_path, monkeypatch,
                                                                     reply, words):  # fmt: skip
    """Were a hang past 60 s (an HTTP server: Dask bounds only the TCP connect) and an
    internal MemoryError, then 20 s closing the half-made client (bytes Dask misreads)."""
    pytest.importorskip("distributed")
    from modelforge.cluster import dask_executor

    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 2.0)
    model, inputs = job
    with _server(reply) as address:
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure, match=words) as err:
            predict_partitioned(model, inputs, f"{tmp_path}/out/", cluster=address, **KW)
        assert time.monotonic() - t0 < 10
    assert err.value.code == "cluster_unreachable" and address in err.value.message
    assert not (tmp_path / "out").exists()


def test_a_workers_address_is_not_taken_for_the_scheduler(job, tmp_path):
    """Was an internal TimeoutError after 20 s, with a traceback from Client.__del__."""
    pytest.importorskip("distributed")
    from distributed import Client

    from tests.test_cluster_dask import dask_cluster

    model, inputs = job
    with dask_cluster(tmp_path / "dask", workers=1) as sched:
        with Client(scheduler_file=str(sched), timeout=30) as c:
            worker = next(iter(c.scheduler_info()["workers"]))
        with pytest.raises(RuntimeFailure, match="is a Dask worker, not the scheduler") as err:
            predict_partitioned(model, inputs, f"{tmp_path}/out/", cluster=worker, **KW)
        assert err.value.code == "cluster_unreachable"
        # the summary of a resume with nothing left to run still says where it ran
        out = f"{tmp_path}/done/"
        first = predict_partitioned(model, inputs, out, cluster=str(sched), **KW)
        again = predict_partitioned(model, inputs, out, cluster=str(sched), resume=True, **KW)
    assert again.parts_run == 0 and again.cluster["kind"] == "scheduler"
    assert again.cluster["address"] == first.cluster["address"] and again.workers == 1
    assert again.columns == first.columns == ["id", "y_0", "y_1"]


def test_resume_with_nothing_left_reports_where_and_what(job, tmp_path):
    """Was ``cluster: {}`` (no kind) and ``columns: []`` once every part was kept."""
    model, inputs = job
    out = f"{tmp_path}/out/"
    predict_partitioned(model, inputs, out, partition_rows=100, **KW)
    s = predict_partitioned(model, inputs, out, partition_rows=100, resume=True, **KW)
    assert s.parts_run == 0 and s.parts_resumed == 5
    assert s.cluster["kind"] == "in-process" and s.columns == ["id", "y_0", "y_1"]


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: _edit(p, lambda d: d.update(parts=5)),
        lambda p: _edit(p, lambda d: d.update(parts="part-000000.parquet")),
        lambda p: _edit(p, lambda d: d.pop("identity")),
        lambda p: _edit(p, lambda d: d.update(identity=[1, 2])),
        lambda p: p.write_text("[" * 100_000 + "]" * 100_000),  # nested past the recursion limit
    ],
)
def test_resume_refuses_a_tampered_success_manifest(job, tmp_path, tamper):
    """Were internal errors (TypeError: 'int' object is not iterable; RecursionError), and
    a manifest without its identity was called 'another ModelForge plan version'."""
    model, inputs = job
    out = tmp_path / "out"
    predict_partitioned(model, inputs, f"{out}/", partition_rows=100, **KW)
    before = {p.name: p.read_bytes() for p in out.glob("part-*")}
    tamper(out / "_SUCCESS")
    with pytest.raises(OutputError, match="is not a readable ModelForge manifest") as err:
        predict_partitioned(model, inputs, f"{out}/", partition_rows=100, resume=True, **KW)
    assert err.value.code == "manifest_unreadable" and "_SUCCESS" in err.value.message
    assert {p.name: p.read_bytes() for p in out.glob("part-*")} == before  # nothing touched


def test_a_success_entry_without_its_sha256_is_rerun_not_trusted(job, tmp_path, caplog):
    """_SUCCESS records every part's sha256; an entry without one was kept on its row
    count alone (the rule for parts committed after a killed client's last update)."""
    model, inputs = job
    out = tmp_path / "out"
    predict_partitioned(model, inputs, f"{out}/", partition_rows=100, **KW)
    _edit(out / "_SUCCESS", lambda d: d["parts"][1].pop("sha256"))
    s = predict_partitioned(model, inputs, f"{out}/", partition_rows=100, resume=True, **KW)
    assert s.parts_run == 1 and s.parts_resumed == 4
    assert "records no sha256 for part-000001.parquet" in caplog.text
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert all(isinstance(p["sha256"], str) for p in manifest["parts"])


def test_resume_says_how_the_list_of_inputs_changed(job, tmp_path):
    model, inputs = job
    out = f"{tmp_path}/out/"
    predict_partitioned(model, inputs, out, **KW)
    (tmp_path / "x").mkdir()
    extra = cb.parquet_inputs(tmp_path / "x", [10], row_group=10)
    cases = [
        (inputs[:1], f"removed '{inputs[1]}'"),
        ([*inputs, *extra], f"added '{extra[0]}'"),
        (inputs[::-1], "the same files in another order"),
    ]
    for given, words in cases:
        with pytest.raises(UsageError, match="the list of inputs changed: ") as err:
            predict_partitioned(model, given, out, resume=True, **KW)
        assert words in err.value.message and err.value.code == "resume_mismatch"


def test_plan_messages_name_the_fix(job, tmp_path, caplog):
    model, inputs = job
    with pytest.raises(NotFoundError, match="a pattern that matched no file") as err:
        predict_partitioned(model, [f"{tmp_path}/nothing/*.parquet"], f"{tmp_path}/o1/", **KW)
    assert "pattern" in err.value.hint
    with pytest.raises(UsageError, match="at least 1, not -1") as err:
        predict_partitioned(model, inputs, f"{tmp_path}/o2/", partition_rows=-1, **KW)
    assert "--partition-rows 1000000" in err.value.hint
    # one file given twice is predicted twice, as by local predict, and says so
    s = predict_partitioned(model, [inputs[1], inputs[1]], f"{tmp_path}/o3/", **KW)
    assert s.rows == 400 and "is given 2 times" in caplog.text and "in1.parquet" in caplog.text


def test_progress_names_the_parts_done(job, tmp_path):
    """The bar showed rows only; the docs promise parts and rows done."""
    model, inputs = job
    master, slave = pty.openpty()
    args = [sys.executable, "-m", "modelforge", "predict", model, *inputs, "--columns",
            ",".join(cb.FEATURES), "-o", f"{tmp_path}/out/", "--partition-rows", "100"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    seen = b""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and stdout == b""  # messages and progress on stderr only
    assert b"predicting parts 5/5" in seen


def test_arrow_predictor_edge_cases(job):
    model, inputs = job
    from modelforge.cluster.spark import arrow_predictor
    from modelforge.errors import DataError

    fn = arrow_predictor(model, columns=cb.FEATURES, keep=["id"])
    table = pq.read_table(inputs[0])
    with pytest.raises(UsageError, match="at least one row"):
        fn.arrow_schema(table.slice(0, 0))
    assert fn.arrow_schema(table.slice(0, 1)).names == ["id", "y_0", "y_1"]
    bad = table.drop(["f2"]).to_batches(max_chunksize=100)
    good = table.to_batches(max_chunksize=100)
    with pytest.raises(DataError, match=r"<Arrow batch 2>"):
        list(fn(iter([good[0], bad[1]])))  # the batch is named, not '<DataFrame>'
    assert pa.Table.from_batches(list(fn(iter(good)))).num_rows == 300


def test_an_unguarded_script_with_a_local_cluster_gets_the_fix(job, tmp_path):
    """Dask's spawned workers re-import the calling script; without the __main__ guard it
    stopped with a bare 'RuntimeError: Nanny failed to start.'"""
    pytest.importorskip("distributed")
    model, inputs = job
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from modelforge.cluster import predict_partitioned\n"
        "from modelforge.errors import ModelForgeError\n"
        "try:\n"
        f"    predict_partitioned({model!r}, {inputs!r}, {str(tmp_path / 'out') + '/'!r},\n"
        f"                        cluster='local:1', columns={cb.FEATURES!r})\n"
        "except ModelForgeError as e:\n"
        "    if __name__ == '__main__':  # the caller, not a worker re-importing this file\n"
        "        print('CODE', e.code, e.hint)\n"
        "    raise\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert "CODE cluster_start_failed" in res.stdout, res.stderr[-2000:]
    assert "__main__" in res.stdout
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_every_error_code_of_the_cluster_front_is_documented():
    """docs/cluster.md lists the codes a partitioned run can stop with; a new code that is
    not there is drift (``parts_missing`` guards against a bug in an executor)."""
    import ast

    codes: set[str] = set()
    for path in [*(ROOT / "modelforge" / "cluster").glob("*.py"),
                 ROOT / "modelforge" / "cli" / "cluster_predict.py"]:  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                    codes.add(kw.value.value)
            refuse = getattr(node.func, "id", None) == "_refuse" and len(node.args) == 3
            if refuse and isinstance(node.args[2], ast.Constant):
                codes.add(node.args[2].value)
    doc = (ROOT / "docs" / "cluster.md").read_text(encoding="utf-8")
    assert len(codes) > 20
    assert sorted(c for c in codes - {"parts_missing"} if f"`{c}`" not in doc) == []


def test_timeout_with_a_cluster_is_said_not_to_apply(job, tmp_path):
    """--timeout limits the guarded in-process run only; with --cluster it was ignored
    without a word."""
    pytest.importorskip("distributed")
    from typer.testing import CliRunner

    from modelforge.cli.app import app

    model, inputs = job
    with _server(b"not dask\r\n" * 8) as address:
        args = ["predict", model, *inputs, "--columns", ",".join(cb.FEATURES), "-o",
                f"{tmp_path}/out/", "--cluster", address, "--timeout", "30", "--json"]  # fmt: skip
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 7, res.stderr
    envelope = json.loads(res.stdout)
    assert envelope["error"]["code"] == "cluster_unreachable"
    assert any("--timeout does not apply with --cluster" in w for w in envelope["warnings"])
    assert "--timeout does not apply" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("kind", ["link", "file"])
def test_a_temporary_that_is_a_link_or_a_file_is_refused(job, tmp_path, kind):
    """A folder holding only a ``_temporary`` link counted as empty: the run wrote its
    attempts, lock and manifest wherever the link pointed."""
    model, inputs = job
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    if kind == "link":
        (out / "_temporary").symlink_to(elsewhere)
    else:
        (out / "_temporary").write_text("mine")
    with pytest.raises(OutputError, match=f"_temporary' is a {kind}") as err:
        predict_partitioned(model, inputs, f"{out}/", **KW)
    assert err.value.code == "output_not_empty"
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == [
        "_temporary"
    ]
