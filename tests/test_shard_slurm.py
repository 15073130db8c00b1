"""A real Slurm array: `sbatch --array=0-2 hyrax infer` writes 3 shards into one directory named from the
array job id, which reads back equal to an unsharded run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from slurm_cluster import slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)
from test_infer import make_train_run, read_latents

from libhyrax.rundir import read_provenance


@pytest.mark.slurm
def test_sbatch_array_of_three_infer_tasks(slurm, workdir):
    from libhyrax.stages.infer import infer

    train = make_train_run(workdir / "results")
    full = read_latents(infer(from_run=train).path)
    cmd = f"{sys.executable} -m hyrax_cli infer --from {train}"
    job = slurm.sbatch("--array=0-2", "-o", "infer-%A_%a.log", "--wrap", cmd, cwd=workdir)
    tasks = slurm.wait(job, timeout=300)
    assert [t.state for t in tasks] == ["COMPLETED"] * 3, [
        (workdir / f"infer-{job}_{i}.log").read_text()[-2000:] for i in range(3)
    ]
    run_dir = workdir / "results" / f"slurm-{job}-infer-array"
    assert read_provenance(run_dir)["status"] == "complete"
    got = read_latents(run_dir)
    assert list(got["object_id"]) == list(full["object_id"])
    np.testing.assert_array_equal(got["latent"], full["latent"])
