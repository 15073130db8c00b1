"""Benchmark the vector index backends: build time, peak memory, search latency (p50, p95) by object id
and by vector, and recall@10 of each approximate backend against exact search.

    .venv/bin/python benchmarks/bench_search.py                          # 100k x 64, exact and chromadb
    .venv/bin/python benchmarks/bench_search.py --n 1000000 --backends exact
    .venv/bin/python benchmarks/bench_search.py --n 100000 --device cuda --json out.json

The data: N clustered 64-d float32 vectors (200 Gaussian clusters, like latents of similar objects). Each
backend is built and measured in a fresh process, so its peak RSS is its own; the goal for memory is the
rule of thumb N x d x 4 bytes x 2 on top of the interpreter. Latency is one query per call (what a user
waiting on `hyrax search` sees), after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 10


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32) * 3
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 18):
        e = min(s + (1 << 18), n)
        out[s:e] = centres[rng.integers(0, 200, e - s)] + rng.normal(size=(e - s, dim)).astype(np.float32)
    return out


def queries(n: int, dim: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    rows = rng.choice(n, q, replace=False)
    return rows, vectors(n, dim)[rows] + rng.normal(scale=0.3, size=(q, dim)).astype(np.float32)


def measure(backend: str, n: int, dim: int, folder: Path, n_queries: int, device: str) -> dict:
    """Build and measure one backend in this process."""
    from libhyrax.vector_index import VectorIndex

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = vectors(n, dim)
    ids = np.char.add("obj_", np.arange(n).astype(str))
    params = {"device": device} if backend == "exact" else {}
    t0 = time.perf_counter()
    idx = VectorIndex.create(folder / backend, dim, backend=backend, **params)
    for s in range(0, n, 16384):
        idx.add(ids[s:s + 16384], x[s:s + 16384])
    idx.persist()
    build_s = time.perf_counter() - t0
    del x
    idx = VectorIndex.open(folder / backend)
    rows, qv = queries(n, dim, n_queries)
    idx.search(qv[:1], K)  # warm-up: loads the matrix / the HNSW graph
    by_vector, by_id = [], []
    for i in range(min(n_queries, 300)):
        t = time.perf_counter()
        idx.search(qv[i:i + 1], K)
        by_vector.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.search_by_id([ids[rows[i]]], K)
        by_id.append(time.perf_counter() - t)
    t = time.perf_counter()
    found, _ = idx.search(qv, K)
    batch_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(folder / f"{backend}.found.npy", found)
    return {"backend": backend, "n": n, "dim": dim, "build_s": build_s, "vectors_per_s": n / build_s,
            "by_id_p50_ms": 1e3 * np.percentile(by_id, 50), "by_id_p95_ms": 1e3 * np.percentile(by_id, 95),
            "by_vector_p50_ms": 1e3 * np.percentile(by_vector, 50),
            "by_vector_p95_ms": 1e3 * np.percentile(by_vector, 95),
            "batch_queries": n_queries, "batch_s": batch_s, "peak_rss_mb": peak, "start_rss_mb": base_rss,
            "rule_of_thumb_mb": n * dim * 4 * 2 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--backends", default="exact,chromadb")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one backend in this process
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n[0], args.dim, args.folder, args.queries, args.device)))
        return
    results = []
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix="hyrax-bench-search-") as tmp:
            for backend in args.backends.split(","):
                out = subprocess.run([sys.executable, __file__, "--one", backend, "--n", str(n), "--dim",
                                      str(args.dim), "--queries", str(args.queries), "--device", args.device,
                                      "--folder", tmp], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if backend != "exact" and Path(tmp, "exact.found.npy").exists():
                    truth, found = np.load(Path(tmp, "exact.found.npy")), np.load(Path(tmp, f"{backend}.found.npy"))
                    r["recall_at_10"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))
                results.append(r)
                print(f"{backend:9s} N={n:>9,} d={args.dim}: build {r['build_s']:7.1f} s "
                      f"({r['vectors_per_s']:,.0f}/s)  by id p50 {r['by_id_p50_ms']:6.2f} ms p95 "
                      f"{r['by_id_p95_ms']:6.2f} ms  by vector p50 {r['by_vector_p50_ms']:6.2f} ms p95 "
                      f"{r['by_vector_p95_ms']:6.2f} ms  {args.queries} queries {r['batch_s']:.2f} s  "
                      f"peak RSS {r['peak_rss_mb']:,.0f} MB (rule of thumb +{r['rule_of_thumb_mb']:,.0f} MB)"
                      + (f"  recall@10 {r['recall_at_10']:.3f}" if "recall_at_10" in r else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
