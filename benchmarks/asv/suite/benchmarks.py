"""Hyrax's fast benchmarks as an ASV suite (issue 26), so they can be compared over commits: `hyrax --help`,
a stage's start-up, train and infer against plain loops, search latency and recall, and the map page's write
time, each at a small size (the whole suite takes a few minutes on 2 busy cores). The full-size figures
stay in benchmarks/bench_*.py, whose functions these reuse.

    make bench-record                      # run the suite on HEAD, results into benchmarks/asv/results/
    make bench-compare                     # HEAD's results against the previous recorded commit's
    make bench-history                     # benchmarks/asv/html/index.html, the history of every benchmark

`time_*` benchmarks are timed by ASV (`repeat` samples in each of `rounds` processes); `track_*` ones
return a figure (a ratio, a recall) measured here as the median of a few alternating rounds.
`HYRAX_ASV_TINY=1` shrinks every size further (the test that the suite runs).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2]  # benchmarks/, whose scripts' functions are reused here
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
HYRAX = str(Path(sys.executable).parent / "hyrax")
TINY = os.environ.get("HYRAX_ASV_TINY") == "1"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="hyrax-asv-"))


class CLI:
    """`hyrax --help` and a stage's --help (heavy imports stay inside stages)."""

    repeat, number, rounds, warmup_time = 5, 1, 2, 0

    def time_help(self):
        subprocess.run([HYRAX, "--help"], capture_output=True, check=True)

    def time_train_help(self):
        subprocess.run([HYRAX, "train", "--help"], capture_output=True, check=True)


class StageStartup:
    """A whole `hyrax infer` process on 10 objects: nearly all of it is start-up (imports, stores)."""

    repeat, number, rounds, warmup_time, timeout = 2, 1, 1, 0, 300

    def setup_cache(self):
        import bench_stage_startup as bs

        folder = scratch()
        bs.build_input(folder)
        for stage in ("prepare", "train"):  # the chain's first steps, with its arguments
            subprocess.run(
                [HYRAX, stage, *bs.CHAIN[stage][1]],
                cwd=folder,
                capture_output=True,
                check=True,
                stdin=subprocess.DEVNULL,
            )
        return str(folder)

    def time_infer_10_objects(self, folder):
        subprocess.run(
            [HYRAX, "infer"], cwd=folder, capture_output=True, check=True, stdin=subprocess.DEVNULL
        )


class Loops:
    """Train and infer against the plain PyTorch loops of bench_train.py / bench_infer.py, same process,
    same file and model: the framework's overhead as a ratio (1.0: none)."""

    timeout = 600
    n = 64 if TINY else 512

    def track_train_ratio(self):
        import argparse

        import bench_train as bt

        folder = scratch()
        try:
            path = bt.make_file(folder / "cutouts.h5", self.n, 32)
            args = argparse.Namespace(device="cpu", batch_size=128, workers=0, epochs=2, bf16=False)
            ratios = []
            for r in range(2):  # alternating rounds; the second epoch of each (the first warms up)
                cfg = bt.config(path, folder / f"results{r}", args)
                plain = bt.plain_loop(path, cfg, args)[-1]
                ratios.append(bt.hyrax_epochs(cfg)[-1] / plain)
            return statistics.median(ratios)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    track_train_ratio.unit = "hyrax / plain loop (seconds per epoch)"

    def track_infer_ratio(self):
        import bench_infer as bi

        folder = scratch()
        try:
            cutouts = bi.make_cutouts(folder / "cutouts.h5", 4 * self.n)
            cfg = bi.config(folder, cutouts, "cpu", 256, "HyraxAutoencoder")
            run = bi.make_train_run(cfg)
            ratios = []
            for _ in range(2):
                plain = bi.plain_loop(run, cutouts, 4 * self.n, 256, "cpu")
                ours, _, _ = bi.hyrax_infer(cfg, run)
                ratios.append(plain / ours)  # objects/s: plain / ours = our seconds / plain seconds
            return statistics.median(ratios)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    track_infer_ratio.unit = "hyrax / plain loop (seconds)"


class Search:
    """One query against an index of clustered 64-d vectors (ASV's median: the p50 a user waits), and
    the share of the exact 10 nearest that chromadb misses (1 - recall@10: every ASV figure is
    lower-is-better)."""

    repeat, number, rounds, warmup_time, timeout = 20, 1, 2, 0, 600
    n = 500 if TINY else 10_000

    def setup_cache(self):
        import bench_search as bsr
        import numpy as np

        from libhyrax.vector_index import VectorIndex

        folder = scratch()
        x = bsr.vectors(self.n, 64)
        ids = np.char.add("obj_", np.arange(self.n).astype(str))
        for backend in ("exact", "chromadb"):
            idx = VectorIndex.create(folder / backend, 64, backend=backend)
            for s in range(0, self.n, 16384):
                idx.add(ids[s : s + 16384], x[s : s + 16384])
            idx.persist()
        _, q = bsr.queries(x, 200)
        np.save(folder / "queries.npy", q)
        return str(folder)

    def setup(self, folder):
        import numpy as np

        from libhyrax.vector_index import VectorIndex

        self.q = np.load(Path(folder) / "queries.npy")
        self.exact = VectorIndex.open(Path(folder) / "exact")
        self.exact.search(self.q[:1], 10)  # cold: loads the matrix
        self.i = 0

    def time_exact_query(self, folder):
        self.i = (self.i + 1) % len(self.q)
        self.exact.search(self.q[self.i : self.i + 1], 10)

    def track_chromadb_missed_at_10(self, folder):
        import numpy as np

        from libhyrax.vector_index import VectorIndex

        approx, _ = VectorIndex.open(Path(folder) / "chromadb").search(self.q, 10)
        truth, _ = self.exact.search(self.q, 10)
        return 1 - float(np.mean([len(set(a) & set(t)) / 10 for a, t in zip(approx, truth, strict=True)]))

    track_chromadb_missed_at_10.unit = "1 - recall@10"


class MapWrite:
    """`visualize` writing the HTML map of a 20,000-point embedding (no thumbnails)."""

    repeat, number, rounds, warmup_time, timeout = 3, 1, 1, 0, 600
    n = 500 if TINY else 20_000

    def setup_cache(self):
        import bench_visualize as bv

        from libhyrax.config import resolve

        folder = scratch()
        cfg = resolve({"general": {"results_dir": str(folder / "results"), "log_level": "warning"}})
        return str(bv.make_runs(cfg, self.n))

    def time_visualize_write(self, umap_run):
        from libhyrax.stages.visualize import visualize

        results = Path(umap_run).parent
        visualize({"general": {"results_dir": str(results), "log_level": "warning"}}, from_run=umap_run)
