"""Fuzzing the model loader and external-data checks: any bytes in, a clean answer out.

Run briefly in CI (hypothesis' default profile); raise max_examples locally to fuzz longer:
    HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_fuzz_loader.py
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from modelforge.errors import ModelForgeError
from modelforge.model.external import check_external_data
from modelforge.model.load import parse_model_bytes
from modelforge.model.schema import extract_schema
from tests import builders
from tests.fuzzing import mutate

SEED = builders.linear().SerializeToString()


def _load_or_refuse(data: bytes, folder) -> None:
    try:
        model = parse_model_bytes(data, "fuzz.onnx")
    except ModelForgeError:
        return
    # whatever parses must also survive schema extraction and external-data checks
    extract_schema(model)
    with contextlib.suppress(ModelForgeError):
        check_external_data(model, folder)


@given(st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory, data):
    _load_or_refuse(data, tmp_path_factory.getbasetemp())


@given(st.data())
def test_mutated_valid_model(tmp_path_factory, data):
    _load_or_refuse(mutate(SEED, data, max_ops=8, max_chunk=16), tmp_path_factory.getbasetemp())
