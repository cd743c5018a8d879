"""docs/serve.md cannot drift: its curl commands and client snippets run against a server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_support import start_server

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "serve.md"

pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    model = root / "examples" / "iris-classifier" / "iris.onnx"
    model.parent.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "iris-classifier" / "iris.onnx", model)
    server = start_server(
        [str(model), "--grpc-port", "0"], env={"MODELFORGE_HOME": str(root / "store")}
    )
    yield server, root
    assert server.stop() == 0


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_shell_commands_run(iris):
    server, root = iris
    lines = [
        line
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.startswith(("curl ", "python -c "))
    ]
    assert len(lines) >= 9
    env = dict(os.environ, URL=server.url)
    for line in lines:
        r = subprocess.run(
            ["bash", "-c", line], cwd=root, env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, (line, r.stderr)
    assert (root / "answer.bin").stat().st_size > 0


def test_doc_client_snippets_run(iris):
    server, root = iris
    snippets = [b for b in _blocks("python") if "tritonclient" in b]
    assert len(snippets) == 2
    code = "\n".join(snippets)
    code = code.replace("127.0.0.1:8000", server.hostport).replace("127.0.0.1:8001", server.grpc)
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "setosa" in r.stdout
