"""Input synthesis from a schema (used by validate's smoke run, convert and bench)."""

from __future__ import annotations

import numpy as np
import pytest

from modelforge.errors import DataError, UsageError
from modelforge.model.schema import ModelSchema, TensorSpec
from modelforge.model.synth import parse_dims, synthesize_inputs


def _spec(name, dtype, shape, type_=None):
    return TensorSpec(name, type_ or f"tensor({dtype})", dtype, shape)


def test_shared_symbolic_dims_and_overrides():
    schema = ModelSchema(
        inputs=[
            _spec("a", "float32", ["N", 3]),
            _spec("b", "float32", ["N", "K"]),
            _spec("c", "int64", [None, 2]),
        ],
        outputs=[],
    )
    feeds = synthesize_inputs(schema, dims={"N": 5, "K": 7})
    assert feeds["a"].shape == (5, 3) and feeds["b"].shape == (5, 7) and feeds["c"].shape == (1, 2)
    assert feeds["a"].dtype == np.float32
    assert synthesize_inputs(schema)["b"].shape == (1, 1)
    batch = synthesize_inputs(schema, batch=8)
    assert batch["a"].shape == (8, 3) and batch["c"].shape == (8, 2)


def test_dtypes_and_ranges():
    schema = ModelSchema(
        inputs=[
            _spec("i", "int64", [1000]),
            _spec("u", "uint8", [10]),
            _spec("flag", "bool", [4]),
            _spec("s", "str", [2], "tensor(string)"),
            _spec("h", "float16", [3]),
        ],
        outputs=[],
    )
    f = synthesize_inputs(schema, seed=3)
    assert f["i"].min() >= 0 and f["i"].max() < 4 and f["i"].dtype == np.int64
    assert f["u"].dtype == np.uint8 and f["flag"].dtype == bool
    assert list(f["s"]) == ["a", "a"] and f["h"].dtype == np.float16
    assert np.array_equal(synthesize_inputs(schema, seed=3)["i"], f["i"])


def test_unsupported_inputs_are_data_errors():
    seq = TensorSpec("seq", "seq(tensor(float))", None, None)
    with pytest.raises(DataError, match="'seq'"):
        synthesize_inputs(ModelSchema(inputs=[seq], outputs=[]))
    bf16 = TensorSpec("w", "tensor(bfloat16)", None, [2])
    with pytest.raises(DataError, match="numpy"):
        synthesize_inputs(ModelSchema(inputs=[bf16], outputs=[]))
    no_rank = _spec("r", "float32", None)
    with pytest.raises(DataError, match="rank"):
        synthesize_inputs(ModelSchema(inputs=[no_rank], outputs=[]))


def test_parse_dims():
    assert parse_dims(["N=4", "seq=16"]) == {"N": 4, "seq": 16}
    for bad in (["N"], ["N=-1"], ["=3"], ["N=x"]):
        with pytest.raises(UsageError):
            parse_dims(bad)
