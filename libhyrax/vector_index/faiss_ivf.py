"""FAISS: an inverted file of product-quantised codes, memory-mapped, with exact re-ranking (backend "faiss").

For surveys too large for ChromaDB's in-memory graph. The index is an IVF-PQ (`faiss.IndexIVFPQ`):
`nlist` coarse lists, each vector stored as `code_bytes` bytes of product-quantiser codes (8 dimensions a
byte). Trained once, on a seeded sample of the latents, into `trained.faiss`; then filled in shards
(`hyrax index --shard I/N` or Slurm array tasks, see libhyrax.stages.index), each shard writing its own
files into the one index folder:

    trained.faiss                                 coarse centroids and PQ codebooks (no vectors)
    ivfpq.shard-IIII-of-NNNN.faiss                the shard's codes in their lists, with global row numbers
    vectors.shard-IIII-of-NNNN.f32                the shard's latents, raw float32 rows (for re-ranking)
    object_ids.shard-IIII-of-NNNN.h5              the shard's object ids

Opening maps every shard's lists from disk (faiss.IO_FLAG_MMAP) and stacks them into one index
(faiss.HStackInvertedLists): `search` reads the lists it probes and never loads the index. A query
probes `nprobe` lists, takes the `candidates` nearest by their codes, and re-ranks them by exact L2
distance from the raw vectors (so recall does not pay for the compression; distances are exact). The raw
vectors are read through a private memory map whose pages are dropped from the process after each
search (they stay in the page cache): resident memory is the ids and the lists touched, not the vectors.
(They are a copy of latents.h5 because its rows are chunked HDF5: reading a few hundred random rows from
it costs milliseconds each query.)

Settings (`settings()`) come from N and the latent size; `effort` (vector_db.faiss.effort) multiplies
the lists probed and the candidates re-ranked: 2 is slower with higher recall, 0.5 faster with lower.
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import secrets
from pathlib import Path

import numpy as np

from libhyrax.errors import DataError
from libhyrax.hdf5 import IdIndex, write_arrays
from libhyrax.sharding import shard_range
from libhyrax.vector_index import META_FILE, VectorIndex

TRAINED = "trained.faiss"
DIMS_PER_BYTE = 8  # PQ sub-vectors of 8 dimensions: faiss trains 4-d ones ~20x slower (k-means), and
# 8-d codes re-ranked from the raw vectors gave recall@10 of 0.98 from 300 candidates at 100k x 64
TRAIN_PER_LIST = 39  # faiss's minimum of training points per centroid
TRAIN_ROUNDS = 10
RERANK_BLOCK = 16  # queries searched and re-ranked at once: 16 x candidates x dim floats


def settings(n: int, dim: int, effort: float = 1.0) -> dict:
    """The index's shape for N vectors of length `dim`: lists ~ sqrt(N) (a power of two), codes of one
    byte per 8 dimensions, and the lists probed and candidates re-ranked scaled by `effort`."""
    if effort <= 0:
        raise DataError(f"vector_db.faiss.effort must be above 0, not {effort}")
    nlist = max(1, min(2 ** round(math.log2(math.sqrt(max(n, 1)))), n // TRAIN_PER_LIST))
    code_bytes = max(b for b in range(1, dim + 1) if dim % b == 0 and (dim // b >= DIMS_PER_BYTE or b == 1))
    nbits = max(1, min(8, int(math.log2(max(2, n // TRAIN_PER_LIST)))))  # 256 codes, or fewer for tiny N
    train_n = min(n, max(TRAIN_PER_LIST * nlist, TRAIN_PER_LIST * 2**nbits, 20_000))
    nprobe = max(1, min(nlist, round(effort * max(8, nlist / 32))))
    # PQ codes of 8 B rank the true 10 nearest within the first ~40 log2(N): recall@10 after re-ranking
    # 0.92 from 300 candidates at 1M x 64 clustered, 0.977 from 600, 0.995 from 1000 (nprobe 32 to 128
    # changed nothing); the time per query hardly moved
    candidates = max(10, round(effort * 40 * math.log2(max(n, 2))))
    return {"nlist": nlist, "code_bytes": code_bytes, "nbits": nbits, "nprobe": nprobe,
            "candidates": candidates, "train_n": train_n}


def _faiss():
    # OpenMP threads that wait passively: spinning ones cost 2-3x the CPU time of k-means and of adding
    # vectors on 2 cores shared with other jobs (measured); set before faiss loads its OpenMP runtime
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss

    return faiss


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The sorted rows of the seeded training sample (the same in every shard)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False))


class FaissIndex(VectorIndex):
    """IVF-PQ in shards, memory-mapped, re-ranked exactly. `n_total`: the vectors of all shards; `shard`:
    (index, count) of the shard this process fills (not recorded: the index holds all of them)."""

    backend = "faiss"
    shards_into_one_folder = True

    def __init__(self, path, dim, n_total: int = 0, effort: float = 1.0, seed: int = 0, shards: int = 1,
                 shard: tuple[int, int] | None = None, **params):
        shape = {k: params.pop(k) for k in ("nlist", "code_bytes", "nbits", "nprobe", "candidates", "train_n")
                 if k in params}
        shape = shape or settings(int(n_total), int(dim), float(effort))
        super().__init__(path, dim, n_total=int(n_total), effort=float(effort), seed=int(seed),
                         shards=int(shard[1] if shard else shards), **shape, **params)
        self.shard = shard or (0, int(shards))
        self.first_row = shard_range(int(n_total), *self.shard)[0] if n_total else 0
        self._ivf = self._parts = None
        self._maps: list[tuple[mmap.mmap, np.ndarray]] = []
        self._offsets = np.zeros(1, np.int64)

    def _name(self, stem: str, ext: str, i: int | None = None) -> Path:
        i = self.shard[0] if i is None else i
        return self.path / f"{stem}.shard-{i:04d}-of-{self.params['shards']:04d}.{ext}"

    # --- building: vectors appended raw, then trained (once) and encoded at persist -----------------

    def _create(self) -> None:
        self._name("vectors", "f32").write_bytes(b"")

    def _add(self, rows, vectors) -> None:
        with open(self._name("vectors", "f32"), "ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())

    def train(self, read_sample) -> None:
        """Train the coarse lists and codebooks once for all shards: the first shard to get here trains on
        `read_sample()` (the seeded sample of all N latents) and writes trained.faiss; the others wait
        for it (a file lock) and use it."""
        faiss = _faiss()
        with open(self.path / ".train.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (self.path / TRAINED).exists():
                return
            p = self.params
            index = faiss.IndexIVFPQ(faiss.IndexFlatL2(self.dim), self.dim, p["nlist"], p["code_bytes"],
                                     p["nbits"])
            index.cp.seed = index.pq.cp.seed = p["seed"]
            # 10 k-means rounds, and the codebooks on at most 39 points a code: on 2 loaded cores faiss's
            # defaults (25 rounds, 256 a code) took minutes, for no recall after exact re-ranking
            index.cp.niter = index.pq.cp.niter = TRAIN_ROUNDS
            index.pq.cp.max_points_per_centroid = TRAIN_PER_LIST
            index.train(np.ascontiguousarray(read_sample(), dtype=np.float32))
            tmp = self.path / f".{TRAINED}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            faiss.write_index(index, str(tmp))
            os.replace(tmp, self.path / TRAINED)

    def persist(self) -> None:
        """Write this shard: its ids, its codes (training first when no shard has) and index.json."""
        faiss = _faiss()
        ids = self.object_ids(as_bytes=True)
        IdIndex(ids)  # refuses duplicate ids within the shard before anything is written
        if not self.params["n_total"]:  # built without saying N: its shape from what was added
            self.params |= settings(len(ids), self.dim, self.params["effort"]) | {"n_total": len(ids)}
        vectors = self._matrix(self._name("vectors", "f32"))
        if len(ids) != len(vectors):
            raise DataError(f"{len(ids)} ids but {len(vectors)} vectors in {self.path}")
        self.train(lambda: vectors[sample_rows(len(vectors), self.params["train_n"], self.params["seed"])])
        index = faiss.read_index(str(self.path / TRAINED))
        for s in range(0, len(vectors), 65536):
            block = np.ascontiguousarray(vectors[s:s + 65536])
            index.add_with_ids(block, np.arange(s, s + len(block), dtype=np.int64) + self.first_row)
        tmp = self._name(".ivfpq", "faiss.tmp")
        faiss.write_index(index, str(tmp))
        write_arrays(self._name("object_ids", "h5"), ids)
        os.replace(tmp, self._name("ivfpq", "faiss"))
        meta = {
            "backend": self.backend,
            "dim": self.dim,
            "count": self.params["n_total"],
            "params": self.params,
        }
        tmp = self.path / f".{META_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # tasks on other hosts too
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / META_FILE)  # every shard writes the same

    def _matrix(self, file: Path) -> np.ndarray:
        if file.stat().st_size == 0:
            return np.empty((0, self.dim), np.float32)
        return np.memmap(file, dtype="<f4", mode="r").reshape(-1, self.dim)

    # --- opening and searching ----------------------------------------------------------------------

    def _read_ids(self) -> np.ndarray:
        n = self.params["shards"]
        missing = [i for i in range(n) if not self._name("ivfpq", "faiss", i).exists()]
        if missing:
            raise DataError(
                f"{self.path}: shard(s) {', '.join(map(str, missing))} of {n} of the faiss index "
                f"are missing; rerun them with hyrax index --shard I/{n} --resume <the index run>"
            )
        import h5py

        parts = []
        for i in range(n):
            with h5py.File(self._name("object_ids", "h5", i), "r") as f:
                parts.append(f["object_id"][:].astype("S"))
        self._offsets = np.cumsum([0] + [len(p) for p in parts])
        return np.concatenate(parts) if parts else np.array([], dtype="S1")

    def _open(self) -> None:
        faiss = _faiss()
        n = self.params["shards"]
        self._parts = [
            faiss.read_index(str(self._name("ivfpq", "faiss", i)), faiss.IO_FLAG_MMAP) for i in range(n)
        ]
        if n == 1:
            self._ivf = self._parts[0]
        else:
            self._ivf = faiss.read_index(str(self.path / TRAINED))
            self._lists = faiss.InvertedListsPtrVector()
            for part in self._parts:
                self._lists.push_back(faiss.extract_index_ivf(part).invlists)
            self._stack = faiss.HStackInvertedLists(n, self._lists.data())
            self._ivf.replace_invlists(self._stack, False)
            self._ivf.ntotal = int(self._offsets[-1])
        self._ivf.nprobe = int(self.params["nprobe"])
        for i in range(n):
            fd = os.open(self._name("vectors", "f32", i), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
            finally:
                os.close(fd)
            empty = np.empty((0, self.dim), "<f4")
            self._maps.append((mm, np.frombuffer(mm, dtype="<f4").reshape(-1, self.dim) if mm else empty))

    def _vectors(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((*rows.shape, self.dim), np.float32)
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        for i in np.unique(shard):
            where = shard == i
            out[where] = self._maps[i][1][rows[where] - self._offsets[i]]
        return out

    def _candidates(self, q: np.ndarray, k: int, c: int) -> np.ndarray:
        """Rows of the `c` nearest by their codes (-1 where the lists probed held fewer)."""
        _, cand = self._ivf.search(q, c)
        short = (cand[:, :k] < 0).any(1)  # the probed lists held fewer than k vectors: probe them all
        if short.any():
            nprobe, self._ivf.nprobe = self._ivf.nprobe, self._ivf.nlist
            cand[short] = self._ivf.search(q[short], c)[1]
            self._ivf.nprobe = nprobe
        return cand

    def _drop_pages(self) -> None:
        for mm, _ in self._maps:
            if mm is not None:
                mm.madvise(mmap.MADV_DONTNEED)  # out of this process's resident set; the page cache has them

    def _search(self, vectors, k):
        c = min(max(k, int(self.params["candidates"])), len(self))
        rows = np.empty((len(vectors), k), np.int64)
        dist = np.empty((len(vectors), k), np.float32)
        try:
            # a block of queries at a time, candidates and their vectors included: a few MB in all, so
            # that many queries (anomaly's) leave no large freed blocks in the allocator's heap
            for s in range(0, len(vectors), RERANK_BLOCK):
                q = vectors[s : s + RERANK_BLOCK]
                cb = self._candidates(q, k, c)
                x = self._vectors(np.maximum(cb, 0))
                d2 = ((x - q[:, None, :]) ** 2).sum(-1)
                d2[cb < 0] = np.inf
                best = (
                    np.argpartition(d2, k - 1, axis=1)[:, :k] if c > k else np.tile(np.arange(c), (len(q), 1))
                )
                bd = np.take_along_axis(d2, best, 1)
                order = np.argsort(bd, axis=1, kind="stable")
                rows[s : s + len(q)] = np.take_along_axis(np.take_along_axis(cb, best, 1), order, 1)
                dist[s : s + len(q)] = np.sqrt(np.take_along_axis(bd, order, 1))
        finally:
            self._drop_pages()
        return rows, dist
