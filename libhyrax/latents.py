"""An infer run's latents, read: what `libhyrax.infer()` returns.

    latents = libhyrax.infer(from_run=trained)
    len(latents); latents[0]; latents[:100]; latents[[5, 2]]   # latent vectors by row (numpy)
    latents.ids()                                             # the object ids, in row order
    latents.vector("HDF-0001")                                # by object id, O(log N) after the first

`lookup` (`hyrax lookup --id`, a tool that makes no run) is one object's vector from an infer run.
"""

from __future__ import annotations

import os

import numpy as np

from libhyrax.errors import UsageError
from libhyrax.hdf5 import IdIndex, as_id_bytes, open_result, read_ids
from libhyrax.results import Result
from libhyrax.rundir import LATENTS


class Latents(Result):
    """An infer run (a Result) whose latent vectors read by row and by object id."""

    _index: IdIndex | None = None

    def __len__(self) -> int:
        with open_result(self.path, LATENTS) as f:
            return len(f["latent"])

    def __getitem__(self, rows) -> np.ndarray:
        with open_result(self.path, LATENTS) as f:
            if isinstance(rows, (int, np.integer, slice)):
                return np.asarray(f["latent"][rows])
            rows = np.asarray(rows)
            order = np.argsort(rows)
            out = np.empty((len(rows), f["latent"].shape[1]), f["latent"].dtype)
            out[order] = f["latent"][rows[order]]  # h5py reads rows in increasing order
            return out

    def ids(self) -> np.ndarray:
        with open_result(self.path, LATENTS) as f:
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


def lookup(object_id: str, config=None, *, from_run: str | os.PathLike | None = None, overrides=()) -> np.ndarray:
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
            hit = np.flatnonzero(as_id_bytes(ids[start:start + step]) == wanted)
            if len(hit):
                return np.asarray(f["latent"][start + int(hit[0])])
    return Latents(run.path).vector(str(object_id))  # raises, naming the closest ids
