"""Runs whose output is one array row per object, read: what `libhyrax.infer()` (Latents) and
`libhyrax.umap()` (Embedding) return.

    latents = libhyrax.infer(from_run=trained)
    len(latents); latents[0]; latents[:100]; latents[[5, 2]]   # vectors by row (numpy)
    latents.ids()                                             # the object ids, in row order
    latents.vector("HDF-0001")                                # by object id, O(log N) after the first
    latents.get_data(0), latents.get_object_id(0)             # a row as a dataset's getters give it
    latents.table                                             # pyarrow Table: object_id, data

`lookup` (`hyrax lookup --id`, a tool that makes no run) is one object's vector from an infer run.
"""

from __future__ import annotations

import os

import numpy as np

from libhyrax.errors import UsageError
from libhyrax.hdf5 import IdIndex, as_id_bytes, open_result, read_ids
from libhyrax.results import Result
from libhyrax.rundir import EMBEDDING, LATENTS


class PerObject(Result):
    """A run (a Result) whose `<stem>.h5` holds `/object_id` and one `/<array>` row per object."""

    stem, array = LATENTS, "latent"
    _index: IdIndex | None = None

    def __len__(self) -> int:
        with open_result(self.path, self.stem) as f:
            return len(f[self.array])

    def __getitem__(self, rows) -> np.ndarray:
        with open_result(self.path, self.stem) as f:
            data = f[self.array]
            if isinstance(rows, (int, np.integer, slice)):
                return np.asarray(data[rows])
            rows = np.asarray(rows)
            order = np.argsort(rows)
            out = np.empty((len(rows), *data.shape[1:]), data.dtype)
            out[order] = data[rows[order]]  # h5py reads rows in increasing order
            return out

    def ids(self) -> np.ndarray:
        with open_result(self.path, self.stem) as f:
            return read_ids(f["object_id"])

    def row_of(self, object_id: str) -> int:
        """The row of `object_id`; a UsageError naming the closest ids when no object has it."""
        if self._index is None:
            self._index = IdIndex(self.ids())
        row = int(self._index.rows([str(object_id)])[0])
        if row < 0:
            near = self._index.close_matches(str(object_id))
            raise UsageError(f"object id {object_id!r} is not in {self.path}"
                             + (f"; close ids: {', '.join(near)}" if near else ""))
        return row

    def vector(self, object_id: str) -> np.ndarray:
        return self[self.row_of(object_id)]

    # a row as a dataset's getters give it (fields "data" and "object_id")
    def get_data(self, index: int) -> np.ndarray:
        return self[int(index)]

    def get_object_id(self, index: int) -> str:
        with open_result(self.path, self.stem) as f:
            return str(read_ids(f["object_id"], int(index), int(index) + 1)[0])

    @property
    def table(self):
        """Every row as a pyarrow Table (object_id, data): `.to_pandas()`, `.num_rows`."""
        import pyarrow as pa

        data = self[:]
        flat = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(len(data), -1).ravel()),
                                                 int(np.prod(data.shape[1:])))
        return pa.table({"object_id": pa.array(self.ids().astype(str)), "data": flat})


class Latents(PerObject):
    """An infer run's latents.h5."""


class Embedding(PerObject):
    """A umap run's embedding.h5: the 2-D (or n_components) map of each object."""

    stem, array = EMBEDDING, "embedding"


def lookup(
    object_id: str, config=None, *, from_run: str | os.PathLike | None = None, overrides=()
) -> np.ndarray:
    """The latent vector of one object from an infer run (`from_run`, else the newest); a UsageError naming
    the closest ids when no object has that id.

        hyrax lookup --id HDF-0001                       # prints the vector, comma-separated
        libhyrax.lookup("HDF-0001", from_run=latents)
    """
    from libhyrax.start import start_run

    run = start_run("lookup", config, overrides, from_run=from_run).input
    wanted = as_id_bytes([str(object_id)])[0]
    with open_result(run.path, LATENTS) as f:
        ids, step = f["object_id"], 1 << 20
        for start in range(0, len(ids), step):  # a vectorised scan: no id table for one lookup
            hit = np.flatnonzero(as_id_bytes(ids[start : start + step]) == wanted)
            if len(hit):
                return np.asarray(f["latent"][start + int(hit[0])])
    return Latents(run.path).vector(str(object_id))  # raises, naming the closest ids
