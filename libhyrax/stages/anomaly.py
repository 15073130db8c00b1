"""`anomaly`: rank every object of an infer run by how unusual it is.

    hyrax train | hyrax infer | hyrax anomaly --show        # prints the top anomalies to stderr
    hyrax anomaly --method knn --from results/<infer-run>
    libhyrax.anomaly(from_run=latents_run)                  # a notebook

Writes `scores.h5` (/object_id, /score, and one array per method), `top_anomalies.csv` (the top
`anomaly.top_k` with their scores and catalog columns), and, when the data has an `is_anomaly` catalog
column (the synthetic survey), `evaluation.json`: precision@K and ROC AUC of each method against it.
Latents are scored in batches of `anomaly.batch_size`. The knn method searches each object's neighbours
among a seeded sample of `anomaly.knn_sample_size` objects (100k; all of them when there are fewer): N x
100k distances and memory for the sample alone, so time grows as N and memory stays flat. With
knn_sample_size = 0 it is exact, all against all, N^2 distances (all latents in memory): 100k objects take
about 20 s on 2 idle CPU cores, 1M about 32 min (a GPU is far faster; --shard splits the rows across
tasks). Through an index run (--set anomaly.knn_source=index) the time grows as N log N
(benchmarks/bench_anomaly.py). With knn_source = "auto" (the default) the knn score searches a FAISS
index of these latents when there is one (an index run that read them; `hyrax index` builds one above 1M
latents) and the sample would leave objects out: at 100k x 64 it scored like exact knn (Spearman 0.998,
top 1% shared 0.97) in 34 CPU-s with its build, where a 10% sample took 11 CPU-s and ranked worse
(Spearman 0.90, top 1% shared 0.58) and exact knn 78 CPU-s (docs/scale.md).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from libhyrax.errors import DataError, HyraxError, UsageError, unknown_choice
from libhyrax.hdf5 import IdIndex, no_data_rows, open_result, read_ids, write_arrays
from libhyrax.log import Progress
from libhyrax.registry import is_import_path
from libhyrax.results import Result, find_run
from libhyrax.rundir import INDEX_DIR
from libhyrax.scorers import COMBINED, SCORERS, Scorer, combine_by_rank, precision_at_k, roc_auc
from libhyrax.sharding import Shard
from libhyrax.start import Given, start_run
from libhyrax.tables import catalog_rows, write_table

log = logging.getLogger("hyrax.anomaly")
TRUTH_COLUMN = "is_anomaly"
RAW_STEM = "raw_scores"  # a sharded run's per-shard method scores


def anomaly(config=None, *, from_run: str | os.PathLike | None = None, method: str | None = None,
            index_run: str | os.PathLike | None = None, shard: str | Shard | None = None,
            run_name: str | None = None, resume: str | os.PathLike | None = None, overrides=()) -> Result:
    """Score every object of an infer run (`from_run`, else the newest). `method`: "combined", a
    registered scorer's name or a Scorer's import path (default anomaly.method). `index_run`: the index
    run the knn score searches when anomaly.knn_source = "index" (else the newest index run of these
    latents). `shard`: "I/N" (default: the Slurm array task's share): each shard scores its rows into
    `raw_scores.shard-*.h5` of one shared directory, and the task that completes the set writes
    scores.h5 and top_anomalies.csv. `resume`: the shared directory of a sharded run, to rerun a failed
    shard into."""
    plan = start_run(
        "anomaly",
        config,
        overrides,
        from_run=from_run,
        resume=resume,
        shard=shard,
        run_name=run_name,
        given=[Given("--method", "anomaly.method", method)],
    )
    cfg = plan.config
    index_run = plan.recorded("--index", index_run, "index")  # a resumed run: the index it started with
    acfg = cfg["anomaly"]
    method = acfg["method"]
    if method != COMBINED and method not in SCORERS and not is_import_path(method):
        raise UsageError(unknown_choice("anomaly method", method, [COMBINED, *SCORERS]))
    src = plan.input
    with open_result(src.path, "latents") as f:
        n = f["object_id"].shape[0]
        if n == 0:
            raise DataError(f"{src} holds no latents (0 objects): nothing to score")
        classes = scorer_classes(method, f)
        wants_index = any(c.wants_index(cfg) for c in classes.values())
        index = _knn_index(src, cfg, index_run, n) if wants_index else None
        scorers = make_scorers(classes, cfg, f, index)
        with plan.open(key=[src.path.resolve()]) as run:
            run.add_upstream(src.path)
            if index is not None:
                run.add_upstream(index.path.parent)
            run.add_input(f.filename)
            start, stop = run.rows(n)
            raw = score_all(scorers, f, int(acfg["batch_size"]), start, stop)
            if run.shard is None:
                _finish(run, cfg, src, method, read_ids(f["object_id"]), raw, no_data_rows(f))
            else:  # each shard writes its raw scores; the task that completes the set ranks them all together
                write_arrays(run.output(RAW_STEM), read_ids(f["object_id"], start, stop), **raw)
                if run.shards_complete(RAW_STEM):
                    with open_result(run.path, RAW_STEM) as r:
                        _finish(
                            run,
                            cfg,
                            src,
                            method,
                            read_ids(r["object_id"]),
                            {m: r[m][:] for m in raw},
                            no_data_rows(f),
                        )
    return Result(run.path)


def scorer_classes(method: str, f) -> dict[str, type[Scorer]]:
    """The scorers `method` names, by name: one (a registered name or an import path), or for "combined"
    every registered scorer whose inputs (`needs`) the latents file `f` holds."""
    if method == COMBINED:
        return {name: SCORERS[name] for name in SCORERS if all(a in f for a in SCORERS[name].needs)}
    cls = SCORERS.lookup(method)
    missing = [a for a in cls.needs if a not in f]
    if missing:
        others = [n for n in SCORERS if all(a in f for a in SCORERS[n].needs)]
        raise DataError(
            f"{f.filename} has no /{missing[0]} (the model gives none), which the {method} score "
            f"needs; use --method {' or '.join(others) or COMBINED}"
        )
    return {method: cls}


def _knn_index(src: Result, cfg: dict, index_run, n: int):
    """The index the knn score searches: for knn_source "index", the index run's; for "auto", a faiss
    index of these latents when the knn sample would leave objects out and one exists; else None (exact)."""
    acfg = cfg["anomaly"]
    if acfg["knn_source"] == "index":
        return _index_of(src, cfg, index_run)
    if acfg["knn_source"] != "auto" or not 0 < int(acfg["knn_sample_size"]) < n:
        return None
    try:
        run = find_run("index", cfg, index_run, reading=src.path)
        meta = json.loads((run.file(INDEX_DIR) / "index.json").read_text(encoding="utf-8"))
    except (UsageError, OSError, ValueError):
        return None
    if meta.get("backend") != "faiss":
        return None
    log.info("knn: searching the faiss index of %s (anomaly.knn_source = auto)", run.path)
    return _index_of(src, cfg, run.path)


def _index_of(src: Result, cfg: dict, index_run=None):
    """The vector index of these latents (an index of another infer run would score against other
    objects): `index_run`, else the newest index run that read `src`."""
    from libhyrax.vector_index import VectorIndex

    index_dir = find_run("index", cfg, index_run, reading=src.path).file(INDEX_DIR)
    return VectorIndex.open(index_dir, cfg["general"]["trusted_runs"])


def make_scorers(classes: dict[str, type[Scorer]], cfg: dict, f, index=None) -> dict[str, Scorer]:
    """The scorers, built from the config and fitted on the latents of `f`. `index`: the vector index a
    scorer searches (anomaly.knn_source = "index" for knn)."""
    scorers = {name: cls.from_config(cfg, index) for name, cls in classes.items()}
    for name, s in scorers.items():
        log.info("fitting %s", name)
        s.fit(f["latent"])
    return scorers


def score_all(
    scorers: dict[str, Scorer], f, batch_size: int, first: int = 0, last: int | None = None
) -> dict[str, np.ndarray]:
    """Each scorer's score of objects first..last, reading contiguous batches."""
    last = f["object_id"].shape[0] if last is None else last
    out = {name: np.empty(last - first, np.float32) for name in scorers}
    with Progress("anomaly", total=last - first) as p:
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            batch = {"latent": f["latent"][start:stop], "rows": np.arange(start, stop)}
            if "recon_error" in f:
                batch["recon_error"] = f["recon_error"][start:stop]
            for name, s in scorers.items():
                out[name][start - first : stop - first] = np.asarray(s.score(batch), np.float32)
            p.advance(stop - start)
    return out


def _finish(
    run, cfg: dict, src: Result, method: str, ids: np.ndarray, raw: dict[str, np.ndarray], no_data: np.ndarray
) -> None:
    score = combine_by_rank(raw) if method == "combined" else raw[method]
    score, raw = unscored(score, no_data), {m: unscored(v, no_data) for m, v in raw.items()}
    if no_data.any():
        log.warning(
            "%d object(s) have a band with no finite pixel (e.g. %s): not scored (NaN in scores.h5) "
            "and left out of top_anomalies.csv",
            int(no_data.sum()),
            ", ".join(ids[no_data][:10]),
        )
    write_arrays(run.file("scores.h5"), ids, attrs={"method": method}, score=score, **raw)
    scored = np.flatnonzero(~no_data)
    top_k = min(int(cfg["anomaly"]["top_k"]), len(scored))
    top = scored[np.argsort(-score[scored], kind="stable")[:top_k]]
    table = {"rank": np.arange(1, top_k + 1), "object_id": ids[top], "score": score[top]}
    if method == "combined":
        table |= {name: values[top] for name, values in raw.items()}
    group = (
        src.data_group()
    )  # the data of the latents: catalog columns and, for the synthetic survey, the truth
    table |= {c: v for c, v in catalog_rows(group, ids[top], rows=top).items() if c not in table}
    write_table(run.file("top_anomalies.csv"), table)
    evaluation = evaluate(
        group, ids[scored], {k: v[scored] for k, v in {"score": score, **raw}.items()}, top_k
    )
    if evaluation:
        (run.file("evaluation.json")).write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        log.info(
            "against %s: precision@%d = %.3f (random: %.3f), ROC AUC = %.3f",
            TRUTH_COLUMN,
            top_k,
            evaluation["score"]["precision_at_k"],
            evaluation["fraction"],
            evaluation["score"]["roc_auc"],
        )
    run.record(
        n_objects=len(ids),
        method=method,
        methods=list(raw),
        top_k=top_k,
        evaluation=evaluation or None,
        no_data_objects=int(no_data.sum()),
    )


def unscored(score: np.ndarray, no_data: np.ndarray) -> np.ndarray:
    """`score` with NaN for the objects without data: a blank image's latent would score as ordinary."""
    return np.where(no_data, np.float32(np.nan), score).astype(score.dtype) if no_data.any() else score


def evaluate(group, ids: np.ndarray, scores: dict[str, np.ndarray], k: int) -> dict:
    """Precision@k and ROC AUC of each score against the data group's `is_anomaly` column ({} without one)."""
    if group is None:
        return {}
    try:
        if TRUTH_COLUMN not in group.catalog_columns():
            return {}
        rows = IdIndex(group.object_ids()).rows(ids)
        truth = np.asarray(group.catalog(TRUTH_COLUMN))[np.maximum(rows, 0)].astype(bool) & (rows >= 0)
    except HyraxError as e:
        log.warning("no evaluation against %s: %s", TRUTH_COLUMN, e)
        return {}
    out: dict = {
        "truth_column": TRUTH_COLUMN,
        "k": k,
        "n_objects": len(ids),
        "n_anomalies": int(truth.sum()),
        "fraction": float(truth.mean()),
    }
    for name, s in scores.items():
        out[name] = {
            "precision_at_k": precision_at_k(s, truth, k),
            "roc_auc": roc_auc(s, truth),
            "precision_at_n_anomalies": precision_at_k(s, truth, int(truth.sum())),
        }
    return out
