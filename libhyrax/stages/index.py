"""`index`: a vector index of an infer run's latents (sharded or not), for `search` and `anomaly`.

    hyrax train | hyrax infer | hyrax index                     # the CLI; ChromaDB by default
    hyrax index --from results/<infer-run> --set vector_db.name=exact
    libhyrax.index(from_run=latents_run)                        # a notebook

The index is the `index/` folder of the results directory (see libhyrax.vector_index); latents are read
in contiguous batches of `vector_db.batch_size` rows and added batch by batch.
"""

from __future__ import annotations

import logging
import os

from libhyrax.errors import DataError
from libhyrax.hdf5 import open_result, read_ids
from libhyrax.log import Progress
from libhyrax.results import Result
from libhyrax.rundir import INDEX_DIR
from libhyrax.start import start_run
from libhyrax.vector_index import VectorIndex, backend_params

log = logging.getLogger("hyrax.index")


def index(config=None, *, from_run: str | os.PathLike | None = None, overrides=()) -> Result:
    """Build a vector index of the latents of an infer run (`from_run`, else the newest)."""
    plan = start_run("index", config, overrides, from_run=from_run)
    cfg, src = plan.config, plan.input
    backend = cfg["vector_db"]["name"]
    params = backend_params(cfg, backend)
    if backend == "exact" and params.get("device") in ("auto", False):
        params["device"] = cfg["general"]["device"]
    batch = int(cfg["vector_db"]["batch_size"])
    with open_result(src.path, "latents") as f:
        if "latent" not in f:
            raise DataError(f"{f.filename} has no /latent array; is {src} an infer run?")
        n, dim = f["latent"].shape
        if n == 0:
            raise DataError(f"{src} holds no latents (0 objects): nothing to index")
        with plan.open() as run:
            _build(run, f, src, backend, params, batch)
    return Result(run.path)


def _build(run, f, src: Result, backend: str, params: dict, batch: int) -> None:
    n, dim = f["latent"].shape
    run.add_upstream(src.path)
    run.add_input(f.filename)
    idx = VectorIndex.create(run.file(INDEX_DIR), dim, backend=backend, **params)
    with Progress(f"index ({backend})", total=n) as p:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            idx.add(read_ids(f["object_id"], start, stop), f["latent"][start:stop])
            p.advance(stop - start)
    idx.persist()
    model_run = src.find("train")  # through an export run when the latents came from ONNX
    run.record(n_objects=int(n), dim=int(dim), backend=backend, infer_run=str(src.path.resolve()),
               model_run=str(model_run.path.resolve()) if model_run else None)
    log.info("indexed %d vectors of length %d with %s", n, dim, backend)
