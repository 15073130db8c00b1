"""Vector indexes: one small base class, several backends (ChromaDB, exact torch, FAISS IVF-PQ, Qdrant).

An index lives in a folder:

    index.json       backend name, dimension, number of vectors, the backend's parameters
    object_ids.h5    the object ids in the order they were added (row r holds object_ids[r])
    ...              the backend's own files

Backends store and return integer rows; this base class maps object ids to rows and back with a sorted
id table (`libhyrax.hdf5.IdIndex`), so an object id -> vector lookup is O(log N) in every backend.

    from libhyrax.vector_index import VectorIndex
    idx = VectorIndex.create("my_index", dim=64, backend="exact")
    idx.add(object_ids, vectors)           # call once per batch
    idx.persist()
    idx = VectorIndex.open("my_index")
    ids, distances = idx.search(queries, k=10)          # (Q, k) each, distances are L2 (not squared)
    ids, distances = idx.search_by_id(["obj_17"], k=10)

A new backend subclasses VectorIndex, sets `backend = "name"` and implements the five hooks `_create`,
`_open`, `_add`, `_search`, `_vectors` (and `_persist` when it buffers). Subclasses register themselves
under `backend` (two different classes can't share one; see libhyrax.registry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from libhyrax import trust
from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import IdIndex, as_id_bytes, read_ids, write_arrays
from libhyrax.registry import Registry

META_FILE, IDS_FILE = "index.json", "object_ids.h5"
# built-in backends, imported only when used
BUILT_IN = {"chromadb": "libhyrax.vector_index.chroma", "exact": "libhyrax.vector_index.exact",
            "faiss": "libhyrax.vector_index.faiss_ivf", "qdrant": "libhyrax.vector_index.qdrant"}
REGISTRY: Registry[type[VectorIndex]] = Registry(
    "vector index backend", error=UsageError, lazy=BUILT_IN,
    rename_hint="give one of the classes another `backend = ...`")


class VectorIndex:
    """Base class of the vector index backends. Construction only stores parameters."""

    backend = "base"
    # files (a glob inside the index) that the backend's library loads with pickle, or None; Hyrax signs
    # them when it persists the index and refuses to open ones it didn't write (libhyrax.trust)
    pickled_files: str | None = None
    # True for a backend whose shards (processes of one sharded run) each write their own files into the one
    # index folder: `create` then finds the folder already holding the index the other shards wrote
    shards_into_one_folder = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.backend != "base":
            REGISTRY.register(cls.backend, cls)

    def __init__(self, path: str | os.PathLike, dim: int, **params):
        self.path, self.dim, self.params = Path(path), int(dim), params
        self._ids: list[np.ndarray] = []  # id batches added since open
        self._id_index = None
        self._all_ids: np.ndarray | None = None

    # --- the public interface ---------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, dim: int, backend: str | None = None, **params) -> VectorIndex:
        """A new, empty index in the folder `path` (made; it must not hold an index already)."""
        klass = backend_class(backend) if backend else cls
        path = Path(path)
        if (path / META_FILE).exists() and not klass.shards_into_one_folder:
            raise UsageError(f"{path} already holds a vector index; choose another folder")
        path.mkdir(parents=True, exist_ok=True)
        index = klass(path, dim, **params)
        index._all_ids = np.array([], dtype="S1")
        index._create()
        return index

    @classmethod
    def open(cls, path: str | os.PathLike, trusted_runs=()) -> VectorIndex:
        """An index written by `persist()`, with the backend it was built with. `trusted_runs`
        (general.trusted_runs): runs whose pickled index folder may load though this account didn't
        write it."""
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(
                f"{path} holds no vector index (no {META_FILE}); build one with `hyrax index`"
            ) from None
        index = backend_class(meta["backend"])(path, meta["dim"], **meta.get("params", {}))
        index._all_ids = index._read_ids()
        if not len(index._all_ids):
            index._all_ids = np.array([], dtype="S1")
        for file in sorted(path.glob(index.pickled_files)) if index.pickled_files else ():
            trust.check_loadable(
                file, f"part of a {index.backend} index kept with pickle", trusted_runs, run=path.parent
            )
        index._open()
        return index

    def add(self, object_ids, vectors) -> None:
        """Add one batch of vectors (N, dim) with their object ids."""
        ids = as_id_bytes(np.atleast_1d(np.asarray(object_ids)))
        vectors = self._check_vectors(vectors, "vectors added")
        if len(ids) != len(vectors):
            raise DataError(f"{len(ids)} object ids but {len(vectors)} vectors")
        start = len(self)
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        self._ids.append(ids)
        self._id_index = None
        if len(ids):
            self._add(rows, vectors)

    def persist(self) -> None:
        """Write everything added so far (ids, metadata, the backend's buffers) to the folder."""
        ids = self.object_ids(as_bytes=True)
        IdIndex(ids)  # refuses duplicate object ids before anything is written
        write_arrays(self.path / IDS_FILE, ids)
        self._persist()
        for file in self.path.glob(self.pickled_files) if self.pickled_files else ():
            trust.sign(file)
        meta = {"backend": self.backend, "dim": self.dim, "count": len(ids), "params": self.params}
        (self.path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def search(self, vectors, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest objects of each query vector: (object ids (Q, k) str, L2 distances (Q, k)),
        nearest first. Fewer than k objects in the index give fewer columns."""
        vectors = self._check_vectors(vectors, "query vector")
        k = min(int(k), len(self))
        if k < 1:
            raise DataError("the index is empty: nothing to search")
        if not len(vectors):
            return np.empty((0, k), dtype=str), np.empty((0, k), dtype=np.float32)
        rows, dist = self._search(vectors, k)
        ids = np.char.decode(self.object_ids(as_bytes=True)[rows], "utf-8")
        return ids, np.asarray(dist, dtype=np.float32)

    def search_by_id(self, object_ids, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, with the vectors of objects already in the index as queries."""
        return self.search(self.vectors(object_ids), k)

    def vectors(self, object_ids) -> np.ndarray:
        """The stored vectors of `object_ids` (an unknown id is a DataError with close matches)."""
        return self._vectors(self.rows(object_ids))

    def rows(self, object_ids) -> np.ndarray:
        """Rows of `object_ids`, O(log N) each; an unknown id is a DataError naming close matches."""
        if self._id_index is None:
            self._id_index = IdIndex(self.object_ids(as_bytes=True))
        wanted = [str(i) for i in np.atleast_1d(np.asarray(object_ids))]
        rows = self._id_index.rows(wanted)
        if missing := [w for w, r in zip(wanted, rows, strict=True) if r < 0]:
            near = self._id_index.close_matches(missing[0]) if len(self) else []
            hint = f"; close ids: {', '.join(near)}" if near else ""
            raise DataError(
                f"object id {missing[0]!r} is not in the index at {self.path}{hint}"
                + (f" ({len(missing)} ids missing)" if len(missing) > 1 else "")
            )
        return rows.astype(np.int64)

    def object_ids(self, as_bytes: bool = False) -> np.ndarray:
        """All ids in row order (str, or UTF-8 bytes)."""
        if self._ids:
            base = self._all_ids if self._all_ids is not None else np.array([], dtype="S1")
            self._all_ids = np.concatenate([base, *self._ids])
            self._ids = []
        ids = self._all_ids if self._all_ids is not None else np.array([], dtype="S1")
        return ids if as_bytes else np.char.decode(ids, "utf-8")

    def __len__(self) -> int:
        n = len(self._all_ids) if self._all_ids is not None else 0
        return n + sum(len(b) for b in self._ids)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} dim={self.dim} n={len(self)} at {self.path}>"

    def _check_vectors(self, vectors, what: str) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32)
        v = v[None, :] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] != self.dim:
            got = v.shape[-1] if v.ndim else "a scalar"
            raise DataError(f"{what} of length {got}; this index holds vectors of length {self.dim}")
        if not np.isfinite(v).all():
            raise DataError(f"{what} holds NaN or infinite values")
        return np.ascontiguousarray(v)

    # --- backend hooks ----------------------------------------------------------------------------

    def _read_ids(self) -> np.ndarray:
        """All object ids in row order, as UTF-8 bytes (a sharded backend joins its shards' files)."""
        with h5py.File(self.path / IDS_FILE, "r") as f:
            raw = f["object_id"][:]  # fixed-length UTF-8: bytes as stored, no decode/encode round trip
            return raw.astype("S") if raw.dtype.kind in "SO" else as_id_bytes(read_ids(f["object_id"]))

    def _create(self) -> None:
        """Make the backend's empty store in self.path."""

    def _open(self) -> None:
        """Open the backend's store in self.path."""

    def _add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (Q, k) int64, L2 distances (Q, k)), nearest first."""
        raise NotImplementedError

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _persist(self) -> None:
        """Flush anything buffered."""


def backend_class(name: str) -> type[VectorIndex]:
    """The VectorIndex subclass called `name` (built-in ones are imported on first use)."""
    return REGISTRY.lookup(name)


def backend_params(cfg: dict, name: str) -> dict:
    """The backend's parameters from `[vector_db.<name>]` of a resolved config."""
    return dict(cfg.get("vector_db", {}).get(name, {}) or {})
