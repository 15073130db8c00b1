"""`umap`: map latents to 2-D (or `n_components`) with UMAP or PCA, writing `embedding.h5`.

    hyrax infer | hyrax umap                                   # the newest infer run, fitted here
    hyrax umap --from results/<infer-run> --set reduce_dimensions.algorithm=pca
    hyrax umap --from results/<new-infer-run> --reducer results/<umap-run>    # reuse a fitted map
    sbatch --array=0-9 --wrap 'hyrax umap --from results/<infer-run>'       # 10 shards, one directory
    libhyrax.umap(from_run=latents)                            # in a notebook

The reducer is fitted on a seeded random sample of `fit_sample_size` objects (UMAP's cost grows with the
points it is fitted on; mapping the rest through the fitted model is what scales), then every object is
transformed in batches by spawned worker processes (UMAP's threads hang after a fork) and written in input
order, streaming: memory stays constant in the number of objects. How much of the latents' neighbourhoods
the map keeps (libhyrax.reducers.fidelity, on a seeded sample of `fidelity_sample_size`) is recorded in
provenance.json's stage_info.fidelity and shown on the `visualize` page. Rows whose latent vector holds NaN or
inf are dropped from the embedding, counted in provenance.json and named in the log.

In a sharded run every task fits the same seeded model (or loads `--reducer`) and maps its share of rows.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from libhyrax import atomic, hdf5
from libhyrax.errors import DataError
from libhyrax.latents import Embedding
from libhyrax.log import Progress
from libhyrax.reducers import REDUCER_FILE, Reducer, make_reducer
from libhyrax.results import check_run
from libhyrax.start import start_run

log = logging.getLogger("hyrax.umap")
BUILT_IN = ("umap", "pca")


def umap(config=None, *, from_run=None, reducer=None, shard=None, resume=None, run_name=None,
         overrides=()) -> Embedding:
    """Reduce the latents of an infer run (`from_run`, else the newest) to `embedding.h5`.

    `reducer`: a umap results directory (or a `reducer.pkl`) whose fitted reducer to reuse instead of
    fitting one. `shard`: "I/N" (else the Slurm array task's share); `resume`: a sharded run to rerun a
    shard into; `run_name`: the shared directory's name for a plain loop of shards.
    """
    plan = start_run(
        "umap", config, overrides, from_run=from_run, resume=resume, shard=shard, run_name=run_name
    )
    cfg, src = plan.config, plan.input.path
    reducer = plan.recorded("--reducer", reducer, "umap")  # a resumed run: the reducer it started with
    latents = hdf5.result_file(src, "latents", rerun_hint=f"hyrax infer --shard {{shard}} --resume {src}")
    with plan.open(key=[src.resolve(), reducer]) as run:
        run.add_upstream(src)
        run.add_input(latents)
        red = _fitted_reducer(cfg, latents, reducer, run)
        run.record(fidelity=map_fidelity(red, latents, cfg))
        start, stop = run.rows(n_rows(latents))
        stats = transform_file(red, latents, run.output("embedding"), start, stop, cfg["reduce_dimensions"])
        run.record(algorithm=type(red).name or type(red).__name__, **stats)
    return Embedding(run.path)


def n_rows(latents: Path) -> int:
    with hdf5.open_result(latents.parent, latents.stem) as f:
        return int(f["object_id"].shape[0])


def _fitted_reducer(cfg: dict, latents: Path, reducer_from, run) -> Reducer:
    rd = cfg["reduce_dimensions"]
    if reducer_from:
        path = Path(reducer_from)
        if path.is_dir():
            check_run(path, "umap")
            run.add_upstream(path)
        red = Reducer.load(path, cfg["general"]["trusted_runs"])
        log.info("using the fitted reducer %r from %s", red, path)
        return red
    algorithm = rd["algorithm"]
    kwargs = dict(rd.get(algorithm, {}).get("kwargs", {}))
    if algorithm in BUILT_IN:
        kwargs.setdefault("random_state", cfg["general"]["seed"])
    red = make_reducer(algorithm, kwargs)
    sample, n_total = fit_sample(latents, rd["fit_sample_size"], cfg["general"]["seed"])
    log.info("fitting %r on a seeded sample of %d of %d objects", red, len(sample), n_total)
    t0 = time.perf_counter()
    red.fit(sample)
    run.record(fit_sample_size=len(sample), fit_seconds=round(time.perf_counter() - t0, 3))
    if not (run.path / REDUCER_FILE).exists():
        red.save(run.file(REDUCER_FILE))  # in a sharded run, the first task to get here saves it
    return red


def map_fidelity(red: Reducer, latents: Path, cfg: dict) -> dict | None:
    """How much of the latents' 10-NN neighbourhoods the map keeps, on a seeded sample of
    `fidelity_sample_size` objects (bounded cost; libhyrax.reducers.fidelity); None when 0 or too few."""
    size = int(cfg["reduce_dimensions"]["fidelity_sample_size"])
    if size <= 0:
        return None
    from libhyrax.reducers.fidelity import neighbourhood_fidelity

    x, _ = fit_sample(latents, size, cfg["general"]["seed"] + 1)  # not the fit sample's seed: a fresh draw
    fidelity = neighbourhood_fidelity(x, red.transform(x))
    if fidelity:
        log.info(
            "the map keeps %.0f%% of the latents' %d nearest neighbours (trustworthiness %.3f; %d objects)",
            100 * fidelity["knn_overlap"],
            fidelity["k"],
            fidelity["trustworthiness"],
            fidelity["n"],
        )
    return fidelity


def fit_sample(latents: Path, size: int, seed: int) -> tuple[np.ndarray, int]:
    """A seeded random sample of (finite) latent rows, read as sorted contiguous runs."""
    with hdf5.open_result(latents.parent, latents.stem) as f:
        ds = f["latent"]
        n = ds.shape[0]
        if n == 0:
            raise DataError(f"{latents} holds no objects; nothing to reduce")
        rows = np.sort(np.random.default_rng(seed).choice(n, size=min(int(size), n), replace=False))
        x = hdf5.read_rows(ds, rows)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        raise DataError(
            f"every sampled latent vector in {latents} is NaN or inf; check the infer run "
            f"(a model that diverged in training gives NaN latents)"
        )
    return x.astype(np.float32), n


# --- transforming, in spawned workers ---------------------------------------------------------------

_worker: dict = {}


def _init_worker(reducer_bytes: bytes, latents: str, threads: int) -> None:
    import pickle

    os.environ["NUMBA_NUM_THREADS"] = str(threads)  # before numba loads: workers x threads <= cores
    _worker["reducer"] = pickle.loads(reducer_bytes)
    path = Path(latents)
    _worker["file"] = hdf5.open_result(path.parent, path.stem)


def _transform_block(start: int, stop: int):
    f = _worker["file"]
    return _map_block(_worker["reducer"], f["latent"][start:stop], hdf5.read_ids(f["object_id"], start, stop))


def _map_block(red: Reducer, x: np.ndarray, ids: np.ndarray):
    ok = np.isfinite(x).all(axis=1)
    emb = red.transform(x[ok]) if ok.any() else np.empty((0, red.n_components), np.float32)
    return ids[ok], emb, ids[~ok]


def transform_file(red: Reducer, latents: Path, out: Path, start: int, stop: int, rd: dict) -> dict:
    """Map rows [start, stop) of `latents` into `out` (`/object_id`, `/embedding`), in input order."""
    batch, workers = int(rd["batch_size"]), int(rd["num_workers"])
    blocks = [(s, min(s + batch, stop)) for s in range(start, stop, batch)]
    with hdf5.open_result(latents.parent, latents.stem) as f:
        ds = f["latent"]
        if ds.ndim != 2:
            raise DataError(f"{latents}: /latent has shape {ds.shape}; a reducer needs (N, D) vectors")
        # a first pass counts the rows to drop, so the output is sized exactly (reading is cheap
        # next to transforming)
        n_bad = sum(int((~np.isfinite(ds[s:e]).all(axis=1)).sum()) for s, e in blocks)
        id_len = f["object_id"].dtype.itemsize
    n_good = stop - start - n_bad
    dropped: list[str] = []
    t0 = time.perf_counter()
    with (
        atomic.replacing(out) as tmp,
        hdf5.ArrayWriter(
            tmp,
            n_good,
            {"embedding": ((red.n_components,), "<f4")},
            id_length=id_len,
            attrs={"stage": "umap", "input_rows": stop - start},
        ) as w,
        Progress("umap", total=stop - start) as progress,
    ):
        for (s, e), (ids, emb, nan_ids) in zip(
            blocks, _map_blocks(red, latents, blocks, workers), strict=True
        ):
            w.append(ids, embedding=emb)
            dropped += list(nan_ids[: max(0, 5 - len(dropped))])
            progress.advance(e - s)
    if n_bad:
        log.warning(
            "dropped %d of %d objects whose latent vector holds NaN or inf (e.g. %s); they are not in %s",
            n_bad,
            stop - start,
            ", ".join(dropped),
            out.name,
        )
    return {
        "n_objects": n_good,
        "n_dropped_nonfinite": n_bad,
        "rows": [start, stop],
        "transform_seconds": round(time.perf_counter() - t0, 3),
    }


def _map_blocks(red: Reducer, latents: Path, blocks: list, workers: int):
    """The embedded blocks in order; at most 2 blocks per worker in flight, so memory stays flat."""
    if workers <= 0 or len(blocks) <= 1:
        with hdf5.open_result(latents.parent, latents.stem) as f:
            for s, e in blocks:
                yield _map_block(red, f["latent"][s:e], hdf5.read_ids(f["object_id"], s, e))
        return
    import pickle

    workers = min(workers, len(blocks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # UMAP's (numba/TBB) threads hang in a forked child
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "hyrax-numba"))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(pickle.dumps(red), str(latents), threads)
    ) as pool:
        pending = []
        todo = iter(blocks)
        for s, e in todo:
            pending.append(pool.submit(_transform_block, s, e))
            if len(pending) >= 2 * workers:
                break
        while pending:
            yield pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_transform_block, *nxt))
