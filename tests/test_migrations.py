"""Every migration step: an old config migrates; a current one is untouched. And the whole chain from a
version-1 reference Hyrax config."""

from __future__ import annotations

import logging
import textwrap
from copy import deepcopy

import pytest
import tomlkit

from libhyrax.config import current_version, load_config, migrate
from libhyrax.config.migrations import load_steps

STEP_CASES = {
    1: (
        {"model_inputs": {"train": {"d": {"dataset_class": "X"}}}},
        {"data_request": {"train": {"d": {"dataset_class": "X"}}}},
    ),
    2: (
        {"data_loader": {"shuffle": False, "batch_size": 8}},
        {"data_loader": {"batch_size": 8}, "train": {"shuffle": False}},
    ),
    3: (
        {"data_request": {"train": {"d": {"dataset_class": "X", "split_fraction": 0.6}}}},
        {
            "data_request": {"train": {"d": {"dataset_class": "X"}}},
            "split": {"train": 0.6, "validate": 0.2, "test": 0.2},
        },
    ),
    4: (
        {
            "umap": {
                "fit_sample_size": 500,
                "save_fit_umap": True,
                "parallel": False,
                "UMAP": {"n_neighbors": 5},
            }
        },
        {
            "reduce": {
                "algorithm": "umap",
                "save_fit_model": True,
                "parallel": False,
                "umap": {"fit_sample_size": 500, "kwargs": {"n_neighbors": 5}},
            }
        },
    ),
    5: (
        {"data_set": {"preload_cache": True, "preload_threads": 4, "transform": "tanh"}},
        {"data_set": {"transform": "tanh"}, "data_loader": {"num_workers": 4}},
    ),
    6: ({"reduce": {"algorithm": "umap"}}, {"reduce_dimensions": {"algorithm": "umap"}}),
    7: (
        {
            "optimizer": {"name": "torch.optim.SGD"},
            "torch.optim.SGD": {"lr": 0.05, "momentum": 0.8},
            "torch.optim.Adam": {"lr": 0.01},
            "split": {"rng_seed": 3},
            "reduce_dimensions": {"algorithm": "umap", "umap": {"fit_sample_size": 2048}},
            "model": {"name": ""},
            "data_set": {"nan_mode": False, "crop_to": [48, 48]},
        },
        {
            "optimizer": {"name": "torch.optim.SGD", "kwargs": {"lr": 0.05, "momentum": 0.8}},
            "split": {"seed": 3},
            "reduce_dimensions": {"algorithm": "umap", "umap": {}, "fit_sample_size": 2048},
            "model": {},
            "data_set": {"crop_to": 48},
        },
    ),
}


def test_every_step_has_a_case():
    assert set(load_steps()) == set(STEP_CASES)
    assert current_version() == max(STEP_CASES) + 1 == 8


@pytest.mark.parametrize("version", sorted(STEP_CASES))
def test_step_migrates_an_old_config(version):
    old, expected = STEP_CASES[version]
    cfg = deepcopy(old)
    lines = load_steps()[version].migrate(cfg)
    assert cfg == expected
    assert lines, "a step that changed something must say what"


@pytest.mark.parametrize("version", sorted(STEP_CASES))
def test_step_leaves_a_current_config_untouched(version):
    current = {
        "train": {"epochs": 3},
        "data_request": {"train": {"d": {"dataset_class": "X"}}},
        "reduce_dimensions": {"algorithm": "pca"},
        "optimizer": {"name": "torch.optim.Adam"},
    }
    cfg = deepcopy(current)
    assert load_steps()[version].migrate(cfg) == []
    assert cfg == current


def test_a_file_without_version_is_current():
    assert migrate({"train": {"epochs": 2}}) == {"train": {"epochs": 2}, "config_version": 8}


def test_whole_chain_from_a_version_1_reference_config(tmp_path, caplog):
    ref = tmp_path / "reference_v1.toml"
    ref.write_text(
        textwrap.dedent("""
        config_version = 1
        [general]
        dev_mode = false
        results_dir = "./my_results"
        [model]
        name = ""
        [optimizer]
        name = "torch.optim.SGD"
        ["torch.optim.SGD"]
        lr = 0.02
        momentum = 0.9
        [data_loader]
        batch_size = 64
        shuffle = false
        [data_set]
        preload_cache = true
        transform = "tanh"
        [train]
        epochs = 4
        [model_inputs.train.cutouts]
        dataset_class = "HyraxHDF5Dataset"
        data_location = "cutouts.h5"
        fields = ["image"]
        primary_id_field = "object_id"
        split_fraction = 0.7
        [umap]
        fit_sample_size = 4096
        [umap.UMAP]
        n_neighbors = 30
    """)
    )
    logger = logging.getLogger("hyrax")
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="hyrax"):
            cfg = load_config(ref)
    finally:
        logger.propagate = False
    assert cfg["config_version"] == 8
    assert cfg["general"]["results_dir"] == "./my_results"
    assert cfg["model"]["name"] == "HyraxAutoencoder"  # the reference's "" means our default
    assert cfg["optimizer"] == {"name": "torch.optim.SGD", "kwargs": {"lr": 0.02, "momentum": 0.9}}
    assert cfg["train"]["shuffle"] is False and cfg["train"]["epochs"] == 4
    assert cfg["data_loader"]["batch_size"] == 64
    assert cfg["data_set"]["transform"] == "tanh"
    assert cfg["split"]["train"] == 0.7 and cfg["split"]["validate"] == cfg["split"]["test"] == 0.15
    assert cfg["data_request"]["train"]["cutouts"]["data_location"] == "cutouts.h5"
    assert "split_fraction" not in cfg["data_request"]["train"]["cutouts"]
    assert cfg["reduce_dimensions"]["fit_sample_size"] == 4096
    assert cfg["reduce_dimensions"]["umap"]["kwargs"]["n_neighbors"] == 30
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for fragment in (
        "1 -> 2: [model_inputs] -> [data_request]",
        "2 -> 3: data_loader.shuffle -> train.shuffle",
        "3 -> 4: data_request.train.cutouts.split_fraction -> split.train",
        "6 -> 7: [reduce] -> [reduce_dimensions]",
        '7 -> 8: ["torch.optim.SGD"] -> [optimizer.kwargs]',
    ):
        assert fragment in messages
    assert "general.dev_mode" in messages  # reference-only key: warned, ignored


def test_the_reference_v7_defaults_file_loads():
    """Every key of the reference Hyrax's v7 defaults either maps to ours or is warned about: none is an
    error. (The key list is the one shipped in libhyrax/config/reference_v7_keys.txt.)"""
    from libhyrax.config import REFERENCE_KEYS_FILE

    doc: dict = {"config_version": 7}
    values = {
        "general.data_dir": "./data",
        "train.epochs": 10,
        "data_loader.batch_size": 512,
        "optimizer.name": "torch.optim.SGD",
        "data_set.transform": "tanh",
    }
    for line in REFERENCE_KEYS_FILE.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith('"'):
            continue
        node = doc
        *parents, leaf = line.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = values.get(line, False)
    cfg = load_config(data=tomlkit.parse(tomlkit.dumps(doc)).unwrap())
    assert cfg["config_version"] == 8 and cfg["train"]["epochs"] == 10


def test_a_notebook_style_whole_train_split_runs(tmp_path):
    """`split_fraction = 1.0` on the train data meant "train on all of it": it must run, not just load."""
    from libhyrax.data.split import make_splits

    ref = tmp_path / "nb.toml"
    ref.write_text(
        textwrap.dedent("""
        config_version = 3
        [data_request.train.sample]
        dataset_class = "HyraxSample"
        split_fraction = 1.0
    """)
    )
    cfg = load_config(ref)
    assert (cfg["split"]["train"], cfg["split"]["validate"], cfg["split"]["test"]) == (1.0, 0.0, 0.0)
    fractions = {k: v for k, v in cfg["split"].items() if k in ("train", "validate", "test")}
    assert len(make_splits(100, fractions, 0)["train"]) == 100


def test_a_reference_colormap_name_draws(tmp_path):
    ref = tmp_path / "v7.toml"
    ref.write_text('config_version = 7\n[visualize]\ncmap = "viridis"\n')
    assert load_config(ref)["visualize"]["cmap"] == "Viridis256"
