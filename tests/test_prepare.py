"""hyrax prepare on real FITS files made from the Hubble Deep Field sample, bad files included."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from libhyrax.data import HyraxHDF5Dataset, open_group, sample_path
from libhyrax.errors import DataError
from libhyrax.stages.prepare import prepare


@pytest.fixture
def fits_folder(tmp_path):
    """12 objects x 3 bands of real HDF cutouts as FITS; object 3 lacks a band, 5 has a corrupt file,
    7 a truncated one, 9 a band too small, 10 a listed file that doesn't exist; 2 has a larger band."""
    from astropy.io import fits

    with h5py.File(sample_path(), "r") as f:
        images = f["images"][:12]
    folder = tmp_path / "cutouts"
    folder.mkdir()
    rows = []
    for i in range(12):
        oid = f"gal{i:02d}"
        for b, band in enumerate("gri"):
            if i == 3 and band == "i":
                continue
            name = f"{oid}_{band}.fits"
            data = images[i, b]
            if i == 2 and band == "r":
                data = np.pad(data, 3, constant_values=0.5)  # 70x70: centre-cropped to 64
            if i == 9 and band == "g":
                data = data[:40, :40]
            if not (i == 10 and band == "r"):
                fits.PrimaryHDU(data).writeto(folder / name)
            if i == 5 and band == "g":
                (folder / name).write_bytes(b"this is not a FITS file at all" * 10)
            if i == 7 and band == "r":
                raw = (folder / name).read_bytes()
                (folder / name).write_bytes(raw[: len(raw) // 3])
            rows.append({"object_id": oid, "filter": band, "filename": name, "ra": 53.1 + i * 1e-3,
                         "dec": -27.8 + i * 1e-3})
    with open(folder / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder, images


def test_prepare_fits_skips_bad_objects(workdir, fits_folder):
    folder, images = fits_folder
    result = prepare({"prepare": {"fits_dir": str(folder), "bands": ["g", "r", "i"]}})
    ds = HyraxHDF5Dataset({}, result.file("cutouts.h5"))
    good = [0, 1, 2, 4, 6, 8, 11]
    assert ds.column("object_id").tolist() == [f"gal{i:02d}" for i in good]
    assert ds.bands == ["g", "r", "i"] and ds.sample_shape == (3, 64, 64)
    np.testing.assert_allclose(ds.column("image"), images[good], rtol=1e-6)  # crop undid the padding
    np.testing.assert_allclose(ds.column("ra"), 53.1 + np.array(good) * 1e-3)
    with open(result.file("rejected.csv")) as fh:
        rejected = {r["object_id"]: r for r in csv.DictReader(fh)}
    assert set(rejected) == {"gal03", "gal05", "gal07", "gal09", "gal10"}
    assert rejected["gal03"]["reason"] == "missing band" and rejected["gal03"]["band"] == "i"
    assert (
        "unreadable FITS" in rejected["gal05"]["reason"] and rejected["gal05"]["filename"] == "gal05_g.fits"
    )
    assert "truncated" in rejected["gal07"]["reason"]
    assert "smaller than 64x64" in rejected["gal09"]["reason"]
    assert rejected["gal10"]["reason"] == "file not found"
    assert result.provenance["stage_info"] == {
        "source": str(folder),
        "n_objects": 7,
        "n_rejected": 5,
        "rows": [0, 12],
    }
    # the output is a dataset every stage can read
    g = open_group(
        {
            "data_request": {
                "train": {
                    "c": {
                        "dataset_class": "HyraxHDF5Dataset",
                        "data_location": str(result.file("cutouts.h5")),
                    }
                }
            }
        },
        "train",
    )
    assert len(g) == 7


def test_prepare_in_two_shards_reads_as_one_file(workdir, fits_folder):
    from libhyrax.hdf5 import open_result

    folder, images = fits_folder
    cfg = {"prepare": {"fits_dir": str(folder), "bands": ["g", "r", "i"]}}
    whole = prepare(cfg)
    first = prepare(cfg, shard="0/2", run_name="prep")
    assert not (first.path / "cutouts.h5").exists()  # written when the last shard ends
    run = prepare(cfg, shard="1/2", run_name="prep")
    assert run.path == first.path and run.provenance["status"] == "complete"
    assert sorted(p.name for p in run.path.glob("cutouts.shard-*")) == [
        "cutouts.shard-0000-of-0002.h5",
        "cutouts.shard-0001-of-0002.h5",
    ]
    with open_result(run.path, "cutouts") as got, h5py.File(whole.file("cutouts.h5")) as want:
        assert got["object_id"][:].tolist() == want["object_id"][:].tolist()
        np.testing.assert_array_equal(got["images"][:], want["images"][:])
        np.testing.assert_array_equal(got["catalog/ra"][:], want["catalog/ra"][:])
    rejected = set()
    for i in range(2):
        with open(run.path / f"rejected.shard-000{i}-of-0002.csv") as fh:
            rejected |= {r["object_id"] for r in csv.DictReader(fh)}
    assert rejected == {"gal03", "gal05", "gal07", "gal09", "gal10"}
    g = open_group(
        {
            "data_request": {
                "train": {
                    "c": {"dataset_class": "HyraxHDF5Dataset", "data_location": str(run.file("cutouts.h5"))}
                }
            }
        },
        "train",
    )
    assert len(g) == 7


def test_fits_dataset_reads_the_folder(workdir, fits_folder):
    from libhyrax.data import FitsImageDataset

    folder, images = fits_folder
    ds = FitsImageDataset({"data_set": {"FitsImageDataset": {"cutout_size": 64}}}, str(folder))
    assert len(ds) == 11 and ds.bands == ["g", "i", "r"]  # gal03 lacks a band
    np.testing.assert_allclose(ds.get_image(0), images[0][[0, 2, 1]], rtol=1e-6)
    assert ds.read(["ra", "object_id"], 0, 2)["object_id"].tolist() == ["gal00", "gal01"]
    with pytest.raises(DataError, match="gal05.*band g.*unreadable FITS"):
        ds.get_image(4)


def test_prepare_with_no_config_builds_the_sample(workdir, hyrax):
    proc = hyrax("prepare")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()[-1]
    ds = HyraxHDF5Dataset({}, f"{out}/cutouts.h5")
    assert len(ds) == 1000 and ds.get_object_id(0) == "HDF-0001"


def test_prepare_bad_folder_is_a_clear_error(workdir, hyrax):
    proc = hyrax("prepare", "--set", "prepare.fits_dir=nowhere")
    assert (
        proc.returncode == 2 and "prepare.fits_dir nowhere is not a folder" in proc.stderr
    )  # a user's mistake
    assert (
        "Traceback" not in proc.stderr and not (workdir / "results").exists()
    )  # said before any run is made


def test_an_interrupted_prepare_resumes_to_the_same_file(workdir, fits_folder, monkeypatch):
    import libhyrax.stages.prepare as prep

    folder, _ = fits_folder
    cfg = {
        "prepare": {"fits_dir": str(folder), "bands": ["g", "r", "i"]},
        "general": {"results_dir": str(workdir / "results")},
    }
    whole = prepare(cfg)
    monkeypatch.setattr(prep, "BATCH", 4)
    real, calls = prep.stack_bands, {"n": 0}

    def dies_at_object_9(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # killed in the third batch (objects 8-11)
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "stack_bands", dies_at_object_9)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    failed = next((workdir / "results").glob("*-prepare-*.failed"))
    after = []
    monkeypatch.setattr(prep, "stack_bands", lambda *a, **k: after.append(1) or real(*a, **k))
    resumed = prepare(resume=failed)
    assert len(after) == 4  # only the objects of the unfinished batch (8-11) were read again
    a, b = HyraxHDF5Dataset({}, whole.file("cutouts.h5")), HyraxHDF5Dataset({}, resumed.file("cutouts.h5"))
    assert b.column("object_id").tolist() == a.column("object_id").tolist()  # no gap, no duplicate
    np.testing.assert_array_equal(b.column("image"), a.column("image"))
    assert whole.file("rejected.csv").read_text() == resumed.file("rejected.csv").read_text()
    assert resumed.provenance["stage_info"]["n_rejected"] == 5


@pytest.fixture
def reference_download(tmp_path):
    """A folder as the reference Hyrax's `hyrax download` leaves it: one HSC-style FITS file per object and
    band (an empty primary HDU, then image, mask and variance), named
    <object_id>_<type>_<ra>_<dec>_<tract>_<filter>.fits, and manifest.fits with a row per object and band.
    Object 2's HSC-R download failed ("Attempted"); object 4's HSC-I failed once, then succeeded on a
    retry."""
    from astropy.io import fits
    from astropy.table import Table

    with h5py.File(sample_path(), "r") as f:
        images = f["images"][:5]
    folder = tmp_path / "hsc_download"
    folder.mkdir()
    bands = ["HSC-G", "HSC-R", "HSC-I"]
    rows = {
        k: []
        for k in (
            "tract",
            "ra",
            "dec",
            "sw",
            "sh",
            "filter",
            "type",
            "rerun",
            "image",
            "mask",
            "variance",
            "dim",
            "filename",
            "object_id",
        )
    }

    def row(oid, ra, dec, band, filename):
        for key, value in (
            ("tract", 9813),
            ("ra", ra),
            ("dec", dec),
            ("sw", "22asec"),
            ("sh", "22asec"),
            ("filter", band),
            ("type", "coadd"),
            ("rerun", "pdr3_wide"),
            ("image", True),
            ("mask", False),
            ("variance", False),
            ("dim", [64, 64]),
            ("filename", filename),
            ("object_id", oid),
        ):
            rows[key].append(value)

    for i in range(5):
        oid, ra, dec = 36411452835238200 + i, 150.1 + i * 1e-3, 2.2 + i * 1e-3
        for b, band in enumerate(bands):
            name = f"{oid}_coadd_{ra:.5f}_{dec:+.5f}_9813_{band}.fits"
            if i == 2 and band == "HSC-R":
                row(oid, ra, dec, band, "Attempted")
                continue
            if i == 4 and band == "HSC-I":
                row(oid, ra, dec, band, "Attempted")  # the first try, listed before the retry
            plane = images[i, b]
            fits.HDUList(
                [
                    fits.PrimaryHDU(),
                    fits.ImageHDU(plane),
                    fits.ImageHDU(np.zeros_like(plane, np.int32)),
                    fits.ImageHDU(np.ones_like(plane)),
                ]
            ).writeto(folder / name)
            row(oid, ra, dec, band, name)
    Table(rows).write(folder / "manifest.fits", format="fits")
    return folder, images


def test_prepare_reads_a_reference_download_folder_as_it_is(workdir, reference_download):
    folder, images = reference_download
    result = prepare({"prepare": {"fits_dir": str(folder)}})
    ds = HyraxHDF5Dataset({}, result.file("cutouts.h5"))
    assert ds.bands == ["HSC-G", "HSC-R", "HSC-I"]  # wavelength order, not alphabetical
    assert ds.column("object_id").tolist() == [str(36411452835238200 + i) for i in (0, 1, 3, 4)]
    np.testing.assert_allclose(ds.column("image"), images[[0, 1, 3, 4]], rtol=1e-6)  # the image HDU
    np.testing.assert_allclose(ds.column("ra"), 150.1 + np.array([0, 1, 3, 4]) * 1e-3)
    assert ds.column("tract").tolist() == [9813] * 4 and "dim" not in ds.fields  # per-file columns left out
    with open(result.file("rejected.csv")) as fh:
        rejected = list(csv.DictReader(fh))
    assert [(r["object_id"], r["band"]) for r in rejected] == [("36411452835238202", "HSC-R")]
    assert rejected[0]["reason"] == "download failed (manifest.fits says 'Attempted')"
    assert result.provenance["inputs"][0]["path"].endswith("manifest.fits")


def test_fits_dataset_reads_a_reference_download_folder(workdir, reference_download):
    from libhyrax.data import FitsImageDataset

    folder, images = reference_download
    ds = FitsImageDataset({}, str(folder))
    assert len(ds) == 4 and ds.bands == ["HSC-G", "HSC-R", "HSC-I"]  # the failed download is left out
    np.testing.assert_allclose(ds.get_image(3), images[4], rtol=1e-6)
