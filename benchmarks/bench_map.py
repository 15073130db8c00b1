"""Benchmark the tiled map (`visualize` above max_points) on synthetic embeddings: the time to write it,
the peak resident memory of the process that writes it, its size on disk, and (with Debian's chromium)
the seconds until bokeh reports the page's document idle (rendered) in headless Chromium.

    .venv/bin/python benchmarks/bench_map.py                  # 1M and 10M objects
    .venv/bin/python benchmarks/bench_map.py 100000

The embedding is 30 Gaussian clusters (as a UMAP of a survey looks), written in chunks with a
recon_error column in the same order, so the map has count and mean tiles. Goals (issue 22): 10M
written in <= 5 min on 2 cores, memory flat in N, first paint <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from libhyrax import hdf5
from libhyrax.config import resolve
from libhyrax.runs import open_run

sys.path.insert(0, str(Path(__file__).parent))
from bench_visualize import first_paint_seconds  # noqa: E402

CHUNK = 1 << 20
# run in a child process so that its peak RSS is the map's alone (not the synthetic data's)
WRITE = """
import json, resource, sys, time
from libhyrax.config import resolve
from libhyrax.results import read_provenance
from libhyrax.stages.visualize import visualize
t0 = time.perf_counter()
res = visualize(resolve({"general": {"results_dir": sys.argv[1]}}), from_run=sys.argv[2])
took = time.perf_counter() - t0
print(json.dumps({"seconds": took, "path": str(res.path), "info": read_provenance(res.path)["stage_info"],
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def chunk(start: int, k: int, centres: np.ndarray):
    """Objects start..start+k: ids, cluster, position (the same for the same start)."""
    rng = np.random.default_rng(start)
    which = rng.integers(0, len(centres), k)
    xy = (centres[which] + rng.normal(size=(k, 2))).astype(np.float32)
    return np.char.add("obj", np.arange(start, start + k).astype(str)), which, xy


def make_runs(cfg: dict, n: int) -> Path:
    centres = np.random.default_rng(0).normal(scale=5, size=(30, 2))
    with open_run("infer", cfg) as infer:
        with hdf5.ArrayWriter(
            infer.file("latents.h5"), n, {"latent": ((1,), "<f4"), "recon_error": ((), "<f4")}, id_length=16
        ) as lat:
            for start in range(0, n, CHUNK):
                ids, which, _ = chunk(start, min(CHUNK, n - start), centres)
                lat.append(
                    ids,
                    latent=np.zeros((len(ids), 1), np.float32),
                    recon_error=(which / 10 + np.random.default_rng(start).gamma(2, size=len(ids))).astype(
                        np.float32
                    ),
                )
    with open_run("umap", cfg) as umap:
        umap.add_upstream(infer.path)
        with hdf5.ArrayWriter(
            umap.file("embedding.h5"), n, {"embedding": ((2,), "<f4")}, id_length=16
        ) as emb:
            for start in range(0, n, CHUNK):
                ids, _, xy = chunk(start, min(CHUNK, n - start), centres)
                emb.append(ids, embedding=xy)
    return umap.path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 10_000_000])
    ap.add_argument(
        "--paints",
        type=int,
        default=3,
        help="times the page is opened (the cores are shared: the best and the median are printed)",
    )
    args = ap.parse_args()
    import json

    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}", flush=True)
    for n in args.sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench_map-"))
        try:
            cfg = resolve({"general": {"results_dir": str(tmp / "results")}})
            src = make_runs(cfg, n)
            load = os.getloadavg()[0]
            proc = subprocess.run(
                [sys.executable, "-c", WRITE, str(tmp / "results"), str(src)], capture_output=True, text=True
            )
            if proc.returncode:
                sys.exit(f"visualize failed at n={n}:\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            peak = out["peak_kib"]
            run = Path(out["path"])
            paints = sorted(
                t
                for t in (
                    first_paint_seconds(run / "visualize.html", tmp / f"p{i}") for i in range(args.paints)
                )
                if t is not None
            )
            paint_text = (
                f"{paints[0]:.1f} s (median of {len(paints)} {paints[len(paints) // 2]:.1f} s)"
                if paints
                else "n/a (no chromium)"
            )
            tiled = out["info"].get("tiled", {})
            print(
                f"n={n:>10,}: written in {out['seconds']:.1f} s (load {load:.1f} -> "
                f"{os.getloadavg()[0]:.1f}), peak RSS {peak / 1024:.0f} MiB, {du(run) / 1e6:.0f} MB on disk "
                f"({tiled.get('n_tiles')} tiles, {tiled.get('n_cells')} point files, page "
                f"{out['info']['html_bytes'] / 1e6:.1f} MB), Chromium document idle after {paint_text} "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
