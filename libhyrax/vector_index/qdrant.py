"""Qdrant (an optional extra: pip install 'hyrax-toolkit[qdrant]').

Without `url`, qdrant-client's local on-disk mode keeps the collection in the index's `qdrant/` folder;
with `url` (a site's Qdrant server) the same code talks to that server, in a collection named after the
index folder so that several indexes can share one server. Point ids are the row numbers; Qdrant's
Euclid score is the L2 distance itself.
"""

from __future__ import annotations

import numpy as np

from libhyrax.errors import UsageError
from libhyrax.vector_index import VectorIndex

BATCH = 4096


class QdrantIndex(VectorIndex):
    """Qdrant, local on disk (url=False) or a server (url="http://host:6333")."""

    backend = "qdrant"

    def __init__(self, path, dim, url: str | bool = False, collection: str | bool = False,
                 ef_construction: int = 200, ef_search: int = 200, max_neighbors: int = 32, **params):
        super().__init__(path, dim, url=url, collection=collection or _collection_name(path),
                         ef_construction=ef_construction, ef_search=ef_search, max_neighbors=max_neighbors,
                         **params)
        self._client = None

    @property
    def pickled_files(self) -> str | None:
        # qdrant-client's local mode keeps points pickled in SQLite; a server keeps nothing here
        return None if self.params["url"] else "qdrant/**/*.sqlite"

    def _connect(self):
        try:
            from qdrant_client import QdrantClient
        except ImportError:
            raise UsageError("the qdrant backend needs qdrant-client: pip install 'hyrax-toolkit[qdrant]', "
                             "or use vector_db.name = \"chromadb\" or \"exact\"") from None
        url = self.params["url"]
        self._client = QdrantClient(url=url) if url else QdrantClient(path=str(self.path / "qdrant"))
        return self._client

    def _create(self) -> None:
        from qdrant_client import models

        self._connect().create_collection(
            self.params["collection"],
            vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.EUCLID),
            hnsw_config=models.HnswConfigDiff(m=int(self.params["max_neighbors"]),
                                              ef_construct=int(self.params["ef_construction"])))

    def _open(self) -> None:
        self._connect()

    def _add(self, rows, vectors) -> None:
        from qdrant_client import models

        for s in range(0, len(rows), BATCH):
            (self._client or self._connect()).upsert(
                self.params["collection"],
                wait=True,
                points=models.Batch(
                    ids=[int(r) for r in rows[s : s + BATCH]], vectors=vectors[s : s + BATCH].tolist()
                ),
            )

    def _search(self, vectors, k):
        from qdrant_client import models

        params = models.SearchParams(hnsw_ef=int(self.params["ef_search"]))
        requests = [models.QueryRequest(query=v.tolist(), limit=k, params=params) for v in vectors]
        answers = (self._client or self._connect()).query_batch_points(
            self.params["collection"], requests=requests
        )
        width = min(len(a.points) for a in answers)
        rows = np.array([[p.id for p in a.points[:width]] for a in answers], dtype=np.int64)
        dist = np.array([[p.score for p in a.points[:width]] for a in answers], dtype=np.float32)
        return rows.reshape(len(vectors), width), dist.reshape(len(vectors), width)

    def _persist(self) -> None:
        # the local mode's client holds a lock on its folder until closed: close it, so the index can be
        # opened again (by `search`, `anomaly`, or this process); a later call reconnects
        if self._client is not None:
            self._client.close()
            self._client = None

    def _vectors(self, rows) -> np.ndarray:
        uniq, inverse = np.unique(rows, return_inverse=True)
        got = (self._client or self._connect()).retrieve(
            self.params["collection"], ids=[int(r) for r in uniq], with_vectors=True
        )
        by_id = {int(p.id): p.vector for p in got}
        return np.array([by_id[int(r)] for r in uniq], dtype=np.float32)[inverse]


def _collection_name(path) -> str:
    """A name no other index shares on a site server: the run directory's name plus a random tag (the
    index folder itself is always called `index`). Stored in index.json, so reopening finds it."""
    import re
    import secrets
    from pathlib import Path

    run = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).resolve().parent.name.removesuffix(".partial"))
    return f"hyrax-{run}-{secrets.token_hex(4)}"[:255]
