"""Benchmark the labelling loop (`rank`) on the synthetic survey's ground truth: a simulated user who finds
only rings, arcs and mergers interesting (not trails, hot pixels or point sources) labels what the
ranking shows; how quickly do interesting objects rise to the top?

    .venv/bin/python benchmarks/bench_active.py                     # 20k objects, 5 rounds of 20 labels
    .venv/bin/python benchmarks/bench_active.py --survey 5000 --rounds 3 --seed 1
    .venv/bin/python benchmarks/bench_active.py --survey 0 --sizes 1000000   # rank time at 1M objects

The survey (libhyrax.data.synthetic, 5% injected anomalies of six kinds) gets latents from a 16-component
PCA of the asinh-stretched pixels and recon_error from that PCA's reconstruction (a linear autoencoder,
as bench_anomaly.py), then the `anomaly` stage ranks it (combined). Each round the user is shown the top
`--per-round` objects not labelled yet (round 1: the anomaly ranking's; later: the last `rank` run's
top_candidates.csv), labels them 5 (ring, arc, merger) or 0 (anything else) into one growing label
file, and the real `rank` stage runs again on it. Printed per round: precision@50 of the objects it
lists next (top_candidates.csv: not labelled yet, so each is a new find), how many interesting objects
the user has found so far, and the model's cross-validated agreement with the labels (ranking.json).
"unsupervised" is the anomaly ranking's precision@50 for the interesting kinds; "random" is their
fraction of the survey. Speed (--sizes): the `rank` stage on N random 64-d latents with an anomaly run
and 100 labels.

Measured (2 CPU cores shared with other jobs, load 2-6):
    20k objects, seed 7: precision@50 after 0/1/3/5 rounds 0.08 / 0.38 / 0.74 / 0.96 (random 0.026);
        72 of the 100 objects labelled were interesting; rank about 1 s a round
    seeds 1-7 after 5 rounds: 0.84 0.92 0.90 0.98 0.76 0.78 0.96 (mean 0.88; the anomaly ranking 0.04-0.18)
    rank, 1M x 64-d, 100 labels: 10.7-11.9 s (the trees' predictions about 5.5 s of it), peak RSS 0.9 GB
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from libhyrax.config import load_config
from libhyrax.hdf5 import open_result, read_ids, write_arrays
from libhyrax.runs import open_run

INTERESTING = ("ring", "arc", "merger")


def survey_runs(n: int, root: Path, seed: int) -> tuple[dict, Path, dict[str, str]]:
    """A synthetic survey, its PCA latents as an infer run, and the anomaly stage's ranking of them;
    the config, the anomaly run, and each object's anomaly kind (the ground truth)."""
    from sklearn.decomposition import PCA

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.stages.anomaly import anomaly

    path = generate_survey(root / "survey.h5", n=n, size=32, seed=seed)
    with h5py.File(path, "r") as f:
        ids = f["object_id"][:].astype(str)
        pixels = np.arcsinh(f["images"][:] / 0.1).reshape(n, -1)
        kind = f["catalog/anomaly_kind"][:].astype(str)
    pca = PCA(16, random_state=0).fit(pixels)
    latents = pca.transform(pixels).astype(np.float32)
    recon = ((pca.inverse_transform(latents) - pixels) ** 2).mean(1).astype(np.float32)
    cfg = load_config(data={
        "general": {"results_dir": str(root / "results")},
        "data_request": {"infer": {"survey": {"dataset_class": "HyraxHDF5Dataset", "data_location": str(path),
                                              "fields": ["image", "object_id", "anomaly_kind"],
                                              "primary_id_field": "object_id"}}}})
    with open_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), ids, latent=latents, recon_error=recon)
    return cfg, anomaly(cfg, from_run=run.path).path, dict(zip(ids, kind, strict=True))


def ranked_ids(run: Path) -> np.ndarray:
    """Every object of a run's scores.h5, best first."""
    with open_result(run, "scores") as f:
        ids, score = read_ids(f["object_id"]), f["score"][:]
    return ids[np.argsort(-score, kind="stable")]


def candidates(run: Path) -> list[str]:
    with open(run / "top_candidates.csv", newline="") as f:
        return [row["object_id"] for row in csv.DictReader(f)]


def precision(ids, kind: dict[str, str], k: int = 50) -> float:
    return float(np.mean([kind[i] in INTERESTING for i in list(ids)[:k]]))


def loop(
    cfg: dict, anomaly_run: Path, kind: dict[str, str], rounds: int, per_round: int, root: Path
) -> list[dict]:
    """The simulated user's rounds; one dict per round (round 0: the anomaly ranking)."""
    from libhyrax.stages.rank import rank

    labels = root / "labels.csv"
    labelled: dict[str, int] = {}
    shown = [i for i in ranked_ids(anomaly_run)]  # round 0: the unsupervised ranking
    out = [{"round": 0, "precision_at_50": precision(shown, kind), "labels": 0, "found": 0}]
    for r in range(1, rounds + 1):
        for object_id in [i for i in shown if i not in labelled][:per_round]:
            labelled[object_id] = 5 if kind[object_id] in INTERESTING else 0
        labels.write_text("object_id,label\n" + "".join(f"{i},{v}\n" for i, v in labelled.items()))
        t0 = time.perf_counter()
        run = rank(cfg, from_run=anomaly_run, labels=[labels]).path
        seconds = time.perf_counter() - t0
        shown = candidates(run)
        learned = json.loads((run / "ranking.json").read_text())
        out.append(
            {
                "round": r,
                "precision_at_50": precision(shown, kind),
                "labels": len(labelled),
                "found": sum(v == 5 for v in labelled.values()),
                "cv_roc_auc": learned["model"]["cross_validation"]["roc_auc"],
                "rank_s": seconds,
            }
        )
    return out


def rank_time(n: int, root: Path, n_labels: int = 100) -> float:
    """Seconds of one `rank` run on n random 64-d latents (an anomaly run's scores, n_labels labels)."""
    from libhyrax.stages.rank import rank

    rng = np.random.default_rng(0)
    ids = np.char.add("obj_", np.arange(n).astype(str))
    cfg = load_config(data={"general": {"results_dir": str(root / f"results-{n}")}})
    with open_run("infer", cfg) as infer:
        write_arrays(infer.file("latents.h5"), ids, latent=rng.normal(size=(n, 64)).astype(np.float32))
    with open_run("anomaly", cfg) as scores:
        scores.add_upstream(infer.path)
        write_arrays(scores.file("scores.h5"), ids, score=rng.random(n).astype(np.float32))
    pick = rng.choice(n, n_labels, replace=False)
    (root / "labels.csv").write_text(
        "object_id,label\n" + "".join(f"{ids[i]},{5 * (j % 2)}\n" for j, i in enumerate(pick))
    )
    t0 = time.perf_counter()
    rank(cfg, from_run=scores.path, labels=[root / "labels.csv"])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", type=int, default=20000, help="objects in the synthetic survey (0: skip)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=20, help="objects the simulated user labels per round")
    ap.add_argument("--seed", type=int, default=7, help="the survey's seed")
    ap.add_argument("--sizes", type=int, nargs="*", default=[], help="N for the rank stage's time")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="hyrax-bench-active-") as tmp:
        for n in args.sizes:
            seconds = rank_time(n, Path(tmp))
            results.setdefault("timing", []).append({"n": n, "rank_s": seconds})
            print(f"rank, N={n:,} x 64, 100 labels: {seconds:.1f} s", flush=True)
        if args.survey:
            cfg, anomaly_run, kind = survey_runs(args.survey, Path(tmp), args.seed)
            interesting = float(np.mean([k in INTERESTING for k in kind.values()]))
            print(
                f"synthetic survey: {args.survey:,} objects, {interesting:.2%} interesting "
                f"({', '.join(INTERESTING)})"
            )
            rounds = loop(cfg, anomaly_run, kind, args.rounds, args.per_round, Path(tmp))
            results |= {"survey": args.survey, "seed": args.seed, "random": interesting, "rounds": rounds}
            for r in rounds:
                extra = (
                    f"  labels {r['labels']:3d}, interesting found {r['found']:3d}, cross-validated ROC AUC "
                    f"{r['cv_roc_auc'] if r['cv_roc_auc'] is None else round(r['cv_roc_auc'], 3)}, "
                    f"rank {r['rank_s']:.1f} s"
                    if r["round"]
                    else "  (the anomaly ranking)"
                )
                print(f"round {r['round']}: precision@50 {r['precision_at_50']:.2f}{extra}")
            last, first = rounds[-1]["precision_at_50"], rounds[0]["precision_at_50"]
            print(
                f"precision@50 after {args.rounds} rounds: {last:.2f} (unsupervised: {first:.2f}, "
                f"random: {interesting:.3f})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
