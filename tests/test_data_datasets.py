"""Built-in datasets, user (notebook-style) datasets, check_dataset, and joins."""

from __future__ import annotations

import numpy as np
import pytest

from libhyrax.config import load_config
from libhyrax.data import Dataset, check_dataset, open_group, write_cutouts
from libhyrax.errors import ConfigError, DataError


def request(**groups):
    return {"data_request": groups, "data_set": {"transform": "none"}}


def test_random_dataset_and_nan_policy():
    cfg = load_config(data=request(train={"r": {"dataset_class": "HyraxRandomDataset", "dataset_config": {
        "size": 40, "shape": [2, 6, 6], "number_invalid_values": 7, "provided_labels": [3, 4]}}}))
    g = open_group(cfg, "train")
    assert len(g) == 40 and set(g.fields) == {"object_id", "image", "label"}
    raw = g.datasets["r"].images
    assert np.isnan(raw).sum() == 7
    images = np.concatenate([g.read(s, s + 16)["image"] for s in range(0, 40, 16)])
    assert np.isfinite(images).all() and (images[np.isnan(raw)] == 0).all()
    assert g.transform.replaced_pixels == 7
    assert set(g.read(0, 40)["label"]) <= {3, 4}
    cfg["data_set"]["nan_mode"] = "quantile"
    q = open_group(cfg, "train").read(0, 40)["image"]
    bad = np.argwhere(np.isnan(raw))[0]
    band = raw[bad[0], bad[1]]
    assert q[tuple(bad)] == pytest.approx(np.nanquantile(band, 0.05))


def test_catalog_dataset_joined_on_cutouts_with_missing_matches(tmp_path):
    ids = np.array([f"o{i}" for i in range(20)])
    write_cutouts(
        tmp_path / "c.h5", ids, np.arange(20 * 4, dtype=np.float32).reshape(20, 1, 2, 2), {"x": np.arange(20)}
    )
    # the catalog: other order, objects o0..o14 only (o15..o19 unmatched), plus an object not in the cutouts
    cat_ids = np.array([f"o{i}" for i in range(14, -1, -1)] + ["zz"])
    z = np.array([float(i[1:]) / 10 if i != "zz" else 99.0 for i in cat_ids])
    (tmp_path / "cat.csv").write_text(
        "name,z,cls\n"
        + "".join(f"{i},{v},{'A' if v < 0.5 else 'B'}\n" for i, v in zip(cat_ids, z, strict=True))
    )
    cfg = load_config(
        data=request(
            train={
                "cutouts": {
                    "dataset_class": "HyraxHDF5Dataset",
                    "data_location": str(tmp_path / "c.h5"),
                    "fields": ["image"],
                    "primary_id_field": "object_id",
                },
                "photoz": {
                    "dataset_class": "CatalogDataset",
                    "data_location": str(tmp_path / "cat.csv"),
                    "fields": ["z", "cls"],
                    "join_field": "name",
                    "dataset_config": {"object_id_column": "name"},
                },
            }
        )
    )
    g = open_group(cfg, "train")
    assert g.fields == ["object_id", "image", "z", "cls", "photoz.matched"]
    b = g.read(10, 20)
    assert b["photoz.matched"].tolist() == [True] * 5 + [False] * 5
    np.testing.assert_allclose(b["z"][:5], [1.0, 1.1, 1.2, 1.3, 1.4])
    assert np.isnan(b["z"][5:]).all() and b["cls"].tolist()[4:6] == ["B", ""]
    r = g.read_rows([17, 3])
    assert r["object_id"].tolist() == ["o17", "o3"] and r["photoz.matched"].tolist() == [False, True]
    assert r["z"][1] == pytest.approx(0.3)
    np.testing.assert_allclose(g.catalog("z")[:3], [0, 0.1, 0.2])
    assert {"x", "z", "cls"} <= set(g.catalog_columns())


def test_index_aligned_datasets_must_have_equal_length(tmp_path):
    write_cutouts(tmp_path / "a.h5", ["a", "b"], np.zeros((2, 1, 2, 2)))
    write_cutouts(tmp_path / "b.h5", ["a", "b", "c"], np.zeros((3, 1, 2, 2)))
    cfg = load_config(
        data=request(
            train={
                "a": {
                    "dataset_class": "HyraxHDF5Dataset",
                    "data_location": str(tmp_path / "a.h5"),
                    "primary_id_field": "object_id",
                },
                "b": {"dataset_class": "HyraxHDF5Dataset", "data_location": str(tmp_path / "b.h5")},
            }
        )
    )
    with pytest.raises(DataError, match="has 3 rows but the primary dataset a has 2; give join_field"):
        open_group(cfg, "train")


def test_notebook_class_is_usable_once_defined_and_checks_ok():
    class NotebookStars(Dataset):
        def __init__(self, config, data_location=None):
            super().__init__(config, data_location)
            self.n = int(self.dataset_config.get("n", 12))

        def __len__(self):
            return self.n

        def get_image(self, index):
            return np.full((1, 4, 4), index, dtype=np.float32)

        def get_object_id(self, index):
            return f"star{index}"

        def get_flux(self, index):
            return float(index) * 2

    assert check_dataset(NotebookStars).startswith("NotebookStars: 12 objects")
    cfg = load_config(
        data=request(train={"s": {"dataset_class": "NotebookStars", "dataset_config": {"n": 9}}})
    )
    g = open_group(cfg, "train")
    assert len(g) == 9 and g.fields == ["object_id", "flux", "image"]
    b = g.read_rows([8, 1])
    assert b["object_id"].tolist() == ["star8", "star1"] and b["flux"].tolist() == [16.0, 2.0]
    assert b["image"].shape == (2, 1, 4, 4) and b["image"][0].max() == 8


def test_check_dataset_explains_a_broken_class():
    import torch

    class Broken(Dataset):
        def __len__(self):
            return 3

        def get_image(self, index):
            return torch.zeros(4, 4) if index == 0 else np.zeros((4, 4))

        def get_size(self, index):
            return np.zeros(index)

    with pytest.raises(DataError) as e:
        check_dataset(Broken)
    msg = str(e.value)
    assert "Broken breaks the dataset contract" in msg
    assert "no get_object_id(index)" in msg
    assert "get_image(0) returned a torch.Tensor" in msg
    assert "get_size returns different shapes" in msg

    class NoLen(Dataset):
        def get_image(self, index):
            return np.zeros((1, 2, 2))

    with pytest.raises(DataError, match="NoLen has no __len__"):
        check_dataset(NoLen)
    with pytest.raises(DataError, match="does not subclass libhyrax.data.Dataset"):
        check_dataset(dict)

    class FlatImages(Dataset):
        def __len__(self):
            return 2

        def get_image(self, index):
            return np.zeros((4, 4))

        def get_object_id(self, index):
            return "same"

    with pytest.raises(DataError, match=r"shape \(4, 4\); it must be \(bands, height, width\)"):
        check_dataset(FlatImages)


def test_builtin_classes_pass_check_dataset(tmp_path, monkeypatch):
    from libhyrax.data import HyraxRandomDataset, HyraxSample, SyntheticSurvey

    monkeypatch.setenv("HYRAX_CACHE_DIR", str(tmp_path))
    assert "100 objects" in check_dataset(HyraxRandomDataset)
    cfg = load_config(data={"data_set": {"SyntheticSurvey": {"n": 20, "size": 8}}})
    assert "20 objects" in check_dataset(SyntheticSurvey, cfg)
    monkeypatch.delenv("HYRAX_CACHE_DIR")  # the shared, cached sample
    assert "1000 objects" in check_dataset(HyraxSample)


def test_unknown_field_and_class_names():
    with pytest.raises(ConfigError, match=r"has no field 'imag'; did you mean image\?"):
        open_group(
            load_config(data=request(train={"s": {"dataset_class": "HyraxSample", "fields": ["imag"]}})),
            "train",
        )
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset_class 'HyraxSampel'; did you mean HyraxSample\? Known: .*"
        r"CatalogDataset, .*FitsImageDataset, .*HyraxHDF5Dataset",
    ):
        open_group(load_config(data=request(train={"s": {"dataset_class": "HyraxSampel"}})), "train")
    with pytest.raises(ConfigError, match="can't be imported"):
        open_group(load_config(data=request(train={"s": {"dataset_class": "no_such_pkg.Data"}})), "train")
