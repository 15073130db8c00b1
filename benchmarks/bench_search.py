"""Benchmark the vector index backends: build time, peak memory, search latency (p50, p95) by object id
and by vector, and recall@10 of each approximate backend against exact search.

    .venv/bin/python benchmarks/bench_search.py                          # 100k x 64, exact, chromadb, qdrant
    .venv/bin/python benchmarks/bench_search.py --n 1000000 --backends exact
    .venv/bin/python benchmarks/bench_search.py --n 100000 --data clustered gaussian --json out.json
    # keep the indexes
    .venv/bin/python benchmarks/bench_search.py --n 1000000 --data gaussian --keep /tmp/idx

The data (--data): "clustered", N 64-d float32 vectors in 200 Gaussian clusters (like latents of similar
objects; easy for HNSW), or "gaussian", one plain standard normal cloud (hard: no structure for the graph
to exploit, the case where chromadb's recall@10 was 0.96 at 100k). Queries are 1000 indexed vectors plus
noise (sigma 0.3); recall@10 is against the exact backend's answer to the same queries. Each
backend is built in a fresh process and searched in another, so its peak RSS is its own and the memory
of the opened index is what it adds to a process that searches; the goal for memory is the
rule of thumb N x d x 4 bytes x 2 on top of the interpreter. Latency is one query per call (what a user
waiting on `hyrax search` sees), after one cold call (reported apart, with the time to open the index: what
a fresh `hyrax search` process pays once).

Measured (2 shared CPU cores, 64-d, k = 10; build wall time is noisy: others' jobs ran beside; ChromaDB
with ef_construction 200, max_neighbors 32):

    N, data          backend   build           by id p50/p95   by vector p50   recall@10        memory*
    100k clustered   chromadb  17 s (5.9k/s)   2.7 / 3.2 ms    1.9 ms          1.000 (ef 800)   +197 MB
    100k gaussian    chromadb  39 s (2.6k/s)   5.1 / 5.8 ms    4.3 ms          0.999 (ef 800)   +174 MB
    1M gaussian      chromadb  1,819 s (550/s) 4.0 / 4.8 ms    3.2 ms          0.851 (ef 200)   +930 MB
                                               7.3 / 9.0 ms                    0.968 (ef 800)
    100k either      exact     0.03 s          1.6 / 2.0 ms    1.3 ms          1 (truth)        +85 MB
    1M gaussian      exact     0.9 s           24 / 32 ms      24 ms           1 (truth)        +358 MB

    * resident memory of the opened index after the searches, above the library's own imports; the rule
      of thumb N x d x 4 x 2 is 49 MB at 100k and 488 MB at 1M. ChromaDB on disk: 72 MB at 100k, 697 MB
      at 1M. The 1M ChromaDB build ran beside other jobs (load 2-9); 100k gaussian took 68 CPU-s.
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


def vectors(n: int, dim: int, seed: int = 0, data: str = "clustered") -> np.ndarray:
    """N x dim float32 vectors, the same for the same arguments (generated in blocks of 2**18 rows)."""
    rng = np.random.default_rng(seed)
    if data == "gaussian":
        out = np.empty((n, dim), np.float32)
        for s in range(0, n, 1 << 18):
            out[s : min(s + (1 << 18), n)] = rng.standard_normal(
                size=(min(1 << 18, n - s), dim), dtype=np.float32
            )
        return out
    if data != "clustered":
        raise SystemExit(f"unknown --data {data!r}: clustered or gaussian")
    centres = rng.normal(size=(200, dim)).astype(np.float32) * 3
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 18):
        e = min(s + (1 << 18), n)
        out[s:e] = centres[rng.integers(0, 200, e - s)] + rng.normal(size=(e - s, dim)).astype(np.float32)
    return out


def queries(x: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    rows = rng.choice(len(x), q, replace=False)
    return rows, x[rows] + rng.normal(scale=0.3, size=(q, x.shape[1])).astype(np.float32)


def cpu_s() -> float:
    """CPU seconds of this process, all threads (steadier than wall time on a shared machine)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rss_mb() -> float:
    """Resident memory now (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


LIBRARY = {"chromadb": "chromadb", "qdrant": "qdrant_client", "faiss": "faiss"}  # else torch


def measure(backend: str, n: int, dim: int, folder: Path, n_queries: int, device: str, data: str) -> dict:
    """Build one backend in this process, then measure its searches in a fresh one (`serve`)."""
    from libhyrax.vector_index import VectorIndex

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    __import__(LIBRARY.get(backend, "torch"))  # the library's memory, apart
    import_rss = rss_mb()
    x = vectors(n, dim, data=data)
    ids = np.char.add("obj_", np.arange(n).astype(str))
    params = {"device": device} if backend == "exact" else {"n_total": n} if backend == "faiss" else {}
    t0, cpu0 = time.perf_counter(), cpu_s()
    idx = VectorIndex.create(folder / backend, dim, backend=backend, **params)
    for s in range(0, n, 16384):
        idx.add(ids[s : s + 16384], x[s : s + 16384])
    idx.persist()
    build_s, build_cpu_s = time.perf_counter() - t0, cpu_s() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del x, idx, ids
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--serve",
            backend,
            "--n",
            str(n),
            "--dim",
            str(dim),
            "--queries",
            str(n_queries),
            "--data",
            data,
            "--folder",
            str(folder),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"serving {backend} failed:\n{out.stderr[-3000:]}")
    served = json.loads(out.stdout.strip().splitlines()[-1])
    return served | {
        "backend": backend,
        "data": data,
        "n": n,
        "dim": dim,
        "disk_mb": folder_mb(folder / backend),
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "vectors_per_s": n / build_s,
        "build_peak_rss_mb": peak,
        "start_rss_mb": base_rss,
        "import_rss_mb": import_rss,
        "rule_of_thumb_mb": n * dim * 4 * 2 / 2**20,
    }


def serve(backend: str, n: int, dim: int, folder: Path, n_queries: int, data: str) -> dict:
    """Open a built index in this fresh process and search it: latency, and the memory the opened index
    adds to the process (after its library and the benchmark's query arrays are in memory)."""
    from libhyrax.vector_index import VectorIndex

    __import__(LIBRARY.get(backend, "torch"))
    x = vectors(n, dim, data=data)
    rows, qv = queries(x, n_queries)
    qids = np.char.add("obj_", rows.astype(str))
    del x
    before_rss = rss_mb()
    t = time.perf_counter()
    idx = VectorIndex.open(folder / backend)
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    idx.search_by_id([qids[-1]], K)  # cold: loads the id table and the matrix / the HNSW graph
    first_s = time.perf_counter() - t
    by_vector, by_id = [], []
    for i in range(min(n_queries, 300)):
        t = time.perf_counter()
        idx.search(qv[i : i + 1], K)
        by_vector.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.search_by_id([qids[i]], K)
        by_id.append(time.perf_counter() - t)
    t = time.perf_counter()
    found, _ = idx.search(qv, K)
    batch_s = time.perf_counter() - t
    serve_rss = rss_mb()  # the opened index after its searches
    np.save(folder / f"{backend}.found.npy", found)
    return {
        "open_s": open_s,
        "first_by_id_s": first_s,
        "by_id_p50_ms": 1e3 * np.percentile(by_id, 50),
        "by_id_p95_ms": 1e3 * np.percentile(by_id, 95),
        "by_vector_p50_ms": 1e3 * np.percentile(by_vector, 50),
        "by_vector_p95_ms": 1e3 * np.percentile(by_vector, 95),
        "batch_queries": n_queries,
        "batch_s": batch_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "serve_rss_mb": serve_rss,
        "search_bytes_per_vector": (serve_rss - before_rss) * 2**20 / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--data", nargs="+", default=["clustered"], choices=["clustered", "gaussian"])
    ap.add_argument("--backends", default="exact,chromadb,qdrant")
    ap.add_argument("--keep", type=Path, help="build the indexes in KEEP/<data>-<n>/<backend> and keep them")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: build one backend in this process
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # internal: search a built one in this process
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve, args.n[0], args.dim, args.folder, args.queries, args.data[0])))
        return
    if args.one:
        print(
            json.dumps(
                measure(args.one, args.n[0], args.dim, args.folder, args.queries, args.device, args.data[0])
            )
        )
        return
    results = []
    for n, data in ((n, data) for n in args.n for data in args.data):
        with tempfile.TemporaryDirectory(prefix="hyrax-bench-search-") as scratch:
            tmp = args.keep / f"{data}-{n}" if args.keep else Path(scratch)
            tmp.mkdir(parents=True, exist_ok=True)
            for backend in args.backends.split(","):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        backend,
                        "--n",
                        str(n),
                        "--dim",
                        str(args.dim),
                        "--queries",
                        str(args.queries),
                        "--device",
                        args.device,
                        "--data",
                        data,
                        "--folder",
                        str(tmp),
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    raise SystemExit(f"{backend} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if backend != "exact" and Path(tmp, "exact.found.npy").exists():
                    truth, found = (
                        np.load(Path(tmp, "exact.found.npy")),
                        np.load(Path(tmp, f"{backend}.found.npy")),
                    )
                    r["recall_at_10"] = float(
                        np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
                    )
                results.append(r)
                print(
                    f"{backend:9s} {data:9s} N={n:>9,} d={args.dim}: build {r['build_s']:7.1f} s "
                    f"({r['vectors_per_s']:,.0f}/s, CPU {r.get('build_cpu_s', float('nan')):.0f} s)  "
                    f"by id p50 {r['by_id_p50_ms']:6.2f} ms p95 "
                    f"{r['by_id_p95_ms']:6.2f} ms  by vector p50 {r['by_vector_p50_ms']:6.2f} ms p95 "
                    f"{r['by_vector_p95_ms']:6.2f} ms  {args.queries} queries {r['batch_s']:.2f} s  "
                    f"RSS serving {r.get('serve_rss_mb', float('nan')):,.0f} MB (the index "
                    f"+{r.get('search_bytes_per_vector', float('nan')):,.0f} B/vector), "
                    f"peak {r['peak_rss_mb']:,.0f} "
                    f"MB (build {r.get('build_peak_rss_mb', float('nan')):,.0f}, rule of thumb "
                    f"+{r['rule_of_thumb_mb']:,.0f} MB)  disk {r['disk_mb']:,.0f} MB  cold: open "
                    f"{r['open_s']:.2f} s + first search by id {r['first_by_id_s']:.2f} s"
                    + (f"  recall@10 {r['recall_at_10']:.3f}" if "recall_at_10" in r else ""),
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
