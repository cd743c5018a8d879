"""Benchmark: start-up time of ModelForge commands, measured as whole processes.

Runs each command as a fresh process, interleaved (round-robin, order rotated every
repeat), and reports the median, min and max wall time of N repeats plus the ratio to
``python -c "import typer"`` (the floor of any Typer CLI). Checks the targets of issue 5:

* ``modelforge --help``        <= 1.5 x import typer
* ``modelforge models list``   <= 2 x import typer
* single-row ``predict``       <= import onnxruntime + the reader predict imports + 100 ms

The reader is found, not assumed: the predict command is run once under
``python -X importtime`` and the reference is ``python -c "import onnxruntime, <readers>"``
with the data libraries (polars, pandas, pyarrow) it really imported. A small model, a
one-row CSV and an empty store (plus one stored model for ``models list``) are built in a
temporary directory. Commands that this checkout does not have yet are skipped with a note.

    python benchmarks/startup.py                  # 15 repeats
    python benchmarks/startup.py --repeats 30 --json
    python benchmarks/startup.py --imports        # also the heaviest imports per command
    python benchmarks/startup.py --alt "python -m modelforge"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

READERS = ("polars", "pandas", "pyarrow")
PREDICT_BUDGET_S = 0.100


def build_inputs(folder: Path) -> tuple[Path, Path]:
    """small.onnx (y = x @ W + b, x float32 [N, 4]) and one_row.csv with columns x0..x3."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2) / 10, "W")
    b = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "small.onnx"
    onnx.save_model(model, path)
    csv = folder / "one_row.csv"
    csv.write_text("x0,x1,x2,x3\n0.1,0.2,0.3,0.4\n")
    return path, csv


def modelforge_argv(python: str) -> list[str]:
    """The installed console script next to ``python`` if there is one, else ``-m``."""
    script = Path(python).parent / ("modelforge.exe" if os.name == "nt" else "modelforge")
    return [str(script)] if script.exists() else [python, "-m", "modelforge"]


def _launcher(cmd: str) -> list[str]:
    """Split a launcher command; relative paths become absolute (commands run in a temp dir)."""
    return [os.path.abspath(t) if os.path.exists(t) else t for t in shlex.split(cmd)]


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
    )
    elapsed = time.perf_counter() - t0
    return elapsed, proc.returncode, proc.stderr.decode(errors="replace").strip()


def parse_importtime(stderr: str) -> list[tuple[str, int, float]]:
    """(module, nesting depth, cumulative ms) for each line of ``-X importtime`` output."""
    out = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        out.append((name.strip(), depth, int(parts[1]) / 1000))
    return out


def importtime(py: str, mf_args: list[str], env: dict[str, str], cwd: Path) -> str:
    """stderr of one run of ``modelforge MF_ARGS`` under ``python -X importtime``."""
    code = (
        "import sys; from modelforge.cli.app import main; "
        f"sys.argv = ['modelforge', *{mf_args!r}]; main()"
    )
    proc = subprocess.run(
        [py, "-X", "importtime", "-c", code], env=env, cwd=cwd, capture_output=True, timeout=120
    )
    return proc.stderr.decode(errors="replace")


def top_imports(stderr: str, n: int = 8) -> dict[str, float]:
    """The heaviest top-level packages (cumulative ms of their first-level imports)."""
    per_pkg: dict[str, float] = {}
    for name, depth, ms in parse_importtime(stderr):
        if depth == 0:
            pkg = name.split(".")[0]
            per_pkg[pkg] = per_pkg.get(pkg, 0.0) + ms
    return dict(sorted(per_pkg.items(), key=lambda kv: -kv[1])[:n])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="runs per command (default 15)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with modelforge")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--imports", action="store_true", help="show the heaviest imports too")
    ap.add_argument(
        "--modelforge",
        metavar="CMD",
        help="how to start modelforge (default: the console script next to --python)",
    )
    ap.add_argument(
        "--alt",
        metavar="CMD",
        help="a second way to start modelforge, measured interleaved with the first (its "
        "rows are marked [alt]); e.g. 'python -m modelforge'",
    )
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="mf-startup-"))
    try:
        return measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: Path) -> int:
    py = args.python
    model, csv = build_inputs(tmp)
    env = dict(os.environ)
    notes: list[str] = []
    env.update(
        MODELFORGE_HOME=str(tmp / "store"), MODELFORGE_CACHE=str(tmp / "cache"), NO_COLOR="1"
    )
    # Measure what users get: bytecode cached (the untimed first run of each command writes
    # the .pyc files). With PYTHONDONTWRITEBYTECODE every run recompiles every module.
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        notes.append("PYTHONDONTWRITEBYTECODE was set; unset for the measured commands")
    mf = _launcher(args.modelforge) if args.modelforge else modelforge_argv(py)
    alt = _launcher(args.alt) if args.alt else None

    # a stored model, so that `models list` lists something
    _, code, err = run_once([*mf, "models", "add", str(model), "--name", "small"], env, tmp)
    if code != 0:
        notes.append(f"could not add a model to the store ({err.splitlines()[-1:]}); "
                     "models list runs on an empty store")  # fmt: skip

    # which data libraries does single-row predict import?
    predict_args = ["predict", str(model), str(csv)]
    imported = {name for name, _, _ in parse_importtime(importtime(py, predict_args, env, tmp))}
    readers = [lib for lib in READERS if lib in imported]
    reference = ", ".join(["onnxruntime", *readers])

    mf_commands: list[tuple[str, list[str]]] = [
        ("modelforge --help", ["--help"]),
        ("modelforge models list", ["models", "list"]),
        ("modelforge inspect small.onnx", ["inspect", str(model)]),
        ("modelforge predict small.onnx one_row.csv", predict_args),
    ]
    commands: list[tuple[str, list[str]]] = [
        ("import typer", [py, "-c", "import typer"]),
        *[(label, [*mf, *a]) for label, a in mf_commands],
        *[(f"{label} [alt]", [*alt, *a]) for label, a in mf_commands if alt],
        ("import onnxruntime", [py, "-c", "import onnxruntime"]),
        (f"import {reference}", [py, "-c", f"import {reference}"]),
    ]
    available: list[tuple[str, list[str]]] = []
    for label, argv in commands:  # one untimed run each: availability and a warm file cache
        _, code, err = run_once(argv, env, tmp)
        if code == 0:
            available.append((label, argv))
        else:
            last = err.splitlines()[-1] if err else f"exit code {code}"
            notes.append(f"skipped '{label}': {last}")

    times: dict[str, list[float]] = {label: [] for label, _ in available}
    for rep in range(args.repeats):
        k = rep % len(available)
        for label, argv in available[k:] + available[:k]:
            elapsed, code, err = run_once(argv, env, tmp)
            if code != 0:
                print(f"'{label}' failed on repeat {rep + 1}: {err}", file=sys.stderr)
                return 1
            times[label].append(elapsed)

    med = {label: statistics.median(v) for label, v in times.items()}
    base = med.get("import typer")
    rows = []
    for label, values in times.items():
        rows.append({
            "command": label,
            "median_ms": round(med[label] * 1000, 1),
            "min_ms": round(min(values) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
            "ratio_to_import_typer": round(med[label] / base, 2) if base else None,
        })  # fmt: skip

    targets: list[dict[str, Any]] = []

    def target(label: str, limit_s: float | None, rule: str) -> None:
        if label not in med or limit_s is None:
            targets.append({"command": label, "rule": rule, "status": "not measured"})
            return
        ok = med[label] <= limit_s
        targets.append({
            "command": label,
            "rule": rule,
            "limit_ms": round(limit_s * 1000, 1),
            "median_ms": round(med[label] * 1000, 1),
            "status": "met" if ok else "MISSED",
        })  # fmt: skip

    ref = med.get(f"import {reference}")
    for suffix in ["", " [alt]"] if alt else [""]:
        target(f"modelforge --help{suffix}", 1.5 * base if base else None, "<= 1.5 x import typer")
        target(f"modelforge models list{suffix}", 2 * base if base else None, "<= 2 x import typer")
        target(
            f"modelforge predict small.onnx one_row.csv{suffix}",
            ref + PREDICT_BUDGET_S if ref is not None else None,
            f"<= import {reference} + 100 ms",
        )
    imports = {}
    if args.imports:
        ok = {label for label, _ in available}
        for label, mf_args in mf_commands:
            if label in ok:
                imports[label] = top_imports(importtime(py, mf_args, env, tmp))

    result = {
        "python": py,
        "modelforge": mf,
        "alt": alt,
        "repeats": args.repeats,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "predict_readers": readers,
        "commands": rows,
        "targets": targets,
        "notes": notes,
        "imports_ms": imports,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_human(result)
    return 0 if all(t["status"] != "MISSED" for t in targets) else 2


def print_human(r: dict) -> None:
    load = f"{r['load_average'][0]:.2f}" if r["load_average"] else "?"
    print(f"start-up, whole processes, median of {r['repeats']} interleaved runs "
          f"({r['cpus']} CPUs, load {load})")  # fmt: skip
    width = max(len(c["command"]) for c in r["commands"])
    print(f"{'command':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'x typer':>7}")
    for c in r["commands"]:
        ratio = f"{c['ratio_to_import_typer']:.2f}" if c["ratio_to_import_typer"] else "-"
        print(f"{c['command']:<{width}}  {c['median_ms']:>6.1f}ms  {c['min_ms']:>6.1f}ms  "
              f"{c['max_ms']:>6.1f}ms  {ratio:>7}")  # fmt: skip
    print()
    print(f"predict imports these readers: {', '.join(r['predict_readers']) or 'none'}")
    for t in r["targets"]:
        if t["status"] == "not measured":
            print(f"  target {t['command']} {t['rule']}: not measured")
        else:
            print(f"  target {t['command']} {t['rule']} = {t['limit_ms']:.0f} ms: "
                  f"{t['median_ms']:.0f} ms, {t['status']}")  # fmt: skip
    for label, pkgs in r["imports_ms"].items():
        print(f"imports of {label}: " + ", ".join(f"{p} {ms:.0f} ms" for p, ms in pkgs.items()))
    for note in r["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
