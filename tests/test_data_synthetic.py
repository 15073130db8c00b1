"""The synthetic survey: labels and injected anomalies as ground truth."""

from __future__ import annotations

import numpy as np

from libhyrax.config import load_config
from libhyrax.data import HyraxHDF5Dataset, open_group
from libhyrax.data.synthetic import ANOMALY_KINDS, generate_survey


def test_generate_survey_catalog_and_images(tmp_path):
    path = generate_survey(tmp_path / "s.h5", n=600, size=24, anomaly_fraction=0.1, seed=3)
    ds = HyraxHDF5Dataset({}, path)
    assert len(ds) == 600 and ds.sample_shape == (3, 24, 24) and ds.bands == ["g", "r", "i"]
    assert {"is_anomaly", "anomaly_kind", "label", "ra", "dec", "mag"} <= set(ds.catalog_columns())
    anom, kind, label = ds.column("is_anomaly"), ds.column("anomaly_kind"), ds.column("label")
    assert anom.sum() == 60 and set(kind[anom]) <= set(ANOMALY_KINDS) and set(kind[~anom]) == {"none"}
    assert len(set(kind[anom])) >= 4
    assert set(np.unique(label)) == {0, 1, 2}
    assert not (label[np.isin(kind, ["ring", "merger"])] == 2).any()  # those sit on galaxies
    images = ds.column("image")
    assert images.dtype == np.float32 and np.isfinite(images).all()
    # sources are centred: the centre is brighter than the corners in every band
    assert (
        images[:, :, 10:14, 10:14].mean(axis=(0, 2, 3))
        > 5 * np.abs(images[:, :, :4, :4]).mean(axis=(0, 2, 3))
    ).all()
    # stars are compact: more of their light in the central pixels than disks have
    conc = images[:, 1, 11:13, 11:13].sum(axis=(1, 2)) / images[:, 1].sum(axis=(1, 2))
    normal = ~anom
    assert np.median(conc[normal & (label == 2)]) > 1.3 * np.median(conc[normal & (label == 0)])
    # a hot pixel is far above its neighbours
    hot = np.flatnonzero(kind == "hot_pixel")
    assert (images[hot].max(axis=(1, 2, 3)) > 1.0).all()
    # deterministic for a seed, different for another
    again = generate_survey(tmp_path / "t.h5", n=600, size=24, anomaly_fraction=0.1, seed=3)
    np.testing.assert_array_equal(HyraxHDF5Dataset({}, again).column("image"), images)
    other = HyraxHDF5Dataset({}, generate_survey(tmp_path / "u.h5", n=600, size=24, seed=4))
    assert not np.array_equal(other.column("image"), images)


def test_no_labels(tmp_path):
    ds = HyraxHDF5Dataset({}, generate_survey(tmp_path / "s.h5", n=10, labels=False))
    assert "label" not in ds.catalog_columns()


def test_synthetic_survey_dataset_from_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HYRAX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(
        data={
            "data_request": {
                "train": {
                    "syn": {
                        "dataset_class": "SyntheticSurvey",
                        "fields": ["image", "label", "is_anomaly"],
                        "primary_id_field": "object_id",
                        "dataset_config": {"n": 120, "size": 16, "seed": 2},
                    }
                }
            }
        }
    )
    g = open_group(cfg, "train")
    assert len(g) == 120 and g.sample_shape == (3, 16, 16)
    b = g.read(0, 5)
    assert b["label"].dtype.kind == "i" and b["object_id"][0] == "SYN-000"
    assert list((tmp_path / "cache").glob("synthetic-*.h5"))  # cached: a second open reuses the file
    assert open_group(cfg, "train").datasets["syn"].path == g.datasets["syn"].path
