"""onnxruntime capability probing: found by probing, cached per version, atomic cache."""

from __future__ import annotations

import json

import onnx
import pytest

from modelforge.model import capabilities
from modelforge.model.capabilities import cache_path, runtime_capabilities

pytestmark = pytest.mark.timeout(60)


def test_probe_finds_maxima_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path))
    caps = runtime_capabilities(refresh=True)
    # onnxruntime accepts at least what its onnx dependency era defined, and opset 17
    assert caps.opset_limit("") >= 17
    assert caps.opset_limit("ai.onnx") == caps.opset_limit("")
    assert caps.max_ir_version >= 8
    assert caps.opset_limit("ai.onnx.ml") >= 3
    assert caps.opset_limit("com.example") is None
    path = cache_path(caps.onnxruntime_version)
    data = json.loads(path.read_text())
    assert data["max_opset"][""] == caps.opset_limit("")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_probe_result_is_the_real_boundary(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path))
    caps = runtime_capabilities()
    top = caps.opset_limit("")
    assert capabilities._accepts(10, {"": top})
    assert not capabilities._accepts(10, {"": top + 1})
    assert capabilities._accepts(caps.max_ir_version, {"": 13})
    assert not capabilities._accepts(caps.max_ir_version + 1, {"": 13})
    assert caps.max_ir_version >= min(onnx.IR_VERSION, 10)


def test_cache_is_used_and_damaged_cache_reprobes(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path))
    caps = runtime_capabilities()
    path = cache_path(caps.onnxruntime_version)
    data = json.loads(path.read_text())
    data["max_ir_version"] = 3  # a planted value proves the cache is read
    path.write_text(json.dumps(data))
    assert runtime_capabilities().max_ir_version == 3
    path.write_text("{not json")
    assert runtime_capabilities().max_ir_version == caps.max_ir_version
