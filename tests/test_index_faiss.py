"""The FAISS backend: recall against exact search, an index filled in shards and searched as one, and the
rule that picks it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from test_search import make_infer_run

from libhyrax.errors import UsageError
from libhyrax.vector_index import VectorIndex

pytest.importorskip("faiss")


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim)) * 3
    return (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)]))


def test_faiss_recall_against_exact_and_its_settings(tmp_path):
    n, dim = 20_000, 32
    x = clustered(n, dim)
    ids = np.char.add("o", np.arange(n).astype(str))
    exact = VectorIndex.create(tmp_path / "exact", dim, backend="exact", device="cpu")
    exact.add(ids, x)
    exact.persist()
    idx = VectorIndex.create(tmp_path / "faiss", dim, backend="faiss", n_total=n)
    for s in range(0, n, 5000):
        idx.add(ids[s:s + 5000], x[s:s + 5000])
    idx.persist()
    idx = VectorIndex.open(tmp_path / "faiss")
    # settings from N and the latent size: ~sqrt(N) lists, a code byte per 8 dimensions
    assert (idx.params["nlist"], idx.params["code_bytes"], idx.params["nbits"]) == (128, 4, 8)
    q = x[:300] + np.random.default_rng(1).normal(scale=0.3, size=(300, dim)).astype(np.float32)
    truth, truth_d = exact.search(q, 10)
    found, dist = idx.search(q, 10)
    assert recall(found, truth) >= 0.95
    # re-ranked from the raw vectors: the distances are exact where the neighbours agree
    same = found == truth
    np.testing.assert_allclose(dist[same], truth_d[same], rtol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()
    by_id, d = idx.search_by_id(["o7", "o19999"], 5)
    assert list(by_id[:, 0]) == ["o7", "o19999"] and (d[:, 0] == 0).all()
    # less effort: fewer lists probed and candidates re-ranked, recall no better
    low = VectorIndex.create(tmp_path / "low", dim, backend="faiss", n_total=n, effort=0.05)
    low.add(ids, x)
    low.persist()
    low = VectorIndex.open(tmp_path / "low")
    assert low.params["nprobe"] < idx.params["nprobe"] and low.params["candidates"] < idx.params["candidates"]
    assert recall(low.search(q, 10)[0], truth) < recall(found, truth)


def test_index_in_two_shards_searched_as_one(tmp_path):
    from libhyrax.stages.index import index
    from libhyrax.stages.search import search

    cfg, infer_run, _, ids, x = make_infer_run(tmp_path, n=2000, dim=16, shards=2)
    for i in range(2):
        res = index(cfg, from_run=infer_run, shard=f"{i}/2", run_name="idx",
                    overrides=["vector_db.batch_size=300"])
    info = json.loads((res.path / "provenance.shard-0001-of-0002.json").read_text())["stage_info"]
    assert res.path.name == "idx" and res.provenance["status"] == "complete"
    assert info["backend"] == "faiss" and info["n_objects"] == 2000 and info["rows"] == [1000, 2000]
    files = sorted(p.name for p in (res.path / "index").glob("ivfpq.*"))
    assert files == ["ivfpq.shard-0000-of-0002.faiss", "ivfpq.shard-0001-of-0002.faiss"]
    idx = VectorIndex.open(res.path / "index")
    assert len(idx) == 2000 and list(idx.object_ids()) == list(ids)
    # one index: objects of both shards answer, each the nearest to itself, neighbours exact
    hits = search(cfg, from_run=res.path, object_ids=["obj_0003", "obj_1999"], k=5)
    assert hits["object_id"][0] == "obj_0003" and hits["object_id"][5] == "obj_1999"
    d = np.linalg.norm(x - x[1999], axis=1)
    np.testing.assert_allclose(hits["distance"][5:], np.sort(d)[:5], rtol=1e-5)
    assert set(hits["object_id"][5:]) == {f"obj_{r:04d}" for r in np.argsort(d)[:5]}


def test_auto_backend_and_shards_only_with_faiss(tmp_path):
    from libhyrax.sharding import Shard
    from libhyrax.stages.index import AUTO_FAISS_ABOVE, choose_backend, index

    assert choose_backend("auto", AUTO_FAISS_ABOVE, None) == "chromadb"
    assert choose_backend("auto", AUTO_FAISS_ABOVE + 1, None) == "faiss"
    assert choose_backend("auto", 100, Shard(0, 2)) == "faiss"
    cfg, infer_run, *_ = make_infer_run(tmp_path, n=100)
    with pytest.raises(UsageError, match="only the faiss backend builds in shards"):
        index(cfg, from_run=infer_run, shard="0/2", overrides=["vector_db.name=exact"])


def test_anomaly_knn_searches_a_faiss_index_when_there_is_one(tmp_path):
    from scipy.stats import spearmanr

    from libhyrax.stages.anomaly import anomaly
    from libhyrax.stages.index import index

    cfg, infer_run, *_ = make_infer_run(tmp_path, n=3000, dim=16)
    sampled = ["anomaly.knn_sample_size=500"]  # the sample would leave objects out
    before = anomaly(cfg, from_run=infer_run, method="knn", overrides=sampled)
    assert len(before.provenance["upstream_runs"]) == 1  # no index yet: exact knn among the sample
    built = index(cfg, from_run=infer_run, overrides=["vector_db.name=faiss"])
    via = anomaly(cfg, from_run=infer_run, method="knn", overrides=sampled)
    assert any(u.endswith(built.path.name) for u in via.provenance["upstream_runs"])
    exact = anomaly(cfg, from_run=infer_run, method="knn", overrides=["anomaly.knn_sample_size=0"])
    with h5py.File(via.file("scores.h5")) as a, h5py.File(exact.file("scores.h5")) as b:
        assert spearmanr(a["knn"][:], b["knn"][:]).statistic > 0.99
