"""Benchmark `anomaly`: how well the ranking finds the synthetic survey's injected oddities, and how long
scoring takes at scale.

    .venv/bin/python benchmarks/bench_anomaly.py                      # quality on 5k objects; time at 100k
    .venv/bin/python benchmarks/bench_anomaly.py --survey 20000 --sizes 100000 1000000 --device cuda

Quality: a synthetic survey (libhyrax.data.synthetic, 5% injected rings, arcs, mergers, trails, hot
pixels, point sources) whose latents are a 16-component PCA of the asinh-stretched pixels and whose
recon_error is that PCA's reconstruction error (a linear autoencoder: no training needed); printed are
precision@K (K = anomaly.top_k) and ROC AUC of each method against `is_anomaly`, next to random (the
injected fraction). Speed: the `anomaly` stage (combined: exact knn + recon_error + isolation forest) on N
random 64-d latents, written as an infer run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from libhyrax.config import load_config
from libhyrax.hdf5 import write_arrays
from libhyrax.results import new_run


def survey_quality(n: int, root: Path, device: str) -> dict:
    from sklearn.decomposition import PCA

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.verbs.anomaly import anomaly

    path = generate_survey(root / "survey.h5", n=n, size=32, seed=7)
    with h5py.File(path, "r") as f:
        ids = f["object_id"][:].astype(str)
        pixels = np.arcsinh(f["images"][:] / 0.1).reshape(n, -1)
    pca = PCA(16, random_state=0).fit(pixels)
    latents = pca.transform(pixels).astype(np.float32)
    recon = ((pca.inverse_transform(latents) - pixels) ** 2).mean(1).astype(np.float32)
    cfg = load_config(data={
        "general": {"results_dir": str(root / "results"), "device": device},
        "data_request": {"infer": {"survey": {"dataset_class": "HyraxHDF5Dataset", "data_location": str(path),
                                              "fields": ["image", "object_id", "is_anomaly", "anomaly_kind"],
                                              "primary_id_field": "object_id"}}}})
    with new_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), ids, latent=latents, recon_error=recon)
    res = anomaly(cfg, from_run=run.path)
    return json.loads((res.path / "evaluation.json").read_text())


def scoring_time(n: int, root: Path, device: str) -> dict:
    from libhyrax.verbs.anomaly import anomaly

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 64)).astype(np.float32) * 3
    latents = centres[rng.integers(0, 200, n)] + rng.normal(size=(n, 64)).astype(np.float32)
    cfg = load_config(data={"general": {"results_dir": str(root / f"results-{n}"), "device": device}})
    with new_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), np.char.add("obj_", np.arange(n).astype(str)), latent=latents,
                     recon_error=rng.random(n).astype(np.float32))
    out = {"n": n}
    for method in ("knn", "isolation_forest", "combined"):
        t0 = time.perf_counter()
        anomaly(cfg, from_run=run.path, method=method, overrides=["anomaly.batch_size=16384"])
        out[f"{method}_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", type=int, default=5000, help="objects in the synthetic survey (0: skip)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000], help="N for the scoring time")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="hyrax-bench-anomaly-") as tmp:
        if args.survey:
            ev = survey_quality(args.survey, Path(tmp), args.device)
            results["quality"] = ev
            print(f"synthetic survey: {ev['n_objects']} objects, {ev['n_anomalies']} injected "
                  f"(random precision = {ev['fraction']:.3f}); K = {ev['k']}")
            for name in ("score", "knn", "recon_error", "isolation_forest"):
                m = ev[name]
                label = "combined" if name == "score" else name
                print(f"  {label:17s} precision@{ev['k']} {m['precision_at_k']:.3f}  "
                      f"precision@{ev['n_anomalies']} {m['precision_at_n_anomalies']:.3f}  ROC AUC {m['roc_auc']:.3f}")
        results["timing"] = []
        for n in args.sizes:
            t = scoring_time(n, Path(tmp), args.device)
            results["timing"].append(t)
            print(f"scoring N={n:,} x 64: knn {t['knn_s']:.1f} s, isolation forest {t['isolation_forest_s']:.1f} s, "
                  f"combined {t['combined_s']:.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
