"""Exact nearest neighbours by blocked matrix products in torch (on the GPU when there is one).

The ground truth the approximate backends are measured against, and the right choice up to a few million
vectors: the whole matrix is N x d x 4 bytes in memory (256 MB at 1M x 64), and a query batch costs one
pass of matrix products over it. Vectors are appended to `vectors.f32` (raw float32 rows) as they come.
"""

from __future__ import annotations

import numpy as np

from libhyrax.device import pick_device
from libhyrax.vector_index import VectorIndex

VECTORS_FILE = "vectors.f32"
# a (queries x rows) distance block of 64 MB of float32, allocated once per call. On 2 shared CPU cores
# this ran at ~2.2e8 distances/s (idle: ~5e8), the same as 4096 x 4096 blocks allocated afresh; skipping
# top-k on rows a block can't improve (a min pass first) was slower.
Q_BLOCK, ROWS_BLOCK = 1024, 16384
BLOCK_ELEMENTS = Q_BLOCK * ROWS_BLOCK


def knn(data, queries, k: int, data_sq=None, q_block: int | None = None, rows_block: int | None = None):
    """The k nearest rows of `data` (N, d) for each row of `queries` (Q, d), both float32 torch tensors on
    the same device: (rows (Q, k) int64, L2 distances (Q, k) float32), nearest first.

    Blocked: `q_block` queries against `rows_block` rows at a time (defaults from Q_BLOCK, ROWS_BLOCK),
    in one reused distance buffer, with the running top k merged block by block, so memory beyond `data`
    is constant in N and Q (at most BLOCK_ELEMENTS x 4 bytes = 64 MB, plus Q x k for the answer). All
    against all (anomaly's knn) is N^2 distances: on 2 idle CPU cores about 5e8 a second. Candidates come from
    ||x||^2 - 2 q.x (one fused matrix product per block); the k found are then re-measured as ||q - x||
    directly, so an object's distance to itself is exactly 0.
    """
    import torch

    n, q = data.shape[0], queries.shape[0]
    k = min(k, n)
    if data_sq is None:
        data_sq = (data * data).sum(1)
    q_block = max(1, min(q, q_block or Q_BLOCK))
    # few queries (a user's search): longer row blocks, down to one pass over all rows for one query
    rows_block = max(1, min(n, rows_block or max(ROWS_BLOCK, BLOCK_ELEMENTS // q_block)))
    buf = torch.empty((q_block, rows_block), dtype=torch.float32, device=data.device)
    out_rows = torch.empty((q, k), dtype=torch.int64, device=data.device)
    out_dist = torch.empty((q, k), dtype=torch.float32, device=data.device)
    for qs in range(0, q, q_block):
        qb = queries[qs:qs + q_block]
        m = qb.shape[0]
        best_d = torch.full((m, k), float("inf"), device=data.device)
        best_i = torch.zeros((m, k), dtype=torch.int64, device=data.device)
        for rs in range(0, n, rows_block):
            x = data[rs:rs + rows_block]
            d = buf[:m, :x.shape[0]]
            # ||x||^2 - 2 q.x in one fused product; ||q||^2 is the same along a row, so ranks need it not
            torch.addmm(data_sq[rs:rs + rows_block][None, :], qb, x.T, alpha=-2.0, out=d)
            dv, di = torch.topk(d, min(k, x.shape[0]), dim=1, largest=False, sorted=False)
            best_d, pos = torch.topk(torch.cat([best_d, dv], 1), k, dim=1, largest=False, sorted=False)
            best_i = torch.gather(torch.cat([best_i, di + rs], 1), 1, pos)
        exact = torch.linalg.vector_norm(data[best_i] - qb[:, None, :], dim=2)
        exact, order = torch.sort(exact, dim=1, stable=True)
        out_rows[qs:qs + m] = torch.gather(best_i, 1, order)
        out_dist[qs:qs + m] = exact
    return out_rows, out_dist


class ExactIndex(VectorIndex):
    """Exact search; `device` "auto" uses the GPU when torch sees one."""

    backend = "exact"

    def __init__(self, path, dim, device: str = "auto", **params):
        super().__init__(path, dim, **params)
        self.device = device
        self._data = None  # (torch matrix on the device, its squared row norms), loaded on first search

    @property
    def _file(self):
        return self.path / VECTORS_FILE

    def _create(self) -> None:
        self._file.write_bytes(b"")

    def _add(self, rows, vectors) -> None:
        with open(self._file, "ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        self._data = None

    def _matrix(self) -> np.ndarray:
        n = self._file.stat().st_size // (4 * self.dim)
        if n == 0:
            return np.empty((0, self.dim), np.float32)
        return np.memmap(self._file, dtype="<f4", mode="r", shape=(n, self.dim))

    def _loaded(self):
        if self._data is None:
            import torch

            m = np.fromfile(self._file, dtype="<f4")  # one sequential read
            x = torch.from_numpy(m.reshape(-1, self.dim)).to(pick_device(self.device))
            self._data = (x, (x * x).sum(1))
        return self._data

    def _search(self, vectors, k):
        import torch

        x, x_sq = self._loaded()
        rows, dist = knn(x, torch.from_numpy(vectors).to(x.device), k, x_sq)
        return rows.cpu().numpy(), dist.cpu().numpy()

    def _vectors(self, rows) -> np.ndarray:
        return np.asarray(self._matrix()[np.asarray(rows)], dtype=np.float32)
