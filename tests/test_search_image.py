"""Search by image: a cutout file goes through the model (and transforms) that made the index's latents."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from libhyrax.config import resolve
from libhyrax.data import open_group, sample_path
from libhyrax.errors import UsageError
from libhyrax.runs import open_run

SMALL_MODEL = {
    "model": {"name": "HyraxAutoencoder", "HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 8}}
}


def make_train_run(root):
    """A train run as `train` leaves it, with an untrained small autoencoder (no training needed)."""
    import torch

    from libhyrax.models import HyraxAutoencoder, build_model, describe, prepare, save_trained

    torch.manual_seed(0)
    cfg = resolve({**SMALL_MODEL, "general": {"results_dir": str(root)}, "data_set": {"asinh_scale": 0.2}})
    sample = prepare(HyraxAutoencoder, open_group(cfg, "train").read(0, 1))
    model = build_model(HyraxAutoencoder, cfg, sample)
    with open_run("train", cfg) as run:
        save_trained(run.path, model, describe(model, cfg, sample))
    return cfg, run.final_path


@pytest.fixture(scope="module")
def index_run(tmp_path_factory):
    from libhyrax.stages.index import index
    from libhyrax.stages.infer import infer

    root = tmp_path_factory.mktemp("image") / "results"
    cfg, train_run = make_train_run(root)
    latents = infer(cfg, from_run=train_run)
    return cfg, train_run, index(cfg, from_run=latents, overrides=["vector_db.name=exact"])


def test_search_by_image_finds_the_object(index_run, tmp_path):
    from libhyrax.stages.search import search

    cfg, train_run, idx = index_run
    with h5py.File(sample_path(), "r") as f:
        raw = f["images"][17]  # untransformed pixels, as a user's cutout file holds them
        wanted = f["object_id"][17].decode()
    np.save(tmp_path / "cutout.npy", raw)
    hits = search(cfg, from_run=idx, image=tmp_path / "cutout.npy", k=3)
    assert hits["object_id"][0] == wanted and hits["distance"][0] < 1e-4
    assert hits["query"][0] == "cutout.npy"
    # naming the model that made the latents is accepted; another train run is refused, naming both
    assert (
        search(cfg, from_run=idx, image=tmp_path / "cutout.npy", k=1, model_run=train_run)["object_id"][0]
        == wanted
    )
    _, other = make_train_run(tmp_path / "other")
    with pytest.raises(UsageError, match=f"{train_run.resolve()}.*{other.resolve()}"):  # exit 2
        search(cfg, from_run=idx, image=tmp_path / "cutout.npy", model_run=other)


def test_an_image_of_another_size_is_a_usage_error_naming_both_shapes(index_run, tmp_path):
    from libhyrax.stages.search import search

    cfg, _, idx = index_run
    np.save(tmp_path / "small.npy", np.zeros((3, 32, 32), "f4"))
    with pytest.raises(
        UsageError,
        match=r"takes images of shape \(3, 64, 64\).*the image small.npy has "
        r"\(3, 32, 32\)",
    ):
        search(cfg, from_run=idx, image=tmp_path / "small.npy")
