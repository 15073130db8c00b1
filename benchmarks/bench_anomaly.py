"""Benchmark `anomaly`: how well the ranking finds the synthetic survey's injected oddities, and how long
scoring takes at scale.

    .venv/bin/python benchmarks/bench_anomaly.py                      # quality on 5k objects; time at 100k
    .venv/bin/python benchmarks/bench_anomaly.py --survey 20000 --sizes 100000 1000000 --device cuda
    .venv/bin/python benchmarks/bench_anomaly.py --survey 0 --sizes 1000000 --methods knn --shard 1/64
    .venv/bin/python benchmarks/bench_anomaly.py --survey 0 --sizes 1000000 --data gaussian --methods knn \
        --knn-source index --index /tmp/idx/gaussian-1000000/chromadb --shard 1/100

Quality: a synthetic survey (libhyrax.data.synthetic, 5% injected rings, arcs, mergers, trails, hot
pixels, point sources) whose latents are a 16-component PCA of the asinh-stretched pixels and whose
recon_error is that PCA's reconstruction error (a linear autoencoder: no training needed); printed are
precision@K (K = anomaly.top_k) and ROC AUC of each method against `is_anomaly`, next to random (the
injected fraction). Speed: the `anomaly` stage (--methods: knn, isolation_forest, combined = exact knn +
recon_error + isolation forest) on N random 64-d latents (--data: the vectors of bench_search.py), written
as an infer run. Exact knn is all against all: N^2 distances, so at 1M on a CPU `--shard I/N` scores one
shard's rows with the stage's own sharding (fit included) and prints the time x N as the estimate for all.
`--knn-source index --index DIR` scores knn through an index folder built over the same vectors (e.g.
`bench_search.py --keep DIR`, ids obj_<row>). Peak RSS is the process's, data generation included.

Measured (2 CPU cores, 64-d, k = 10):
    exact knn, 100k (all rows, idle machine)             20 s             peak RSS 381 MB
    exact knn, 100k (all rows, load ~8 from other jobs)   142 s; isolation forest 15 s; combined 166 s
    exact knn, 1M, shard 1/64 (idle)                     30 s -> ~32 min for all rows, peak RSS 751 MB
    exact knn, 1M, shard 1/64 (load ~8)                  196 s -> ~3.5 h for all rows
    knn through ChromaDB (ef_search 800), 1M gaussian,
      shard 1/100 (load ~2)                              19 s -> ~32 min for all rows, peak RSS 999 MB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from libhyrax.config import load_config
from libhyrax.hdf5 import write_arrays
from libhyrax.runs import open_run

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import vectors  # noqa: E402  the same data as the search benchmark


def survey_quality(n: int, root: Path, device: str) -> dict:
    from sklearn.decomposition import PCA

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.stages.anomaly import anomaly

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
    with open_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), ids, latent=latents, recon_error=recon)
    res = anomaly(cfg, from_run=run.path)
    return json.loads((res.path / "evaluation.json").read_text())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scoring_time(
    n: int,
    root: Path,
    device: str,
    data: str = "clustered",
    methods=("knn", "isolation_forest", "combined"),
    shard: str | None = None,
    knn_source: str = "exact",
    index: Path | None = None,
) -> dict:
    from libhyrax.stages.anomaly import anomaly

    rng = np.random.default_rng(0)
    latents = vectors(n, 64, data=data)
    cfg = load_config(data={"general": {"results_dir": str(root / f"results-{n}"), "device": device}})
    with open_run("infer", cfg) as run:
        write_arrays(
            run.file("latents.h5"),
            np.char.add("obj_", np.arange(n).astype(str)),
            latent=latents,
            recon_error=rng.random(n).astype(np.float32),
        )
    del latents
    index_run = None
    if knn_source == "index":
        from libhyrax.stages.index import INDEX_DIR

        with open_run("index", cfg) as irun:  # wraps the prebuilt index folder as an index run
            irun.add_upstream(run.path)
            os.symlink(Path(index).resolve(), irun.file(INDEX_DIR))
        index_run = irun.path
    out = {"n": n, "data": data, "knn_source": knn_source, "shard": shard}
    count = int(shard.split("/")[1]) if shard else 1
    for i, method in enumerate(methods):
        t0 = time.perf_counter()
        anomaly(
            cfg,
            from_run=run.path,
            method=method,
            index_run=index_run,
            shard=shard,
            run_name=f"bench-{i}-{method}" if shard else None,
            overrides=["anomaly.batch_size=16384", f"anomaly.knn_source={knn_source}"],
        )
        out[f"{method}_s"] = time.perf_counter() - t0
        out[f"{method}_estimate_all_s"] = out[f"{method}_s"] * count
        out[f"{method}_peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", type=int, default=5000, help="objects in the synthetic survey (0: skip)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000], help="N for the scoring time")
    ap.add_argument("--data", default="clustered", choices=["clustered", "gaussian"])
    ap.add_argument("--methods", nargs="+", default=["knn", "isolation_forest", "combined"])
    ap.add_argument("--shard", help="I/N: score one shard of the rows and estimate the whole as N x its time")
    ap.add_argument("--knn-source", default="exact", choices=["exact", "index"])
    ap.add_argument(
        "--index", type=Path, help="an index folder over the same vectors (for --knn-source index)"
    )
    ap.add_argument("--tmp", type=Path, help="folder for the temporary results (default: the system's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict = {}
    if args.knn_source == "index" and not args.index:
        ap.error("--knn-source index needs --index DIR")
    with tempfile.TemporaryDirectory(prefix="hyrax-bench-anomaly-", dir=args.tmp) as tmp:
        if args.survey:
            ev = survey_quality(args.survey, Path(tmp), args.device)
            results["quality"] = ev
            print(
                f"synthetic survey: {ev['n_objects']} objects, {ev['n_anomalies']} injected "
                f"(random precision = {ev['fraction']:.3f}); K = {ev['k']}"
            )
            for name in ("score", "knn", "recon_error", "isolation_forest"):
                m = ev[name]
                label = "combined" if name == "score" else name
                print(
                    f"  {label:17s} precision@{ev['k']} {m['precision_at_k']:.3f}  "
                    f"precision@{ev['n_anomalies']} {m['precision_at_n_anomalies']:.3f}  "
                    f"ROC AUC {m['roc_auc']:.3f}"
                )
        results["timing"] = []
        for n in args.sizes:
            t = scoring_time(
                n, Path(tmp), args.device, args.data, args.methods, args.shard, args.knn_source, args.index
            )
            results["timing"].append(t)
            part = f" shard {args.shard}" if args.shard else ""
            print(
                f"scoring N={n:,} x 64 ({args.data}, knn through {args.knn_source}){part}: "
                + ", ".join(
                    f"{m} {t[m + '_s']:.1f} s"
                    + (f" (all rows: ~{t[m + '_estimate_all_s']:,.0f} s)" if args.shard else "")
                    + f" peak RSS {t[m + '_peak_rss_mb']:,.0f} MB"
                    for m in args.methods
                ),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
