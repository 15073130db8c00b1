"""check_index: build, persist, reopen and search a vector index backend class, and say what is wrong."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from libhyrax.contract import contract_error, missing_methods, require_subclass
from libhyrax.vector_index import VectorIndex

HOOKS = {"_add": "_add(self, rows, vectors) storing (n, dim) float32 vectors under integer rows",
         "_search": "_search(self, vectors, k) returning (rows (Q, k) int64, L2 distances (Q, k)), "
                    "nearest first",
         "_vectors": "_vectors(self, rows) returning the stored vectors of those rows"}


def check_index(cls: type, dim: int = 8, **params) -> dict:
    """An index of `cls` in a temporary folder: 50 vectors added in two batches, persisted, opened again
    by its backend name and searched; each vector must find itself first, at distance 0. Returns a summary;
    raises a UsageError listing every problem."""
    require_subclass(cls, VectorIndex, "check_index")
    problems = missing_methods(cls, VectorIndex, HOOKS)
    if cls.backend == "base":
        problems.append('give it a backend name (backend = "mine"): vector_db.name picks a backend by it, '
                        "and an index records it to be opened again")
    if problems:
        raise contract_error(cls, "vector index backend", problems)
    vectors = np.random.default_rng(0).normal(size=(50, dim)).astype(np.float32)
    ids = [f"obj_{i}" for i in range(50)]
    with tempfile.TemporaryDirectory(prefix="hyrax-check-index-") as tmp:
        try:
            index = cls.create(Path(tmp) / "index", dim, **params)
            index.add(ids[:20], vectors[:20])
            index.add(ids[20:], vectors[20:])
            index.persist()
            index = VectorIndex.open(Path(tmp) / "index")
            found, dist = index.search(vectors[:5], k=3)
            stored = index.vectors(["obj_7"])
        except Exception as e:  # noqa: BLE001 - any failure is the user's to read
            raise contract_error(cls, "vector index backend", [
                f"create, add, persist, open or search failed: {type(e).__name__}: {e}"]) from None
    if type(index) is not cls:
        problems.append(f"opened again it is a {type(index).__name__}, not a {cls.__name__}")
    if found.shape != (5, 3) or list(found[:, 0]) != ids[:5]:
        problems.append(f"searching stored vectors must find each one first; the first hits were "
                        f"{list(found[:, 0])}, not {ids[:5]}")
    elif not (np.allclose(dist[:, 0], 0, atol=1e-3) and (np.diff(dist, axis=1) >= -1e-5).all()):
        problems.append("_search must return L2 distances (not squared, not similarities), nearest first")
    if not np.allclose(stored, vectors[7:8], atol=1e-5):
        problems.append("_vectors(rows) must return the vectors stored under those rows")
    if problems:
        raise contract_error(cls, "vector index backend", problems)
    return {"class": cls.__name__, "backend": cls.backend, "n_vectors": 50, "dim": dim}
