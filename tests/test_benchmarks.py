"""The GPU check script runs its steps on the CPU at a small size where there is no GPU, so the script that
a GPU session runs once is known to work before that session starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=1500, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "no GPU: CPU at a small size" in out or "cuda" in out
    for step in ("train, fp32", "stored as float32", "stored as float16", "exact k-NN", "torchrun", "gpu_check done"):
        assert step in out, step
    assert "ok: " in out and "world_size" in out
