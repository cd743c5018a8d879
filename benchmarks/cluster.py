"""Benchmark: partitioned predict, in-process and on embedded Dask clusters (ratios only).

Data: ROWS x 20 float32 columns in 8 Parquet files of 64 equal row groups (ROWS rounded
down to a multiple of 512, so that a file is one part and no part is a short tail). Models: the
LogisticRegression and the MLP 20->256->256->1 of benchmarks/predict_csv.py.

  1. efficiency: single-process ``predict_to`` (one file of output) vs
     ``predict_partitioned(cluster="local:1")``, the latter's ``run_s`` (cluster start-up
     excluded, reported separately), and its steady state: rows/s of the parts after the
     worker's first (its first runs in a fresh process) from the ``_SUCCESS`` manifest;
  2. local:2 vs local:1 on the MLP (``run_s``), and the single process with 1 and 2
     intra-op threads: local:1 is one worker with 2 intra-op threads, local:2 two workers
     with 1, so 2 x local:1 / (1-thread single process) bounds the speed-up on 2 cores
     if that process used one core; it uses more (its reader and writer threads overlap the
     runs), so the tighter bound is local:1 / (its CPU seconds / cores);
  3. per-part overhead: the same rows in 8 / 64 / 512 parts, LR, in-process and local:1:
     (t(512) - t(8)) / 504;
  4. model transfer: a 10 / 100 MiB blob as a task input (``client.submit(identity, blob)``)
     until a task on a worker has it.

Medians of REPEATS interleaved runs, all in one process (import costs excluded).

    python benchmarks/cluster.py                       # 1M rows, 3 repeats
    python benchmarks/cluster.py --rows 200000 --repeats 1    # quick smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_csv import FEATURES, make_models  # noqa: E402

FILES = 8
GROUPS_PER_FILE = 64


def make_inputs(folder: Path, rows: int) -> tuple[list[str], int]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    group = max(1, rows // FILES // GROUPS_PER_FILE)
    per_file = group * GROUPS_PER_FILE  # exactly 64 full row groups: no short tail group
    paths = []
    for k in range(FILES):
        x = rng.normal(size=(per_file, FEATURES)).astype(np.float32)
        table = pa.table({f"f{i}": x[:, i] for i in range(FEATURES)})
        path = folder / f"part{k}.parquet"
        pq.write_table(table, path, row_group_size=group)
        paths.append(str(path))
    return paths, group


def _fresh(path: Path) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return str(path) + "/"


CPU_S: dict[int | None, list[float]] = {}  # CPU seconds of single() runs, by threads


def single(model: str, inputs: list[str], work: Path, threads: int | None = None) -> float:
    from modelforge import predict_to
    from modelforge.engine.session import SessionConfig

    out = work / "single.parquet"
    t0, c0 = time.perf_counter(), time.process_time()
    predict_to(model, inputs, str(out), session_config=SessionConfig(threads=threads))
    CPU_S.setdefault(threads, []).append(time.process_time() - c0)
    return time.perf_counter() - t0


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def parts(model: str, inputs: list[str], work: Path, cluster: str | None, rows: int) -> dict:
    from modelforge.cluster import predict_partitioned

    s = predict_partitioned(model, inputs, _fresh(work / "parts"), cluster=cluster,
                            partition_rows=rows)  # fmt: skip
    return {**s.timings, "seconds": s.seconds, "parts": s.parts, "steady": steady(work / "parts")}


def steady(out: Path) -> float:
    """Rows/s of the parts each worker ran after its first one (session creation and first
    runs excluded), from the _SUCCESS manifest."""
    import json

    parts = json.loads((out / "_SUCCESS").read_text())["parts"]
    seen: set[int] = set()
    rows = seconds = 0.0
    for p in parts:  # submitted in order: a worker's first part is its lowest index
        if p["pid"] not in seen:
            seen.add(p["pid"])
            continue
        rows += p["rows"]
        seconds += p["seconds"]
    return rows / seconds if seconds else float("nan")


def transfer(mib: int, repeats: int) -> dict:
    from modelforge.cluster.dask_executor import Dask
    from modelforge.cluster.worker import identity

    ex = Dask("local:1")
    try:
        times = []
        for _ in range(repeats):
            blob = os.urandom(mib * 1024 * 1024)
            t0 = time.perf_counter()
            fut = ex.client.submit(identity, blob, pure=False)
            assert ex.client.submit(len, fut, pure=False).result() == len(blob)
            times.append(time.perf_counter() - t0)
            del fut
        return {"MiB": mib, "seconds": statistics.median(times)}
    finally:
        ex.close()


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run_in(work: Path, args: argparse.Namespace) -> None:
    models = {k: str(v) for k, v in make_models(work).items()}
    inputs, group = make_inputs(work, args.rows)
    per_file = group * GROUPS_PER_FILE
    print(f"{per_file * FILES:,} rows x {FEATURES} in {FILES} files, row groups of {group:,}; "
          f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for name in args.models.split(","):
        model = models[name]
        t_single, runs1, runs2, starts, rates, one, two = [], [], [], [], [], [], []
        single(model, inputs[:1], work)  # untimed: this process's first-call costs
        for _ in range(args.repeats):
            t_single.append(single(model, inputs, work))
            r1 = parts(model, inputs, work, "local:1", per_file)
            runs1.append(r1["run_s"])
            starts.append(r1["start_s"])
            rates.append(r1["steady"])
            if name == "mlp":
                runs2.append(parts(model, inputs, work, "local:2", per_file)["run_s"])
                one.append(single(model, inputs, work, threads=1))
                two.append(single(model, inputs, work, threads=2))
        line = (
            f"{name}: single {med(t_single)} s; local:1 run {med(runs1)} s "
            f"(start-up {med(starts)} s); efficiency {med(t_single) / med(runs1):.2f}"
        )
        single_rate = per_file * FILES / med(t_single)
        line += f"; steady-state efficiency {med(rates) / single_rate:.2f}"
        if runs2:
            line += (
                f"; local:2 run {med(runs2)} s, speed-up vs local:1 {med(runs1) / med(runs2):.2f}x"
            )
            # local:1 runs 2 intra-op threads, local:2 two 1-thread processes: on 2 cores the
            # latter can at best halve a 1-thread process's time (t1 / 2), so local:2 vs
            # local:1 is at most 2 t2 / t1 if local:1 ran as fast as the single process
            # (t2), and 2 local:1 / t1 for the local:1 measured; the 1-thread process uses
            # more than a core, so the CPU it needs over every core is the tighter bound
            cores = os.cpu_count() or 1
            cpu1 = med(CPU_S[1])
            line += (
                f"; single process with 1 / 2 intra-op threads {med(one)} / {med(two)} s: "
                f"bound {2 * med(two) / med(one):.2f}x (local:1 at single-process speed), "
                f"{2 * med(runs1) / med(one):.2f}x (this local:1); the 1-thread process uses "
                f"{cpu1} CPU s ({cpu1 / med(one):.2f} cores): CPU bound "
                f"{med(runs1) / (cpu1 / cores):.2f}x on {cores} cores"
            )
        print(f"{line}; {load()}", flush=True)
    lr = models["lr"]
    for cluster in (None, "local:1"):
        got = {}
        for n in (8, 64, 512):
            rows = per_file * FILES // n
            got[n] = med(
                [parts(lr, inputs, work, cluster, rows)["run_s"] for _ in range(args.repeats)]
            )
        per_part = (got[512] - got[8]) / 504 * 1000
        print(
            f"per-part overhead ({cluster or 'in-process'}): 8/64/512 parts "
            f"{got[8]}/{got[64]}/{got[512]} s -> {per_part:.1f} ms per part; {load()}",
            flush=True,
        )
    for mib in (10, 100):
        t = transfer(mib, args.repeats)
        print(f"model transfer {mib} MiB as a task input: {t['seconds']:.3f} s; {load()}",
              flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="lr,mlp")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-cluster-bench-") as tmp:
        run_in(Path(tmp), args)


if __name__ == "__main__":
    main()
