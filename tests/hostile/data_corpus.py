"""Hostile CSV, NPY and NPZ inputs, generated in code."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np


def npy(arr: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_raw_header(header: str, *, version: tuple[int, int] = (1, 0), body: bytes = b"") -> bytes:
    """A hand-written .npy: magic, version, header length, header dict (no checks)."""
    text = header.encode("latin1")
    if version == (1, 0):
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body
    return b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text)) + text + body


class PickleBomb:
    """An object whose unpickling creates a directory: proof that a pickle was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def npz(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=mode) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npz_declaring(size: int) -> bytes:
    """A one-member .npz whose zip headers declare ``size`` uncompressed bytes (a bomb).

    The member really holds a tiny deflated array; only the declared sizes lie, so a reader
    that inflated before checking would try to produce ``size`` bytes.
    """
    data = bytearray(npz({"x.npy": npy(np.zeros((4, 2), np.float32))}, compress=True))
    # local file header: uncompressed size at offset 22; central directory: at offset 24
    assert data[:4] == b"PK\x03\x04"
    struct.pack_into("<I", data, 22, size)
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, size)
    return bytes(data)


GOOD_ROWS = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)

CSV_CASES: dict[str, tuple[bytes, list[str], int, str]] = {
    # id: (file bytes, extra options, exit code, words on the one stderr line)
    "missing_column": (b"a\n1\n", [], 5, "'b'"),
    "extra_columns": (b"a,b,c\n1,2,3\n", ["--keep", "c"], 0, ""),
    "reordered_columns": (b"b,a\n2,1\n", [], 0, ""),
    "duplicate_header": (b"a,a,b\n1,2,3\n", [], 5, "duplicate column name 'a'"),
    "non_numeric": (b"a,b\n1,hello\n", [], 5, "line 2, column 'b'"),
    "nan_spelling_nan": (b"a,b\nNaN,1\n", [], 5, "line 2"),
    "nan_spelling_empty": (b"a,b\n,1\n", [], 5, "line 2"),
    "nan_spelling_NA": (b"a,b\nNA,1\n", [], 5, "line 2"),
    "nan_with_allow_nan": (b"a,b\nNaN,1\n,2\n", ["--allow-nan"], 0, ""),
    "beyond_float32": (b"a,b\n1e39,1\n", [], 5, "float32"),
    "empty_file": (b"", [], 5, "empty"),
    "header_only": (b"a,b\n", [], 5, "no data rows"),
    "ragged_rows": (b"a,b\n1,2\n3\n", [], 5, "line 3"),
    "unbalanced_quotes": (b'a,b\n"1,2\n3,4\n', [], 5, "quote"),
    "semicolon_delimiter": (b"a;b\n1;2\n", [], 5, "--delimiter ';'"),
    "semicolon_with_option": (b"a;b\n1;2\n", ["--delimiter", ";"], 0, ""),
    "utf8_bom_accepted": (b"\xef\xbb\xbfa,b\n1,2\n", [], 0, ""),
    "latin1_bytes": (b"a,b,name\n1,2,x\n3,4,caf\xe9\n", ["--keep", "name"], 5, "--encoding"),
    "latin1_with_encoding": (
        b"a,b,name\n1,2,x\n3,4,caf\xe9\n",
        ["--encoding", "latin-1", "--keep", "name"],
        0,
        "",
    ),
    "binary_garbage": (bytes(range(256)) * 16, [], 5, "not a text csv"),
    # a last, unterminated data line holding only a UTF-8 BOM (found by test_fuzz_data)
    "bom_only_unterminated_row": (b"a,b\n\xef\xbb\xbf", [], 5, "line 2"),
    # a carriage return inside the header line (found by test_fuzz_data: csv.Error escapes)
    "lone_cr_in_header": (b"a\rz,b\n1,2\n", [], 5, "header"),
    "header_with_millions_of_fields": (b",".join([b"c"] * 3_000_000) + b"\n1\n", [], 5, "4 MiB"),
    "row_with_millions_of_fields": (
        b"a,b\n" + b",".join([b"1"] * 5_000_000) + b"\n",
        [],
        5,
        "line 2",
    ),
}


def npz_unsupported_zip_version() -> bytes:
    """A valid .npz whose central directory says 'needs zip version 10.9 to extract'."""
    data = bytearray(npz({"x.npy": npy(GOOD_ROWS)}))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 6, 109)
    return bytes(data)


def npy_cases(tmp: str) -> dict[str, tuple[str, bytes, int, str]]:
    """id: (file name, bytes, exit code, words); ``tmp`` hosts the pickle marker."""
    marker = os.path.join(tmp, "PICKLE_RAN")
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = PickleBomb(marker), PickleBomb(marker)
    good_hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"
    return {
        "pickle_object_array": ("p.npy", npy(obj, allow_pickle=True), 5, "pickle"),
        "big_endian": ("be.npy", npy(GOOD_ROWS.astype(">f4")), 0, ""),
        "wrong_dtype_strings": ("s.npy", npy(np.array([["a", "b"]])), 5, "x"),
        "wrong_shape": ("sh.npy", npy(np.ones((2, 3), np.float32)), 5, "x"),
        "wrong_rank": ("r.npy", npy(np.ones((2, 2, 2), np.float32)), 5, "x"),
        "zero_d": ("z.npy", npy(np.array(1.0, np.float32)), 5, "single scalar"),
        "zero_rows": ("zr.npy", npy(np.zeros((0, 2), np.float32)), 5, "no rows"),
        "truncated_data": ("td.npy", npy(GOOD_ROWS)[:-3], 5, "trunc"),
        "truncated_header": ("th.npy", npy(GOOD_ROWS)[:20], 5, ""),
        "header_declares_4TiB": (
            "big.npy",
            npy_raw_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (549755813888, 2), }"
                + " " * 4
                + "\n",
                body=b"\0" * 64,
            ),  # fmt: skip
            5,
            "",
        ),
        "header_length_4GiB": (
            "hl.npy",
            b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFFF) + good_hdr.encode(),
            5,
            "header",
        ),
        "npz_zip_bomb_4GiB": ("bomb.npz", npz_declaring(0xFFFFFFF0), 5, ""),
        "npz_missing_key": ("mk.npz", npz({"y.npy": npy(GOOD_ROWS)}), 5, "x"),
        "npz_extra_key": ("ek.npz", npz({"x.npy": npy(GOOD_ROWS), "z.npy": npy(GOOD_ROWS)}), 0, ""),
        "npz_traversal_member": ("tr.npz", npz({"../x.npy": npy(GOOD_ROWS)}), 5, ".."),
        "npz_absolute_member": ("ab.npz", npz({"/tmp/x.npy": npy(GOOD_ROWS)}), 5, ""),
        # found by test_fuzz_data: zipfile's NotImplementedError escapes
        "npz_unsupported_zip_version": ("zv.npz", npz_unsupported_zip_version(), 5, "zv.npz"),
        "npz_pickle_member": ("pm.npz", npz({"x.npy": npy(obj, allow_pickle=True)}), 5, "pickle"),
    }
