"""A disk that fills up mid-stage (docs/reliability.md): on a real small tmpfs, every stage that writes arrays
exits 1 with the reason (never a segfault), its run is marked failed, no array file in it is marked complete,
and `infer --resume` after space is freed gives the uninterrupted result. The writer's own rules (an
attribute never trusted over the bytes in the file) are tested without a mount."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_hyrax
from test_infer import make_train_run

from libhyrax.errors import RunError
from libhyrax.hdf5 import ArrayWriter, BufferedWriter, is_complete_file, open_result, rows_on_disk
from libhyrax.runs import RESERVE_BYTES

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (a real file system that fills up: ENOSPC from write(2)), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"can't mount a tmpfs here ({proc.stderr.strip()}); these tests need root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` but for about `leave` bytes."""
    st = os.statvfs(disk)
    size = max(st.f_bavail * st.f_frsize - leave, 0) // PAGE * PAGE
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(os.urandom(size))
    return filler


def used_bytes(folder: Path) -> tuple[int, int]:
    """Bytes a run directory takes on disk: in all, and in its array files."""
    files = [p for p in folder.rglob("*") if p.is_file()]

    def size(p):
        return p.stat().st_blocks * 512

    return sum(size(p) for p in files), sum(size(p) for p in files if p.suffix == ".h5")


def complete_arrays(run: Path) -> list[str]:
    done = []
    for p in run.glob("*.h5"):
        with h5py.File(p, "r") as f:
            if f.attrs.get("complete"):
                done.append(p.name)
    return done


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A train run and an infer run of it, on an ordinary disk."""
    root = tmp_path_factory.mktemp("upstream")
    train = make_train_run(root / "results")
    proc = run_hyrax(
        "infer", "--from", str(train), "--set", f"general.results_dir='{root / 'results'}'", check=True
    )
    labels = root / "labels.csv"
    with open_result(proc.stdout.strip(), "latents") as f:
        ids = [x.decode() for x in f["object_id"][:6]]
    labels.write_text("object_id,label\n" + "".join(f"{i},{k % 2 * 5}\n" for k, i in enumerate(ids)))
    return {"train": train, "infer": Path(proc.stdout.strip()), "labels": labels}


STAGES = {  # stage: (input run, extra arguments)
    "infer": ("train", []),
    "umap": ("infer", ["--set", "reduce_dimensions.algorithm='pca'"]),
    "anomaly": ("infer", []),
    "rank": ("infer", ["--labels", "{labels}"]),
}


@pytest.mark.parametrize(
    "stage", [s if s == "infer" else pytest.param(s, marks=pytest.mark.slow) for s in STAGES]
)
def test_a_stage_that_fills_the_disk_fails_cleanly(stage, upstream, small_disk):
    source, extra = STAGES[stage]
    extra = [a.format(**upstream) for a in extra]
    results = small_disk / "results"

    def run():
        return run_hyrax(
            stage, "--from", str(upstream[source]), *extra, "--set", f"general.results_dir='{results}'"
        )

    whole = run()  # the room it takes
    assert whole.returncode == 0, whole.stderr
    total, arrays = used_bytes(Path(whole.stdout.strip()))
    reference = {p.name: read_arrays(p) for p in Path(whole.stdout.strip()).glob("*.h5")}
    filler = fill(small_disk, total + RESERVE_BYTES - arrays // 2)  # room for the run, but half its arrays

    full = run()
    assert full.returncode == 1, full.stderr  # never 139 (h5py crashed after ENOSPC)
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    assert full.stdout == ""
    failed = next(results.glob(f"*-{stage}-*.failed"), None)
    assert failed, (full.stderr, list(results.iterdir()))
    prov = json.loads((failed / "provenance.json").read_text())
    assert prov["status"] == "failed" and "No space left" in prov["error"]
    assert complete_arrays(failed) == [], "a file whose writer failed is marked complete"

    filler.unlink()
    if stage == "infer":  # the stage that resumes a plain run: exactly the uninterrupted result
        again = run_hyrax("infer", "--resume", str(failed), check=True)
        got = read_arrays(Path(again.stdout.strip()) / "latents.h5")
        for k, v in reference["latents.h5"].items():
            np.testing.assert_array_equal(got[k], v, err_msg=k)


def read_arrays(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset) and f[k].dtype.kind != "O"}


@pytest.mark.slow
def test_train_on_a_full_disk_fails_and_marks_its_run_failed(tmp_path, small_disk):
    from test_train import small_config

    from libhyrax.config import dump_config
    from libhyrax.data.synthetic import generate_survey

    survey = generate_survey(tmp_path / "survey.h5", n=64, size=16, seed=0)
    cfg = tmp_path / "train.toml"
    cfg.write_text(dump_config(small_config(survey, small_disk / "results", epochs=1)))
    fill(small_disk, 100 << 10)
    proc = run_hyrax("train", "-c", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr and proc.stdout == ""
    failed = next((small_disk / "results").glob("*-train-*.failed"))
    assert json.loads((failed / "provenance.json").read_text())["status"] == "failed"


def test_a_read_only_results_folder_is_a_usage_error_naming_it(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip("can't mount a read-only tmpfs here (root only)")
    try:
        proc = run_hyrax("train", "--set", f"general.results_dir='{folder / 'results'}'")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert (
            f"can't write in the results folder {folder / 'results'} (Read-only file system)" in proc.stderr
        )
        assert "general.results_dir" in proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- the writer's own rules, without a mount ----------------------------------------------------------------


def test_a_writer_closed_short_of_its_rows_is_not_marked_complete(tmp_path):
    path = tmp_path / "a.h5"
    w = ArrayWriter(path, 10, {"x": ((2,), "<f4")})
    w.append(["a", "b", "c"], x=np.ones((3, 2), "f4"))
    with pytest.raises(RunError, match="3 rows written, 10 expected"):
        w.close()
    assert not is_complete_file(path)
    with h5py.File(path) as f:
        assert not f.attrs["complete"] and f.attrs["rows_written"] == 3
    out = BufferedWriter(path, 10)  # a resume continues after the 3 rows
    assert out.rows_written == 3
    out.close(complete=False)


def test_a_resume_keeps_only_rows_really_in_the_file(tmp_path, caplog):
    """An attribute that counts rows the data never reached (a disk that filled up mid-flush) is lowered to
    the rows in the file: the unwritten rows are written again, not kept as zeros."""
    path = tmp_path / "a.h5"
    w = ArrayWriter(path, 10000, {"x": ((64,), "<f4")})  # chunks of 4096 rows
    w.append([f"o{i}" for i in range(100)], x=np.ones((100, 64), "f4"))
    w.close(complete=False)
    with h5py.File(path, "a") as f:
        f.attrs["rows_written"] = 10000  # the count says every row is there
        assert rows_on_disk(f, 10000) == 4096  # the second chunk was never written
    out = BufferedWriter(path, 10000)
    assert out.rows_written == 4096
    out.close(complete=False)
    assert "only 4096 are in the file" in caplog.text
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = True
    assert not is_complete_file(path)  # "complete", with a chunk missing: not complete


def test_a_result_its_writer_did_not_finish_is_not_read(tmp_path):
    from libhyrax.errors import DataError

    w = ArrayWriter(tmp_path / "latents.h5", 4, {"latent": ((2,), "<f4")})
    w.append(["a", "b"], latent=np.ones((2, 2), "f4"))
    w.close(complete=False)
    with pytest.raises(DataError, match="not finished by the stage that wrote it"):
        open_result(tmp_path, "latents")
