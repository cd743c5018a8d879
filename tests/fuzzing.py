"""Shared hypothesis helpers for the fuzz targets."""

from __future__ import annotations

from hypothesis import strategies as st


def mutate(seed: bytes, data, *, max_ops: int = 6, max_chunk: int = 12) -> bytes:
    """Apply 1..max_ops random flips, truncations, insertions and deletions to ``seed``."""
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(1, max_ops))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if op == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=max_chunk))
        else:
            del raw[pos : pos + data.draw(st.integers(1, max_chunk))]
    return bytes(raw)
