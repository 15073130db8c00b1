"""The multi-GPU training recipe (apptainer/train-multigpu.sbatch) on the CPU cluster of the tests: the
same script less its GPU request, 2 srun tasks on one node, joined with gloo instead of nccl."""

from __future__ import annotations

import sys

import pytest
from slurm_cluster import REPO, slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)

from libhyrax.rundir import read_provenance

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_srun_recipe_trains_one_model_in_two_processes(slurm, tmp_path):
    script = (REPO / "apptainer" / "train-multigpu.sbatch").read_text()
    assert "#SBATCH --gpus-per-task=1\n" in script
    (tmp_path / "train.sbatch").write_text(script.replace("#SBATCH --gpus-per-task=1\n", ""))
    job = slurm.sbatch(
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--mem-per-cpu=2G",
        "train.sbatch",
        "--set",
        "train.epochs=1",
        "--set",
        "model.HyraxAutoencoder.base_channel_size=4",
        "--set",
        "model.HyraxAutoencoder.latent_dim=8",
        cwd=tmp_path,
        env={"HYRAX": f"{sys.executable} -m hyrax_cli"},
    )
    (task,) = slurm.wait(job, timeout=400)
    log = (tmp_path / f"hyrax-train-{job}.out").read_text()
    assert (task.state, task.exit_code) == ("COMPLETED", "0:0"), log
    runs = sorted((tmp_path / "results").glob("*-train-*"))
    assert len(runs) == 1 and log.strip().splitlines()[-1] == f"results/{runs[0].name}"  # only rank 0 writes
    prov = read_provenance(runs[0])
    assert prov["status"] == "complete" and prov["stage_info"]["world_size"] == 2
    assert prov["slurm"]["SLURM_JOB_ID"] == job and prov["slurm"]["SLURM_NTASKS"] == "2"
    assert (runs[0] / "model.pt").is_file()
