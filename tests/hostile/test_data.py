"""Hostile CSV / NPY / NPZ inputs through ``modelforge predict`` (the CLI, so the test does
not depend on the readers' internal API).

Every refusal: exit 5, one stderr line naming the file/row/column and the fix, no output file
left behind. Valid-but-odd inputs (BOM, reordered or extra columns, big-endian arrays, extra
NPZ keys) must give the same numbers as the plain input.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest

from tests import builders
from tests.hostile import data_corpus
from tests.hostile.harness import assert_ok, assert_refused, cli, mf

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """y = x @ W + b with x float32 [N, 2]."""
    return builders.save(builders.linear(n_features=2), tmp_path_factory.mktemp("m") / "lin.onnx")


@pytest.fixture(scope="module")
def expected(model):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": data_corpus.GOOD_ROWS})[0]


def _y(csv_text: str) -> np.ndarray:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    cols = sorted(k for k in rows[0] if k.startswith("y"))
    return np.array([[float(r[c]) for c in cols] for r in rows], np.float32)


@pytest.mark.parametrize("case", list(data_corpus.CSV_CASES))
def test_hostile_csv(case, model, folder):
    data, options, rc, needle = data_corpus.CSV_CASES[case]
    src = folder / "in.csv"
    src.write_bytes(data)
    target = folder / "out.csv"
    big = len(data) > 1_000_000
    run = mf if big else cli  # the huge lines run in a real process, timed
    out = run("predict", model, src, "--columns", "a,b", *options, "-o", target)
    if rc == 0:
        assert_ok(out)
        assert out.stderr == "" and target.exists()
        n = len(target.read_text().splitlines()) - 1
        assert n >= 1
    else:
        line = assert_refused(out, rc, *([needle] if needle else []), bound=10 if big else 30)
        assert "in.csv" in line or "columns" in line, line
        assert not target.exists(), "partial output left behind"
        assert list(folder.iterdir()) == [src], "temporary files left behind"


def test_csv_valid_variants_give_the_same_numbers(model, folder, expected):
    for name, data in {
        "plain": b"a,b\n1,2\n3,4\n",
        "bom_crlf": b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n",
        "reordered_extra": b"c,b,a\nz,2,1\nw,4,3\n",
        "quoted": b'"a","b"\n"1","2"\n"3","4"\n',
    }.items():
        src = folder / f"{name}.csv"
        src.write_bytes(data)
        out = cli("predict", model, src, "--columns", "a,b")
        assert_ok(out)
        np.testing.assert_allclose(_y(out.stdout), expected, rtol=1e-6, err_msg=name)


def test_formula_injection_in_kept_columns_is_neutralised(model, folder):
    src = folder / "f.csv"
    src.write_bytes(b'id,a,b\n=HYPERLINK("http://x"),1,2\n+cmd|calc,3,4\n-2+3,5,6\n@SUM(A1),7,8\n')
    out = cli("predict", model, src, "--columns", "a,b", "--keep", "id")
    assert_ok(out)
    ids = [r["id"] for r in csv.DictReader(io.StringIO(out.stdout))]
    assert len(ids) == 4
    assert all(not v.startswith(("=", "+", "-", "@")) for v in ids), ids


@pytest.mark.parametrize("case", list(data_corpus.npy_cases("/unused")))
def test_hostile_npy_npz(case, model, folder, tmp_path, expected):
    name, data, rc, needle = data_corpus.npy_cases(str(tmp_path))[case]
    src = folder / name
    src.write_bytes(data)
    target = folder / "out.csv"
    out = mf("predict", model, src, "-o", target, timeout=30)
    assert not (tmp_path / "PICKLE_RAN").exists(), "a pickle payload was executed"
    if rc == 0:
        assert_ok(out)
        np.testing.assert_allclose(_y(target.read_text()), expected, rtol=1e-6)
    else:
        assert_refused(out, rc, *([needle] if needle else []), bound=15)
        assert not target.exists(), "partial output left behind"
        assert sorted(os.listdir(folder)) == [name], "temporary files left behind"
