"""`anomaly` on the synthetic survey with injected oddities: the ranking must beat random by far."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from libhyrax.config import load_config
from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import write_arrays
from libhyrax.runs import open_run
from libhyrax.scorers import Scorer, combine_by_rank, precision_at_k, roc_auc


@pytest.fixture(scope="module")
def survey_run(tmp_path_factory):
    """An infer-like run over a 2,000-object synthetic survey (5% injected anomalies): latents are a
    16-component PCA of the asinh-stretched pixels, recon_error its reconstruction error (what a linear
    autoencoder would give), so the test needs no training."""
    from sklearn.decomposition import PCA

    from libhyrax.data.synthetic import generate_survey

    root = tmp_path_factory.mktemp("survey")
    path = generate_survey(root / "survey.h5", n=2000, size=32, seed=3)
    with h5py.File(path, "r") as f:
        ids = f["object_id"][:].astype(str)
        pixels = np.arcsinh(f["images"][:] / 0.1).reshape(2000, -1)
    pca = PCA(16, random_state=0).fit(pixels)
    latents = pca.transform(pixels).astype(np.float32)
    recon = ((pca.inverse_transform(latents) - pixels) ** 2).mean(1).astype(np.float32)
    cfg = load_config(
        data={
            "general": {"results_dir": str(root / "results")},
            "data_request": {
                "infer": {
                    "survey": {
                        "dataset_class": "HyraxHDF5Dataset",
                        "data_location": str(path),
                        "fields": ["image", "object_id", "is_anomaly", "anomaly_kind", "mag"],
                        "primary_id_field": "object_id",
                    }
                }
            },
        }
    )
    with open_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), ids, latent=latents, recon_error=recon)
    return cfg, run.path


def test_combined_ranking_beats_random(survey_run):
    from libhyrax.stages.anomaly import anomaly

    cfg, infer_run = survey_run
    res = anomaly(cfg, from_run=infer_run)
    ev = json.loads((res.path / "evaluation.json").read_text())
    assert ev["n_anomalies"] == 100 and ev["fraction"] == pytest.approx(0.05)
    # top 50 of 2,000 with 5% injected: random would give 0.05
    assert ev["score"]["precision_at_k"] >= 0.7, ev  # measured: 0.94
    assert ev["score"]["roc_auc"] >= 0.85, ev  # measured: 0.92
    for method in ("knn", "recon_error", "isolation_forest"):
        assert ev[method]["roc_auc"] > 0.75, (method, ev)  # measured: 0.83-0.99
    with h5py.File(res.path / "scores.h5") as f:
        assert {"object_id", "score", "knn", "recon_error", "isolation_forest"} <= set(f)
        assert f["score"].shape == (2000,) and f.attrs["method"] == "combined"
        score = f["score"][:]
    with open(res.path / "top_anomalies.csv") as f:
        top = list(csv.DictReader(f))
    assert len(top) == 50 and top[0]["rank"] == "1"
    assert float(top[0]["score"]) == pytest.approx(score.max(), rel=1e-5)
    assert {"is_anomaly", "anomaly_kind", "mag", "knn"} <= set(top[0])
    assert sum(r["is_anomaly"] in ("True", "1") for r in top) == round(ev["score"]["precision_at_k"] * 50)
    assert res.provenance["stage_info"]["evaluation"]["score"]["roc_auc"] == ev["score"]["roc_auc"]


def test_knn_through_an_index_matches_exact(survey_run):
    from libhyrax.stages.anomaly import anomaly
    from libhyrax.stages.index import index

    cfg, infer_run = survey_run
    exact = anomaly(cfg, from_run=infer_run, method="knn", overrides=["anomaly.batch_size=300"])
    idx = index(cfg, from_run=infer_run, overrides=["vector_db.name=exact"])
    via = anomaly(
        cfg, from_run=infer_run, method="knn", index_run=idx, overrides=["anomaly.knn_source=index"]
    )
    with h5py.File(exact.path / "scores.h5") as a, h5py.File(via.path / "scores.h5") as b:
        np.testing.assert_allclose(a["score"][:], b["score"][:], rtol=1e-5, atol=1e-5)
        assert list(a) == ["knn", "object_id", "score"]


def test_bad_input(tmp_path):
    from libhyrax.stages.anomaly import anomaly

    cfg = load_config(data={"general": {"results_dir": str(tmp_path / "results")}})
    with open_run("infer", cfg) as run:
        write_arrays(
            run.file("latents.h5"),
            [f"o{i}" for i in range(30)],
            latent=np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32),
        )
    with pytest.raises(UsageError, match="unknown anomaly method 'knnn'; did you mean knn"):
        anomaly(cfg, method="knnn")
    with pytest.raises(DataError, match="no /recon_error"):
        anomaly(cfg, method="recon_error")
    # combined without recon_error uses the others; no catalog data -> no evaluation, still a table
    res = anomaly(cfg, overrides=["anomaly.top_k=5"])
    assert not (res.path / "evaluation.json").exists()
    with h5py.File(res.path / "scores.h5") as f:
        assert set(f) == {"object_id", "score", "knn", "isolation_forest"}


@pytest.fixture()
def small_latents(tmp_path):
    """A 30-object infer run without recon_error; returns its config and the latents."""
    cfg = load_config(data={"general": {"results_dir": str(tmp_path / "results")}})
    latents = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with open_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), [f"o{i}" for i in range(30)], latent=latents)
    return cfg, latents


def test_a_scorer_registered_by_name_is_used_alone_and_in_combined(small_latents, monkeypatch):
    from libhyrax.scorers import SCORERS, Scorer, combine_by_rank
    from libhyrax.stages.anomaly import anomaly

    monkeypatch.setattr(SCORERS, "_entries", dict(SCORERS._entries))  # the registration ends with the test
    cfg, latents = small_latents

    class Spread(Scorer):
        name = "spread"

        def fit(self, x):
            self.mean_ = np.asarray(x[:]).mean(0)
            return self

        def score(self, batch):
            return np.abs(batch["latent"] - self.mean_).sum(1)

    want = np.abs(latents - latents.mean(0)).sum(1)
    alone = anomaly(cfg, method="spread")
    with h5py.File(alone.path / "scores.h5") as f:
        assert set(f) == {"object_id", "score", "spread"}
        np.testing.assert_allclose(f["score"][:], want, rtol=1e-6)
    combined = anomaly(cfg)
    with h5py.File(combined.path / "scores.h5") as f:
        assert set(f) == {"object_id", "score", "knn", "isolation_forest", "spread"}
        np.testing.assert_allclose(f["spread"][:], want, rtol=1e-6)
        raw = {m: f[m][:] for m in ("knn", "isolation_forest", "spread")}
        np.testing.assert_allclose(f["score"][:], combine_by_rank(raw), rtol=1e-6)


class FirstLatent(Scorer):
    """No name: not registered, so "combined" never sees it; `anomaly.method` names it by import path."""

    def score(self, batch):
        return batch["latent"][:, 0]


def test_a_scorer_named_by_import_path_is_used(small_latents):
    from libhyrax.stages.anomaly import anomaly

    cfg, latents = small_latents
    res = anomaly(cfg, method="test_anomaly.FirstLatent")
    with h5py.File(res.path / "scores.h5") as f:
        np.testing.assert_array_equal(f["score"][:], latents[:, 0])
        assert f.attrs["method"] == "test_anomaly.FirstLatent"


def test_an_unknown_scorer_is_an_error_listing_the_known_ones(small_latents):
    from libhyrax.stages.anomaly import anomaly

    cfg, _ = small_latents
    known = "Known: combined, isolation_forest, knn, recon_error"
    with pytest.raises(UsageError, match=f"unknown anomaly method 'sprad'.*{known}"):
        anomaly(cfg, method="sprad")


def test_metrics_by_hand():
    truth = np.array([1, 0, 1, 0, 0], bool)
    assert precision_at_k(np.array([5, 4, 3, 2, 1.0]), truth, 2) == 0.5
    assert roc_auc(np.array([5, 1, 4, 2, 3.0]), truth) == 1.0
    assert roc_auc(np.array([1, 1, 1, 1, 1.0]), truth) == 0.5
    combined = combine_by_rank({"a": np.array([1, 2, 3.0]), "b": np.array([30, 10, 20.0])})
    np.testing.assert_allclose(combined, [0.5, 0.25, 0.75])


def test_shards_equal_the_unsharded_run(survey_run):
    from libhyrax.rundir import read_provenance
    from libhyrax.stages.anomaly import anomaly

    cfg, infer_run = survey_run
    whole = anomaly(cfg, from_run=infer_run)
    first = anomaly(cfg, from_run=infer_run, shard="0/2", run_name="anomaly-shards")
    assert not (first.path / "scores.h5").exists()  # waits for the other shard
    second = anomaly(cfg, from_run=infer_run, shard="1/2", run_name="anomaly-shards")
    assert second.path == first.path and read_provenance(second.path)["status"] == "complete"
    with h5py.File(whole.path / "scores.h5") as a, h5py.File(second.path / "scores.h5") as b:
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_allclose(
                a[name][:].astype(float) if name != "object_id" else 0,
                b[name][:].astype(float) if name != "object_id" else 0,
                rtol=1e-5,
            )
        assert (a["object_id"][:] == b["object_id"][:]).all()
    assert (whole.path / "top_anomalies.csv").read_text() == (second.path / "top_anomalies.csv").read_text()


def test_knn_through_a_chromadb_index(survey_run):
    """The default backend's HNSW search gives (nearly) the exact knn score, batch after batch."""
    from libhyrax.stages.anomaly import anomaly
    from libhyrax.stages.index import index

    cfg, infer_run = survey_run
    exact = anomaly(cfg, from_run=infer_run, method="knn")
    idx = index(cfg, from_run=infer_run, overrides=["vector_db.name=chromadb"])
    via = anomaly(
        cfg,
        from_run=infer_run,
        method="knn",
        index_run=idx,
        overrides=["anomaly.knn_source=index", "anomaly.batch_size=700"],
    )
    with h5py.File(exact.path / "scores.h5") as a, h5py.File(via.path / "scores.h5") as b:
        same = np.isclose(a["score"][:], b["score"][:], rtol=1e-4, atol=1e-4)
        assert same.mean() > 0.98, same.mean()


def test_exact_knn_on_a_cpu_warns_at_scale(monkeypatch, caplog):
    """Exact knn is N^2: past a size, the log says how long and what else to do."""
    import logging

    import libhyrax.scorers as anomaly_mod

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="hyrax.anomaly"):
        anomaly_mod.KnnDistance(3, "cpu").fit(x)
    assert not caplog.records
    monkeypatch.setattr(anomaly_mod, "WARN_EXACT_CPU_N", 50)
    with caplog.at_level(logging.WARNING, logger="hyrax.anomaly"):
        scorer = anomaly_mod.KnnDistance(3, "cpu").fit(x)
    assert "2.5e+03 distances" in caplog.text and "knn_source=index" in caplog.text
    assert scorer.score({"latent": x[:5]}).shape == (5,)


def test_knn_among_a_sample_is_linear_and_ranks_like_exact(tmp_path):
    """anomaly.knn_sample_size: neighbours among a seeded sample (N x S distances, memory for S rows);
    a sampled object leaves itself out; the ranking agrees with exact knn."""
    import h5py

    from libhyrax.hdf5 import read_rows
    from libhyrax.scorers import KnnDistance

    rng = np.random.default_rng(1)
    far = rng.normal(size=(30, 8))
    far *= 9 / np.linalg.norm(far, axis=1, keepdims=True)  # isolated points well outside the cloud
    x = np.concatenate([rng.normal(size=(3000, 8)), far]).astype(np.float32)
    with h5py.File(tmp_path / "l.h5", "w") as f:
        f["latent"] = x
    with h5py.File(tmp_path / "l.h5") as f:
        rows = np.array([0, 5, 2999, 3029])
        np.testing.assert_array_equal(read_rows(f["latent"], rows), x[rows])
        sampled = KnnDistance(5, "cpu", sample_size=600, seed=3).fit(f["latent"])
    exact = KnnDistance(5, "cpu").fit(x)
    assert len(sampled.data_) == 600 and sampled.rows_ is not None
    all_rows = np.arange(len(x))
    s = sampled.score({"latent": x, "rows": all_rows})
    e = exact.score({"latent": x, "rows": all_rows})
    assert (s > 0).all()  # no sampled object found itself as a neighbour
    # by hand for one sampled object: its 5th neighbour among the other 599 sampled ones
    r = sampled.rows_[10]
    others = x[np.setdiff1d(sampled.rows_, [r])]
    want = np.sort(np.linalg.norm(others - x[r], axis=1))[4]
    np.testing.assert_allclose(s[r], want, rtol=1e-4)
    # the 30 injected outliers rank on top either way
    assert set(np.argsort(-s)[:30]) == set(np.argsort(-e)[:30]) == set(range(3000, 3030))
    from scipy.stats import spearmanr

    assert spearmanr(s, e).statistic > 0.9
