"""Every bad input gets a clear error naming the file and the fix, never a traceback from inside h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from libhyrax.config import load_config
from libhyrax.data import HyraxHDF5Dataset, open_group, write_cutouts
from libhyrax.errors import ConfigError, DataError


def open_file(path):
    return open_group(load_config(data={"data_request": {"train": {"c": {
        "dataset_class": "HyraxHDF5Dataset", "data_location": str(path)}}}}), "train")


@pytest.fixture
def good(tmp_path):
    return write_cutouts(tmp_path / "good.h5", [f"o{i}" for i in range(10)], np.ones((10, 2, 4, 4)))


def test_not_hdf5_and_truncated(tmp_path, good):
    text = tmp_path / "notes.h5"
    text.write_text("hello, I am a text file\n" * 100)
    with pytest.raises(DataError, match=r"notes.h5 is not an HDF5 file .*hyrax prepare"):
        open_file(text)
    raw = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut.h5 (can't be read|is not an HDF5 file)"):
        open_file(cut)


def test_missing_location_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"data_request.train.c.data_location '.*nope.h5' does not exist"):
        open_file(tmp_path / "nope.h5")
    with pytest.raises(DataError, match="is a folder"):
        open_file(tmp_path)


def raw_file(path, ids, images, **more):
    with h5py.File(path, "w") as f:
        f["object_id"] = np.asarray(ids, dtype="S")
        if images is not None:
            f["images"] = images
        for k, v in more.items():
            f[k] = v
    return path


def test_missing_images_and_ids(tmp_path):
    with pytest.raises(DataError, match=r"x.h5 has no /images array"):
        open_file(raw_file(tmp_path / "x.h5", ["a"], None))
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["images"] = np.zeros((1, 1, 2, 2))
    with pytest.raises(DataError, match=r"y.h5 has no /object_id"):
        open_file(tmp_path / "y.h5")


def test_duplicate_ids_are_shown(tmp_path):
    path = raw_file(tmp_path / "d.h5", ["a", "b", "a", "c", "c"], np.zeros((5, 1, 2, 2), np.float32))
    with pytest.raises(DataError, match=r"d.h5: duplicate object ids, e.g. a, c; object ids must be unique"):
        open_file(path)


def test_mismatched_lengths(tmp_path):
    path = raw_file(tmp_path / "m.h5", ["a", "b", "c"], np.zeros((2, 1, 2, 2), np.float32),
                    **{"catalog/ra": np.zeros(3)})
    with pytest.raises(
        DataError, match=r"m.h5: arrays of different lengths: /object_id has 3 rows but /images has 2"
    ):
        open_file(path)


def test_wrong_rank(tmp_path):
    path = raw_file(tmp_path / "r.h5", ["a", "b"], np.zeros((2, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"r.h5: /images has shape \(2, 4, 4\); it must be 4-D .*band axis"):
        open_file(path)


def test_nan_pixels_follow_the_policy(tmp_path):
    images = np.ones((4, 1, 3, 3), np.float32)
    images[1, 0, 1, 1] = np.nan
    images[2, 0, 0, 0] = -np.inf
    g = open_group(
        load_config(
            data={
                "data_request": {
                    "train": {
                        "c": {
                            "dataset_class": "HyraxHDF5Dataset",
                            "data_location": str(write_cutouts(tmp_path / "n.h5", list("abcd"), images)),
                        }
                    }
                },
                "data_set": {"transform": "none"},
            }
        ),
        "train",
    )
    out = g.read(0, 4)["image"]
    assert (
        np.isfinite(out).all()
        and out[1, 0, 1, 1] == 0
        and out[2, 0, 0, 0] == 0
        and g.transform.replaced_pixels == 2
    )


def test_data_request_structure_errors():
    with pytest.raises(ConfigError, match="needs exactly one primary dataset"):
        load_config(
            data={
                "data_request": {
                    "train": {"a": {"dataset_class": "HyraxSample"}, "b": {"dataset_class": "HyraxSample"}}
                }
            }
        )
    with pytest.raises(ConfigError, match=r"data_request.train.a: unknown key datalocation"):
        load_config(
            data={"data_request": {"train": {"a": {"dataset_class": "HyraxSample", "datalocation": "x"}}}}
        )
    with pytest.raises(ConfigError, match=r"data_request.train.a: dataset_class is missing"):
        load_config(data={"data_request": {"train": {"a": {"fields": ["image"]}}}})
    cfg = load_config(data={"data_request": {"infer": {"a": {"dataset_class": "HyraxSample"}}}})
    with pytest.raises(ConfigError, match="no 'validate' group and no train group"):
        open_group(cfg, "validate")


def test_incomplete_file_and_rows_out_of_range(tmp_path, good):
    from libhyrax.data import CutoutWriter

    w = CutoutWriter(tmp_path / "half.h5", (1, 2, 2), ["g"], n_rows=4)
    w.append(["a"], np.zeros((1, 1, 2, 2)))
    w.close(complete=False)
    with pytest.raises(DataError, match=r"half.h5 was not finished \(1 rows written\)"):
        HyraxHDF5Dataset({}, tmp_path / "half.h5")
    with pytest.raises(DataError, match="out of range"):
        open_file(good).read_rows([3, 10])


def test_a_negative_split_fraction_is_an_error_not_ignored():
    from libhyrax.data.split import make_splits
    from libhyrax.errors import ConfigError

    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_splits(10, {"train": -0.2, "test": 0.5}, seed=0)
