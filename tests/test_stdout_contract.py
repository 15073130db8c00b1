"""Stdout is the contract (docs/reliability.md): a stage prints its results directory and nothing else,
whatever a library prints, and a reader that went away doesn't fail a run that completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_hyrax

REPO = Path(__file__).resolve().parent.parent

NOISY_STAGE = textwrap.dedent("""
    import os, sys, time
    from hyrax_cli.common import run_stage

    def body():
        print("View run happy-cat-42 at: http://tracking/#/runs/1")   # a library's print()
        os.write(1, b"chatter from a C library\\n")                   # straight to fd 1
        sys.stdout.flush()
        time.sleep(float(sys.argv[1]))
        return "results/20260101-000000-train-abcd1234"

    run_stage(body)
""")


def run_noisy(tmp_path: Path, sleep: float = 0.0, **kw) -> subprocess.Popen:
    script = tmp_path / "stage.py"
    script.write_text(NOISY_STAGE)
    return subprocess.Popen(
        [sys.executable, str(script), str(sleep)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "cli") + os.pathsep + str(REPO)},
        **kw,
    )


def test_only_the_run_path_reaches_stdout_whatever_a_library_prints(tmp_path):
    out, err = run_noisy(tmp_path).communicate(timeout=60)
    assert out == "results/20260101-000000-train-abcd1234\n"
    assert "View run happy-cat-42" in err and "chatter from a C library" in err  # kept, in the log


def test_a_reader_that_went_away_does_not_fail_a_completed_run(tmp_path):
    proc = run_noisy(tmp_path, sleep=1.0)
    proc.stdout.close()  # `hyrax train | hyrax infer` where infer failed at once
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert "BrokenPipe" not in err and "Traceback" not in err


def test_a_broken_pipe_exits_0_for_a_real_stage(tmp_path):
    """`hyrax config | head -0`: the real CLI, its answer written to a closed pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyrax_cli", "config"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback (its first start creates its database: a minute on a busy
    machine)."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start")
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its workers ignore SIGTERM while busy
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_train_with_an_http_tracking_server_prints_only_its_run_path(tmp_path, workdir, mlflow_server):
    from test_train import small_config

    from libhyrax.config import dump_config
    from libhyrax.data.synthetic import generate_survey

    survey = generate_survey(tmp_path / "survey.h5", n=64, size=16, seed=0)
    cfg = tmp_path / "train.toml"
    cfg.write_text(dump_config(small_config(survey, workdir / "results", mlflow_uri=mlflow_server, epochs=1)))
    proc = run_hyrax("train", "-c", str(cfg), cwd=workdir, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and Path(lines[0]).is_dir(), proc.stdout
    assert "tracking is off" not in proc.stderr  # the server was used
    test = run_hyrax("test", "--from", lines[0], "-c", str(cfg), cwd=workdir)
    assert test.returncode == 0, test.stderr
