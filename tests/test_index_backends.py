"""The vector index seam: a fake backend, exact search, ChromaDB (recall against exact), Qdrant (optional)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from libhyrax.errors import DataError, UsageError
from libhyrax.vector_index import VectorIndex, backend_class


class FakeIndex(VectorIndex):
    """The smallest backend: a brute-force numpy search, kept in memory and in one .npy file."""

    backend = "fake"

    def _create(self):
        self._m = np.empty((0, self.dim), np.float32)

    def _open(self):
        self._m = np.load(self.path / "m.npy")

    def _add(self, rows, vectors):
        self._m = np.concatenate([self._m, vectors])

    def _persist(self):
        np.save(self.path / "m.npy", self._m)

    def _search(self, vectors, k):
        d = np.linalg.norm(self._m[None, :, :] - vectors[:, None, :], axis=2)
        rows = np.argsort(d, axis=1, kind="stable")[:, :k]
        return rows, np.take_along_axis(d, rows, 1)

    def _vectors(self, rows):
        return self._m[rows]


def clustered(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)) * 4
    x = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    return np.array([f"obj_{i:05d}" for i in range(n)]), x.astype(np.float32)


def build(tmp_path, backend: str, ids, x, batch: int = 700, **params) -> VectorIndex:
    idx = VectorIndex.create(tmp_path / backend, dim=x.shape[1], backend=backend, **params)
    for s in range(0, len(ids), batch):
        idx.add(ids[s:s + batch], x[s:s + batch])
    idx.persist()
    return VectorIndex.open(tmp_path / backend)


BACKENDS = ["fake", "exact", "chromadb",
            pytest.param("qdrant", marks=pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None,
                                                            reason="qdrant-client is not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_contract(tmp_path, backend):
    ids, x = clustered(2000, 16)
    idx = build(tmp_path, backend, ids, x)
    assert type(idx) is backend_class(backend) and len(idx) == 2000 and idx.dim == 16
    # search by id: the object itself first, at distance exactly 0, then increasing distances
    got, dist = idx.search_by_id(["obj_00017", "obj_01999"], k=5)
    assert got.shape == (2, 5) and list(got[:, 0]) == ["obj_00017", "obj_01999"]
    assert dist[:, 0].tolist() == [0.0, 0.0] and (np.diff(dist, axis=1) >= 0).all()
    # distances are true L2 (not squared)
    rows = idx.rows(got[0])
    np.testing.assert_allclose(dist[0], np.linalg.norm(x[rows] - x[17], axis=1), rtol=1e-4, atol=1e-4)
    # vectors come back as stored, in the order asked, duplicates included
    np.testing.assert_allclose(idx.vectors(["obj_00003", "obj_00001", "obj_00003"]), x[[3, 1, 3]])
    # search by vector
    q = x[[5]] + 0.01
    got, dist = idx.search(q, k=3)
    assert got[0, 0] == "obj_00005" and 0 < dist[0, 0] < 0.1


@pytest.mark.parametrize("backend", ["fake", "exact", "chromadb"])
def test_bad_input(tmp_path, backend):
    ids, x = clustered(300, 8)
    idx = build(tmp_path, backend, ids, x)
    with pytest.raises(DataError, match="'obj_0001x' is not in the index.*close ids: obj_000"):
        idx.search_by_id(["obj_0001x"], k=3)
    with pytest.raises(DataError, match="length 5; this index holds vectors of length 8"):
        idx.search(np.zeros(5), k=3)
    with pytest.raises(DataError, match="NaN"):
        idx.search(np.full(8, np.nan), k=3)
    # more neighbours than objects: all of them
    assert idx.search(x[0], k=1000)[0].shape == (1, 300)


def test_empty_and_duplicates(tmp_path):
    idx = VectorIndex.create(tmp_path / "e", dim=4, backend="exact")
    idx.persist()
    idx = VectorIndex.open(tmp_path / "e")
    with pytest.raises(DataError, match="empty"):
        idx.search(np.zeros(4), k=3)
    dup = VectorIndex.create(tmp_path / "d", dim=2, backend="exact")
    dup.add(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(DataError, match="duplicate object ids, e.g. a"):
        dup.persist()
    with pytest.raises(UsageError, match="unknown vector index backend 'chroma'; did you mean chromadb"):
        backend_class("chroma")
    with pytest.raises(DataError, match="no vector index"):
        VectorIndex.open(tmp_path / "nothing")


def test_exact_is_exact_under_blocking(monkeypatch, tmp_path):
    """Blocks smaller than the data must not change the answer."""
    import libhyrax.vector_index.exact as exact

    ids, x = clustered(5000, 32, seed=1)
    full = build(tmp_path, "exact", ids, x).search(x[:50], k=10)
    monkeypatch.setattr(exact, "ROWS_BLOCK", 1000)  # 5 row blocks; 50 queries in blocks of 16, 16, 16, 2
    monkeypatch.setattr(exact, "BLOCK_ELEMENTS", 16 * 1000)
    monkeypatch.setattr(exact, "Q_BLOCK", 16)
    (tmp_path / "again").mkdir()
    blocked = build(tmp_path / "again", "exact", ids, x).search(x[:50], k=10)
    brute = np.argsort(np.linalg.norm(x[None, :, :] - x[:50, None, :], axis=2), axis=1)[:, :10]
    assert (full[0] == ids[brute]).mean() > 0.999 and (blocked[0] == full[0]).all()


def test_chroma_recall_against_exact(tmp_path):
    ids, x = clustered(5000, 64, seed=2)
    rng = np.random.default_rng(3)
    queries = x[rng.choice(len(x), 200, replace=False)] + rng.normal(scale=0.3, size=(200, 64)).astype(
        np.float32
    )
    truth, _ = build(tmp_path, "exact", ids, x).search(queries, k=10)
    approx, _ = build(tmp_path, "chromadb", ids, x, batch=5000).search(queries, k=10)
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)])
    assert recall >= 0.95, recall


def test_chroma_many_queries_go_in_chunks(tmp_path):
    """Queries beyond chromadb's maximum batch (anomaly's knn through an index) are sent in chunks."""
    ids, x = clustered(300, 16, seed=4)
    idx = build(tmp_path, "chromadb", ids, x)
    whole = idx.search(x[:20], k=5)
    idx._client.get_max_batch_size = lambda: 7  # 20 queries in chunks of 7, 7, 6
    chunked = idx.search(x[:20], k=5)
    assert (chunked[0] == whole[0]).all() and np.allclose(chunked[1], whole[1])
    assert (chunked[0][:, 0] == ids[:20]).all()
