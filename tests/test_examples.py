"""Run every example the way a user would, and check that docs/conversion.md's snippets are tested.

Each example folder under examples/ is copied to a temporary folder and its run.sh is executed
by ``sh`` in a subprocess, with a fresh MODELFORGE_HOME and this virtual environment's bin/ first
on PATH (so ``modelforge`` is the installed entry point). The commands listed under "Run it" in
each example's README must be commands of its run.sh, so running run.sh runs the README.

The committed model files (iris.onnx, churn.onnx, model.onnx) make every example runnable
without the framework that produced it: the tests that re-run a training or export script
need that framework and skip where it is not installed (PyTorch is not a dependency of
ModelForge; scikit-learn and skl2onnx come with the dev extra).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CONVERSION_DOC = ROOT / "docs" / "conversion.md"
VENV_BIN = Path(sys.executable).parent
EXAMPLE_NAMES = [
    "iris-classifier",
    "sklearn-pipeline-categorical",
    "pytorch-mlp",
    "shell-pipelines",
]

pytestmark = pytest.mark.timeout(120)


# --- helpers ---------------------------------------------------------------------------------


def _env(store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MODELFORGE_HOME"] = str(store)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("COLUMNS", None)  # rich reads it; the examples must not depend on it
    return env


@pytest.fixture
def examples_copy(tmp_path: Path) -> Path:
    """A private copy of examples/ (shell-pipelines reads ../iris-classifier)."""
    dest = tmp_path / "examples"
    shutil.copytree(EXAMPLES, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _run(
    args: list[str], cwd: Path, store: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=_env(store),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run_sh(example: Path, store: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Run from the repository-like root, as the READMEs say: sh examples/<name>/run.sh
    result = _run(["sh", f"examples/{example.name}/run.sh"], example.parent.parent, store, timeout)
    assert result.returncode == 0, f"run.sh failed ({result.returncode}):\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def _csv_block(stdout: str, header: str) -> list[dict[str, str]]:
    """The CSV rows that follow the line equal to header, up to the first non-CSV line."""
    lines = stdout.splitlines()
    assert header in lines, f"no CSV header {header!r} in:\n{stdout}"
    start = lines.index(header)
    n_fields = header.count(",")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.count(",") != n_fields or line.startswith("{"):
            break
        block.append(line)
    return list(csv.DictReader(io.StringIO("\n".join(block))))


def _fenced_blocks(markdown: str, lang: str) -> list[tuple[int, str]]:
    """(line index of the opening fence, body) of each ```lang block."""
    lines = markdown.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == f"```{lang}":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            blocks.append((i, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def _commands(script: str) -> list[str]:
    """Shell commands of a script or README block: comments dropped, continuations joined,
    whitespace normalised."""
    joined = re.sub(r"\\\n\s*", " ", script)
    joined = re.sub(r"\|\n\s*", "| ", joined)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(" ".join(line.split()))
    return out


# --- README "Run it" sections ----------------------------------------------------------------


def test_every_example_folder_is_tested_and_listed() -> None:
    folders = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name[0] not in "._")
    assert folders == sorted(EXAMPLE_NAMES)
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in folders:
        assert f"]({name}/)" in index, f"examples/README.md does not link {name}"
        assert (EXAMPLES / name / "run.sh").is_file()


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_readme_run_it_commands_are_what_run_sh_runs(name: str) -> None:
    folder = EXAMPLES / name
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "## What this shows" in readme
    assert "## Run it" in readme
    run_it = readme.split("## Run it", 1)[1]
    blocks = [body for _, body in _fenced_blocks(run_it, "sh")]
    assert blocks, f"{name}/README.md has no sh block under 'Run it'"
    assert _commands(blocks[0]) == [f"sh examples/{name}/run.sh"]
    script = set(_commands((folder / "run.sh").read_text(encoding="utf-8")))
    listed = [c for block in blocks[1:2] for c in _commands(block)]
    assert listed, f"{name}/README.md does not list what run.sh runs"
    for command in listed:
        if command in {"done", "do"} or command.startswith("for "):
            continue
        assert command in script, f"README command not in run.sh: {command}"


# --- example 1: iris-classifier --------------------------------------------------------------


def test_iris_classifier_run_sh(examples_copy: Path, tmp_path: Path) -> None:
    result = _run_sh(examples_copy / "iris-classifier", tmp_path / "store")
    assert "added iris:1" in result.stdout
    assert re.search(r"^OK: \d+ passed, \d+ warnings, 0 failed", result.stdout, re.M)
    rows = _csv_block(
        result.stdout,
        "id,output_label,output_probability_setosa,output_probability_versicolor,"
        "output_probability_virginica",
    )
    source = list(csv.DictReader((examples_copy / "iris-classifier" / "iris.csv").open()))
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    for row in rows:
        probs = {k: float(v) for k, v in row.items() if k.startswith("output_probability_")}
        assert abs(sum(probs.values()) - 1.0) < 1e-5
        assert row["output_label"] == max(probs, key=probs.__getitem__).split("_")[-1]


# --- example 2: sklearn-pipeline-categorical -------------------------------------------------


def test_sklearn_pipeline_categorical_run_sh(examples_copy: Path, tmp_path: Path) -> None:
    folder = examples_copy / "sklearn-pipeline-categorical"
    result = _run_sh(folder, tmp_path / "store")
    assert re.search(r"^\s*ok\s+parity\s+2 output comparison", result.stdout, re.M)
    assert "added churn:1" in result.stdout
    # --explain: every input found by name although the CSV has another column order.
    for column in ("plan", "region", "tenure_months", "monthly_spend", "support_calls"):
        assert re.search(rf"<- {column}\n\s+by name", result.stdout), column
    rows = _csv_block(result.stdout, "id,label,probabilities_0,probabilities_1")
    source = list(csv.DictReader((folder / "customers.csv").open()))
    assert list(source[0])[0] == "id"
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    # The predictions equal what scikit-learn computed for the same customers (expected.npz).
    expected = np.load(folder / "expected.npz", allow_pickle=False)
    got = np.array([[float(r["probabilities_0"]), float(r["probabilities_1"])] for r in rows])
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-5, atol=1e-6)
    assert [r["label"] for r in rows] == list(expected["label"])


def test_sklearn_train_script_reproduces_a_valid_model(examples_copy: Path, tmp_path: Path):
    pytest.importorskip("skl2onnx", reason="train.py needs the dev extra (scikit-learn, skl2onnx)")
    folder = examples_copy / "sklearn-pipeline-categorical"
    for name in ("churn.onnx", "inputs.npz", "expected.npz", "customers.csv"):
        (folder / name).unlink()
    store = tmp_path / "store"
    trained = _run([sys.executable, "train.py"], folder, store)
    assert trained.returncode == 0, trained.stderr
    validated = _run(
        [
            "modelforge",
            "validate",
            "churn.onnx",
            "--inputs",
            "inputs.npz",
            "--expected",
            "expected.npz",
            "--json",
        ],
        folder,
        store,
    )
    assert validated.returncode == 0, validated.stderr
    report = json.loads(validated.stdout)["result"]
    assert [c["status"] for c in report["checks"]] == ["pass"] * 9 + ["skip"]  # no examples
    assert [i["name"] for i in report["schema"]["inputs"]] == [
        "plan",
        "region",
        "tenure_months",
        "monthly_spend",
        "support_calls",
    ]
    header = (folder / "customers.csv").read_text().splitlines()[0]
    assert header == "id,support_calls,region,monthly_spend,plan,tenure_months"


# --- example 3: pytorch-mlp ------------------------------------------------------------------


def test_pytorch_mlp_run_sh_without_torch(examples_copy: Path, tmp_path: Path) -> None:
    # Runs from the committed model.onnx and .npz files: torch is not needed.
    result = _run_sh(examples_copy / "pytorch-mlp", tmp_path / "store")
    assert re.search(r"^\s*ok\s+parity\s+2 output comparison", result.stdout, re.M)
    assert re.search(r"^OK: 9 passed", result.stdout, re.M)
    # docs/conversion.md quotes this line (the error value may differ between CPUs).
    quoted = "  ok    parity          2 output comparison(s) within tolerance (max abs error"
    assert quoted in CONVERSION_DOC.read_text(encoding="utf-8")
    assert quoted in result.stdout
    rows = _csv_block(result.stdout, "probabilities_0,probabilities_1,probabilities_2")
    assert len(rows) == 8  # the dynamic batch axis takes all 8 rows
    expected = np.load(examples_copy / "pytorch-mlp" / "expected.npz", allow_pickle=False)
    got = np.array([[float(v) for v in r.values()] for r in rows])
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-4, atol=1e-6)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(record) == [f"{o}_{i}" for o in ("logits", "probabilities") for i in range(3)]
    assert abs(sum(record[f"probabilities_{i}"] for i in range(3)) - 1.0) < 1e-5


def test_validate_catches_conversion_drift(examples_copy: Path, tmp_path: Path) -> None:
    # docs/conversion.md shows this failure: golden outputs that the ONNX model does not match.
    folder = examples_copy / "pytorch-mlp"
    expected = dict(np.load(folder / "expected.npz", allow_pickle=False))
    expected["probabilities"] = expected["probabilities"] + 0.01
    np.savez(folder / "drifted.npz", **expected)
    result = _run(
        [
            "modelforge",
            "validate",
            "model.onnx",
            "--inputs",
            "inputs.npz",
            "--expected",
            "drifted.npz",
        ],
        folder,
        tmp_path / "store",
    )
    assert result.returncode == 9
    assert "output 'probabilities' differs from the expected outputs" in result.stdout
    assert result.stderr.startswith("error: validation of")
    assert "Hint: the conversion changed the results" in result.stderr


def test_pytorch_export_script(examples_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip(
        "torch", reason="export.py needs PyTorch; the committed model.onnx runs without it"
    )
    pytest.importorskip(
        "onnxscript", reason="torch.onnx.export's default (dynamo) exporter needs onnxscript"
    )
    import onnx

    folder = examples_copy / "pytorch-mlp"
    for name in ("model.onnx", "inputs.npz", "expected.npz"):
        (folder / name).unlink()
    store = tmp_path / "store"
    exported = _run([sys.executable, "export.py"], folder, store, timeout=100)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert not (folder / "model.onnx.data").exists()  # external_data=False: one file
    model = onnx.load(folder / "model.onnx")
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import} == {"ai.onnx": 17}
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    validated = _run(
        [
            "modelforge",
            "validate",
            "model.onnx",
            "--inputs",
            "inputs.npz",
            "--expected",
            "expected.npz",
        ],
        folder,
        store,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert re.search(r"^\s*ok\s+parity\s+2 output comparison", validated.stdout, re.M)


# --- example 4: shell-pipelines --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("jq") is None, reason="run.sh pipes --json output into jq")
def test_shell_pipelines_run_sh(examples_copy: Path, tmp_path: Path) -> None:
    result = _run_sh(examples_copy / "shell-pipelines", tmp_path / "store", timeout=100)
    out = result.stdout
    assert "added iris-pipes:1" in out and "added iris-pipes:2" in out
    header = (
        "id,output_label,output_probability_setosa,output_probability_versicolor,"
        "output_probability_virginica"
    )
    assert len(_csv_block(out, header)) == 3  # head -n 4: the header and 3 rows
    counts = dict(
        (m.group(2), int(m.group(1)))
        for m in re.finditer(r"^\s+(\d+) (setosa|versicolor|virginica)$", out, re.M)
    )
    assert sum(counts.values()) == 12, out
    assert "file\tpass" in out and "parity\tskip" in out
    assert re.search(r"^iris-pipes:2\tai\.onnx opset 21\t[0-9a-f]{12}$", out, re.M)
    assert re.search(r"^iris-pipes:1\tai\.onnx opset 17\t[0-9a-f]{12}$", out, re.M)
    assert "looking up no-such-model failed with: model_not_found" in out
    assert '"output_label":"setosa"' in out
    assert out.count("compare  iris-pipes:1") == 2  # one bench per stored version
    ratios = re.findall(
        r"^batch (1|64): p50 latency iris-pipes:1 / iris-pipes:2 = ([0-9.]+)$", out, re.M
    )
    assert [b for b, _ in ratios] == ["1", "64"]
    assert all(float(r) > 0 for _, r in ratios)

    # The script can be rerun against the same store: its adds are no-ops the second time.
    folder = examples_copy / "shell-pipelines"
    again = _run(
        ["modelforge", "models", "add", "../iris-classifier/iris.onnx", "--name", "iris-pipes"],
        folder,
        tmp_path / "store",
    )
    assert again.returncode == 0, again.stderr
    assert "already stored as iris-pipes:1" in again.stdout


def test_predict_into_head_ends_quietly(examples_copy: Path, tmp_path: Path) -> None:
    # The shell-pipelines README promises that `predict ... | head` ends quietly; use enough
    # rows that predict is still writing when head exits.
    iris = examples_copy / "iris-classifier"
    rows = (iris / "iris.csv").read_text().splitlines()
    (iris / "many.csv").write_text("\n".join([rows[0]] + rows[1:] * 20000) + "\n")
    result = _run(
        ["sh", "-c", "modelforge predict iris.onnx many.csv --keep id | head -n 3"],
        iris,
        tmp_path / "store",
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("id,output_label,") and len(lines) == 3, result.stdout
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert "error" not in result.stderr, result.stderr


def test_pytorch_legacy_exporter_dynamic_axes(tmp_path: Path) -> None:
    # docs/conversion.md quotes this export call (the TorchScript exporter and dynamic_axes).
    torch = pytest.importorskip("torch", reason="needs PyTorch (not a ModelForge dependency)")
    import warnings

    import onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU()).eval()
    path = tmp_path / "legacy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.randn(2, 6),),
            str(path),
            dynamo=False,
            input_names=["features"],
            output_names=["scores"],
            dynamic_axes={"features": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
        )
    exported = onnx.load(path)
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.savez(tmp_path / "inputs.npz", features=x)
    np.savez(tmp_path / "expected.npz", scores=expected)
    result = _run(
        [
            "modelforge",
            "validate",
            "legacy.onnx",
            "--inputs",
            "inputs.npz",
            "--expected",
            "expected.npz",
        ],
        tmp_path,
        tmp_path / "store",
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- docs/conversion.md ----------------------------------------------------------------------


def _doc_blocks() -> list[tuple[str, str]]:
    """(marker comment, body) for every fenced block in docs/conversion.md."""
    lines = CONVERSION_DOC.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```") and lines[i].strip() != "```":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            marker = lines[i - 1].strip() if i else ""
            blocks.append((marker, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def test_conversion_doc_snippets_are_tested_or_marked_with_versions() -> None:
    text = CONVERSION_DOC.read_text(encoding="utf-8")
    blocks = _doc_blocks()
    assert len(blocks) >= 8
    sourced = 0
    for marker, body in blocks:
        if body.startswith(("  ok    parity", "  FAIL  parity")):
            continue  # quoted validate output; test_validate_catches_conversion_drift checks it
        if body.startswith("modelforge validate model.onnx --inputs"):
            assert body in (EXAMPLES / "pytorch-mlp" / "run.sh").read_text()
            continue
        m = re.fullmatch(r"<!-- (snippet|untested): (.+) -->", marker)
        assert m, f"unmarked block in docs/conversion.md:\n{body}"
        if m.group(1) == "untested":
            assert re.search(r"\d+\.\d+", m.group(2)), "an untested snippet names its versions"
            continue
        source = (ROOT / m.group(2)).read_text(encoding="utf-8")
        source_lines = {line.strip() for line in source.splitlines()}
        for line in body.splitlines():
            assert line.strip() in source_lines, f"{line!r} is not in {m.group(2)}"
        sourced += 1
    assert sourced >= 5
    # The quoted parity lines are what validate printed for the pytorch example.
    assert "output 'probabilities' differs from the expected outputs: max abs error 0.01" in text
    assert "Written against tensorflow 2.21.0, keras 3.15.1 and tf2onnx 1.17.0" in text


def _failure_cases(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    """(text quoted in docs/conversion.md, command, exit code, regex for the actual output)."""
    import zipfile

    import onnx
    from onnx import TensorProto, helper

    from tests.builders import linear, save, with_external_data

    with zipfile.ZipFile(tmp / "model.pt", "w") as z:  # the layout torch.save writes
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", "3\n")
    (tmp / "model.pkl").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")
    save(linear(n_features=6, n_out=3, batch=2), tmp / "fixed.onnx")
    np.savez(tmp / "x8.npz", x=np.zeros((8, 6), np.float32))
    np.savez(tmp / "y8.npz", y=np.zeros((8, 3), np.float32))
    ext = with_external_data(tmp / "ext", location="model.onnx.data")
    (ext.parent / "model.onnx.data").unlink()
    too_new = linear()
    too_new.opset_import[0].version = 30
    save(too_new, tmp / "too_new.onnx")
    save(linear(opset=6), tmp / "old.onnx")
    graph = helper.make_graph(
        [helper.make_node("MyOp", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    custom = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    custom.ir_version = 8
    onnx.save(custom, tmp / "custom.onnx")
    save(linear(), tmp / "linear.onnx")
    np.savez(tmp / "wrong_key.npz", input=np.zeros((2, 4), np.float32))
    np.savez(tmp / "y2.npz", y=np.zeros((2, 1), np.float32))
    churn = EXAMPLES / "sklearn-pipeline-categorical"
    golden = dict(np.load(churn / "inputs.npz", allow_pickle=False))
    golden["plan"] = golden["plan"].astype(object)
    np.savez(tmp / "object.npz", **golden)
    rows = (churn / "customers.csv").read_text().splitlines()
    (tmp / "bad.csv").write_text("\n".join([rows[0], "c-1,many" + rows[1][8:]]) + "\n")
    (tmp / "no_tenure.csv").write_text("\n".join(",".join(r.split(",")[:5]) for r in rows) + "\n")
    iris = EXAMPLES / "iris-classifier"
    m = str
    return [
        (
            "is a zip archive (a PyTorch .pt/.pth checkpoint, a Keras .keras file or an .npz), "
            "not an ONNX model",
            ["validate", m(tmp / "model.pt")],
            9,
            r"is a zip archive \(a PyTorch",
        ),
        (
            "is a Python pickle (a joblib/pickle scikit-learn model?), not an ONNX model",
            ["models", "add", m(tmp / "model.pkl"), "--name", "p"],
            4,
            r"is a Python pickle",
        ),
        (
            "onnxruntime refused the input while running the model on --inputs: Got invalid "
            "dimensions for input",
            [
                "validate",
                m(tmp / "linear.onnx"),  # 4 features; x8.npz has 6
                "--inputs",
                m(tmp / "x8.npz"),
                "--expected",
                m(tmp / "y8.npz"),
            ],
            9,
            r"onnxruntime refused the input while running the model on --inputs",
        ),
        (
            "external data 'model.onnx.data' does not exist` with the hint `keep the data file "
            "next to the .onnx",
            ["models", "add", m(ext), "--name", "ext"],
            4,
            r"external data 'model.onnx.data' does not exist.*keep the data file next to",
        ),
        (
            "the model imports ai.onnx opset 30; onnxruntime 1.32.0 supports up to 28",
            ["validate", m(tmp / "too_new.onnx")],
            9,
            r"the model imports ai\.onnx opset 30; onnxruntime [\d.]+ supports up to \d+",
        ),
        (
            "onnxruntime has no kernel for Add at opset 6 ..., but it runs after an in-memory "
            "upgrade to opset 7",
            ["validate", m(tmp / "old.onnx")],
            0,
            r"no kernel for Add at opset 6 .*but it runs after an in-memory upgrade to opset \d+",
        ),
        (
            "ops from custom domains need a custom-op library: <domain>: <op> (<count>)",
            ["validate", m(tmp / "custom.onnx")],
            9,
            r"ops from custom domains need a custom-op library: com\.example: MyOp \(1\)",
        ),
        (
            "--inputs file lacks model input 'x' (found: input)",
            [
                "validate",
                m(tmp / "linear.onnx"),
                "--inputs",
                m(tmp / "wrong_key.npz"),
                "--expected",
                m(tmp / "y2.npz"),
            ],
            9,
            r"--inputs file lacks model input 'x' \(found: input\)",
        ),
        (
            "holds an object array",
            [
                "validate",
                m(churn / "churn.onnx"),
                "--inputs",
                m(tmp / "object.npz"),
                "--expected",
                m(churn / "expected.npz"),
            ],
            9,
            r"holds an object array",
        ),
        (
            "holds Python objects (dtype \\|O): such arrays are pickles and are never loaded",
            ["predict", m(churn / "churn.onnx"), m(tmp / "object.npz")],
            5,
            r"holds Python objects \(dtype \|O\): such arrays are pickles and are never loaded",
        ),
        (
            "non-numeric text at input 'FILE' line 2, column 'support_calls'",
            ["predict", m(churn / "churn.onnx"), m(tmp / "bad.csv"), "--keep", "id"],
            5,
            r"non-numeric text at input '.*bad\.csv' line 2, column 'support_calls'",
        ),
        (
            "cannot map the columns of FILE onto model input(s) NAME",
            ["predict", m(churn / "churn.onnx"), m(tmp / "no_tenure.csv"), "--keep", "id"],
            5,
            r"cannot map the columns of .*no_tenure\.csv onto model input\(s\) tenure_months",
        ),
        (
            "input 'features' is fed 4 columns by position",
            ["predict", m(iris / "iris.onnx"), m(iris / "iris.csv"), "--keep", "id"],
            0,
            r"input 'features' is fed 4 columns by position",
        ),
    ]


def test_conversion_doc_failure_messages_are_what_modelforge_says(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelforge.cli.app import app

    text = " ".join(CONVERSION_DOC.read_text(encoding="utf-8").split())
    runner = CliRunner()
    for quoted, args, code, pattern in _failure_cases(tmp_path):
        assert quoted in text, f"docs/conversion.md no longer quotes: {quoted}"
        result = runner.invoke(app, args)
        output = result.stdout + result.stderr
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{output}"
        assert re.search(pattern, " ".join(output.split())), f"{args}:\n{output}"
