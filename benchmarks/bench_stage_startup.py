"""The first minute (issue 16): how long each `hyrax <stage>` takes end to end on a 10-object input, where
nearly all of the time is start-up (imports, stores, probes) rather than work on the rows.

    .venv/bin/python benchmarks/bench_stage_startup.py            # median of 3 chains
    .venv/bin/python benchmarks/bench_stage_startup.py --repeat 5

Builds 10 FITS cutouts (3 bands, from the built-in sample) and a catalog in a scratch folder, then runs
the pipeline as a user's first session would, each chain in a fresh directory (so `train` creates its
MLflow store, as a first run does): prepare -> train (1 epoch) -> test, export, infer -> umap ->
visualize; infer -> index -> search; infer -> anomaly -> rank; and the lookup tool, all with the default
config. Prints each stage's median wall time (the whole `hyrax` process, as a shell pipe sees it) and its
median CPU time (user + system, its child processes included: steadier than the wall time on a busy
machine).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HYRAX = str(Path(sys.executable).parent / "hyrax")
N_OBJECTS = 10

# stage -> (the stage whose run it reads, extra arguments); in run order
CHAIN: dict[str, tuple[str | None, list[str]]] = {
    "prepare": (None, ["--set", "prepare.fits_dir=fits", "--set", "prepare.catalog=fits/catalog.csv"]),
    "train": ("prepare", ["--set", "train.epochs=1"]),
    "test": ("train", []),
    "export": ("train", []),
    "infer": ("train", []),
    "umap": ("infer", []),
    "visualize": ("umap", []),
    "index": ("infer", []),
    "search": ("index", ["--id", "gal00"]),
    "anomaly": ("infer", []),
    "rank": ("anomaly", ["--labels", "labels.csv"]),
    "lookup": ("infer", ["--id", "gal00"]),
}


def build_input(folder: Path) -> None:
    """10 objects x 3 bands of FITS cutouts, their catalog, and a label file."""
    import h5py
    from astropy.io import fits

    from libhyrax.data.sample import sample_path

    with h5py.File(sample_path(), "r") as f:
        images = f["images"][:N_OBJECTS]
    fits_dir = folder / "fits"
    fits_dir.mkdir(parents=True)
    rows = []
    for i in range(N_OBJECTS):
        for b, band in enumerate("gri"):
            name = f"gal{i:02d}_{band}.fits"
            fits.PrimaryHDU(images[i, b]).writeto(fits_dir / name)
            rows.append({"object_id": f"gal{i:02d}", "filter": band, "filename": name,
                         "ra": 53.1 + i * 1e-3, "dec": -27.8 + i * 1e-3})
    with open(fits_dir / "catalog.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (folder / "labels.csv").write_text("object_id,label\ngal00,5\ngal01,0\ngal02,1\ngal03,4\n")


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_chain(folder: Path) -> dict[str, tuple[float, float]]:
    """One pass of the whole chain in `folder`; returns each stage's (wall, CPU) seconds."""
    runs: dict[str, str] = {}
    times: dict[str, tuple[float, float]] = {}
    for stage, (reads, extra) in CHAIN.items():
        args = [HYRAX, stage, *extra] + (["--from", runs[reads]] if reads else [])
        cpu0, t0 = cpu_of_children(), time.perf_counter()
        proc = subprocess.run(args, cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        times[stage] = (time.perf_counter() - t0, cpu_of_children() - cpu0)
        if proc.returncode != 0:
            sys.exit(f"hyrax {stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        if proc.stdout.strip():
            runs[stage] = proc.stdout.strip().splitlines()[-1]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hyrax-stage-startup-") as tmp:
        source = Path(tmp) / "input"
        build_input(source)
        passes = []
        for i in range(args.repeat):
            folder = Path(tmp) / f"chain{i}"
            subprocess.run(["cp", "-r", str(source), str(folder)], check=True)
            passes.append(run_chain(folder))
    t0 = time.perf_counter()
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"{'python -c pass':16s} {(time.perf_counter() - t0) / 3:6.2f}s (interpreter start-up, for scale)")
    total = total_cpu = 0.0
    print(f"{'':16s} {'wall':>7s} {'cpu':>7s}")
    for stage in CHAIN:
        wall, cpu = (statistics.median(p[stage][i] for p in passes) for i in (0, 1))
        total, total_cpu = total + wall, total_cpu + cpu
        each = ", ".join(f"{p[stage][0]:.2f}" for p in passes)
        print(f"hyrax {stage:10s} {wall:6.2f}s {cpu:6.2f}s   (wall of each run: {each})")
    print(
        f"{N_OBJECTS} objects, median of {args.repeat}; all stages together: {total:.1f} s wall, "
        f"{total_cpu:.1f} s "
        f"CPU (cpus: {os.cpu_count()})"
    )


if __name__ == "__main__":
    main()
