"""The Slurm recipes and cluster scripts, checked without a cluster: they parse, fail safely, and every
chained submission cancels on a failed dependency."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "apptainer").glob("*.sbatch")) + [REPO / "apptainer" / "pipeline.sh",
                                                            REPO / "scripts" / "slurm-up.sh",
                                                            REPO / "scripts" / "slurm-down.sh"]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_executable(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert os.access(path, os.X_OK)


@pytest.mark.parametrize("path", sorted((REPO / "apptainer").glob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_scripts_run_the_image_unless_told_otherwise(path):
    text = path.read_text()
    assert "set -euo pipefail" in text and "#SBATCH --time=" in text
    # the time limit's SIGTERM reaches the stage early enough to mark its run interrupted (exit 143)
    assert re.search(r"^#SBATCH --signal=(B:)?TERM@\d+$", text, re.M)
    assert ("exec $HYRAX" in text) == ("--signal=B:TERM" in text)  # the batch shell is the stage itself
    assert "HYRAX=${HYRAX:-apptainer run " in text and "${HYRAX_SIF:-hyrax" in text


def test_pipeline_submits_every_job_with_kill_on_invalid_dep():
    text = (REPO / "apptainer" / "pipeline.sh").read_text()
    assert text.count("sbatch --parsable --kill-on-invalid-dep=yes") == 1  # the one submit() function
    assert re.findall(r"=\$\(submit (\w+) ", text) == [
        "train",
        "infer",
        "umap",
        "visualize",
        "index",
        "anomaly",
    ]
    assert text.count('--dependency="afterok:') == 5


def test_pipeline_rejects_an_unknown_option(tmp_path):
    proc = subprocess.run(
        [str(REPO / "apptainer" / "pipeline.sh"), "--shard", "3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr and not list(tmp_path.iterdir())


def test_readme_lists_every_recipe():
    readme = (REPO / "apptainer" / "README.md").read_text()
    for path in (REPO / "apptainer").iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, path.name


def test_slurm_up_without_slurm_says_so(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HYRAX_SLURM_DIR": str(tmp_path),
    }  # slurmctld and munged live in /usr/sbin
    proc = subprocess.run([str(REPO / "scripts" / "slurm-up.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 3 and "not installed" in proc.stderr


def test_slurm_down_with_nothing_started_stops_nothing(tmp_path):
    proc = subprocess.run(
        [str(REPO / "scripts" / "slurm-down.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "HYRAX_SLURM_DIR": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 0 and list(tmp_path.iterdir()) == []
