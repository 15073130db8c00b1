"""`index`: a vector index of an infer run's latents (sharded or not), for `search` and `anomaly`.

    hyrax train | hyrax infer | hyrax index                     # the CLI; the backend by N (below)
    hyrax index --from results/<infer-run> --set vector_db.name=exact
    sbatch --array=0-9 --wrap 'hyrax index --from results/<infer-run>'   # faiss: 10 shards, one index run
    for i in 0 1; do hyrax index --shard $i/2; done                          # the same without Slurm
    libhyrax.index(from_run=latents_run)                        # a notebook

The index is the `index/` folder of the results directory (see libhyrax.vector_index); latents are read
in contiguous batches of `vector_db.batch_size` rows and added batch by batch.

The backend: `vector_db.name = "auto"` (the default) builds ChromaDB's in-memory HNSW graph for up to
AUTO_FAISS_ABOVE latents, where it builds in minutes and answers in milliseconds, and above that (or when
run in shards) the FAISS IVF-PQ index (libhyrax.vector_index.faiss_ivf), which is filled in shards and
searched memory-mapped. Only faiss builds in shards: each shard adds its contiguous rows of the latents
into the run's one `index/` folder, after the first shard to get there trained the index on a seeded
sample of all the latents. The run records its backend; `search` opens either without being told.
"""

from __future__ import annotations

import logging
import os

from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import open_result, read_ids, read_rows
from libhyrax.log import Progress
from libhyrax.results import Result
from libhyrax.rundir import INDEX_DIR
from libhyrax.sharding import Shard
from libhyrax.start import start_run
from libhyrax.vector_index import VectorIndex, backend_params

log = logging.getLogger("hyrax.index")
# ChromaDB built 1M x 64 in 4 min holding 1 GB (docs/scale.md) and its graph grows ~900 B a vector: above
# this, faiss (~100 B a vector resident while searching at 1M, built in shards)
AUTO_FAISS_ABOVE = 1_000_000


def index(config=None, *, from_run: str | os.PathLike | None = None, overrides=(),
          shard: str | Shard | None = None, run_name: str | None = None,
          resume: str | os.PathLike | None = None) -> Result:
    """Build a vector index of the latents of an infer run (`from_run`, else the newest). `shard`: "I/N"
    (default: the Slurm array task's share), faiss only; `run_name`: the shared directory's name for a
    plain loop of shards; `resume`: a sharded index run to rerun a shard into."""
    plan = start_run("index", config, overrides, from_run=from_run, resume=resume, shard=shard,
                     run_name=run_name)
    cfg, src, shard = plan.config, plan.input, plan.shard
    batch = int(cfg["vector_db"]["batch_size"])
    with open_result(src.path, "latents") as f:
        if "latent" not in f:
            raise DataError(f"{f.filename} has no /latent array; is {src} an infer run?")
        n, dim = f["latent"].shape
        if n == 0:
            raise DataError(f"{src} holds no latents (0 objects): nothing to index")
        backend = choose_backend(cfg["vector_db"]["name"], n, shard)
        params = backend_params(cfg, backend)
        if backend == "exact" and params.get("device") in ("auto", False):
            params["device"] = cfg["general"]["device"]
        if backend == "faiss":
            params |= {"n_total": int(n), "seed": int(cfg["general"]["seed"])}
        with plan.open(key=[src.path.resolve(), backend]) as run:
            if run.shard:
                params["shard"] = (run.shard.index, run.shard.count)
            _build(run, f, src, backend, params, batch)
    return Result(run.path)


def choose_backend(name: str, n: int, shard: Shard | None) -> str:
    """`vector_db.name`, with "auto" decided by N; a sharded build must be faiss."""
    if name == "auto":
        return "faiss" if shard is not None or n > AUTO_FAISS_ABOVE else "chromadb"
    if shard is not None and name != "faiss":
        raise UsageError(f"only the faiss backend builds in shards, not {name!r}; use --set "
                         "vector_db.name=faiss (or auto), or run one index job without --shard / --array")
    return name


def _build(run, f, src: Result, backend: str, params: dict, batch: int) -> None:
    n, dim = f["latent"].shape
    start, stop = run.rows(n)
    run.add_upstream(src.path)
    run.add_input(f.filename)
    idx = VectorIndex.create(run.file(INDEX_DIR), dim, backend=backend, **params)
    if backend == "faiss":  # trained once, by the first shard here, on a seeded sample of all N latents
        from libhyrax.vector_index.faiss_ivf import sample_rows

        p = idx.params
        idx.train(lambda: read_rows(f["latent"], sample_rows(n, p["train_n"], p["seed"])))
    with Progress(f"index ({backend})", total=stop - start) as p:
        for a in range(start, stop, batch):
            b = min(a + batch, stop)
            idx.add(read_ids(f["object_id"], a, b), f["latent"][a:b])
            p.advance(b - a)
    idx.persist()
    model_run = src.find("train")  # through an export run when the latents came from ONNX
    run.record(n_objects=int(n), dim=int(dim), backend=backend, infer_run=str(src.path.resolve()),
               model_run=str(model_run.path.resolve()) if model_run else None, rows=[start, stop],
               **({"shard": str(run.shard)} if run.shard else {}),
               **({"settings": idx.params} if backend == "faiss" else {}))
    log.info("indexed %d vectors of length %d with %s", stop - start, dim, backend)
