"""The sandbox's resource limits: configurable by option and environment, clear when hit.

A Loop running 10**12 times stands for a model that never finishes; ConstantOfShape
[1024, 1024, 256] float32 (1 GiB) for one that needs more memory than the cap allows (but
fits the default cap, so raising the limit really helps).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelforge.engine.isolate import DEFAULT_TIMEOUT_S, default_memory_mb
from tests import builders
from tests.hostile.harness import assert_ok, assert_refused, cli, mf, store_entries

pytestmark = pytest.mark.timeout(120)


def _vi(name, dtype=TensorProto.FLOAT, shape=("N", 2)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def spin_model(path):
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c"], ["c_out"]),
            helper.make_node("Add", ["v", "one"], ["v_out"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []), _vi("v")],
        [_vi("c_out", TensorProto.BOOL, []), _vi("v_out")],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)],
        "spin",
        [_vi("x")],
        [_vi("y")],
        initializer=[numpy_helper.from_array(np.array(10**12, np.int64), "M")],
    )
    return builders.save(builders._model(graph), path)


def gib_model(path):
    shape = numpy_helper.from_array(np.array([1024, 1024, 256], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        "gib",
        [_vi("x", shape=[1])],
        [_vi("y", shape=[1])],
        initializer=[shape],
    )
    return builders.save(builders._model(graph), path)


def test_documented_defaults():
    assert DEFAULT_TIMEOUT_S == 120
    assert 0 < default_memory_mb() <= 8192


@pytest.mark.parametrize(
    ("how", "args", "env"),
    [
        ("option", ["--timeout", "1.5"], {}),
        ("environment", [], {"MODELFORGE_TIMEOUT": "1.5"}),
    ],
)
def test_timeout_is_configurable_and_exit_8(how, args, env, folder, store_root):
    model = spin_model(folder / "spin.onnx")
    v = mf("validate", model, "--json", *args, env=env, timeout=60)
    assert_refused(v, 8, "did not finish within 1.5 s", "--timeout", bound=20)
    envelope = json.loads(v.stdout)
    assert envelope["error"]["code"] == "timeout" and envelope["error"]["exit_code"] == 8
    assert envelope["result"]["limits"]["timeout_s"] == 1.5
    a = mf("models", "add", model, "-n", "spin", *args, env=env, timeout=60)
    assert_refused(a, 8, "within 1.5 s", "--timeout", bound=20)
    assert store_entries(store_root) == set()
    out = folder / "converted.onnx"
    c = mf("convert", model, "--opset", "18", "-o", out, *args, env=env, timeout=60)
    assert_refused(c, 8, "did not finish within 1.5 s", bound=20)
    assert not out.exists()


@pytest.mark.parametrize(
    ("how", "args", "env"),
    [
        ("option", ["--memory-limit", "700"], {}),
        ("environment", [], {"MODELFORGE_MEMORY_MB": "700"}),
    ],
)
def test_memory_cap_is_configurable_and_exit_8(how, args, env, folder, store_root, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = gib_model(folder / "gib.onnx")
    v = cli("validate", model, "--json", *args)
    assert_refused(v, 8, "memory", "--memory-limit")
    envelope = json.loads(v.stdout)
    assert envelope["error"]["code"] == "memory_limit"
    assert envelope["result"]["limits"]["memory_mb"] == 700
    a = cli("models", "add", model, "-n", "gib", *args)
    assert_refused(a, 8, "memory", "--memory-limit")
    assert store_entries(store_root) == set()


def test_raising_the_cap_lets_a_large_model_through(folder, monkeypatch):
    # the cap is on the child's whole address space, which it inherits from the parent (a
    # pytest process with onnx, onnxruntime and polars mapped), so leave generous headroom
    monkeypatch.setenv("MODELFORGE_MEMORY_MB", "700")
    model = gib_model(folder / "gib.onnx")
    assert_ok(cli("validate", model, "--memory-limit", "16384"))  # the option beats the env


def test_allocation_failure_while_creating_the_session_is_a_memory_limit(folder):
    """onnxruntime constant-folds the 1 GiB ConstantOfShape at session creation: under a cap
    that leaves too little room, that std::bad_alloc is memory_limit (exit 8), not a bug."""
    model = gib_model(folder / "gib.onnx")
    for cap in ("1000", "1600"):  # here: 1000 fails in smoke, 1600 in session creation
        out = mf("validate", model, "--json", "--memory-limit", cap, timeout=60)
        assert_refused(out, 8, "memory")
        failed = [c for c in json.loads(out.stdout)["result"]["checks"] if c["status"] == "fail"]
        assert failed[0]["code"] == "memory_limit", failed


@pytest.mark.parametrize("value", ["abc", "-1", "1e"])
def test_bad_limit_values_are_usage_errors(value, folder):
    model = builders.save(builders.linear(), folder / "m.onnx")
    out = mf("validate", model, env={"MODELFORGE_TIMEOUT": value}, timeout=30)
    assert_refused(out, 2, "MODELFORGE_TIMEOUT")
    out = mf("validate", model, env={"MODELFORGE_MEMORY_MB": value}, timeout=30)
    assert_refused(out, 2, "MODELFORGE_MEMORY_MB")
