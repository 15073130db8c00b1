"""One rule for exit codes (README, libhyrax/errors.py): a user's mistake exits 2 with a one-line message
and no traceback, whichever stage it is made in; stdout stays empty."""

from __future__ import annotations

import pytest
from conftest import run_hyrax

from libhyrax.stages import STAGES

NOT_A_RUN = "not-a-run"  # an empty folder where a results directory is expected

MISTAKES = {  # stage: arguments with a user's mistake in them
    "download": ["--set", "download.catalog='no-such-catalogue.csv'"],
    "prepare": ["--set", "prepare.fits_dir='no-such-folder'"],
    "train": ["--set", "train.epochs=0"],
    "test": ["--from", NOT_A_RUN],
    "infer": ["--from", NOT_A_RUN],
    "export": ["--from", NOT_A_RUN],
    "umap": ["--from", NOT_A_RUN],
    "index": ["--from", NOT_A_RUN],
    "anomaly": ["--method", "no-such-method"],
    "rank": ["--labels", "no-such-labels.csv"],
    "search": ["--from", NOT_A_RUN, "--id", "HDF-0001"],
    "visualize": ["--from", NOT_A_RUN],
    "lookup": ["--from", NOT_A_RUN, "--id", "HDF-0001"],
    "config": ["--set", "no_such_section.key=1"],
}


def test_every_stage_has_a_mistake_to_make():
    assert {s.name for s in STAGES} <= set(MISTAKES)


FAST = ("train", "infer", "anomaly", "download")  # the rest: slow (a process each)


@pytest.mark.parametrize(
    "stage", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in sorted(MISTAKES)]
)
def test_a_users_mistake_exits_2_with_a_message(stage, workdir):
    (workdir / NOT_A_RUN).mkdir()
    proc = run_hyrax(stage, *MISTAKES[stage], cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    assert any(ln.startswith("error: ") for ln in proc.stderr.splitlines()) and "Traceback" not in proc.stderr
    assert proc.stdout == ""
