"""The streaming writer loop of `infer`, with a deterministic stand-in model over a real cutout file:
input order, ids checked against latents, resume after an interrupt or a SIGKILL, exactly N rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from libhyrax import hdf5
from libhyrax.data import open_group, write_cutouts
from libhyrax.errors import ModelError
from libhyrax.stages.infer import write_latents

N = 203


class FakeEngine:
    """latent = per-band mean and max of the image; recon_error = its std. Optionally stops mid-run."""

    latent_dim = 2
    runtime = "fake"  # what the Engine contract says every engine records

    def __init__(self, stop_after_batches=None, exc=KeyboardInterrupt):
        self.calls, self.stop_after, self.exc = 0, stop_after_batches, exc

    def outputs(self, batch):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise self.exc("stopped on purpose")
        img = batch["image"]
        return {"latent": np.stack([img.mean((1, 2, 3)), img.max((1, 2, 3))], 1),
                "recon_error": img.std((1, 2, 3))}


@pytest.fixture
def group(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(N, 1, 8, 8)).astype("f4")
    write_cutouts(tmp_path / "cutouts.h5", [f"obj-{i:04d}" for i in range(N)], images)
    cfg = {
        "data_request": {
            "infer": {
                "d": {
                    "dataset_class": "HyraxHDF5Dataset",
                    "fields": ["image", "object_id"],
                    "data_location": str(tmp_path / "cutouts.h5"),
                    "primary_id_field": "object_id",
                }
            }
        },
        "data_set": {"transform": "none"},
    }
    return open_group(cfg, "infer")


def expected(group, start=0, stop=N):
    return FakeEngine().outputs(group.read(start, stop))


@pytest.mark.parametrize("read_ahead", [False, True])
def test_writes_every_row_in_input_order(group, tmp_path, read_ahead):
    out = tmp_path / "latents.h5"
    stats = write_latents(FakeEngine(), group, 0, N, out, batch_size=32, read_ahead=read_ahead)
    assert stats["objects_per_s"] > 0
    with h5py.File(out) as f:
        assert f.attrs["complete"] and f.attrs["rows_written"] == N
        assert list(hdf5.read_ids(f["object_id"])) == [f"obj-{i:04d}" for i in range(N)]
        assert f["latent"].dtype == np.float32 and f["latent"].shape == (N, 2)
        want = expected(group)
        np.testing.assert_array_equal(f["latent"][:], want["latent"])
        np.testing.assert_array_equal(f["recon_error"][:], want["recon_error"])


def test_a_share_of_the_rows(group, tmp_path):
    out = tmp_path / "part.h5"
    write_latents(FakeEngine(), group, 70, 140, out, batch_size=16)
    with h5py.File(out) as f:
        assert list(hdf5.read_ids(f["object_id"])) == [f"obj-{i:04d}" for i in range(70, 140)]
        np.testing.assert_array_equal(f["latent"][:], expected(group, 70, 140)["latent"])


@pytest.mark.parametrize("read_ahead", [False, True])
def test_interrupted_write_resumes_to_the_exact_result(group, tmp_path, read_ahead):
    out = tmp_path / "latents.h5"
    with pytest.raises(KeyboardInterrupt):
        write_latents(
            FakeEngine(stop_after_batches=3), group, 0, N, out, batch_size=32, read_ahead=read_ahead
        )
    with h5py.File(out) as f:
        assert not f.attrs["complete"] and f.attrs["rows_written"] == 96
    engine = FakeEngine()
    stats = write_latents(engine, group, 0, N, out, batch_size=32)
    assert stats["resumed_at_row"] == 96 and engine.calls == 4  # only the rows still missing
    with h5py.File(out) as f:
        ids = hdf5.read_ids(f["object_id"])
        assert len(ids) == N and len(set(ids)) == N and list(ids) == [f"obj-{i:04d}" for i in range(N)]
        np.testing.assert_array_equal(f["latent"][:], expected(group)["latent"])


def test_a_model_that_loses_rows_is_caught(group, tmp_path):
    class Lossy(FakeEngine):
        def outputs(self, batch):
            return {k: v[:-1] for k, v in super().outputs(batch).items()}

    with pytest.raises(ModelError, match="rows of 'latent'"):
        write_latents(Lossy(), group, 0, N, tmp_path / "x.h5", batch_size=32)


def test_sigkill_mid_run_then_resume(group, tmp_path):
    """A real process killed with SIGKILL (no cleanup at all) leaves a file that resumes exactly."""
    out = tmp_path / "latents.h5"
    location = group.specs["d"].data_location
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from libhyrax.data import open_group
        from libhyrax import hdf5
        from libhyrax.stages import infer
        hdf5.FLUSH_BYTES = 1  # write every batch, so the kill lands between written batches
        cfg = {{"data_request": {{"infer": {{"d": {{"dataset_class": "HyraxHDF5Dataset",
               "fields": ["image", "object_id"], "data_location": {location!r},
               "primary_id_field": "object_id"}}}}}}, "data_set": {{"transform": "none"}}}}
        class Slow:
            latent_dim, calls = 2, 0
            def outputs(self, batch):
                self.calls += 1
                if self.calls == 4:
                    print("ready", flush=True)
                    time.sleep(60)
                img = batch["image"]
                return {{"latent": np.stack([img.mean((1, 2, 3)), img.max((1, 2, 3))], 1),
                        "recon_error": img.std((1, 2, 3))}}
        infer.write_latents(Slow(), open_group(cfg, "infer"), 0, {N}, {str(out)!r}, batch_size=16)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with h5py.File(out) as f:
        assert f.attrs["rows_written"] == 48 and not f.attrs["complete"]
    write_latents(FakeEngine(), group, 0, N, out, batch_size=16)
    with h5py.File(out) as f:
        assert list(hdf5.read_ids(f["object_id"])) == [f"obj-{i:04d}" for i in range(N)]
        np.testing.assert_array_equal(f["latent"][:], expected(group)["latent"])
