"""Benchmark `infer`: throughput against a plain PyTorch loop over the same HDF5 file and model, and peak
memory at two sizes (memory must not grow with N).

    # both models vs the plain loop; memory at 100k, 1M
    .venv/bin/python benchmarks/bench_infer.py
    .venv/bin/python benchmarks/bench_infer.py --sizes 100000 --n 20000 --device cuda --json out.json
    # issue 16's side-by-side (pip install hyrax in that venv)
    .venv/bin/python benchmarks/bench_infer.py --reference-workload --n 100000 --repeats 2 \
        --reference-python /tmp/refvenv/bin/python

--reference-workload: N random 3x32x32 cutouts, the default HyraxAutoencoder (base 32, latent 64), batch
512, CPU. Prints objects/s of `infer` (its loop; `infer_wall`: the whole call), `infer` with
infer.recon_error = false (`latents_only`), the plain loop (encoder and decoder, as `infer` computes),
an encoder-only plain loop, the reference tool's infer (encoder only, its in-memory random dataset), and
`train` against the reference's train (one epoch on 20% of the objects; the whole stage call).

The data: N single-band 16x16 float32 cutouts (1 KiB each: 1M take about 1 GB), written with the data
package's CutoutWriter into a scratch folder that is deleted afterwards. Two models, each saved as a
train run (untrained weights; speed does not depend on them): a small HyraxAutoencoder (base 8, latent 16;
the model sets the pace on a CPU) and HyraxLoopback (no compute, 256-d latents: the data path alone, where
a framework's overhead shows). Both loops compute infer_outputs with the same `[data_set]` transform
(asinh); the plain loop keeps its outputs in memory, `infer` streams them to latents.h5. Ratios are the
median over the rounds of infer / plain loop of the same round. Each peak-memory figure is the maximum RSS
of a fresh process that runs `infer` (HyraxLoopback) over N objects.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE, BASE, LATENT = 16, 8, 16


DTYPE = "float32"  # --dtype: how the cutouts are stored (float16: half the bytes to read)


def make_cutouts(
    path: Path,
    n: int,
    seed: int = 0,
    chunk: int = 65536,
    shape: tuple[int, int, int] = (1, SIZE, SIZE),
    bands=("r",),
) -> Path:
    from libhyrax.data import CutoutWriter

    rng = np.random.default_rng(seed)
    with CutoutWriter(path, shape, list(bands), n_rows=n, id_length=12, dtype=DTYPE) as w:
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            w.append(
                np.char.mod("obj%09d", np.arange(a, b)), rng.exponential(0.1, (b - a, *shape)).astype("f4")
            )
    return path


def config(root: Path, cutouts: Path, device: str, batch_size: int, model: str) -> dict:
    spec = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(cutouts),
        "fields": ["image", "object_id"],
        "primary_id_field": "object_id",
    }
    return {
        "general": {"results_dir": str(root / "results"), "device": device},
        "data_request": {"train": {"cutouts": spec}, "infer": {"cutouts": spec}},
        "model": {"name": model, "HyraxAutoencoder": {"base_channel_size": BASE, "latent_dim": LATENT}},
        "data_loader": {"batch_size": batch_size},
    }


def make_train_run(cfg: dict) -> Path:
    import torch

    from libhyrax.config import resolve
    from libhyrax.data import open_group
    from libhyrax.models import build_model, describe, model_class, prepare, save_trained
    from libhyrax.runs import open_run

    torch.manual_seed(0)
    cfg = resolve(cfg)
    cls = model_class(cfg["model"]["name"])
    sample = prepare(cls, open_group(cfg, "train").read(0, 1))
    model = build_model(cls, cfg, sample)
    with open_run("train", cfg) as run:
        save_trained(run.path, model, describe(model, cfg, sample))
    return run.final_path


def plain_loop(train_run: Path, cutouts: Path, n: int, batch_size: int, device: str) -> float:
    """What a user would write by hand: h5py slices -> asinh -> model -> arrays in memory, saved to an
    HDF5 file at the end. Objects/s."""
    import h5py
    import torch

    from libhyrax.models import load_trained

    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model, desc = load_trained(train_run, device=str(dev))
    scale = desc["data_set"]["asinh_scale"]
    outputs: dict[str, np.ndarray] = {}
    ids_all = None
    t0 = time.perf_counter()
    with h5py.File(cutouts, "r") as f, torch.inference_mode():
        images, ids = f["images"], f["object_id"]
        ids_all = np.empty(n, ids.dtype)
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            ids_all[a:b] = ids[a:b]
            x = torch.from_numpy(np.arcsinh(images[a:b] / scale).astype("f4")).to(dev)
            for k, v in model.infer_outputs(x).items():
                if k not in outputs:
                    outputs[k] = np.empty((n, *v.shape[1:]), "f4")
                outputs[k][a:b] = v.cpu().numpy()
    with h5py.File(cutouts.with_name("plain-latents.h5"), "w") as f:  # a user keeps the results too
        f["object_id"] = ids_all
        for k, v in outputs.items():
            f[k] = v
    return n / (time.perf_counter() - t0)


def hyrax_infer(cfg: dict, train_run: Path) -> tuple[float, float, Path]:
    """libhyrax.infer over the whole file: (objects/s of its loop, objects/s wall incl. setup, run dir)."""
    from libhyrax.rundir import read_provenance
    from libhyrax.stages.infer import infer

    t0 = time.perf_counter()
    result = infer(cfg, from_run=train_run)
    wall = time.perf_counter() - t0
    info = read_provenance(result.path)["stage_info"]
    return info["objects_per_s"], info["n_objects"] / wall, result.path


PEAK_SCRIPT = """
import json, resource, sys, time
from libhyrax.stages.infer import infer
cfg, train_run = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
result = infer(cfg, from_run=train_run)
secs = time.perf_counter() - t0
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": secs,
                  "run": str(result.path)}))
"""


def peak_memory(cfg: dict, train_run: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, json.dumps(cfg), str(train_run)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# The workload the reference tool was measured on (issue 16): random 3x32x32 cutouts, the default
# HyraxAutoencoder (base 32, latent 64), batch 512. The reference runs on its HyraxRandomDataset (in memory,
# which favours it: ours reads the same shape from an HDF5 file). torchvision's wheel does not import beside
# the pinned CPU torch, and the reference's autoencoder imports CenterCrop from it: a stand-in is given.
REFERENCE_SHAPE, REFERENCE_BATCH = (3, 32, 32), 512
TORCHVISION_STANDIN = {
    "torchvision/__init__.py": "",
    "torchvision/transforms/__init__.py": "",
    "torchvision/models/__init__.py": "",
    "torchvision/transforms/v2.py": (
        "class CenterCrop:\n"
        "    def __init__(self, size):\n"
        "        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)\n"
        "    def __call__(self, x):\n"
        "        (h, w), (th, tw) = x.shape[-2:], self.size\n"
        "        t, l = (h - th) // 2, (w - tw) // 2\n"
        "        return x[..., t:t + th, l:l + tw]\n"
    ),
}
REFERENCE_SCRIPT = """
import sys, time
n, folder = int(sys.argv[1]), sys.argv[2]
import hyrax
h = hyrax.Hyrax(config_file=folder + "/ref.toml")
t0 = time.perf_counter()
h.train()
print("TRAIN_OBJECTS_PER_S", n * 0.2 / (time.perf_counter() - t0))
t0 = time.perf_counter()
h.infer()
print("OBJECTS_PER_S", n / (time.perf_counter() - t0))
"""
REFERENCE_TOML = """
[general]
results_dir = "{folder}/results"
data_dir = "{folder}/data"
[model]
name = "HyraxAutoencoder"
[model.HyraxAutoencoder]
base_channel_size = 32
latent_dim = 64
[data_set.HyraxRandomDataset]
size = {n}
shape = [3, 32, 32]
[data_loader]
batch_size = 512
[train]
epochs = 1
[split]
train = 0.2
[data_request.train.data]
dataset_class = "HyraxRandomDataset"
data_location = "{folder}/data"
primary_id_field = "object_id"
fields = ["image", "object_id"]
[data_request.infer.data]
dataset_class = "HyraxRandomDataset"
data_location = "{folder}/data"
primary_id_field = "object_id"
fields = ["image", "object_id"]
"""


def reference_tool(python: str, n: int, folder: Path) -> tuple[float, float]:
    """The reference tool's train (one epoch on 20% of the objects) and infer stages in its own
    interpreter: objects/s of each, wall time of the stage call."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in TORCHVISION_STANDIN.items():
        (folder / "stub" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "stub" / rel).write_text(text)
    (folder / "ref.toml").write_text(REFERENCE_TOML.format(folder=folder, n=n))
    env = {**os.environ, "PYTHONPATH": str(folder / "stub"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(
        [python, "-c", REFERENCE_SCRIPT, str(n), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    rates = {
        line.split()[0]: float(line.split()[1]) for line in out.stdout.splitlines() if "OBJECTS_PER_S" in line
    }
    if out.returncode or len(rates) != 2:
        raise SystemExit(f"the reference tool failed:\n{out.stderr[-3000:]}")
    shutil.rmtree(folder / "results", ignore_errors=True)
    return rates["TRAIN_OBJECTS_PER_S"], rates["OBJECTS_PER_S"]


def hyrax_train(cfg: dict, n: int) -> float:
    """`train` for one epoch on 20% of the objects, as the reference is run: objects/s of the stage call."""
    from libhyrax.stages.train import train

    t0 = time.perf_counter()
    result = train({**cfg, "split": {"train": 0.2, "validate": 0.0, "test": 0.8}, "train": {"epochs": 1}})
    secs = time.perf_counter() - t0
    shutil.rmtree(result.path)
    return n * 0.2 / secs


def encoder_loop(train_run: Path, cutouts: Path, n: int, batch_size: int) -> float:
    """The plain loop with the encoder alone (no reconstruction error, as the reference computes):
    objects/s."""
    import h5py
    import torch

    from libhyrax.models import load_trained

    model, desc = load_trained(train_run, device="cpu")
    scale = desc["data_set"]["asinh_scale"]
    latents = np.empty((n, model.latent_dim), "f4")
    t0 = time.perf_counter()
    with h5py.File(cutouts, "r") as f, torch.inference_mode():
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            x = torch.from_numpy(np.arcsinh(f["images"][a:b] / scale).astype("f4"))
            latents[a:b] = model.infer_batch(x).numpy()
    return n / (time.perf_counter() - t0)


def reference_workload(args, scratch: Path) -> dict:
    """Issue 16's side-by-side: the default infer (and train) against the plain loops and the reference."""
    n, batch = args.n, REFERENCE_BATCH
    cutouts = make_cutouts(scratch / "cutouts-3x32x32.h5", n, chunk=16384, shape=REFERENCE_SHAPE, bands="gri")
    cfg = config(scratch, cutouts, "cpu", batch, "HyraxAutoencoder")
    cfg["model"]["HyraxAutoencoder"] = {"base_channel_size": 32, "latent_dim": 64}
    train_run = make_train_run(cfg)
    rates: dict[str, list[float]] = {
        "infer": [],
        "infer_wall": [],
        "latents_only": [],
        "plain": [],
        "encoder": [],
        "reference": [],
        "train": [],
        "reference_train": [],
    }
    for _ in range(args.repeats):  # alternate, so load changes favour none of them
        loop_rate, wall_rate, run = hyrax_infer(cfg, train_run)
        shutil.rmtree(run)
        rates["infer"].append(loop_rate)
        rates["infer_wall"].append(wall_rate)
        loop_rate, _, run = hyrax_infer(
            {**cfg, "infer": {"recon_error": False}}, train_run
        )  # no decoder pass
        shutil.rmtree(run)
        rates["latents_only"].append(loop_rate)
        rates["plain"].append(plain_loop(train_run, cutouts, n, batch, "cpu"))
        rates["encoder"].append(encoder_loop(train_run, cutouts, n, batch))
        rates["train"].append(hyrax_train(cfg, n))
        if args.reference_python:
            ref_train, ref_infer = reference_tool(args.reference_python, n, scratch / "reference")
            rates["reference"].append(ref_infer)
            rates["reference_train"].append(ref_train)
    best = {k: max(v) for k, v in rates.items() if v}
    out = {
        "workload": f"{n:,} random 3x32x32 {DTYPE}, HyraxAutoencoder base 32 latent 64, batch {batch}, cpu",
        "objects_per_s": best,
        "all": rates,
    }
    print(f"{out['workload']} (best of {args.repeats}):", file=sys.stderr)
    for k, v in best.items():
        if "train" not in k:
            print(f"  {k:<11} {v:8,.0f} objects/s   infer / {k}: {best['infer'] / v:.2f}", file=sys.stderr)
    if "reference_train" in best:
        print(
            f"  train: {best['train']:,.0f} objects/s against the reference's "
            f"{best['reference_train']:,.0f}: "
            f"{best['train'] / best['reference_train']:.2f}x (the stage call, one epoch on {n // 5:,})",
            file=sys.stderr,
        )
    return out


def default_figures(args, scratch: Path) -> dict:
    """Both models against the plain loop, and infer's peak memory at each of --sizes."""
    import torch

    sizes = [int(s) for s in args.sizes.split(",") if s]
    figures: dict = {
        "device": args.device,
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "cutout": f"1x{SIZE}x{SIZE} float32",
        "autoencoder": f"base {BASE} latent {LATENT}",
    }
    files = {}
    for n in sorted({args.n, args.n_model, *sizes}):
        t0 = time.perf_counter()
        files[n] = make_cutouts(scratch / f"cutouts-{n}.h5", n)
        print(f"wrote {n:,} cutouts in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    figures["throughput"] = {}
    runs = {}
    for model, n in (("HyraxAutoencoder", args.n_model), ("HyraxLoopback", args.n)):
        cfg = config(scratch, files[n], args.device, args.batch_size, model)
        runs[model] = train_run = make_train_run(cfg)
        plain, ours, ours_wall, workers = [], [], [], []
        wcfg = {**cfg, "data_loader": {**cfg["data_loader"], "num_workers": args.workers}}
        for _ in range(args.repeats):  # alternate, so page cache and load changes favour neither
            plain.append(plain_loop(train_run, files[n], n, args.batch_size, args.device))
            loop_rate, wall_rate, run = hyrax_infer(cfg, train_run)
            ours.append(loop_rate)
            ours_wall.append(wall_rate)
            shutil.rmtree(run)
            if args.workers:
                loop_rate, _, run = hyrax_infer(wcfg, train_run)
                workers.append(loop_rate)
                shutil.rmtree(run)
        # each round's infer against the plain loop of the same round; the median of the rounds
        ratio = float(np.median(np.array(ours) / np.array(plain)))
        ratio_wall = float(np.median(np.array(ours_wall) / np.array(plain)))
        figures["throughput"][model] = {
            "n": n,
            "plain_objects_per_s": max(plain),
            "infer_objects_per_s": max(ours),
            "infer_wall_objects_per_s": max(ours_wall),
            "ratio": ratio,
            "ratio_wall": ratio_wall,
            "all_plain": plain,
            "all_infer": ours,
        }
        line = (
            f"{model} at {n:,}: plain {max(plain):,.0f}/s, infer {max(ours):,.0f}/s (wall incl. start-up "
            f"{max(ours_wall):,.0f}/s): median ratio {ratio:.2f} (wall {ratio_wall:.2f})"
        )
        if workers:
            w_ratio = float(np.median(np.array(workers) / np.array(plain)))
            figures["throughput"][model] |= {
                "workers": args.workers,
                "infer_workers_objects_per_s": max(workers),
                "ratio_workers": w_ratio,
                "all_infer_workers": workers,
            }
            line += f"; {args.workers} reader processes {max(workers):,.0f}/s, ratio {w_ratio:.2f}"
        print(line, file=sys.stderr)
    figures["peak_memory"] = {}
    for n in sizes:
        res = peak_memory(
            config(scratch, files[n], args.device, args.batch_size, "HyraxLoopback"), runs["HyraxLoopback"]
        )
        shutil.rmtree(res.pop("run"))
        figures["peak_memory"][str(n)] = res
        print(f"peak RSS at {n:,}: {res['peak_rss_mib']:.0f} MiB ({res['seconds']:.1f} s)", file=sys.stderr)
    if len(sizes) >= 2:
        lo, hi = (figures["peak_memory"][str(s)]["peak_rss_mib"] for s in (min(sizes), max(sizes)))
        figures["peak_memory_growth"] = hi / lo - 1
        print(
            f"peak memory at {max(sizes):,} vs {min(sizes):,}: {100 * (hi / lo - 1):+.1f}%", file=sys.stderr
        )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=100_000, help="objects for the HyraxLoopback throughput comparison"
    )
    ap.add_argument("--n-model", type=int, default=20_000, help="objects for the HyraxAutoencoder comparison")
    ap.add_argument("--sizes", default="100000,1000000", help="object counts for the peak-memory runs")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats of each throughput loop")
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also time infer with this many reader processes (data_loader.num_workers)",
    )
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, deleted after)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="cutout storage")
    ap.add_argument(
        "--reference-workload",
        action="store_true",
        help="only the side-by-side on 3x32x32 cutouts with the default autoencoder (issue 16): infer "
        "against a plain loop, an encoder-only loop and (with --reference-python) the reference tool",
    )
    ap.add_argument(
        "--reference-python",
        default=None,
        help="the python of a venv where the reference tool (pip install hyrax) is installed",
    )
    args = ap.parse_args()
    global DTYPE
    DTYPE = args.dtype
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from libhyrax.log import setup_logging

    setup_logging("warning")
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="hyrax-bench-infer-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        figures = (
            reference_workload(args, scratch) if args.reference_workload else default_figures(args, scratch)
        )
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
