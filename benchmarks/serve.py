"""Benchmark: `modelforge serve` against KServe's and MLServer's Python model servers.

Same models for every server (from benchmarks/predict_csv.py: a scikit-learn
LogisticRegression with 20 inputs, and an MLP 20 -> 256 -> 256 -> 1), same onnxruntime
session options (intra-op threads = cores, spinning off). The load comes from tritonclient
HTTP clients, one per process (a pool started once and reused), all started together and
run for --duration seconds per cell. Each cell reports requests/s, the p99 latency seen by
the clients, and the server's own CPU time per request (user + system of its whole process
tree, from /proc): on a small shared machine the load clients take most of the cores, so
throughput ratios are capped by the harness while CPU per request is not. Cells are
interleaved: for each (model, rows, format, clients), every server is measured back to
back, in rotating order, so that a noisy neighbour hits all of them alike. The in-process
onnxruntime loop is the ceiling.

The peers run from their own virtualenvs (this script installs nothing, and prints which
interpreter it used for each server): --kserve-venv (default /work/peers-venv: `kserve`,
onnxruntime) and --mlserver-venv (default /work/peers-venv-mlserver: `mlserver`,
`uvloop==0.21.0`, onnxruntime; MLServer's pydantic pins clash with kserve's). MLServer's
REST server has no binary tensor extension (SeldonIO/MLServer#324): binary cells are "n/a".

`--servers ...,granian` adds ModelForge's own ASGI application under granian (Rust HTTP)
instead of uvicorn (peers/granian_modelforge.py, from --granian-venv, default
/work/peers-venv-granian: `granian` + `modelforge[serve]`): not a peer, a measurement of
the HTTP stack.

`--servers ...,modelforge-b --b-args "..."` adds a second `modelforge serve` with other
options, measured in the same interleaved run (an A/B of a setting; not a peer).

    python benchmarks/serve.py                                  # full grid, 3 s cells
    python benchmarks/serve.py --duration 2 --clients 1,8 --rows 1 --formats json   # quick
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FEATURES = 20
EXTRA_ARGS: list[str] = []  # --modelforge-args: extra `modelforge serve` options
B_ARGS: list[str] = []  # --b-args: the options of the modelforge-b server
NOT_PEERS = ("modelforge", "modelforge-b", "floor", "granian")


# -- client processes -------------------------------------------------------------------
def _client(conn) -> None:  # pragma: no cover - runs in a child process
    import numpy as np
    import tritonclient.http as http

    clients: dict[str, object] = {}
    conn.send("ready")  # imports done: the pool is not measured while children start up
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        url, model, inp_name, out_names, rows, binary, start_at, duration = cmd
        client = clients.get(url)
        if client is None:
            client = http.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
            clients[url] = client
        x = np.random.default_rng(os.getpid()).normal(size=(rows, FEATURES)).astype(np.float32)
        inp = http.InferInput(inp_name, [rows, FEATURES], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [http.InferRequestedOutput(n, binary_data=binary) for n in out_names]
        # tritonclient sends JSON without a Content-Type, which KServe takes for binary (400);
        # every server gets the header, so that the JSON cells measure JSON everywhere
        headers = None if binary else {"Content-Type": "application/json"}
        lat: list[float] = []
        errors = 0
        try:
            client.infer(model, [inp], outputs=outs, headers=headers)
        except Exception:
            errors += 1
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                client.infer(model, [inp], outputs=outs, headers=headers)
                lat.append(time.perf_counter() - t0)
            except Exception:
                errors += 1
        conn.send((lat, errors))


class Pool:
    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_client, args=(child,), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            if c.recv() != "ready":
                raise SystemExit("a client process failed to start")

    def run(self, n: int, cmd: tuple, duration: float) -> tuple[list[float], int]:
        start_at = time.time() + 1.0 + 0.02 * n
        for c in self.conns[:n]:
            c.send((*cmd, start_at, duration))
        lat: list[float] = []
        errors = 0
        for c in self.conns[:n]:
            got, err = c.recv()
            lat.extend(got)
            errors += err
        return lat, errors

    def cpu_s(self, n: int) -> float:
        """CPU seconds used so far by the first ``n`` client processes."""
        return sum(_tree_cpu_s(p.pid) for p in self.procs[:n])

    def close(self) -> None:
        for c in self.conns:
            c.send(None)
        for p in self.procs:
            p.join(5)


# -- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str, models: list[str]) -> bool:
    try:
        for path in ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]:
            with urllib.request.urlopen(url + path, timeout=2) as r:
                if r.status != 200:
                    return False
        return True
    except OSError:
        return False


def start(kind: str, paths: dict[str, Path], pythons: dict[str, str], work: Path):
    port = free_port()
    pairs = [f"{n}={p}" for n, p in paths.items()]
    if kind in ("modelforge", "modelforge-b"):
        cmd = [
            sys.executable,
            "-m",
            "modelforge",
            "serve",
            *map(str, paths.values()),
            "--port",
            str(port),
            "--quiet",
            *(EXTRA_ARGS if kind == "modelforge" else B_ARGS),
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT), MODELFORGE_HOME=str(work / "store"))
    elif kind == "floor":  # not a peer: the harness ceiling (see peers/floor_server.py)
        cmd = [sys.executable, str(HERE / "peers" / "floor_server.py"), "--port", str(port), *pairs]
        env = dict(os.environ)
    elif kind == "granian":  # not a peer: ModelForge's app under another HTTP server
        cmd = [pythons[kind], str(HERE / "peers" / "granian_modelforge.py"), "--port", str(port),
               *pairs]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), MODELFORGE_HOME=str(work / "store"))
    elif kind == "kserve":
        cmd = [pythons[kind], str(HERE / "peers" / "kserve_onnx.py"), "--port", str(port), *pairs]
        env = dict(os.environ)
    else:
        cmd = [
            pythons[kind],
            str(HERE / "peers" / "mlserver_onnx.py"),
            "--port",
            str(port),
            "--workdir",
            str(work / "mlserver"),
            *pairs,
        ]
        env = dict(os.environ)
    if kind not in NOT_PEERS:
        env.pop("PYTHONPATH", None)
    log = open(work / f"{kind}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while not _ready(url, list(paths)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            tail = (work / f"{kind}.log").read_text()[-3000:]
            raise SystemExit(f"{kind} did not start:\n{tail}")
        time.sleep(0.3)
    print(f"# {kind}: {cmd[0]} (port {port})", file=sys.stderr)
    return proc, f"127.0.0.1:{port}"


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def ceiling(path: Path, rows: int, duration: float) -> float:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(rows, FEATURES)).astype(np.float32)
    name = sess.get_inputs()[0].name
    n = 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        sess.run(None, {name: x})
        n += 1
    return n / duration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rows", default="1,64")
    ap.add_argument("--formats", default="json,binary")
    ap.add_argument("--models", default="lr,mlp")
    ap.add_argument(
        "--servers",
        default="modelforge,kserve,mlserver,floor",
        help="floor: the harness ceiling (peers/floor_server.py), not a peer",
    )
    ap.add_argument("--kserve-venv", default="/work/peers-venv")
    ap.add_argument(
        "--mlserver-venv",
        default="/work/peers-venv-mlserver",
        help="MLServer needs pydantic 1/2 pins that clash with kserve's: own venv",
    )
    ap.add_argument("--granian-venv", default="/work/peers-venv-granian")
    ap.add_argument(
        "--modelforge-args",
        default="",
        help="extra options for `modelforge serve`, e.g. '--instances 2 --threads 1'",
    )
    ap.add_argument(
        "--b-args",
        default="",
        help="the options of the modelforge-b server (--servers ...,modelforge-b): an A/B",
    )
    args = ap.parse_args()
    EXTRA_ARGS.extend(args.modelforge_args.split())
    B_ARGS.extend(args.b_args.split())
    sys.path.insert(0, str(HERE))
    from predict_csv import make_models

    pythons = {
        "kserve": str(Path(args.kserve_venv) / "bin" / "python"),
        "mlserver": str(Path(args.mlserver_venv) / "bin" / "python"),
        "granian": str(Path(args.granian_venv) / "bin" / "python"),
    }
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="mf-serve-bench-") as tmp:
        work = Path(tmp)
        paths = {k: v for k, v in make_models(work).items() if k in args.models.split(",")}
        import onnxruntime as ort

        io = {}
        for name, p in paths.items():
            s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            io[name] = (s.get_inputs()[0].name, [o.name for o in s.get_outputs()])
        procs = {}
        try:
            for kind in servers:
                procs[kind] = start(kind, paths, pythons, work)
            pool = Pool(max(clients))
            rows_list = [int(r) for r in args.rows.split(",")]
            cells = list(itertools.product(paths, rows_list, args.formats.split(","), clients))
            print(
                "| model | rows | format | clients | "
                + " | ".join(f"{s} req/s (p99 ms) CPU µs/req" for s in servers)
                + " | ratio vs best peer | clients' CPU µs/req | ort alone |"
            )
            print("|" + "---|" * (7 + len(servers)))
            for i, (model, rows, fmt, n) in enumerate(cells):
                order = servers[i % len(servers) :] + servers[: i % len(servers)]
                res: dict[str, str] = {}
                rates: dict[str, float] = {}
                client_us = "-"
                for kind in order:
                    if kind == "mlserver" and fmt == "binary":
                        res[kind] = "n/a"
                        continue
                    cmd = (procs[kind][1], model, io[model][0], io[model][1], rows, fmt == "binary")
                    cpu0 = _tree_cpu_s(procs[kind][0].pid)
                    ccpu0 = pool.cpu_s(n)
                    lat, errors = pool.run(n, cmd, args.duration)
                    cpu = _tree_cpu_s(procs[kind][0].pid) - cpu0
                    ccpu = pool.cpu_s(n) - ccpu0
                    if errors or not lat:
                        res[kind] = f"errors: {errors}"
                        continue
                    rate = len(lat) / args.duration
                    p99 = statistics.quantiles(lat, n=100)[98] * 1000 if len(lat) > 2 else 0
                    rates[kind] = rate
                    # server CPU per request (includes the warm-up request of each client)
                    us = cpu / (len(lat) + n) * 1e6
                    res[kind] = f"{rate:,.0f} ({p99:.1f}) {us:,.0f}"
                    if kind == "modelforge":  # what the load itself costs, per request
                        client_us = f"{ccpu / (len(lat) + n) * 1e6:,.0f}"
                peers = [v for k, v in rates.items() if k not in NOT_PEERS]
                ratio = (
                    f"{rates['modelforge'] / max(peers):.1f}x"
                    if "modelforge" in rates and peers
                    else "-"
                )
                top = ceiling(paths[model], rows, min(1.0, args.duration))
                print(
                    f"| {model} | {rows} | {fmt} | {n} | "
                    + " | ".join(res[s] for s in servers)
                    + f" | {ratio} | {client_us} | {top:,.0f} |",
                    flush=True,
                )
            pool.close()
        finally:
            for proc, _ in procs.values():
                proc.terminate()
            for proc, _ in procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
