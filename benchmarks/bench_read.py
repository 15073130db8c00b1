"""Reading throughput of cutout files: Hyrax's loaders against raw h5py contiguous slices.

    python benchmarks/bench_read.py                 # 8,000 objects of 3x64x64 (393 MB)
    python benchmarks/bench_read.py --n 40000 --batch 512

Prints objects/s and MB/s for: raw h5py contiguous slices; DataGroup.read sequential; make_loader
sequential; make_loader shuffled (blocks of 64); raw h5py single-row reads in a random order (what
shuffling rows would cost); and peak memory (RSS) while reading. Goals: sequential >= 0.8x raw,
shuffled >= 0.5x raw. The file is read once first so every method sees a warm page cache.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def make_file(path: Path, n: int, shape=(3, 64, 64)) -> None:
    from libhyrax.data import CutoutWriter

    rng = np.random.default_rng(0)
    batch = rng.normal(size=(512, *shape)).astype(np.float32)
    with CutoutWriter(path, shape, ["g", "r", "i"], n_rows=n) as w:
        for s in range(0, n, 512):
            m = min(512, n - s)
            w.append([f"obj-{i:09d}" for i in range(s, s + m)], batch[:m], catalog={"ra": np.zeros(m)})


def timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    rows = fn()
    return time.perf_counter() - t, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write the test file (default: a temp dir)")
    args = ap.parse_args()
    from libhyrax.config import load_config
    from libhyrax.data import make_loader, open_group

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.h5"
        make_file(path, args.n)
        row_bytes = 3 * 64 * 64 * 4
        cfg = load_config(data={"data_request": {"train": {"c": {"dataset_class": "HyraxHDF5Dataset",
                                                                 "data_location": str(path),
                                                                 "fields": ["image", "object_id"]}}},
                                "data_set": {"transform": "none"}})
        g = open_group(cfg, "train")
        cfg["data_set"]["transform"] = "asinh"
        asinh = open_group(cfg, "train")
        n, b = args.n, args.batch

        def raw():
            with h5py.File(path, "r") as f:
                ds, ids = f["images"], f["object_id"]
                for s in range(0, n, b):
                    batch = ds[s:s + b], ids[s:s + b]  # held while the next is read, as a training loop does
            del batch
            return n

        def raw_random_rows():
            m = min(n, 2000)
            order = np.random.default_rng(0).permutation(n)[:m]
            with h5py.File(path, "r") as f:
                ds = f["images"]
                for i in order:
                    ds[i]
            return m

        def group_seq():
            for s in range(0, n, b):
                batch = g.read(s, s + b)
            del batch
            return n

        def loader(shuffle, group=g):
            return lambda: sum(len(x["object_id"]) for x in make_loader(group, None, b, shuffle, seed=0))

        raw()  # warm the page cache
        methods = [("raw h5py contiguous", raw), ("DataGroup.read sequential", group_seq),
                   ("make_loader sequential", loader(False)), ("make_loader shuffled blocks", loader(True)),
                   ("make_loader shuffled, asinh", loader(True, asinh)),
                   ("raw h5py random single rows", raw_random_rows)]
        rates: dict[str, list[float]] = {name: [] for name, _ in methods}
        for _ in range(args.rounds):  # interleaved rounds: each compared with raw of the same round
            for name, fn in methods:
                secs, rows = timed(fn)
                rates[name].append(rows / secs)
        raw_rates = np.array(rates["raw h5py contiguous"])
        print(f"{n} objects of 3x64x64 float32 ({n * row_bytes / 1e6:.0f} MB), batch {b}, "
              f"{args.rounds} interleaved rounds, warm page cache; best rate, median ratio to raw of its round")
        for name, r in rates.items():
            best, ratio = max(r), float(np.median(np.array(r) / raw_rates))
            print(f"  {name:32s} {best:10,.0f} objects/s {best * row_bytes / 1e6:8,.0f} MB/s  {ratio:5.2f}x raw")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS {peak:.0f} MB (file {n * row_bytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
