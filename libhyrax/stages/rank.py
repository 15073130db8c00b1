"""`rank`: re-rank every object by what the user labelled interesting (Astronomaly's loop): a model of
the labels, fitted on the labelled latents, combined with the unsupervised anomaly score.

    hyrax anomaly | hyrax rank --labels labels.csv --show      # labels.csv: saved from the map
    hyrax rank --labels round1.csv --labels round2.csv --set rank.exploration=0.5
    hyrax rank --from results/<infer-run> --labels labels.csv  # no anomaly run: the labels alone rank
    sbatch --array=0-9 --wrap 'hyrax rank --from results/<anomaly-run> --labels labels.csv'
    ranked = libhyrax.rank(labels=["labels.csv"])               # a notebook

Reads an anomaly run (its scores and, through its lineage, the infer run's latents), or an infer run
(then the newest anomaly run of its latents, if any). A label file is a CSV with object_id and label
(0..5 or yes/no) columns (libhyrax.labels: ids not in the run are counted and left out; the newest label
of an object wins). The model (libhyrax.ranking) is fitted on the labelled objects and a seeded sample
of `rank.fit_sample_size`; `rank.exploration` trades more of what was liked against unusual objects far
from every label. Every object is then scored in batches of `rank.batch_size` (--shard splits them).

Writes `scores.h5` (/object_id, /score, /interest, /novelty, /anomaly, /label: NaN where unlabelled),
`top_candidates.csv` (the `rank.top_k` best objects not labelled yet, with catalog columns: what to
look at next), `labels.csv` (the labels used, one per object: pass it with new ones to the next round),
and `ranking.json` (what the model learned: its cross-validated agreement with the labels, the labels'
counts, what was left out).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import IdIndex, no_data_rows, open_result, read_ids, write_arrays
from libhyrax.labels import LABEL_MAX, Labels, keep_known, read_labels
from libhyrax.log import Progress
from libhyrax.ranking import LabelModel, rank_percentile
from libhyrax.results import Result, find_run
from libhyrax.sharding import Shard
from libhyrax.start import Given, start_run
from libhyrax.tables import catalog_rows, write_table

log = logging.getLogger("hyrax.rank")
RAW_STEM = "raw_ranking"  # a sharded run's per-shard scores
COLUMNS = ("score", "interest", "novelty", "anomaly")


def rank(
    config=None,
    *,
    from_run: str | os.PathLike | None = None,
    labels=(),
    shard: str | Shard | None = None,
    run_name: str | None = None,
    resume: str | os.PathLike | None = None,
    overrides=(),
) -> Result:
    """Rank every object of an anomaly or infer run (`from_run`, else the newest anomaly run, else the
    newest infer run) by the `labels` files (added to rank.labels). `shard`: "I/N" (default: the Slurm
    array task's share): each shard scores its rows and the task that completes the set writes the
    outputs. `resume`: the shared directory of a sharded run, to rerun a failed shard into."""
    labels = [str(Path(p).expanduser().resolve()) for p in labels] or None
    plan = start_run(
        "rank",
        config,
        overrides,
        from_run=from_run,
        resume=resume,
        shard=shard,
        run_name=run_name,
        given=[Given("--labels", "rank.labels", labels, add=True)],
    )
    cfg, src = plan.config, plan.input
    cfg["rank"]["labels"] = [str(Path(p).expanduser().resolve()) for p in cfg["rank"]["labels"]]
    rcfg = cfg["rank"]
    infer_run = src.require("infer")
    scores_run = src if src.stage == "anomaly" else _anomaly_of(infer_run, cfg)
    with open_result(infer_run.path, "latents") as f:
        ids = read_ids(f["object_id"])
        if len(ids) == 0:
            raise DataError(f"{infer_run} holds no latents (0 objects): nothing to rank")
        labelled = keep_known(read_labels(rcfg["labels"]), ids)  # bad labels fail before a run is made
        no_data = no_data_rows(f)
        anomaly = anomaly_percentile(scores_run, ids)
        with plan.open(key=[src.path.resolve()]) as run:
            for upstream in dict.fromkeys(r.path for r in (src, infer_run, scores_run) if r is not None):
                run.add_upstream(upstream)  # the infer run too: visualize finds this ranking of its latents
            for path in rcfg["labels"]:
                run.add_input(path)
            model, interest = fit_model(cfg, f["latent"], ids, labelled)
            start, stop = run.rows(len(ids))
            out = score_rows(model, f["latent"], anomaly, int(rcfg["batch_size"]), start, stop)
            if run.shard is None:
                _finish(run, cfg, infer_run, scores_run, ids, out, labelled, model, interest, no_data)
            else:  # each shard writes its rows; the task that completes the set writes the outputs
                write_arrays(run.output(RAW_STEM), ids[start:stop], **out)
                if run.shards_complete(RAW_STEM):
                    with open_result(run.path, RAW_STEM) as r:
                        out = {c: r[c][:] for c in COLUMNS}
                    _finish(run, cfg, infer_run, scores_run, ids, out, labelled, model, interest, no_data)
    return Result(run.path)


def _anomaly_of(infer_run: Result, cfg: dict) -> Result | None:
    try:
        return find_run("anomaly", cfg, reading=infer_run.path)
    except UsageError:
        log.warning(
            "no anomaly run of %s: the labels alone rank the objects (run `hyrax anomaly` first to "
            "combine them with how unusual each object is)",
            infer_run.path.name,
        )
        return None


def anomaly_percentile(scores_run: Result | None, ids: np.ndarray) -> np.ndarray:
    """Each object's anomaly score as a rank percentile (1 = most unusual), joined by id; all 1 without
    an anomaly run; 0 for an object the anomaly run did not score."""
    if scores_run is None:
        return np.ones(len(ids), np.float32)
    with open_result(scores_run.path, "scores") as f:
        score_ids, score = read_ids(f["object_id"]), f["score"][:]
    if len(score_ids) == len(ids) and np.array_equal(score_ids, ids):
        return rank_percentile(score)
    rows = IdIndex(score_ids).rows(ids)
    if (rows < 0).any():
        log.warning(
            "%d objects have no anomaly score in %s; they rank as the most ordinary",
            int((rows < 0).sum()),
            scores_run.path.name,
        )
    return np.where(rows >= 0, rank_percentile(score)[np.maximum(rows, 0)], 0).astype(np.float32)


def fit_model(cfg: dict, latent, ids: np.ndarray, labelled: Labels) -> tuple[LabelModel, np.ndarray]:
    """The label model, fitted on the labelled latents and a seeded sample of all; and the labels as
    interest (0..1) in the model's order."""
    rcfg, seed = cfg["rank"], int(cfg["general"]["seed"])
    rows = IdIndex(ids).rows(labelled.object_id)
    order = np.argsort(rows)  # h5py reads rows in increasing order
    x = np.asarray(latent[rows[order]], np.float32)
    interest = labelled.label[order] / LABEL_MAX
    n = len(ids)
    sample_rows = np.sort(
        np.random.default_rng(seed).choice(n, size=min(n, int(rcfg["fit_sample_size"])), replace=False)
    )
    sample = np.asarray(latent[sample_rows] if len(sample_rows) < n else latent[:], np.float32)
    model = LabelModel(
        float(rcfg["exploration"]), int(rcfg["n_estimators"]), seed, float(rcfg["positive_from"]) / LABEL_MAX
    )
    model.fit(x, interest, sample)
    if model.classes_ != "both":
        log.warning(
            "all %d labels say %s: the model can't learn what tells the two apart, so it ranks by %s "
            "(label some %s objects too)",
            len(x),
            model.classes_,
            "closeness to them" if model.classes_ == "interesting" else "distance from them",
            "boring" if model.classes_ == "interesting" else "interesting",
        )
    return model, interest


def score_rows(
    model: LabelModel, latent, anomaly: np.ndarray, batch_size: int, first: int, last: int
) -> dict:
    out = {c: np.empty(last - first, np.float32) for c in COLUMNS}
    with Progress("rank", total=last - first) as p:
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            scored = model.score(latent[start:stop], anomaly[start:stop])
            for c, v in (scored | {"anomaly": anomaly[start:stop]}).items():
                out[c][start - first : stop - first] = v
            p.advance(stop - start)
    return out


def _finish(
    run,
    cfg: dict,
    infer_run: Result,
    scores_run: Result | None,
    ids: np.ndarray,
    out: dict,
    labelled: Labels,
    model: LabelModel,
    interest: np.ndarray,
    no_data: np.ndarray,
) -> None:
    rcfg = cfg["rank"]
    if no_data.any():  # a blank image's latent: not ranked (NaN), never a candidate
        out = {c: np.where(no_data, np.float32(np.nan), v).astype(np.float32) for c, v in out.items()}
        log.warning(
            "%d object(s) have a band with no finite pixel (e.g. %s): not ranked (NaN in scores.h5), "
            "never a candidate",
            int(no_data.sum()),
            ", ".join(ids[no_data][:10]),
        )
    label = np.full(len(ids), np.nan, np.float32)
    label[IdIndex(ids).rows(labelled.object_id)] = labelled.label
    write_arrays(
        run.file("scores.h5"), ids, attrs={"exploration": float(rcfg["exploration"])}, label=label, **out
    )
    # what to look at next: the best objects nobody has labelled yet
    fresh = np.flatnonzero(np.isnan(label) & ~no_data)
    top = fresh[np.argsort(-out["score"][fresh], kind="stable")[: int(rcfg["top_k"])]]
    table = {"rank": np.arange(1, len(top) + 1), "object_id": ids[top]} | {c: out[c][top] for c in COLUMNS}
    group = infer_run.data_group()
    table |= {c: v for c, v in catalog_rows(group, ids[top], rows=top).items() if c not in table}
    write_table(run.file("top_candidates.csv"), table)
    labelled.save(run.file("labels.csv"))
    cv = model.cross_validate(model.labelled_, interest, int(rcfg["cv_folds"]))
    positive = labelled.interesting(float(rcfg["positive_from"]))
    learned = {
        "n_objects": len(ids),
        "anomaly_run": scores_run.path.name if scores_run else None,
        "labels": labelled.notes
        | {
            "used": len(labelled),
            "interesting": int(positive.sum()),
            "boring": int((~positive).sum()),
            "positive_from": float(rcfg["positive_from"]),
        },
        "model": {
            "kind": "extra trees" if model.classes_ == "both" else f"distance to the {model.classes_} labels",
            "n_estimators": model.n_estimators,
            "exploration": model.exploration,
            "novelty_scale": model.scale_,
            "cross_validation": cv,
        },
        "top_k": len(top),
    }
    run.file("ranking.json").write_text(json.dumps(learned, indent=2) + "\n", encoding="utf-8")
    if cv["roc_auc"] is not None:
        log.info(
            "the label model agrees with labels it did not see: ROC AUC %.3f, accuracy %.3f (%d-fold)",
            cv["roc_auc"],
            cv["accuracy"],
            cv["folds"],
        )
    else:
        log.info("no cross-validated agreement: %s", cv["why_none"])
    run.record(
        n_objects=len(ids),
        n_labels=len(labelled),
        n_interesting=int(positive.sum()),
        unknown_ids=labelled.notes.get("unknown_ids", 0),
        cross_validation=cv,
        exploration=model.exploration,
        top_k=len(top),
    )
