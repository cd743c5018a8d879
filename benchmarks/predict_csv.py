"""Benchmark: `modelforge predict` on a large CSV against hand-written pipelines.

Measures whole processes, interleaved rounds, reporting the fastest round's wall time (the
figure least disturbed by neighbours on a shared machine), the median, and peak RSS:

  (a) modelforge predict MODEL data.csv -o out.csv
  (b) a minimal hand-written streamed pipeline: 16 MB byte blocks cut at the last newline,
      polars read_csv with a Float32 schema, onnxruntime in 10k-row batches, polars write_csv
  (c) naive pandas: read_csv + one session.run + to_csv

Models: a scikit-learn LogisticRegression converted with skl2onnx (zipmap disabled: label +
probabilities as tensors) and an MLP 20 -> 256 -> 256 -> 1 built with onnx.helper.

    python benchmarks/predict_csv.py                 # 1M rows, 5 interleaved rounds
    python benchmarks/predict_csv.py --rows 200000 --repeats 1     # quick smoke run
    python benchmarks/predict_csv.py --big           # also (a) on a 10x file (~2 GB): RSS
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = 20

HAND_WRITTEN = r"""
import sys, numpy as np, polars as pl, onnxruntime as ort
model, data, out = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0].name
names = [o.name for o in sess.get_outputs()]
with open(data, "rb") as fh, open(out, "wb") as fo:
    header = fh.readline()
    cols = header.decode().strip().split(",")
    schema = {c: pl.Float32 for c in cols}
    rest, first = b"", True
    while True:
        chunk = fh.read(16 << 20)
        buf = rest + chunk
        if not chunk:
            block, rest = buf, b""
        else:
            cut = buf.rfind(b"\n") + 1
            block, rest = buf[:cut], buf[cut:]
        if block:
            x = pl.read_csv(block, has_header=False, schema=schema).to_numpy()
            x = np.ascontiguousarray(x)
            parts = [sess.run(names, {inp: x[i:i + 10000]}) for i in range(0, len(x), 10000)]
            res = {}
            for j, n in enumerate(names):
                a = np.concatenate([p[j] for p in parts])
                if a.ndim == 1:
                    res[n] = a
                else:
                    for k in range(a.shape[1]):
                        res[f"{n}_{k}"] = a[:, k]
            pl.DataFrame(res).write_csv(fo, include_header=first)
            first = False
        if not chunk:
            break
"""

NAIVE = r"""
import sys, numpy as np, pandas as pd, onnxruntime as ort
model, data, out = sys.argv[1:4]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
df = pd.read_csv(data, dtype=np.float32)
names = [o.name for o in sess.get_outputs()]
res = sess.run(names, {sess.get_inputs()[0].name: df.to_numpy()})
cols = {}
for n, a in zip(names, res):
    if a.ndim == 1:
        cols[n] = a
    else:
        for k in range(a.shape[1]):
            cols[f"{n}_{k}"] = a[:, k]
pd.DataFrame(cols).to_csv(out, index=False)
"""


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        first = True
        for lo in range(0, rows, 500_000):
            n = min(500_000, rows - lo)
            x = rng.normal(size=(n, FEATURES)).astype(np.float32)
            pl.DataFrame({f"f{i}": x[:, i] for i in range(FEATURES)}).write_csv(
                fh, include_header=first
            )
            first = False


def make_models(folder: Path) -> dict[str, Path]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    lr = LogisticRegression(max_iter=500).fit(x, y)
    lr_model = to_onnx(lr, x[:1], options={id(lr): {"zipmap": False}}, target_opset=17)
    paths = {"lr": folder / "lr.onnx", "mlp": folder / "mlp.onnx"}
    onnx.save_model(lr_model, paths["lr"])

    def dense(name: str, n_in: int, n_out: int) -> list[onnx.TensorProto]:
        w = rng.normal(scale=n_in**-0.5, size=(n_in, n_out)).astype(np.float32)
        return [
            numpy_helper.from_array(w, f"{name}_w"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}_b"),
        ]

    inits = dense("l1", FEATURES, 256) + dense("l2", 256, 256) + dense("l3", 256, 1)
    nodes = [
        helper.make_node("Gemm", ["x", "l1_w", "l1_b"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "l2_w", "l2_b"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "l3_w", "l3_b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )  # fmt: skip
    mlp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mlp.ir_version = 8
    onnx.save_model(mlp, paths["mlp"])
    return paths


def run_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process.

    The RSS comes from ``/usr/bin/time -f %M`` when it exists: ``wait4`` on a child forked
    from this process counts this process's own RSS before the ``exec`` (~290 MiB once the
    models are built), which hid every smaller peak."""
    timer = ["/usr/bin/time", "-f", "MAXRSS_KB %M"] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    proc = subprocess.Popen([*timer, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    for line in reversed(err.splitlines()):
        if line.startswith("MAXRSS_KB "):
            return wall, int(line.split()[1]) / 1024
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", "--rounds", dest="repeats", type=int, default=5)
    ap.add_argument("--models", default="lr,mlp")
    ap.add_argument("--big", action="store_true", help="also run (a) on a 10x file for RSS")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    if args.workdir:  # kept: reuse the generated data on the next run
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        run_in(work, args)
    else:
        with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
            run_in(Path(tmp), args)


def run_in(work: Path, args: argparse.Namespace) -> None:
    data = work / f"data_{args.rows}.csv"
    if not data.exists():
        make_data(data, args.rows)
    models = make_models(work)
    py = sys.executable
    (work / "hand.py").write_text(HAND_WRITTEN)
    (work / "naive.py").write_text(NAIVE)
    out = work / "out.csv"
    print(f"data: {data} ({data.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows x {FEATURES})")
    print(f"python: {py}; cpus: {os.cpu_count()}")
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name in args.models.split(","):
        model = str(models[name])
        cmds = {
            "a": [py, "-m", "modelforge", "predict", model, str(data), "-o", str(out)],
            "b": [py, str(work / "hand.py"), model, str(data), str(out)],
            "c": [py, str(work / "naive.py"), model, str(data), str(out)],
        }
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.repeats):
            for k, cmd in cmds.items():
                res[k].append(run_process(cmd))
        results[name] = res
        best = {k: min(w for w, _ in v) for k, v in res.items()}
        med = {k: statistics.median(w for w, _ in v) for k, v in res.items()}
        rss = {k: statistics.median(r for _, r in v) for k, v in res.items()}
        print(f"\n{name}: fastest (median) of {args.repeats} interleaved rounds")
        for k, label in (("a", "modelforge"), ("b", "hand-written"), ("c", "naive pandas")):
            print(
                f"  ({k}) {label:<13} {best[k]:6.2f} s ({med[k]:.2f} s)  peak RSS {rss[k]:6.0f} MiB"
            )
        print(f"  (a)/(b) = {best['a'] / best['b']:.2f}  (target <= 1.05)")
        print(f"  (c)/(a) = {best['c'] / best['a']:.2f}  (target >= 2.5 for lr)")
    if args.big:
        big = work / f"data_{args.rows * 10}.csv"
        if not big.exists():
            make_data(big, args.rows * 10)
        model = str(models["lr"])
        small_rss = statistics.median(r for _, r in results.get("lr", {}).get("a", [(0, 0)]))
        wall, rss = run_process(
            [py, "-m", "modelforge", "predict", model, str(big), "-o", str(out)]
        )
        print(
            f"\n10x file ({args.rows * 10:,} rows): (a) {wall:.1f} s, peak RSS {rss:.0f} MiB; "
            f"ratio to 1x {rss / small_rss:.2f} (target <= 1.1)"
        )
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
