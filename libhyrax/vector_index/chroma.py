"""ChromaDB, embedded (a `chroma/` folder in the index), the default backend.

Only explicit embeddings are stored (`embedding_function=None`: chromadb's default would download a model
on first use), in batches of the client's maximum size, with the row number as chromadb's id. HNSW is
configured for recall: the defaults gave recall@10 of 0.69 at 100k x 64; ef_search = ef_construction = 200
with 32 neighbours gave 0.96 (docs: /work/shared/notes/libraries.md), but only 0.85 at 1M x 64 plain
Gaussian vectors, where ef_search = 800 gave 0.97 at 7 ms a query by id (benchmarks/bench_search.py).
ef_search costs nothing at build time. Larger `batch_size`/`sync_threshold` in chromadb's HNSW settings
made no difference to insertion (CPU time at 50k). chromadb returns squared L2
distances; we return their square root. Telemetry is off.
"""

from __future__ import annotations

import os

import numpy as np

from libhyrax.vector_index import VectorIndex

COLLECTION = "hyrax"
GET_BATCH = 5000  # below SQLite's limit on query variables


class ChromaIndex(VectorIndex):
    """ChromaDB's embedded HNSW index."""

    backend = "chromadb"

    def __init__(self, path, dim, ef_construction: int = 200, ef_search: int = 800, max_neighbors: int = 32,
                 **params):
        super().__init__(path, dim, ef_construction=ef_construction, ef_search=ef_search,
                         max_neighbors=max_neighbors, **params)
        self._client = self._collection = None

    def _connect(self, create: bool) -> None:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings

        self._client = chromadb.PersistentClient(path=str(self.path / "chroma"),
                                                 settings=Settings(anonymized_telemetry=False))
        if create:
            hnsw = {
                "space": "l2",
                "ef_construction": int(self.params["ef_construction"]),
                "ef_search": int(self.params["ef_search"]),
                "max_neighbors": int(self.params["max_neighbors"]),
            }
            self._collection = self._client.create_collection(
                COLLECTION, configuration={"hnsw": hnsw}, embedding_function=None
            )
        else:
            self._collection = self._client.get_collection(COLLECTION, embedding_function=None)

    def _create(self) -> None:
        self._connect(create=True)

    def _open(self) -> None:
        self._connect(create=False)

    def _add(self, rows, vectors) -> None:
        step = self._client.get_max_batch_size()
        for s in range(0, len(rows), step):
            self._collection.add(ids=[str(r) for r in rows[s : s + step]], embeddings=vectors[s : s + step])

    def _search(self, vectors, k):
        rows, sq = [], []
        step = self._client.get_max_batch_size()  # many queries (anomaly's knn through the index): in chunks
        for s in range(0, len(vectors), step):
            res = self._collection.query(
                query_embeddings=vectors[s : s + step], n_results=k, include=["distances"]
            )
            rows += res["ids"]
            sq += res["distances"]
        width = min(len(r) for r in rows)
        rows = np.array([r[:width] for r in rows], dtype=np.int64).reshape(len(vectors), width)
        sq = np.array([d[:width] for d in sq], dtype=np.float64).reshape(len(vectors), width)
        return rows, np.sqrt(np.maximum(sq, 0.0))

    def _vectors(self, rows) -> np.ndarray:
        uniq, inverse = np.unique(rows, return_inverse=True)
        found = np.empty((len(uniq), self.dim), np.float32)
        for s in range(0, len(uniq), GET_BATCH):
            part = uniq[s : s + GET_BATCH]
            got = self._collection.get(ids=[str(r) for r in part], include=["embeddings"])
            # chromadb returns them in its own order
            where = np.searchsorted(part, np.array([int(i) for i in got["ids"]], dtype=np.int64))
            found[s + where] = np.asarray(got["embeddings"], dtype=np.float32)
        return found[inverse]
