"""Shared fixtures. Tests use the real thing (HDF5 files, MLflow, chromadb, onnxruntime, a shell pipe)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# No telemetry and no network from any library during tests.
os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "ANONYMIZED_TELEMETRY": "False",
                   "ORT_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
                   "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/hyrax-numba-cache")})
# The built-in sample is built once per machine and shared by the tests.
os.environ.setdefault("HYRAX_CACHE_DIR", str(REPO / ".hyrax-cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    # two xdist workers on two cores: one thread each
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory; stages write ./results there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_hyrax(*args: str, cwd: Path | str | None = None, input: str | None = None, check: bool = False,
              timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `hyrax` CLI in a subprocess (stdout and stderr captured as text)."""
    # no input: stdin is /dev/null, as in a batch job (an empty pipe would mean "the upstream stage failed")
    stdin = None if input is not None else subprocess.DEVNULL
    proc = subprocess.run(
        [sys.executable, "-m", "hyrax_cli", *args],
        cwd=cwd,
        input=input,
        stdin=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hyrax {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def hyrax():
    return run_hyrax
