"""A real single-node Slurm cluster for the tests marked `slurm` (scripts/slurm-up.sh), and a small
client to submit jobs and wait for them with a bound.

    from slurm_cluster import slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)

    @pytest.mark.slurm
    def test_x(slurm, tmp_path):
        job = slurm.sbatch("--array=0-3", "--wrap", "echo $SLURM_ARRAY_TASK_ID", cwd=tmp_path)
        assert all(t.state == "COMPLETED" for t in slurm.wait(job))

The session fixture starts the cluster only when none answers, and stops it only if it started it and no
other pytest process (an xdist worker) still uses it. When Slurm is not installed the tests skip; when
it is installed but fails to start, they fail. Every test cancels the jobs it submitted that are still
queued.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM_DIR = Path(os.environ.get("HYRAX_SLURM_DIR", "/tmp/slurm"))
USERS_FILE = SLURM_DIR / "pytest-users.json"


def _run(*cmd: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def cluster_up() -> bool:
    """Whether the daemons of scripts/slurm-up.sh run and the node answers. (The pid files come first:
    with no slurmctld, `sinfo` retries for about 10 s.)"""
    for name in ("slurmctld.pid", "slurmd.pid"):
        try:
            if not _alive(int((SLURM_DIR / name).read_text())):
                return False
        except (FileNotFoundError, ValueError):
            return False
    try:
        out = _run("sinfo", "-h", "-o", "%T", timeout=10).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    return any(s in ("idle", "mixed", "allocated") for s in out)


@contextlib.contextmanager
def _locked():
    SLURM_DIR.mkdir(parents=True, exist_ok=True)
    with open(SLURM_DIR / ".pytest-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _users() -> dict:
    try:
        state = json.loads(USERS_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = {"started": False, "pids": []}
    state["pids"] = [p for p in state["pids"] if _alive(p)]  # a crashed session leaves its pid behind
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture():
    """Make sure a cluster answers for this session; yields nothing."""
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        pytest.skip("Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)")
    with _locked():
        state = _users()
        if not cluster_up():
            if os.geteuid() != 0:
                pytest.skip("no Slurm cluster is running, and starting one needs root (scripts/slurm-up.sh)")
            proc = _run(str(REPO / "scripts" / "slurm-up.sh"), timeout=120)
            if proc.returncode != 0:
                pytest.fail(f"scripts/slurm-up.sh failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
            state["started"] = True
        state["pids"].append(os.getpid())
        USERS_FILE.write_text(json.dumps(state))
    yield
    with _locked():
        state = _users()
        state["pids"] = [p for p in state["pids"] if p != os.getpid()]
        if state["started"] and not state["pids"]:
            _run(str(REPO / "scripts" / "slurm-down.sh"), timeout=60)
            USERS_FILE.unlink(missing_ok=True)
        else:
            USERS_FILE.write_text(json.dumps(state))


@dataclass(frozen=True)
class Task:
    job_id: str
    array_task: int | None
    state: str
    exit_code: str  # "0:0", "3:0" (status:signal)
    reason: str


class SlurmClient:
    """sbatch / wait / cancel, remembering the jobs this test submitted."""

    def __init__(self):
        self.submitted: list[str] = []

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        proc = _run("sbatch", "--parsable", *args, cwd=cwd, env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise AssertionError(f"sbatch {' '.join(args)} failed: {proc.stderr}")
        job = proc.stdout.strip().split(";")[0]
        self.submitted.append(job)
        return job

    def queued(self, job: str) -> list[str]:
        out = _run("squeue", "-h", "-j", job, "-o", "%i %T", timeout=10)
        return out.stdout.split("\n") if out.returncode == 0 and out.stdout.strip() else []

    def tasks(self, job: str) -> list[Task]:
        """Every task of `job` (one for a plain job), from `scontrol show job` (kept for MinJobAge)."""
        out = _run("scontrol", "-o", "show", "job", job, timeout=10).stdout
        tasks = []
        for line in out.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            task = f.get("ArrayTaskId")
            tasks.append(Task(f["JobId"], int(task) if task and task.isdigit() else None, f["JobState"],
                              f["ExitCode"], f.get("Reason", "")))
        return sorted(tasks, key=lambda t: (t.array_task is None, t.array_task or 0))

    def wait(self, *jobs: str, timeout: float = 120) -> list[Task]:
        """Wait until `jobs` left the queue; their tasks. Past `timeout` cancel them and fail."""
        deadline = time.monotonic() + timeout
        while any(self.queued(j) for j in jobs):
            if time.monotonic() > deadline:
                _run("scancel", *jobs)
                raise AssertionError(f"Slurm jobs {jobs} still queued after {timeout} s; cancelled them")
            time.sleep(0.2)
        return [t for j in jobs for t in self.tasks(j)]

    def cancel_mine(self) -> None:
        live = [j for j in self.submitted if self.queued(j)]
        if live:
            _run("scancel", *live)


@pytest.fixture(name="slurm")
def slurm_fixture(slurm_cluster):
    client = SlurmClient()
    yield client
    client.cancel_mine()
