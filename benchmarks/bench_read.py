"""Reading throughput of cutout files: Hyrax's loaders against raw h5py contiguous slices, for float32 and
float16 storage; and how much float16 storage moves the latents, against the noise of training itself.

    python benchmarks/bench_read.py                 # 8,000 objects of 3x64x64
                                                    # (393 MB float32, 197 MB float16)
    python benchmarks/bench_read.py --n 40000 --batch 512
    python benchmarks/bench_read.py --latents       # also: float16 vs float32 latents, vs two training seeds

Prints objects/s and MB/s for: raw h5py contiguous slices; DataGroup.read sequential; make_loader
sequential; make_loader shuffled (blocks of 64); raw h5py single-row reads in a random order (what
shuffling rows would cost); and peak memory (RSS) while reading. Goals: sequential >= 0.8x raw,
shuffled >= 0.5x raw. The file is read once first so every method sees a warm page cache.

Measured (2 CPU cores shared with other jobs, load ~5; `--n 4000 --rounds 3 --latents`):

    raw h5py contiguous, float32           182,391 objects/s   1.00x
    DataGroup.read sequential, float32     145,160 objects/s   0.74x
    make_loader shuffled blocks, float32   106,481 objects/s   0.62x
    raw h5py contiguous, float16           382,905 objects/s   2.10x   (half the bytes)
    DataGroup.read, float16 -> float32      42,617 objects/s   0.25x   (numpy's half->single conversion)
    float16 vs float32 storage, same model: median relative latent change 4.4e-06 (max 2.4e-05);
      10-NN kept 0.999, against 0.136 between two training seeds (the noise of training)

So float16 halves what is read from disk and changes the latents 10^4 times less than retraining does, but
from a warm page cache on a CPU the conversion to float32 costs more than the bytes it saves: it pays where
the storage, not the CPU, is the limit (a GPU node reading a parallel file system at 2 GB/s, gpu.md).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def make_file(path: Path, n: int, shape=(3, 64, 64), dtype: str = "float32") -> None:
    from libhyrax.data import CutoutWriter

    rng = np.random.default_rng(0)
    batch = rng.normal(size=(512, *shape)).astype(np.float32)
    with CutoutWriter(path, shape, ["g", "r", "i"], n_rows=n, dtype=dtype) as w:
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
    ap.add_argument("--latents", action="store_true", help="also measure how float16 storage moves latents")
    args = ap.parse_args()
    from libhyrax.config import load_config
    from libhyrax.data import make_loader, open_group

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path, path16 = Path(tmp) / "bench.h5", Path(tmp) / "bench16.h5"
        make_file(path, args.n)
        make_file(path16, args.n, dtype="float16")
        row_bytes = 3 * 64 * 64 * 4

        def group_of(file, transform="none"):
            return open_group(
                load_config(
                    data={
                        "data_request": {
                            "train": {
                                "c": {
                                    "dataset_class": "HyraxHDF5Dataset",
                                    "data_location": str(file),
                                    "fields": ["image", "object_id"],
                                }
                            }
                        },
                        "data_set": {"transform": transform},
                    }
                ),
                "train",
            )

        g, asinh, g16 = group_of(path), group_of(path, "asinh"), group_of(path16)
        n, b = args.n, args.batch

        def raw(file=path):
            with h5py.File(file, "r") as f:
                ds, ids = f["images"], f["object_id"]
                for s in range(0, n, b):
                    batch = (
                        ds[s : s + b],
                        ids[s : s + b],
                    )  # held while the next is read, as a training loop does
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

        def group_seq(group=g):
            for s in range(0, n, b):
                batch = group.read(s, s + b)
            del batch
            return n

        def loader(shuffle, group=g):
            return lambda: sum(len(x["object_id"]) for x in make_loader(group, None, b, shuffle, seed=0))

        raw(), raw(path16)  # warm the page cache
        methods = [
            ("raw h5py contiguous", raw),
            ("DataGroup.read sequential", group_seq),
            ("make_loader sequential", loader(False)),
            ("make_loader shuffled blocks", loader(True)),
            ("make_loader shuffled, asinh", loader(True, asinh)),
            ("raw h5py random single rows", raw_random_rows),
            # float16 storage: half the bytes from disk, read back as float32 (the rate counts objects)
            ("float16: raw h5py contiguous", lambda: raw(path16)),
            ("float16: DataGroup.read (->f32)", lambda: group_seq(g16)),
            ("float16: make_loader shuffled", loader(True, g16)),
        ]
        rates: dict[str, list[float]] = {name: [] for name, _ in methods}
        for _ in range(args.rounds):  # interleaved rounds: each compared with raw of the same round
            for name, fn in methods:
                secs, rows = timed(fn)
                rates[name].append(rows / secs)
        raw_rates = np.array(rates["raw h5py contiguous"])
        print(
            f"{n} objects of 3x64x64 float32 ({n * row_bytes / 1e6:.0f} MB), batch {b}, "
            f"{args.rounds} interleaved rounds, warm page cache; best rate, median ratio to raw of its round"
        )
        for name, r in rates.items():
            best, ratio = max(r), float(np.median(np.array(r) / raw_rates))
            print(
                f"  {name:32s} {best:10,.0f} objects/s {best * row_bytes / 1e6:8,.0f} MB/s  {ratio:5.2f}x raw"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS {peak:.0f} MB (file {n * row_bytes / 1e6:.0f} MB)")
        print("  (MB/s counts float32 bytes delivered; a float16 file holds half of them)")
    if args.latents:
        latent_shift()


def latent_shift(n: int = 2000, epochs: int = 3) -> None:
    """How much float16 storage moves the latents, next to how much a second training (another seed) does:
    the share of each object's 10 nearest neighbours in latent space that stay the same."""
    import libhyrax
    from libhyrax.data.synthetic import generate_survey

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        survey = generate_survey(tmp / "s.h5", n=n, size=32, seed=0)
        with h5py.File(survey) as f:
            ids, images = f["object_id"][:], f["images"][:]
        libhyrax.data.write_cutouts(tmp / "s16.h5", ids, images, dtype="float16")

        def cfg(file, seed):
            return {
                "general": {"results_dir": str(tmp / "results"), "seed": seed},
                "data_request": {
                    "train": {
                        "s": {
                            "dataset_class": "HyraxHDF5Dataset",
                            "data_location": str(file),
                            "fields": ["image", "object_id"],
                        }
                    }
                },
                "train": {"epochs": epochs},
            }

        def latents(run, file):
            res = libhyrax.infer(cfg(file, 0), from_run=run)
            with h5py.File(res.file("latents.h5")) as f:
                return f["latent"][:]

        a, b = libhyrax.train(cfg(survey, 1)), libhyrax.train(cfg(survey, 2))
        x32, x16, other = latents(a, survey), latents(a, tmp / "s16.h5"), latents(b, survey)
        rel = np.linalg.norm(x16 - x32, axis=1) / np.maximum(np.linalg.norm(x32, axis=1), 1e-12)
        print(
            f"float16 vs float32 storage, {n} synthetic 32x32 galaxies, same model: median relative latent "
            f"change {np.median(rel):.2e} (max {rel.max():.2e})"
        )
        print(
            f"  10-NN kept: float16 vs float32 {knn_overlap(x32, x16):.3f}; "
            f"another training seed {knn_overlap(x32, other):.3f} (the noise of training)"
        )


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each object's k nearest neighbours in `a` that are also among them in `b`."""

    def knn(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, :k]

    na, nb = knn(a), knn(b)
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(na, nb, strict=True)]))


if __name__ == "__main__":
    main()
