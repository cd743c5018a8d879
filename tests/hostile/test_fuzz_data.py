"""Fuzzing the CSV and NPY/NPZ readers through the public API: any bytes in, either a
prediction or a ModelForgeError out — never another exception, never a hang.

Brief in CI (hypothesis' "ci" profile); fuzz longer locally:
    HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest tests/hostile/test_fuzz_data.py
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import modelforge
from modelforge.errors import ModelForgeError
from tests import builders
from tests.fuzzing import mutate

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(
        builders.save(builders.linear(n_features=2), tmp_path_factory.mktemp("fz") / "m.onnx")
    )


def _predict_or_refuse(model: str, path, data: bytes, **kw) -> None:
    path.write_bytes(data)
    try:
        result = modelforge.predict(model, str(path), **kw)
    except ModelForgeError as err:
        assert err.message and "\n" not in str(err)
        return
    assert result is not None


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


CSV_ALPHABET = st.sampled_from(
    [b",", b";", b"\t", b'"', b"\n", b"\r\n", b"a", b"b", b"1", b"2.5", b"-", b"e", b"E39",
     b"nan", b"inf", b" ", b"\xef\xbb\xbf", b"\xe9", b"\x00", b"=", b"''"]
)  # fmt: skip
SEED_CSV = b"a,b\n1,2\n3.5,-4e2\n"
SEED_NPY = _npy(np.arange(6, dtype=np.float32).reshape(3, 2))


def _mutate(seed: bytes, data) -> bytes:
    return mutate(seed, data)


@given(st.lists(CSV_ALPHABET, max_size=60).map(b"".join))
@example(b"\xef\xbb\xbf")  # found by this test: IndexError in engine/runner.py (see README)
def test_csv_token_soup(model, tmp_path, data):
    _predict_or_refuse(model, tmp_path / "f.csv", b"a,b\n" + data, columns=["a", "b"])


@given(st.data())
def test_csv_mutated(model, tmp_path, data):
    _predict_or_refuse(model, tmp_path / "f.csv", _mutate(SEED_CSV, data), columns=["a", "b"])


@given(st.binary(max_size=512))
@example(b"\r\x01")  # found by this test: csv.Error escapes from data/csv_reader.py
def test_csv_random_bytes(model, tmp_path, data):
    _predict_or_refuse(model, tmp_path / "f.csv", data, columns=["a", "b"])


@given(st.data())
def test_npy_mutated(model, tmp_path, data):
    _predict_or_refuse(model, tmp_path / "f.npy", _mutate(SEED_NPY, data))


@given(
    st.sampled_from(["<f4", ">f4", "<f8", "<i8", "|b1", "<U3", "|O", "<c8", "V8", "bogus"]),
    st.booleans(),
    st.lists(st.integers(-2, 2**40), max_size=4),
)
def test_npy_forged_headers(model, tmp_path, descr, fortran, shape):
    header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {tuple(shape)}, }}"
    raw = header.encode().ljust(118) + b"\n"
    data = b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + b"\0" * 48
    _predict_or_refuse(model, tmp_path / "f.npy", data)


@given(st.data())
def test_npz_mutated(model, tmp_path, data):
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((2, 2), np.float32))
    _predict_or_refuse(model, tmp_path / "f.npz", _mutate(buf.getvalue(), data))


def test_npz_unsupported_zip_version_found_by_fuzzing(model, tmp_path):
    """test_npz_mutated's find (byte 205 flipped): zipfile raises NotImplementedError."""
    from tests.hostile.data_corpus import npz_unsupported_zip_version

    _predict_or_refuse(model, tmp_path / "f.npz", npz_unsupported_zip_version())
