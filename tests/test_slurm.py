"""Slurm behaviour the recipes in apptainer/ rely on, on a real single-node cluster (tests/slurm_cluster.py):
array task variables, the shard each task computes, afterok chains that cancel on failure, and
apptainer/pipeline.sh's job graph run end to end with a stand-in for the image."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import REPO, slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slurm
SMALL = ("--cpus-per-task=1", "--mem-per-cpu=256M", "--time=5")


def test_array_tasks_see_their_index_and_count(slurm, tmp_path):
    job = slurm.sbatch(*SMALL, "--array=0-3", "--output=/dev/null", "--wrap",
                       "echo $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN "
                       "$SLURM_ARRAY_TASK_STEP $SLURM_ARRAY_JOB_ID > out_$SLURM_ARRAY_TASK_ID", cwd=tmp_path)
    tasks = slurm.wait(job, timeout=60)
    assert [(t.array_task, t.state, t.exit_code) for t in tasks] == [
        (i, "COMPLETED", "0:0") for i in range(4)
    ]
    for i in range(4):
        assert (tmp_path / f"out_{i}").read_text().split() == [str(i), "4", "0", "1", job]


def test_each_task_of_a_stepped_array_computes_its_own_shard(slurm, tmp_path):
    # --array=1-7:3 runs tasks 1, 4, 7: shards 0, 1, 2 of 3, all in one directory named from the job id
    code = (
        "from libhyrax.sharding import shard_from_env, shared_run_name; s = shard_from_env(); "
        "print(s.index, s.count, shared_run_name('infer', s))"
    )
    job = slurm.sbatch(
        *SMALL,
        "--array=1-7:3",
        "--output=shard_%a.txt",
        "--wrap",
        f'{sys.executable} -c "{code}"',
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
    )
    tasks = slurm.wait(job, timeout=60)
    assert [(t.array_task, t.state) for t in tasks] == [(1, "COMPLETED"), (4, "COMPLETED"), (7, "COMPLETED")]
    lines = [(tmp_path / f"shard_{t}.txt").read_text().split() for t in (1, 4, 7)]
    assert lines == [[str(i), "3", f"slurm-{job}-infer-array"] for i in range(3)]


def test_afterok_on_a_failed_job_cancels_the_dependent(slurm, tmp_path):
    first = slurm.sbatch(*SMALL, "--output=/dev/null", "--wrap", "exit 3", cwd=tmp_path)
    second = slurm.sbatch(
        *SMALL,
        "--output=/dev/null",
        f"--dependency=afterok:{first}",
        "--kill-on-invalid-dep=yes",
        "--wrap",
        "touch ran",
        cwd=tmp_path,
    )
    (a,), (b,) = slurm.wait(first, timeout=60), slurm.wait(second, timeout=60)
    assert (a.state, a.exit_code) == ("FAILED", "3:0")
    assert (b.state, b.reason) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (tmp_path / "ran").exists()


# A stand-in for the image: records "stage task" in order and prints a results path, as hyrax does.
FAKE_HYRAX = """#!/bin/bash
stage=$1; shift
echo "$stage ${SLURM_ARRAY_TASK_ID:--} ${SLURM_ARRAY_TASK_COUNT:--} $*" >> "$CALLS"
sleep 0.2
[ "$stage ${SLURM_ARRAY_TASK_ID:-}" = "${FAIL_AT:-none}" ] && exit 4
echo "$PWD/results/$stage"
"""


def _pipeline(tmp_path: Path, *extra: str, env: dict | None = None) -> tuple[dict[str, str], list[list[str]]]:
    fake = tmp_path / "fake-hyrax"
    fake.write_text(FAKE_HYRAX)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    run_env = {
        **os.environ,
        "HYRAX": str(fake),
        "CALLS": str(calls),
        "HYRAX_SBATCH_ARGS": " ".join(SMALL),
        **(env or {}),
    }
    proc = subprocess.run(
        [
            str(REPO / "apptainer" / "pipeline.sh"),
            "--shards",
            "3",
            "--dir",
            str(tmp_path / "pipe"),
            "--",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=run_env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    jobs = dict(line.split() for line in proc.stdout.splitlines())
    return jobs, calls


def test_pipeline_runs_stages_in_dependency_order(slurm, tmp_path):
    jobs, calls = _pipeline(tmp_path, "-c", "my.toml")
    slurm.submitted += list(jobs.values())
    tasks = {stage: slurm.wait(job, timeout=120) for stage, job in jobs.items()}
    assert {s: [(t.state, t.exit_code) for t in ts] for s, ts in tasks.items()} == {
        s: [("COMPLETED", "0:0")] * (3 if s == "infer" else 1) for s in jobs
    }
    rows = [line.split() for line in calls.read_text().splitlines()]
    order = [r[0] for r in rows]
    assert sorted(order) == sorted(
        ["train", "infer", "infer", "infer", "umap", "visualize", "index", "anomaly"]
    )
    assert all(r[3:] == ["-c", "my.toml"] for r in rows if r[0] != "infer")
    assert sorted((r[1], r[2]) for r in rows if r[0] == "infer") == [("0", "3"), ("1", "3"), ("2", "3")]
    last_infer = max(i for i, s in enumerate(order) if s == "infer")
    assert order[0] == "train" and order.index("infer") > 0
    assert min(order.index(s) for s in ("umap", "index", "anomaly")) > last_infer
    assert order.index("visualize") > order.index("umap")
    logs = sorted(p.name for p in (tmp_path / "pipe" / "logs").glob("hyrax-infer-*.out"))
    assert logs == [f"hyrax-infer-{jobs['infer']}_{i}.out" for i in range(3)]


def test_pipeline_failure_cancels_the_stages_after_it(slurm, tmp_path):
    jobs, calls = _pipeline(tmp_path, env={"FAIL_AT": "infer 1"})
    slurm.submitted += list(jobs.values())
    states = {stage: sorted({t.state for t in slurm.wait(job, timeout=120)}) for stage, job in jobs.items()}
    assert states == {
        "train": ["COMPLETED"],
        "infer": ["COMPLETED", "FAILED"],
        "umap": ["CANCELLED"],
        "visualize": ["CANCELLED"],
        "index": ["CANCELLED"],
        "anomaly": ["CANCELLED"],
    }
    assert [line.split()[0] for line in calls.read_text().splitlines()].count("umap") == 0


@pytest.mark.slow
def test_scancel_marks_a_training_run_interrupted_and_it_resumes(slurm, tmp_path):
    """Slurm's SIGTERM (scancel, the time limit) reaches the stage: the run is kept as .failed with status
    interrupted and the signal's name, the job log says how to go on, and --resume finishes it."""
    import json

    small = (
        "--set",
        "model.HyraxAutoencoder.base_channel_size=4",
        "--set",
        "model.HyraxAutoencoder.latent_dim=8",
        "--set",
        "data_loader.batch_size=64",
    )
    job = slurm.sbatch(
        "--cpus-per-task=1",
        "--mem-per-cpu=2G",
        str(REPO / "apptainer" / "hyrax.sbatch"),
        "train",
        "--set",
        "train.epochs=500",
        *small,
        cwd=tmp_path,
        env={"HYRAX": f"{sys.executable} -m hyrax_cli"},
    )
    log = tmp_path / f"hyrax-{job}.out"
    deadline = time.monotonic() + 300
    while not list((tmp_path / "results").glob("*-train-*.partial/checkpoints/last.pt")):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no job log"
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True)
    [task] = slurm.wait(job, timeout=120)
    [failed] = list((tmp_path / "results").glob("*-train-*.failed"))
    prov = json.loads((failed / "provenance.json").read_text())
    assert prov["status"] == "interrupted" and "SIGTERM" in prov["error"], prov
    text = log.read_text()
    assert "interrupted: received SIGTERM" in text and f"hyrax train --resume results/{failed.name}" in text
    done = subprocess.run(
        [sys.executable, "-m", "hyrax_cli", "train", "--resume", str(failed), "--set", "train.epochs=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        json.loads((tmp_path / done.stdout.strip() / "provenance.json").read_text())["status"] == "complete"
    )
