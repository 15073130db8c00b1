"""The sharded-inference recipe for real: `hyrax train`, then apptainer/infer-array.sbatch as a 3-task
Slurm array (with HYRAX pointing at this checkout instead of the image), read back as one dataset that
equals an unsharded run."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from slurm_cluster import REPO, slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)

from libhyrax import hdf5
from libhyrax.results import is_complete

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SMALL_MODEL = (
    "--set",
    "model.HyraxAutoencoder.base_channel_size=4",
    "--set",
    "model.HyraxAutoencoder.latent_dim=8",
)


def hyrax_outside_slurm(*args: str, cwd) -> str:
    """`hyrax ARGS` with no Slurm variables (so it is not taken for an array task); its results path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(
        [sys.executable, "-m", "hyrax_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def read_all(run_dir) -> dict[str, np.ndarray]:
    with hdf5.open_result(run_dir, "latents") as f:
        return {k: hdf5.read_ids(f[k]) if k == "object_id" else f[k][:] for k in f}


def test_infer_array_of_three_reads_back_as_the_unsharded_run(slurm, tmp_path):
    train = hyrax_outside_slurm("train", "--set", "train.epochs=1", *SMALL_MODEL, cwd=tmp_path)

    job = slurm.sbatch(
        "--array=0-2",
        "--cpus-per-task=1",
        "--mem-per-cpu=2G",
        str(REPO / "apptainer" / "infer-array.sbatch"),
        "--from",
        train,
        cwd=tmp_path,
        env={"HYRAX": f"{sys.executable} -m hyrax_cli"},
    )
    tasks = slurm.wait(job, timeout=400)
    logs = [(tmp_path / f"hyrax-infer-{job}_{i}.out").read_text() for i in range(3)]
    assert [(t.array_task, t.state, t.exit_code) for t in tasks] == [
        (i, "COMPLETED", "0:0") for i in range(3)
    ], logs
    run_dir = tmp_path / "results" / f"slurm-{job}-infer-array"
    assert [log.strip().splitlines()[-1] for log in logs] == [f"results/slurm-{job}-infer-array"] * 3
    assert sorted(p.name for p in run_dir.glob("latents.shard-*.h5")) == [
        f"latents.shard-{i:04d}-of-0003.h5" for i in range(3)
    ]
    assert is_complete(run_dir)

    full_dir = tmp_path / hyrax_outside_slurm("infer", "--from", train, cwd=tmp_path)
    sharded, full = read_all(run_dir), read_all(full_dir)
    assert sorted(sharded) == sorted(full) and "latent" in full
    np.testing.assert_array_equal(sharded["object_id"], full["object_id"])
    assert len(full["object_id"]) > 100 and len(set(full["object_id"])) == len(full["object_id"])
    for name in full:
        if name != "object_id":
            np.testing.assert_allclose(sharded[name], full[name], rtol=1e-5, atol=1e-6)
    sizes = []
    for i in range(3):
        with h5py.File(run_dir / f"latents.shard-{i:04d}-of-0003.h5", "r") as f:
            sizes.append(len(f["object_id"]))
    assert sum(sizes) == len(full["object_id"]) and max(sizes) - min(sizes) <= 1
