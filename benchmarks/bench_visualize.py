"""Benchmark `visualize` on a 1M-point embedding: time to write the HTML, its size, and (when Debian's
chromium is installed) the time until bokeh reports the document idle (rendered) in headless Chromium.

    .venv/bin/python benchmarks/bench_visualize.py              # 1M points
    .venv/bin/python benchmarks/bench_visualize.py 100000 10000000

Goal: at most 30 MB and under 10 s to first paint for 1M points.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from libhyrax import hdf5
from libhyrax.config import resolve
from libhyrax.rundir import read_provenance
from libhyrax.runs import open_run

CHROMIUM = Path("/usr/bin/chromium")


def make_runs(cfg: dict, n: int) -> Path:
    rng = np.random.default_rng(0)
    ids = np.char.add("obj", np.arange(n).astype(str))
    with open_run("infer", cfg) as infer:
        hdf5.write_arrays(infer.file("latents.h5"), ids, latent=np.zeros((n, 1), np.float32),
                          recon_error=rng.gamma(2, size=n).astype(np.float32))
    with open_run("umap", cfg) as umap:
        umap.add_upstream(infer.path)
        centres = rng.normal(scale=5, size=(30, 2))
        emb = centres[rng.integers(0, 30, n)] + rng.normal(size=(n, 2))
        hdf5.write_arrays(umap.file("embedding.h5"), ids, embedding=emb.astype(np.float32))
    return umap.path


def first_paint_seconds(page: Path, tmp: Path) -> float | None:
    """Seconds from starting Chromium until bokeh logs 'document idle' (its render is done)."""
    if not CHROMIUM.exists():
        return None
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'p'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1400,900", "--timeout=60000",
           f"--screenshot={tmp / 'shot.png'}", page.as_uri()]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stderr:
            if re.search(r"document idle at", line):
                return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, default=[1_000_000])
    args = ap.parse_args()
    from libhyrax.stages.visualize import visualize

    print(f"python {sys.version.split()[0]}", flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = resolve({"general": {"results_dir": str(Path(tmp) / "results")}})
            src = make_runs(cfg, n)
            t0 = time.perf_counter()
            res = visualize(cfg, from_run=src)
            took = time.perf_counter() - t0
            info = read_provenance(res.path)["stage_info"]
            paint = first_paint_seconds(res.html, Path(tmp))
            paint_text = f"{paint:.1f} s" if paint is not None else "n/a (no chromium)"
            print(f"n={n:>10,}: write {took:.1f} s, HTML {info['html_bytes'] / 1e6:.1f} MB, "
                  f"{info['n_points_drawn']:,} points drawn, density layer {info['density_layer']}, "
                  f"Chromium document idle after {paint_text}", flush=True)


if __name__ == "__main__":
    main()
