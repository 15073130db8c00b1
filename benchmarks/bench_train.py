"""An epoch of `hyrax train` against a plain PyTorch loop: the same HDF5 cutout file, model, optimizer,
batch size and thread count, in the same process. Goal on CPU: hyrax <= 1.10x the plain loop.

    .venv/bin/python benchmarks/bench_train.py                      # CPU: 2,048 objects, 3 epochs
    python benchmarks/bench_train.py --n 40000 --batch-size 512     # on a GPU machine (CUDA when available)
    python benchmarks/bench_train.py --bf16                          # bf16 autocast on CUDA, both loops

Prints seconds per epoch and images/s for both (the median epoch after a warm-up epoch).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def make_file(path: Path, n: int, size: int) -> Path:
    from libhyrax.data import CutoutWriter

    rng = np.random.default_rng(0)
    with CutoutWriter(path, (3, size, size), ["g", "r", "i"], n_rows=n) as w:
        for start in range(0, n, 1024):
            k = min(1024, n - start)
            w.append([f"obj{i:08d}" for i in range(start, start + k)],
                     rng.normal(0, 1, (k, 3, size, size)).astype(np.float32))
    return path


def config(path: Path, results: Path, args) -> dict:
    return {
        "general": {"results_dir": str(results), "device": args.device, "seed": 0},
        "data_request": {
            "train": {
                "bench": {
                    "dataset_class": "HyraxHDF5Dataset",
                    "data_location": str(path),
                    "fields": ["image", "object_id"],
                    "primary_id_field": "object_id",
                }
            }
        },
        "data_set": {"transform": "none"},
        "data_loader": {"batch_size": args.batch_size, "num_workers": args.workers},
        "split": {"train": 1.0, "validate": 0.0, "test": 0.0},
        "train": {"epochs": args.epochs, "mixed_precision": args.bf16},
    }


def plain_loop(path: Path, cfg: dict, args) -> list[float]:
    """The loop a user would write: contiguous h5py slices -> tensor -> device -> step."""
    from libhyrax.device import pick_device
    from libhyrax.models import build_model, model_class

    device = pick_device(args.device)
    with h5py.File(path, "r") as f:
        images = f["images"]
        n = len(images)
        model = build_model(model_class("HyraxAutoencoder"), cfg, images[:1]).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 and device.type == "cuda" else None
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            for a in range(0, n, args.batch_size):
                x = torch.from_numpy(images[a : a + args.batch_size]).to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                if amp is not None:
                    with amp:
                        loss = torch.nn.functional.mse_loss(model(x), x)
                else:
                    loss = torch.nn.functional.mse_loss(model(x), x)
                loss.backward()
                opt.step()
                loss.detach().item()  # what any loop that logs its loss does
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times


def hyrax_epochs(cfg: dict) -> list[float]:
    from libhyrax.config import load_config
    from libhyrax.stages.train import train

    run = train(load_config(data=cfg))
    with open(run.path / "metrics.csv", newline="") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    p.add_argument("--n", type=int, default=40000 if gpu else 2048)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=512 if gpu else 256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating passes of each loop")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp) / "bench.h5", args.n, args.size)
        cfg = config(path, Path(tmp) / "results", args)
        dev = torch.cuda.get_device_name() if gpu and args.device != "cpu" else f"cpu, {args.threads} threads"
        print(
            f"device: {dev}; {args.n} objects 3x{args.size}x{args.size}, batch {args.batch_size}, "
            f"HyraxAutoencoder, {args.epochs} epochs each{', bf16' if args.bf16 else ''}",
            flush=True,
        )
        plain, hyrax = [], []
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
            plain.append(plain_loop(path, cfg, args))
            hyrax.append(hyrax_epochs(cfg))
    # the first epoch of each pass warms up (allocator, caches, cuDNN autotuning); the fastest epoch is
    # the least disturbed by other load, the median the typical one
    for name, passes in (("plain loop ", plain), ("hyrax train", hyrax)):
        warm = [t for times in passes for t in (times[1:] or times)]
        print(
            f"{name}: {min(warm):7.2f} s/epoch fastest, {statistics.median(warm):7.2f} median; "
            f"{args.n / min(warm):9,.0f} images/s   (epochs: "
            f"{' | '.join(', '.join(f'{t:.2f}' for t in times) for times in passes)})"
        )
    p_warm = [t for times in plain for t in times[1:]]
    h_warm = [t for times in hyrax for t in times[1:]]
    print(
        f"hyrax / plain: {min(h_warm) / min(p_warm):.3f}x fastest epochs, "
        f"{statistics.median(h_warm) / statistics.median(p_warm):.3f}x medians"
    )


if __name__ == "__main__":
    main()
