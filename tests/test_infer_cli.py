"""The shell pipeline of the issue: `hyrax train | hyrax infer` on the built-in sample, with no config file,
then `hyrax export` and `hyrax infer --engine onnx`, all as real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from libhyrax import hdf5

TRAIN_FAST = ["--set", "train.epochs=1"]


def hyrax_cmd(*args: str) -> str:
    return " ".join([sys.executable, "-m", "hyrax_cli", *args])


def test_train_pipe_infer_then_export_and_onnx_engine(workdir, hyrax):
    pipe = subprocess.run(
        f"{hyrax_cmd('train', *TRAIN_FAST)} | {hyrax_cmd('infer')}",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ.copy(),
    )
    assert pipe.returncode == 0, pipe.stderr[-3000:]
    infer_run = workdir / pipe.stdout.strip().splitlines()[-1]
    assert "-infer-" in infer_run.name
    with hdf5.open_result(infer_run, "latents") as f:
        ids, latent = hdf5.read_ids(f["object_id"]), f["latent"][:]
        assert len(ids) == 1000 and len(set(ids)) == 1000 and np.isfinite(latent).all()
        assert "recon_error" in f
    exported = hyrax("export", cwd=workdir, check=True).stdout.strip()
    onnx_run = hyrax("infer", "--engine", "onnx", "--from", exported, cwd=workdir, check=True).stdout.strip()
    with hdf5.open_result(workdir / onnx_run, "latents") as f:
        assert list(hdf5.read_ids(f["object_id"])) == list(ids)
        np.testing.assert_allclose(f["latent"][:], latent, atol=1e-4, rtol=1e-4)


def test_train_on_my_data_piped_into_infer_infers_my_data_not_the_sample(workdir):
    """`hyrax train -c my.toml | hyrax infer`: infer has no data of its own, so it reads the train run's
    (a relative path taken from where train ran), never the built-in sample in its place."""
    from libhyrax.data import write_cutouts

    ids = np.array([f"mine-{i:03d}" for i in range(200)])
    images = np.random.default_rng(0).normal(size=(200, 2, 20, 20)).astype("f4")
    write_cutouts(workdir / "my.h5", ids, images, bands=["g", "r"])
    (workdir / "my.toml").write_text(
        '[data_request.train.mine]\ndataset_class = "HyraxHDF5Dataset"\ndata_location = "my.h5"\n'
        'fields = ["image", "object_id"]\nprimary_id_field = "object_id"\n'
        "[model.HyraxAutoencoder]\nbase_channel_size = 4\nlatent_dim = 8\n"
    )
    pipe = subprocess.run(
        f"{hyrax_cmd('train', '-c', 'my.toml', *TRAIN_FAST)} | {hyrax_cmd('infer')}",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ.copy(),
    )
    assert pipe.returncode == 0, pipe.stderr[-3000:]
    infer_run = workdir / pipe.stdout.strip().splitlines()[-1]
    with hdf5.open_result(infer_run, "latents") as f:
        assert list(hdf5.read_ids(f["object_id"])) == list(ids)


def test_bad_shard_and_engine_are_usage_errors(workdir, hyrax):
    p = hyrax("infer", "--shard", "3/3", cwd=workdir)
    assert p.returncode == 2 and "--shard 3/3" in p.stderr
    p = hyrax("infer", "--engine", "tensorflow", cwd=workdir)
    assert p.returncode == 2 and "unknown infer.engine 'tensorflow'" in p.stderr
    p = hyrax("infer", cwd=workdir)  # no train run yet
    assert p.returncode == 2 and "hyrax train" in p.stderr
