"""NPY/NPZ readers: headers validated before allocation, pickles never loaded, zip checks."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from modelforge.data import npy
from modelforge.errors import DataError


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def header_bytes(header: str, data: bytes = b"", version: int = 1) -> bytes:
    h = header.encode("latin-1")
    if version == 1:
        return npy.MAGIC + bytes([1, 0]) + struct.pack("<H", len(h)) + h + data
    return npy.MAGIC + bytes([2, 0]) + struct.pack("<I", len(h)) + h + data


def test_round_trip_file_and_bytes(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "a.npy"
    np.save(p, arr)
    assert np.array_equal(npy.load_npy_file(str(p)), arr)
    assert np.array_equal(npy.load_npy_bytes(npy_bytes(arr), "x"), arr)
    fortran = np.asfortranarray(arr)
    assert np.array_equal(npy.load_npy_bytes(npy_bytes(fortran), "x"), arr)


def test_big_endian_read_as_values():
    arr = np.arange(6, dtype=">f8").reshape(3, 2)
    got = npy.load_npy_bytes(npy_bytes(arr), "x")
    assert got.tolist() == arr.tolist()


def test_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    obj = np.array([Evil()], dtype=object)
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    with pytest.raises(DataError) as info:
        npy.load_npy_bytes(buf.getvalue(), "evil.npy")
    assert info.value.code == "pickle_refused"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x93NUMPY\x01", "truncated_npy"),
        (b"not numpy at all", "invalid_npy"),
        (
            header_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }\n"),
            "truncated_npy",
        ),
        (npy.MAGIC + bytes([2, 0]) + struct.pack("<I", 0xFFFFFFF0) + b"{", "invalid_npy"),
        (
            header_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n"),
            "invalid_npy",
        ),
        (
            header_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }\n"),
            "invalid_npy",
        ),
        (header_bytes("__import__('os').system('echo hi')\n"), "invalid_npy"),
        (npy_bytes(np.zeros(10, np.float32))[:-3], "truncated_npy"),
        (npy_bytes(np.zeros(10, np.float32)) + b"xx", "invalid_npy"),
    ],
)
def test_hostile_npy(data, code):
    with pytest.raises(DataError) as info:
        npy.load_npy_bytes(data, "bad.npy")
    assert info.value.code == code


def test_huge_declared_shape_in_file_is_refused_without_allocating(tmp_path):
    p = tmp_path / "big.npy"
    p.write_bytes(
        header_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (549755813888,), }\n")
    )
    with pytest.raises(DataError) as info:
        npy.load_npy_file(str(p))
    assert "4,398,046,511,104 bytes" in str(info.value)


def test_npz_keys_and_unsafe_members(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=np.ones((2, 3), np.float32), y=np.array(["a", "b"]))
    got = npy.load_npz(str(p), "a.npz")
    assert set(got) == {"x", "y"} and got["y"].tolist() == ["a", "b"]
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../etc/x.npy", npy_bytes(np.ones(2)))
    with pytest.raises(DataError) as info:
        npy.load_npz(str(bad), "bad.npz")
    assert info.value.code == "unsafe_npz_member"


def test_npz_zip_bomb_refused_by_declared_size(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_MAX_ARRAY_BYTES", str(50 * 1024 * 1024))
    p = tmp_path / "bomb.npz"
    zeros = npy_bytes(np.zeros(100 * 1024 * 1024 // 8))  # 100 MB of zeros, ~100 KB deflated
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", zeros)
    assert p.stat().st_size < 1_000_000
    with pytest.raises(DataError) as info:
        npy.load_npz(str(p), "bomb.npz")
    assert info.value.code == "npz_too_large"


def test_npz_member_lying_about_its_shape(tmp_path):
    p = tmp_path / "lie.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(
            "x.npy",
            header_bytes(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000,), }\n", b"\0" * 16
            ),
        )
    with pytest.raises(DataError) as info:
        npy.load_npz(str(p), "lie.npz")
    assert info.value.code == "truncated_npy"


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"garbage" * 10)
    with pytest.raises(DataError) as info:
        npy.load_npz(str(p), "x.npz")
    assert info.value.code == "invalid_npz"
