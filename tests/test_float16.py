"""float16 cutout storage: half the bytes to read, pixels read back as float32, and latents that differ from
float32 storage by far less than training's own run-to-run noise."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from libhyrax.data import open_group, write_cutouts
from libhyrax.errors import DataError


def group_of(path):
    return open_group({"data_request": {"infer": {"c": {"dataset_class": "HyraxHDF5Dataset",
                                                        "data_location": str(path),
                                                        "fields": ["image", "object_id"],
                                                        "primary_id_field": "object_id"}}},
                       "data_set": {"transform": "none"}}, "infer")


def test_float16_cutouts_read_back_as_float32_within_half_precision(tmp_path):
    rng = np.random.default_rng(0)
    n = 2046  # whole ~1 MiB chunks in both: 6 of float32 rows, 3 of float16
    images = rng.normal(size=(n, 3, 16, 16)).astype(np.float32) * 100
    ids = np.array([f"o{i}" for i in range(n)])
    write_cutouts(tmp_path / "f32.h5", ids, images)
    write_cutouts(tmp_path / "f16.h5", ids, images, dtype="float16")
    with h5py.File(tmp_path / "f16.h5") as f16, h5py.File(tmp_path / "f32.h5") as f32:
        assert f16["images"].dtype == np.float16
        assert f16["images"].id.get_storage_size() * 2 == f32["images"].id.get_storage_size()
    g16 = group_of(tmp_path / "f16.h5")
    got = g16.read(0, n)["image"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, images, rtol=1e-3, atol=1e-2)  # float16: 11 significant bits
    rows = g16.read_rows([40, 3, 7])["image"]
    assert rows.dtype == np.float32 and np.array_equal(rows, got[[40, 3, 7]])


def test_pixels_beyond_float16_range_are_an_error_not_infinities(tmp_path):
    images = np.zeros((2, 1, 4, 4), np.float32)
    images[1, 0, 0, 0] = 1e6
    with pytest.raises(DataError, match="beyond float16's 65504; store these cutouts as float32"):
        write_cutouts(tmp_path / "x.h5", ["a", "b"], images, dtype="float16")


def test_pixels_below_float16_range_are_an_error_not_zeros(tmp_path):
    images = np.ones((3, 1, 4, 4), np.float32)
    images[1] *= 1e-9  # flux in physical units: float16 would store zeros
    images[2] = 0  # a blank object is fine
    with pytest.raises(DataError, match="'b', are no larger than 1e-09, below float16's smallest normal"):
        write_cutouts(tmp_path / "x.h5", ["a", "b", "c"], images, dtype="float16")
    images[1] *= 1e6  # 1e-3 is within range (to 11 bits)
    write_cutouts(tmp_path / "x.h5", ["a", "b", "c"], images, dtype="float16")


def test_prepare_writes_float16_when_asked(workdir):
    import csv

    from astropy.io import fits

    from libhyrax.stages.prepare import prepare

    folder = workdir / "cutouts"
    folder.mkdir()
    rows = []
    for i in range(3):
        fits.PrimaryHDU(np.full((20, 20), float(i), np.float32)).writeto(folder / f"o{i}.fits")
        rows.append({"object_id": f"o{i}", "filter": "r", "filename": f"o{i}.fits"})
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    result = prepare({"prepare": {"fits_dir": str(folder), "cutout_size": 16, "dtype": "float16"}})
    with h5py.File(result.file("cutouts.h5")) as f:
        assert f["images"].dtype == np.float16 and f["images"][2].max() == 2.0
