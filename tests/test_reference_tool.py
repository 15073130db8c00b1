"""The reference Hyrax's notebook calls, written as its documentation writes them: each behaves as the
reference does (checked on values) or fails at once naming what to use instead. Nothing is dropped
silently."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

import libhyrax
from libhyrax.errors import ConfigError, DataError
from libhyrax.reference_tool import Hyrax

RANDOM = {
    "dataset_class": "HyraxRandomDataset",
    "primary_id_field": "object_id",
    "fields": ["image", "label", "object_id"],
}


def small(**extra) -> dict:
    """30 random 2x16x16 objects, the reference's nested dataset_config form; batches of 8, one epoch."""
    request = {
        "train": {
            "data": {**RANDOM, "dataset_config": {"HyraxRandomDataset": {"size": 30, "shape": [2, 16, 16]}}}
        }
    }
    return {
        "general": {"results_dir": "./results"},
        "data_request": request,
        "data_loader": {"batch_size": 8},
        "train": {"epochs": 1},
        **extra,
    }


def last_metrics(run) -> dict[str, str]:
    rows = list(csv.DictReader(run.file("metrics.csv").open()))
    return rows[-1]


# --- the four cases that used to run differently --------------------------------------------------


def test_class_named_optimizer_tables_set_the_optimizer_that_runs(workdir):
    h = Hyrax(small())
    h.config["optimizer"]["name"] = "torch.optim.SGD"
    h.config["torch.optim.SGD"] = {"lr": 0.05, "momentum": 0.5}  # the reference's table, by class
    h.set_config("scheduler.name", "torch.optim.lr_scheduler.ExponentialLR")
    h.set_config("'torch.optim.lr_scheduler.ExponentialLR'", {"gamma": 0.5})  # a quoted key, as there
    trained = h.train()
    assert float(last_metrics(trained)["lr"]) == pytest.approx(0.05)  # the rate training ran at (epoch 1)
    recorded = trained.config
    assert recorded["optimizer"] == {"name": "torch.optim.SGD", "kwargs": {"lr": 0.05, "momentum": 0.5}}
    assert recorded["scheduler"]["kwargs"] == {"gamma": 0.5}


def test_a_class_table_for_a_class_not_configured_is_an_error_naming_the_setting(workdir, hyrax):
    h = Hyrax(small())
    h.config["torch.optim.SGD"] = {"lr": 0.05}  # our default optimizer is Adam: this would be ignored
    with pytest.raises(
        ConfigError, match=r'optimizer.name is torch.optim.Adam: set optimizer.name = "torch.optim.SGD"'
    ):
        h.train()
    (workdir / "c.toml").write_text('["torch.optim.SGD"]\nlr = 0.05\n')  # the same in a file, on the CLI
    proc = hyrax("config", "-c", "c.toml")
    assert proc.returncode == 2 and 'set optimizer.name = "torch.optim.SGD"' in proc.stderr
    (workdir / "c.toml").write_text('[optimizer]\nname = "torch.optim.SGD"\n["torch.optim.SGD"]\nlr = 0.05\n')
    assert "lr = 0.05" in hyrax("config", "-c", "c.toml", check=True).stdout


def test_train_resume_goes_on_from_the_checkpoint_file_of_an_epoch(workdir):
    import torch

    def final_weights(run) -> dict:
        return torch.load(run.file("model.pt"), weights_only=True)

    whole = Hyrax(small(train={"epochs": 2})).train()
    h = Hyrax(small())
    first = h.train()  # one epoch: its checkpoint, by the reference's name
    h.config["train"]["resume"] = str(first.file("checkpoints/checkpoint_epoch_1.pt"))
    h.config["train"]["epochs"] = 2
    second = h.train()  # a new run that trains epoch 2 only
    assert second.path != first.path and [
        r["epoch"] for r in csv.DictReader(second.file("metrics.csv").open())
    ] == ["2"]
    assert second.final_training_metrics["loss"] == pytest.approx(
        float(last_metrics(whole)["train_loss"]), rel=1e-5
    )
    a, b = final_weights(second), final_weights(whole)
    assert a.keys() == b.keys() and all(
        torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0) for k in a
    )
    h.config["train"]["model_weights_file"] = str(first.file("model.pt"))
    with pytest.raises(ConfigError, match="cannot set both"):
        h.train()
    assert len(list((workdir / "results").glob("*-train-*"))) == 3  # refused before a run started


def test_nested_dataset_config_sizes_the_data(workdir):
    assert len(libhyrax.open_group(libhyrax.load_config(data=small()), "train")) == 30


def test_prepare_returns_the_data_the_request_describes(workdir):
    h = Hyrax(small())
    prepared = h.prepare()
    data = prepared["train"]
    assert list(prepared) == ["train"] and len(data) == 30
    item = data[3]
    assert item["object_id"] == "rand-03" and set(item["data"]) == {"image", "label", "object_id"}
    assert item["data"]["image"].shape == (2, 16, 16)
    truth = libhyrax.open_group(h.config, "train").read(0, 30)
    assert item["data"]["label"] == truth["label"][3]
    np.testing.assert_array_equal(item["data"]["image"], truth["image"][3])
    batch = data.collate([data[i] for i in range(5)])
    assert batch["data"]["image"].shape == (5, 2, 16, 16) and batch["object_id"].tolist()[-1] == "rand-04"
    assert data.ids()[:2] == ["rand-00", "rand-01"] and data[-1]["object_id"] == "rand-29"
    with pytest.raises(IndexError):
        data[30]
    assert not (workdir / "results").exists()  # it reads the data: no FITS->HDF5 run, no built-in sample


# --- the rest of what reference notebooks call ----------------------------------------------------


def test_set_config_merges_tables_and_takes_over_write(workdir):
    h = Hyrax(small())
    h.set_config("train", {"epochs": 3})
    assert h.config["train"]["epochs"] == 3 and h.config["train"]["shuffle"] is True  # merged
    h.set_config("split", {"train": 0.8, "validate": 0.2}, over_write=True)
    assert (h.config["split"]["train"], h.config["split"]["validate"], h.config["split"]["test"]) == (
        0.8,
        0.2,
        0.0,
    )
    h.config["split"] = {"train": 0.6}  # the splits a table doesn't size share what it leaves
    h.set_config("train.epochs", 1)
    assert h.config["split"]["validate"] == h.config["split"]["test"] == pytest.approx(0.2)
    h.config["split"]["infer"] = 1.0
    h.set_config("train.epochs", 1)
    h.config["split"]["infer"] = 0.5
    with pytest.raises(ConfigError, match="split.infer = 0.5: infer reads every object"):
        h.set_config("train.epochs", 1)


def test_reference_keys_at_their_defaults_pass_and_others_are_refused(workdir, caplog):
    h = Hyrax(small(general={"results_dir": "./results", "dev_mode": False}, download={"sw": "22asec"}))
    assert h.config["train"]["weights_filename"] == "example_model.pth"  # the reference's, readable
    with pytest.raises(ConfigError, match=r"general.dev_mode = True: there is no dev mode"):
        Hyrax(small(general={"dev_mode": True}))


def test_train_returns_its_metrics_and_writes_the_weights_filename(workdir):
    h = Hyrax(small())
    h.set_config("train.weights_filename", "my_model.pth")
    trained = h.train()
    last = last_metrics(trained)
    assert trained.final_training_metrics == {"loss": pytest.approx(float(last["train_loss"]))}
    assert trained.final_validation_metrics == {"loss": pytest.approx(float(last["val_loss"]))}
    assert trained.file("my_model.pth").read_bytes() == trained.file("model.pt").read_bytes()
    assert h.config["train"]["weights_filename"] == "my_model.pth"


def test_results_read_as_the_reference_reads_them(workdir):
    from libhyrax.reference_tool.config_utils import find_most_recent_results_dir

    h = Hyrax(small())
    assert find_most_recent_results_dir(h.config, "infer") is None
    h.train()
    results = h.infer()
    assert find_most_recent_results_dir(h.config, "infer") == results.path.resolve()
    assert len(results) == 30 and results.get_object_id(4) == "rand-04"
    np.testing.assert_array_equal(results.get_data(4), results[4])
    table = results.table
    assert table.num_rows == 30 and table.column("object_id")[4].as_py() == "rand-04"
    np.testing.assert_allclose(np.asarray(table.column("data")[4].as_py()), results[4])

    pca = h.reduce_dimensions(algorithm="pca")
    assert len(pca) == 30 and pca[0].shape == (2,) and pca.config["reduce_dimensions"]["algorithm"] == "pca"
    again = h.reduce_dimensions(model_path=pca.path)  # the fitted map, reused
    np.testing.assert_allclose(again[:], pca[:], atol=1e-6)

    h.set_config("reduce_dimensions.tsne.kwargs.perplexity", 5.0)
    tsne = h.reduce_dimensions(algorithm="tsne")
    assert tsne[:].shape == (30, 2) and np.isfinite(tsne[:]).all() and tsne[:].std() > 0
    h.set_config("reduce_dimensions.fit_sample_size", 10)
    with pytest.raises(DataError, match="t-SNE maps only the objects it was fitted on"):
        h.reduce_dimensions(algorithm="tsne")


def test_a_data_location_a_data_making_dataset_ignores_is_not_checked(workdir):
    cfg = small()
    cfg["data_request"]["train"]["data"]["data_location"] = "./not_there"
    assert len(libhyrax.open_group(libhyrax.load_config(data=cfg), "train")) == 30


def test_the_reference_fits_dataset_keys(workdir, tmp_path):
    h = Hyrax(
        small(data_set={"filter_catalog": "cat.fits", "object_id_column_name": "id", "crop_to": [24, 24]})
    )
    assert h.config["data_set"]["FitsImageDataset"]["catalog"] == "cat.fits"
    assert h.config["data_set"]["FitsImageDataset"]["object_id_column"] == "id"
    assert h.config["data_set"]["crop_to"] == 24
    with pytest.raises(ConfigError, match="square"):
        Hyrax(small(data_set={"crop_to": [24, 20]}))


# --- prepare with the reference's single-band HSC cutouts -----------------------------------------


@pytest.fixture
def single_band(tmp_path):
    """6 single-band cutouts, 25x25 and 25x24 as the reference's HSC-I test files, and a catalogue with no
    filter column."""
    from astropy.io import fits

    folder = tmp_path / "hsc"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        shape = (25, 25) if i % 2 else (25, 24)
        fits.PrimaryHDU(rng.normal(size=shape).astype(np.float32)).writeto(folder / f"obj{i}.fits")
        rows.append({"object_id": f"obj{i}", "filename": f"obj{i}.fits"})
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["object_id", "filename"])
        w.writeheader()
        w.writerows(rows)
    return folder


def test_prepare_single_band_mixed_sizes(workdir, single_band):
    with pytest.raises(
        DataError,
        match=r"6 of 6 rejected, 3 because cutout 25x24 is smaller than 64x64; set "
        r"prepare.cutout_size = 24, or prepare.pad_smaller = true",
    ):
        libhyrax.prepare({"prepare": {"fits_dir": str(single_band), "bands": ["I"]}})
    with pytest.raises(DataError, match=r"prepare.bands = \[\"I\"\]"):  # no filter column, no band named
        libhyrax.prepare({"prepare": {"fits_dir": str(single_band), "cutout_size": 24}})
    run = libhyrax.prepare(
        {"prepare": {"fits_dir": str(single_band), "bands": ["I"], "cutout_size": 25, "pad_smaller": True}}
    )
    from libhyrax.data import HyraxHDF5Dataset

    cutouts = HyraxHDF5Dataset({}, run.file("cutouts.h5"))
    assert len(cutouts) == 6 and cutouts.sample_shape == (1, 25, 25) and cutouts.bands == ["I"]
    padded = cutouts.read(["image"], 0, 1)["image"][0, 0]
    assert (padded[:, -1] == 0).all() and (padded[:, -2] != 0).all()  # 24 wide: one zero column, right


def test_no_warning_is_the_only_trace(workdir, caplog):
    """A reference key the facade doesn't honour never gets by with a log line alone."""
    with caplog.at_level(logging.WARNING, logger="hyrax"), pytest.raises(ConfigError):
        Hyrax(small(data_set={"use_cache": False}))


def test_variable_length_fields_are_batched_by_the_plugins_own_collate(workdir):
    """Light curves of different lengths: the reference's model-agnostic promise is that the dataset's own
    collate pads them; check_dataset accepts it and a group reads them through it."""
    from libhyrax.reference_tool import HyraxDataset

    class LightCurves(HyraxDataset):
        def __init__(self, config, data_location=None):
            self.lengths = [3, 5, 4, 2, 5, 1]
            super().__init__(config)

        def __len__(self):
            return len(self.lengths)

        def get_image(self, index):  # the flux series, as long as the object's light curve
            return np.arange(self.lengths[index], dtype=np.float32)[None, None, :] + index

        def get_object_id(self, index):
            return f"lc{index}"

        @staticmethod
        def collate(items):
            width = max(it["image"].shape[-1] for it in items)
            padded = np.zeros((len(items), 1, 1, width), np.float32)
            for i, it in enumerate(items):
                padded[i, ..., : it["image"].shape[-1]] = it["image"]
            return {"image": padded, "object_id": np.array([it["object_id"] for it in items])}

    assert "6 objects" in libhyrax.check_dataset(LightCurves, libhyrax.load_config(data={}))
    cfg = libhyrax.load_config(
        data={
            "data_request": {
                "train": {
                    "lc": {
                        "dataset_class": "LightCurves",
                        "primary_id_field": "object_id",
                        "fields": ["image", "object_id"],
                    }
                }
            },
            "data_set": {"transform": "none"},
        }
    )
    batch = libhyrax.open_group(cfg, "train").read(0, 3)
    np.testing.assert_array_equal(
        batch["image"][:, 0, 0], [[0, 1, 2, 0, 0], [1, 2, 3, 4, 5], [2, 3, 4, 5, 0]]
    )
    assert batch["object_id"].tolist() == ["lc0", "lc1", "lc2"]


def test_random_data_of_any_shape(workdir):
    cfg = small()
    cfg["data_request"]["train"]["data"]["dataset_config"] = {
        "HyraxRandomDataset": {"size": 10, "shape": [2, 3]}
    }
    cfg["data_set"] = {"transform": "none"}
    item = Hyrax(cfg).prepare()["train"][0]
    want = np.random.default_rng(42).random((10, 2, 3), dtype=np.float32)[0]
    np.testing.assert_array_equal(item["data"]["image"], want)


def test_a_config_file_takes_the_reference_forms_too(workdir):
    (workdir / "ref.toml").write_text(
        "[split]\ntrain = 0.8\nvalidate = 0.2\n[data_set]\ncrop_to = [24, 24]\n"
    )
    h = Hyrax(config_file="ref.toml")
    assert (h.config["split"]["test"], h.config["data_set"]["crop_to"]) == (0.0, 24)
