"""Benchmark `umap` on 64-d latent vectors: fit time, transform throughput, peak memory.

    .venv/bin/python benchmarks/bench_umap.py                    # 100k and 1M objects, UMAP defaults
    .venv/bin/python benchmarks/bench_umap.py 100000 --workers 2 --algorithm pca

The latents are a mixture of 20 Gaussian clusters (written as an infer-like run in a temporary
directory). Peak memory is the largest resident set of this process and of any worker process.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from libhyrax import hdf5
from libhyrax.config import resolve
from libhyrax.rundir import read_provenance
from libhyrax.runs import open_run


def write_latents(cfg: dict, n: int, dim: int = 64, chunk: int = 200_000) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(20, dim)).astype(np.float32)
    with open_run("infer", cfg) as run:
        with hdf5.ArrayWriter(run.file("latents.h5"), n, {"latent": ((dim,), "<f4")}, id_length=12) as w:
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                ids = np.array([f"obj{i}" for i in range(s, e)], dtype="S12")
                w.append(
                    ids,
                    latent=centres[rng.integers(0, 20, e - s)] + rng.normal(size=(e - s, dim)).astype("f4"),
                )
    return run.path


def bench(n: int, workers: int, algorithm: str, fit_sample_size: int | None) -> None:
    from libhyrax.stages.umap import umap

    with tempfile.TemporaryDirectory() as tmp:
        over = {
            "general": {"results_dir": str(Path(tmp) / "results")},
            "reduce_dimensions": {"num_workers": workers, "algorithm": algorithm},
        }
        if fit_sample_size:
            over["reduce_dimensions"]["fit_sample_size"] = fit_sample_size
        cfg = resolve(over)
        src = write_latents(cfg, n)
        t0 = time.perf_counter()
        res = umap(cfg, from_run=src)
        total = time.perf_counter() - t0
        info = read_provenance(res.path)["stage_info"]
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{algorithm} n={n:>9,} workers={workers} fit on {info['fit_sample_size']:,}: "
        f"fit {info['fit_seconds']:.1f} s, transform {info['transform_seconds']:.1f} s "
        f"({n / info['transform_seconds']:,.0f} objects/s), total {total:.1f} s, "
        f"peak RSS {peak_self:.0f} MB (main) / {peak_child:.0f} MB (largest worker)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--algorithm", default="umap")
    ap.add_argument("--fit-sample-size", type=int, default=None)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/hyrax-numba-cache")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    for n in args.sizes:
        bench(n, args.workers, args.algorithm, args.fit_sample_size)


if __name__ == "__main__":
    main()
