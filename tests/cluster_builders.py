"""Models and Parquet inputs for the cluster tests, built in code."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

from tests import builders

FEATURES = [f"f{i}" for i in range(4)]


def mlp(path: Path, n_features: int = 4, hidden: tuple[int, ...] = (64,), seed: int = 0) -> Path:
    """x float32 [N, F] -> ReLU layers of ``hidden`` sizes -> y [N, 2]; wide layers make a
    part run long enough for a test to kill its worker mid-part."""
    rng = np.random.default_rng(seed)
    sizes = [n_features, *hidden, 2]
    inits, nodes, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = rng.normal(scale=1 / np.sqrt(a), size=(a, b)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        out = "y" if i == len(sizes) - 2 else f"r{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out if out == "y" else f"h{i}"]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"h{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=inits,
    )
    return builders.save(builders._model(graph), path)


def memory_bomb(path: Path, always: int = 0) -> Path:
    """x float32 [N, 4], n int64 [N, 1] -> y = x + 0 * sum(zeros(max(n) + always)): rows
    whose ``n`` is huge make onnxruntime allocate (and fill) that many floats; ``always``
    adds to every row's, so that even blank rows (n = 0) do."""
    shape1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "shape1")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    extra = numpy_helper.from_array(np.array(always, dtype=np.int64), "always")
    nodes = [
        helper.make_node("ReduceMax", ["n"], ["nmax0"], keepdims=0),
        helper.make_node("Add", ["nmax0", "always"], ["nmax"]),
        helper.make_node("Reshape", ["nmax", "shape1"], ["dims"]),
        helper.make_node("ConstantOfShape", ["dims"], ["big"],
                         value=numpy_helper.from_array(np.array([1.0], dtype=np.float32))),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("n", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[shape1, zero, extra],
    )  # fmt: skip
    return builders.save(builders._model(graph), path)


def parquet_inputs(folder: Path, sizes: list[int], *, row_group: int, seed: int = 0,
                   n_features: int = 4, extra: dict | None = None) -> list[str]:  # fmt: skip
    """One Parquet file per size: ``id`` (kept), ``f0..``; ``extra`` adds columns."""
    rng = np.random.default_rng(seed)
    paths = []
    start = 0
    for k, n in enumerate(sizes):
        cols = {"id": np.arange(start, start + n, dtype=np.int64)}
        for i in range(n_features):
            cols[f"f{i}"] = rng.normal(size=n).astype(np.float32)
        for name, fn in (extra or {}).items():
            cols[name] = fn(k, n)
        path = folder / f"in{k}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=row_group)
        paths.append(str(path))
        start += n
    return paths


def read_parts(out: Path) -> pa.Table:
    parts = sorted(glob.glob(str(out / "part-*.parquet")))
    return pa.concat_tables([pq.read_table(p) for p in parts])
