"""The whole pipeline at N objects, every stage its own `hyrax` process with the one before piped into it
(as users run it): per stage the wall time, objects/s, peak memory and disk written, at two sizes; what
grows with N; and a projection to 100M objects as Slurm arrays (docs/scale.md).

    .venv/bin/python benchmarks/scale_run.py                                    # 100k and 1M: ~1.5 h, 2 cores
    .venv/bin/python benchmarks/scale_run.py --sizes 2000,10000 --train-n 1000  # a few minutes
    .venv/bin/python benchmarks/scale_run.py --markdown docs/scale.md --json scale.json   # fill docs/scale.md
    .venv/bin/python benchmarks/scale_run.py --set general.device=cuda --set vector_db.name=exact

The data: the built-in synthetic survey (`SyntheticSurvey`) of N objects, by default one band of 32x32
float32 (4 KiB a cutout: 1M take 4.1 GB). Each size runs in a folder of its own under --dir (default a
temporary folder under /tmp, deleted afterwards unless --keep):

    prepare | train | infer | umap          then   infer | index | search --id A --id B --id C
                                                   infer | anomaly
                                                   umap  | visualize   (last: it colours by the anomaly score)

Each stage's stdin is a pipe holding the results directory the stage before it printed, as in `a | b`; the
stages run one after another, so each is timed alone. `hyrax prepare` builds FITS folders or the built-in
sample but no synthetic survey, so the prepare step is a small Python process that opens a prepare run
(libhyrax.runs) and has `SyntheticSurvey` write its cutouts.h5 there: a run `hyrax train` takes from a pipe
like any prepare run. train fits the default model on --train-n objects (split.train = train_n / N,
split.validate a tenth of that, split.test = 0) for --epochs epochs; infer maps all N (the data the model
was trained on, found through its lineage). --set KEY=VALUE goes to every stage.

Per stage: wall time of the process (start-up included); objects/s = objects / wall (train: objects
trained x epochs); CPU time; peak RSS = ru_maxrss from os.wait4 (the largest single process, its reaped
worker processes included); tree peak = the largest sum of RSS over the process and its descendants,
sampled every 0.2 s (what a Slurm memory limit sees while umap's spawned workers run); disk = bytes of its
results directory. Before the sizes, a --warmup run (not reported) pays one-time costs (numba's compile
cache, in umap's spawned workers too; the page cache of the libraries) so they don't land on the first
size.

What grows with N, smallest to largest size: a stage is flagged when its peak RSS grew by more than 10% of
the growth of the array it would hold if it didn't stream (the file it reads; prepare: the file it writes)
and by more than --noise-mib. Stages that hold every object by design (HOLDS_ALL) are flagged "expected".
Sizes below the stages' fixed samples and buffers (umap fits 20k objects, the isolation forest 100k,
visualize draws up to 200k points, umap spawns its workers above 8192) show growth that stops there.

The projection (--project, default 100M): per stage t(N) = t0 + k g(N), with g = N (N^2 for anomaly's
exact knn, N log N for index's HNSW and for knn through it: growth_models), through the smallest and
largest size (through zero and the largest where noise makes the line fall); train's time is the largest
size's (it trains on --train-n objects whatever N). Stages the registry marks `shards` get the fewest
array tasks (at most 1000) that each end within --task-hours; the others are one job. Memory per task =
the tree peak at the largest size + its growth per byte of the array held, times that array's growth to
the target; disk grows linearly. Wall times are this machine's: 2 shared cores in development.

Stages from latents at 10M (--latents-sizes, default none; measures nothing else):

    .venv/bin/python benchmarks/scale_run.py --latents-sizes 1000000,10000000 --latents-stages index,search \
        --set vector_db.name=faiss --json latents.json

writes a synthetic infer run per size (latents.h5: N x 64 float32 in 200 Gaussian clusters, ids SYN-<row>,
written block by block; no cutouts, so search's catalog columns are left out) and runs the stages that
work from latents (--latents-stages, of index, search, anomaly, umap) on it as processes, measured as
above: where the cutouts of 10M objects (41 GB) would not fit this disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from libhyrax.data.from_run import DATA_STAGES
from libhyrax.stages import BY_NAME
from libhyrax.stages import STAGES as REGISTRY

# the registry's stages this doesn't run, and why
NOT_RUN = {
    "download": "it fetches from a survey's service (prepare makes the data here)",
    "test": "it evaluates the model, a fixed cost",
    "export": "infer runs the train run's model",
    "rank": "it needs label files",
}
# the registry's order, but visualize last: it colours the map by the newest anomaly score
STAGES = tuple(
    sorted(
        (s.name for s in REGISTRY if s.makes_run and s.name not in NOT_RUN),
        key=lambda name: name == "visualize",
    )
)


def upstream(stage: str) -> str | None:
    """The run piped into `stage`: the first stage it reads (the registry's `needs`) that runs here; for a
    stage that starts from data (train), the data stage that runs here (prepare)."""
    needs = BY_NAME[stage].needs or (() if stage in DATA_STAGES else DATA_STAGES)
    return next((n for n in needs if n in STAGES), None)


UPSTREAM = {s: up for s in STAGES if (up := upstream(s))}
# the array a stage would hold if it didn't stream: (the run holding it, the file or folder)
HOLDS = {
    "prepare": ("prepare", "cutouts.h5"),
    "train": ("prepare", "cutouts.h5"),
    "infer": ("prepare", "cutouts.h5"),
    "umap": ("infer", "latents.h5"),
    "index": ("infer", "latents.h5"),
    "search": ("index", "index"),
    "anomaly": ("infer", "latents.h5"),
    "visualize": ("umap", "embedding.h5"),
}
# stages whose memory holds every object by design, and why
HOLDS_ALL = {
    "index": "its output, the HNSW graph, is built in memory",
    "search": "it opens the whole index",
    "anomaly": "every object's scores, and the knn sample's latents (anomaly.knn_sample_size; "
    "all of them with 0)",
    "visualize": "it reads every object's id, position and catalog columns",
}
MAX_TASKS = 1000  # Slurm's default MaxArraySize is 1001
CPUS_PER_TASK, RECIPE_GIB = 4, 16  # what apptainer/*.sbatch ask: 4 CPUs, 4G each
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20

PREPARE = """
import sys
from libhyrax.config import resolve
from libhyrax.data import SyntheticSurvey
from libhyrax.log import setup_logging
from libhyrax.runs import open_run
setup_logging("info")
cfg = resolve(sys.argv[1], sys.argv[2:])  # the config file and the --set overrides
with open_run("prepare", cfg) as run:
    survey = SyntheticSurvey(cfg, str(run.file("cutouts.h5")))
    run.add_input(run.file("cutouts.h5"))
    run.record(source="synthetic survey (SyntheticSurvey)", n_objects=len(survey), n_rejected=0)
print(run.final_path, flush=True)
"""


LATENTS = """
import sys
import numpy as np
from libhyrax.config import resolve
from libhyrax.hdf5 import BufferedWriter
from libhyrax.log import setup_logging
from libhyrax.runs import open_run
setup_logging("info")
n, dim = int(sys.argv[2]), 64
cfg = resolve(sys.argv[1], sys.argv[3:])
centres = np.random.default_rng(0).normal(size=(200, dim)).astype(np.float32) * 3
width = len(str(n))
with open_run("infer", cfg) as run:
    out = BufferedWriter(run.file("latents.h5"), n)
    for a in range(0, n, 1 << 18):
        b = min(a + (1 << 18), n)
        rng = np.random.default_rng([1, a])
        x = centres[rng.integers(0, 200, b - a)] + rng.normal(size=(b - a, dim)).astype(np.float32)
        ids = np.char.add(b"SYN-", np.char.zfill(np.arange(a, b).astype("S"), width))
        if not out.started:
            out.create({"latent": x}, id_length=4 + width)
        out.append(ids, latent=x)
    out.close()
    run.record(n_objects=n, synthetic="200 Gaussian clusters, 64-d")
print(run.final_path, flush=True)
"""
LATENT_STAGES = ("index", "search", "anomaly", "umap")


def run_latents_size(n: int, root: Path, args, env: dict) -> dict:
    """The stages that work from latents, on a synthetic infer run of n latents; {stage: figures}."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "scale.toml"
    # data that isn't there: the stages go on without catalog columns
    cfg.write_text(
        f'[general]\nresults_dir = "{root / "results"}"\n\n[data_request.infer.none]\n'
        f'dataset_class = "HyraxHDF5Dataset"\ndata_location = "{root / "no-cutouts.h5"}"\n'
    )
    argv = commands(n, cfg, args)  # search asks for SYN-<first, middle and last row>, as the survey's ids
    figures = {
        "infer": run_process(
            [sys.executable, "-c", LATENTS, str(cfg), str(n), *args.set],
            None,
            root / "latents.stderr.log",
            env,
        )
    }
    for stage in args.latents_stages:
        f = run_process(
            argv[stage], figures[UPSTREAM[stage]]["run"] + "\n", root / f"{stage}.stderr.log", env
        )
        f |= {"objects": n, "objects_per_s": n / f["wall_s"], "disk_bytes": size_of(Path(f["run"]))}
        figures[stage] = f
        print(
            f"  {n:>11,}  {stage:<9} {f['wall_s']:8.1f} s  {f['objects_per_s']:>10,.0f} obj/s  "
            f"CPU {f['cpu_s']:8.1f} s  RSS {f['peak_rss_mib']:6.0f} MiB (tree {f['tree_peak_mib']:6.0f})  "
            f"disk {f['disk_bytes'] / 1e6:9.1f} MB",
            file=sys.stderr,
            flush=True,
        )
    return figures


def latents_main(args, env: dict) -> None:
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hyrax-scale-latents-"))
    result = {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "load_before": os.getloadavg()[0],
        "sizes": {},
    }
    for n in sorted({int(x) for x in args.latents_sizes.split(",") if x}):
        result["sizes"][n] = run_latents_size(n, scratch / f"latents-n{n}", args, env)
        if not args.keep:
            shutil.rmtree(scratch / f"latents-n{n}", ignore_errors=True)
    result["load_after"] = os.getloadavg()[0]
    print(
        f"load average {result['load_before']:.1f} before, {result['load_after']:.1f} after", file=sys.stderr
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep and not args.dir:
        shutil.rmtree(scratch, ignore_errors=True)


# --- one stage as a process -----------------------------------------------------------------------------


def tree_rss(root: int) -> int:
    """Bytes resident in process `root` and all its descendants now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class TreePeak(threading.Thread):
    """Samples tree_rss(pid) until stopped; `.peak` is the largest sample."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.done.wait(self.every)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def run_process(argv: list[str], stdin_text: str | None, log: Path, env: dict) -> dict:
    """Run one stage with `stdin_text` in a pipe on its stdin; its stdout (the results directory), wall
    time, CPU time, peak RSS and tree peak. Its stderr goes to `log`."""
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=log.parent,
        )
        sampler = TreePeak(p.pid)
        sampler.start()
        if stdin_text is not None:
            p.stdin.write(stdin_text.encode())
            p.stdin.close()
        out = p.stdout.read().decode()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)  # this child's own rusage (and its reaped children's)
        wall = time.perf_counter() - t0
        tree = sampler.stop()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(
            f"{' '.join(argv[:3])} ... exited {p.returncode}; the end of its stderr ({log}):\n{tail}"
        )
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return {
        "run": lines[-1],
        "wall_s": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mib": ru.ru_maxrss / 1024,
        "tree_peak_mib": max(tree / MiB, ru.ru_maxrss / 1024),
    }


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / f).stat().st_size for d, _, files in os.walk(path) for f in files)


# --- one size --------------------------------------------------------------------------------------------


def write_config(root: Path, n: int, args) -> Path:
    bands = ", ".join(f'"{b}"' for b in args.bands)
    cfg = root / "scale.toml"
    cfg.write_text(
        f'[general]\nresults_dir = "{root / "results"}"\n\n'
        f"[data_set.SyntheticSurvey]\nn = {n}\nsize = {args.size}\nbands = [{bands}]\nseed = 0\n"
    )
    return cfg


def train_split(n: int, train_n: int) -> tuple[int, list[str]]:
    """Objects trained on, and the --set keys that pick them (a seeded subset: split fractions that sum
    to less than 1)."""
    train_n = max(1, min(train_n, int(0.8 * n)))
    validate = max(1, train_n // 10)
    return train_n, [f"split.train={train_n / n!r}", f"split.validate={validate / n!r}", "split.test=0.0"]


def commands(n: int, cfg: Path, args) -> dict[str, list[str]]:
    hyrax = str(Path(sys.executable).with_name("hyrax"))
    common = ["-c", str(cfg)] + [x for s in args.set for x in ("--set", s)]
    width = len(str(n))
    queries = [f"SYN-{i:0{width}d}" for i in sorted({0, n // 2, n - 1})]
    _, split = train_split(n, args.train_n)
    return {
        "prepare": [sys.executable, "-c", PREPARE, str(cfg), *args.set],
        "train": [
            hyrax,
            "train",
            *common,
            "--set",
            f"train.epochs={args.epochs}",
            *(x for s in split for x in ("--set", s)),
        ],
        "infer": [hyrax, "infer", *common],
        "umap": [hyrax, "umap", *common],
        "index": [hyrax, "index", *common],
        "search": [hyrax, "search", *common, *(x for q in queries for x in ("--id", q))],
        "anomaly": [hyrax, "anomaly", *common],
        "visualize": [hyrax, "visualize", *common],
    }


def run_size(n: int, root: Path, args, env: dict, quiet: bool = False) -> dict:
    """Every stage at n objects; {stage: figures}."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root, n, args)
    argv = commands(n, cfg, args)
    train_n, _ = train_split(n, args.train_n)
    objects = {s: n for s in STAGES} | {"train": train_n * args.epochs}
    figures: dict[str, dict] = {}
    for stage in STAGES:
        stdin = figures[UPSTREAM[stage]]["run"] + "\n" if stage in UPSTREAM else None
        f = run_process(argv[stage], stdin, root / f"{stage}.stderr.log", env)
        f["objects"] = objects[stage]
        f["objects_per_s"] = objects[stage] / f["wall_s"]
        f["disk_bytes"] = size_of(Path(f["run"]))
        figures[stage] = f
        if not quiet:
            print(
                f"  {n:>11,}  {stage:<9} {f['wall_s']:8.1f} s  {f['objects_per_s']:>10,.0f} obj/s  "
                f"RSS {f['peak_rss_mib']:6.0f} MiB (tree {f['tree_peak_mib']:6.0f})  "
                f"disk {f['disk_bytes'] / 1e6:9.1f} MB",
                file=sys.stderr,
                flush=True,
            )
    for stage, (holder, name) in HOLDS.items():
        figures[stage]["holds_bytes"] = size_of(Path(figures[holder]["run"]) / name)
    return figures


# --- what grows with N, and the projection --------------------------------------------------------------


def g(kind: str, n: float) -> float:
    """How work grows: "fixed" (not with N), "N", "N log N" or "N^2"."""
    return {"fixed": 0.0, "N": n, "N log N": n * math.log(n), "N^2": n * n}[kind]


def growth(sizes: dict[int, dict], noise_mib: float) -> dict[str, dict]:
    """Per stage, smallest to largest size: time per object, memory growth against the array it holds."""
    lo, hi = min(sizes), max(sizes)
    out = {}
    for stage in STAGES:
        a, b = sizes[lo][stage], sizes[hi][stage]
        d_rss = (b["peak_rss_mib"] - a["peak_rss_mib"]) * MiB
        d_held = b["holds_bytes"] - a["holds_bytes"]
        share = d_rss / d_held if d_held > 0 else 0.0
        flagged = d_rss > max(0.10 * d_held, noise_mib * MiB)
        ns = sorted(sizes)  # marginal seconds per object between consecutive sizes: constant when linear
        marginal = [
            (sizes[m][stage]["wall_s"] - sizes[k][stage]["wall_s"]) / (m - k)
            for k, m in itertools.pairwise(ns)
        ]
        out[stage] = {
            "from": lo,
            "to": hi,
            "wall_ratio": b["wall_s"] / a["wall_s"],
            "marginal_us_per_object": [1e6 * x for x in marginal],
            "rss_growth_mib": d_rss / MiB,
            "holds_growth_mib": d_held / MiB,
            "rss_growth_share": share,
            "flag": (("expected: " + HOLDS_ALL[stage]) if stage in HOLDS_ALL else "UNEXPECTED")
            if flagged
            else "",
        }
    return out


def fit(stage: str, sizes: dict[int, dict], key: str, kind: str) -> tuple[float, float]:
    """(y0, k) of key(N) = y0 + k g(N) through the smallest and largest size; where noise makes that
    line fall or start below zero, the line through zero and the largest size (an upper bound)."""
    lo, hi = min(sizes), max(sizes)
    y1, y2 = sizes[lo][stage][key], sizes[hi][stage][key]
    if kind == "fixed":
        return y2, 0.0
    k = (y2 - y1) / (g(kind, hi) - g(kind, lo))
    y0 = y1 - k * g(kind, lo)
    if k <= 0 or y0 < 0:
        y0, k = 0.0, y2 / g(kind, hi)
    return y0, k


def growth_models(overrides: list[str]) -> dict[str, str]:
    """How each stage's work grows with N under the defaults and `overrides` (else N): train's with
    --train-n and --epochs only; anomaly's exact knn is all against all, a search per object through an
    index; an HNSW index (chromadb, qdrant) inserts in log N."""
    from libhyrax.config import resolve

    cfg = resolve({}, overrides)  # the defaults and --set, as every stage here resolves them
    a = cfg["anomaly"]
    knn = a["method"] in ("combined", "knn")
    # exact knn among a seeded sample of knn_sample_size objects: N x sample distances (from N = sample on)
    exact = "N" if int(a.get("knn_sample_size") or 0) > 0 else "N^2"
    anomaly = "N" if not knn else exact if a["knn_source"] == "exact" else "N log N"
    return {
        "train": "fixed",
        "anomaly": anomaly,
        "index": "N" if cfg["vector_db"]["name"] == "exact" else "N log N",
    }


def project(
    sizes: dict[int, dict],
    target: int,
    task_hours: float,
    noise_mib: float,
    train_n: int,
    models: dict[str, str],
) -> dict:
    from libhyrax.stages import get

    hi = max(sizes)
    stages = {}
    for stage in STAGES:
        big = sizes[hi][stage]
        kind = models.get(stage, "N")
        t0, k = fit(stage, sizes, "wall_s", kind)
        work = k * g(kind, target)
        tasks = 1
        if get(stage).shards and work > 0:
            tasks = min(MAX_TASKS, max(1, math.ceil(work / max(task_hours * 3600 - t0, 60))))
        task_s = t0 + work / tasks
        # memory grows with the array it holds where it grew beyond the noise between the sizes, or, for
        # the stages that hold every object, where it grew at all
        small = sizes[min(sizes)][stage]
        d_mem, d_held = (
            (big["tree_peak_mib"] - small["tree_peak_mib"]) * MiB,
            big["holds_bytes"] - small["holds_bytes"],
        )
        floor = 0 if stage in HOLDS_ALL else noise_mib * MiB
        per_byte = d_mem / d_held if d_mem > floor and d_held > 0 else 0.0
        memory = big["tree_peak_mib"] * MiB + per_byte * big["holds_bytes"] * (target / hi - 1)
        d0, dk = fit(stage, sizes, "disk_bytes", kind="N")
        per_task = train_split(target, train_n)[0] if stage == "train" else math.ceil(target / tasks)
        stages[stage] = {
            "tasks": tasks,
            "objects_per_task": per_task,
            "task_s": task_s,
            "task_hours": tasks * task_s / 3600,
            "memory_gib": memory / 2**30,
            "disk_gb": (d0 + dk * target) / 1e9,
            "fixed_s": t0,
            "growth": kind,
            "over_time_limit": task_s > task_hours * 3600,
        }
    s = {k: v["task_s"] for k, v in stages.items()}
    path = (
        s["prepare"]
        + s["train"]
        + s["infer"]
        + max(s["umap"] + s["visualize"], s["index"] + s["search"], s["anomaly"])
    )
    return {
        "objects": target,
        "task_hours_limit": task_hours,
        "stages": stages,
        "critical_path_s": path,
        "total_task_hours": sum(v["task_hours"] for v in stages.values()),
        "dominant": max(stages, key=lambda k: stages[k]["task_hours"]),
    }


# --- printing ---------------------------------------------------------------------------------------------


def hms(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def slurm_time(seconds: float) -> str:
    """A --time with half again as long as the estimate, at least 10 minutes."""
    s = max(600, math.ceil(1.5 * seconds / 60) * 60)
    d, s = divmod(s, 86400)
    return (f"{d}-" if d else "") + f"{s // 3600:02d}:{s % 3600 // 60:02d}:00"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def measured_table(sizes: dict[int, dict]) -> str:
    rows = []
    for stage in STAGES:
        for n in sorted(sizes):
            f = sizes[n][stage]
            rows.append(
                [
                    f"`{stage}`",
                    f"{n:,}",
                    hms(f["wall_s"]),
                    f"{f['objects_per_s']:,.0f}",
                    hms(f["cpu_s"]),
                    f"{f['peak_rss_mib']:,.0f}",
                    f"{f['tree_peak_mib']:,.0f}",
                    f"{f['disk_bytes'] / 1e6:,.1f}",
                ]
            )
    return table(["stage", "N", "wall", "objects/s", "CPU", "peak RSS MiB", "tree peak MiB", "disk MB"], rows)


def growth_table(gr: dict) -> str:
    rows = []
    for stage, x in gr.items():
        marginal = ", ".join(f"{m:,.0f}" for m in x["marginal_us_per_object"])
        rows.append(
            [
                f"`{stage}`",
                f"{x['wall_ratio']:.1f}x",
                marginal,
                f"{x['rss_growth_mib']:+,.0f}",
                f"{x['holds_growth_mib']:,.0f} ({HOLDS[stage][1]})",
                f"{100 * x['rss_growth_share']:.0f}%",
                x["flag"] or "flat",
            ]
        )
    return table(
        [
            "stage",
            "wall",
            "µs/object (marginal)",
            "peak RSS Δ MiB",
            "array held Δ MiB",
            "Δ RSS / Δ array",
            "memory",
        ],
        rows,
    )


def projection_table(p: dict) -> str:
    rows = []
    for stage, x in p["stages"].items():
        limit = " (over the limit)" if x["over_time_limit"] else ""
        grows = "fixed (train_n x epochs)" if x["growth"] == "fixed" else x["growth"]
        rows.append(
            [
                f"`{stage}`",
                grows,
                f"{x['tasks']:,}",
                f"{x['objects_per_task']:,}",
                hms(x["task_s"]) + limit,
                f"{x['task_hours']:,.1f}",
                f"{x['memory_gib']:,.1f}",
                f"{x['disk_gb']:,.1f}",
            ]
        )
    return table(
        [
            "stage",
            "work grows as",
            "array tasks",
            "objects/task",
            "wall/task",
            "task-hours",
            "memory/task GiB",
            "disk GB",
        ],
        rows,
    )


def slurm_commands(p: dict, args) -> str:
    s = p["stages"]

    def res(stage: str) -> str:
        x = s[stage]
        array = f"--array=0-{x['tasks'] - 1} " if x["tasks"] > 1 else ""
        mem = max(1, math.ceil(1.25 * x["memory_gib"] / CPUS_PER_TASK))
        return f"{array}--time={slurm_time(x['task_s'])} --mem-per-cpu={mem}G"

    _, split = train_split(p["objects"], args.train_n)
    sets = " ".join(f"--set {x}" for x in [f"train.epochs={args.epochs}", *split])
    after = "--kill-on-invalid-dep=yes --dependency=afterok"
    return "\n".join(
        [
            "# scale.toml: [data_request.train.cutouts] and [data_request.infer.cutouts] name the survey's",
            "# cutouts.h5 (from `hyrax download`, a Slurm array itself, or `hyrax prepare`). "
            "One folder: every job",
            "# reads the newest finished run of the stage before it from ./results.",
            'A=apptainer; C="-c $PWD/scale.toml"',
            f"train=$(sbatch --parsable {res('train')} $A/hyrax.sbatch train $C {sets})",
            f"infer=$(sbatch --parsable {res('infer')} {after}:$train $A/infer-array.sbatch $C)",
            f"umap=$(sbatch --parsable {res('umap')} {after}:$infer $A/hyrax.sbatch umap $C)",
            f"index=$(sbatch --parsable {res('index')} {after}:$infer $A/hyrax.sbatch index $C)",
            f"sbatch {res('search')} {after}:$index $A/hyrax.sbatch search $C --id <object id>",
            f"anomaly=$(sbatch --parsable {res('anomaly')} {after}:$infer $A/hyrax.sbatch anomaly $C)",
            f"sbatch {res('visualize')} {after}:$umap:$anomaly $A/hyrax.sbatch visualize $C",
        ]
    )


def markdown(result: dict, args) -> str:
    sizes = {int(n): v for n, v in result["sizes"].items()}
    lo, hi = min(sizes), max(sizes)
    m, p = result["machine"], result["projection"]
    s = p["stages"]
    over = [k for k, v in s.items() if v["over_time_limit"]]
    big = [k for k, v in s.items() if v["memory_gib"] > RECIPE_GIB]
    return "\n".join(
        [
            f"Measured {m['date']} on {m['cores']} cores, {m['memory_gib']:.0f} GiB "
            f"({m['host']}, load average "
            f"{m['load_before']:.1f} before the run); survey: {len(args.bands)} band(s) of "
            f"{args.size}x{args.size} "
            f"float32; train on {args.train_n:,} objects x {args.epochs} epochs; "
            f"`{' '.join(result['command'])}`.",
            "",
            measured_table(sizes),
            "",
            f"What grows with N ({lo:,} → {hi:,}): wall time ratio, seconds per extra object, "
            "and peak RSS growth "
            "against the growth of the array the stage would hold if it didn't stream (flagged above 10% and "
            f"{args.noise_mib:g} MiB).",
            "",
            growth_table(result["growth"]),
            "",
            f"Projection to {p['objects']:,} objects (t = t0 + k g(N) through {lo:,} and {hi:,}; "
            "array tasks sized "
            f"to end within {p['task_hours_limit']:g} h; times are this machine's cores):",
            "",
            projection_table(p),
            "",
            f"Total {p['total_task_hours']:,.0f} task-hours; `{p['dominant']}` dominates "
            f"({s[p['dominant']]['task_hours']:,.0f} task-hours). With every array task running at once the "
            f"pipeline takes {hms(p['critical_path_s'])} "
            "(prepare + train + infer + the longest of umap + visualize, "
            "index + search, anomaly)."
            + (
                f" Over the {p['task_hours_limit']:g} h per task: "
                f"{', '.join(f'`{k}`' for k in over)} (not sharded, or "
                f"at the {MAX_TASKS}-task cap)."
                if over
                else ""
            )
            + (
                f" Over the recipes' {RECIPE_GIB} GiB per task ({CPUS_PER_TASK} CPUs x 4G): "
                f"{', '.join(f'`{k}`' for k in big)}."
                if big
                else ""
            ),
            "",
            "```bash",
            slurm_commands(p, args),
            "```",
        ]
    )


def print_report(result: dict, args) -> None:
    sizes = {int(n): v for n, v in result["sizes"].items()}
    print(measured_table(sizes))
    print()
    print(growth_table(result["growth"]))
    print()
    print(projection_table(result["projection"]))
    totals = {n: sum(f["wall_s"] for f in v.values()) for n, v in sizes.items()}
    print("\n" + ", ".join(f"{n:,} objects: {hms(t)} in all" for n, t in sorted(totals.items())))


def write_markdown(path: Path, block: str) -> None:
    """Replace what lies between the markers in `path` (docs/scale.md) with `block`; else write `block`."""
    begin, end = "<!-- scale_run: begin -->", "<!-- scale_run: end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    else:
        text = block + "\n"
    path.write_text(text, encoding="utf-8")


def report_again(path: Path, args) -> None:
    """The report, projection and markdown of an earlier run's --json, with this script's projection."""
    result = json.loads(path.read_text(encoding="utf-8"))
    result["sizes"] = {int(n): figures for n, figures in result["sizes"].items()}
    s = result["settings"]
    args.sizes, args.bands, args.size = ",".join(map(str, s["sizes"])), s["bands"], s["size"]
    args.train_n, args.epochs, args.set = s["train_n"], s["epochs"], s["set"]
    report(result, args, growth_models(args.set))


def report(result: dict, args, models: dict[str, str]) -> None:
    """What grows, the projection, the printed report, and the markdown and JSON files asked for."""
    result["growth"] = growth(result["sizes"], args.noise_mib)
    result["projection"] = project(
        result["sizes"], args.project, args.task_hours, args.noise_mib, args.train_n, models
    )
    print_report(result, args)
    block = markdown(result, args)
    if args.markdown:
        write_markdown(Path(args.markdown), block)
        print(f"\nwrote the docs/scale.md block to {args.markdown}")
    else:
        print("\n" + block)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="object counts, comma-separated (at least two)")
    ap.add_argument("--bands", default="r", help="band names, comma-separated (default: one band)")
    ap.add_argument("--size", type=int, default=32, help="cutout size in pixels")
    ap.add_argument("--train-n", type=int, default=20_000, help="objects to train on (at most 80%% of N)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every stage")
    ap.add_argument(
        "--warmup",
        type=int,
        default=10_000,
        help="objects of the unreported first run (0: none; "
        "above umap's batch of 8192, so its spawned workers compile their numba cache too)",
    )
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder and every size's results")
    ap.add_argument("--noise-mib", type=float, default=16.0, help="RSS growth below this is never flagged")
    ap.add_argument("--project", type=int, default=100_000_000, help="objects to project to")
    ap.add_argument("--task-hours", type=float, default=2.0, help="wall time per array task to aim for")
    ap.add_argument("--json", default=None, help="write every figure to this file")
    ap.add_argument(
        "--markdown",
        default=None,
        help="write the docs/scale.md block to this file (between its scale_run markers when it has them)",
    )
    ap.add_argument(
        "--from-json",
        default=None,
        help="measure nothing: the figures of an earlier --json, "
        "projected and written again (its --sizes, --train-n, --epochs and --set are used)",
    )
    ap.add_argument(
        "--latents-sizes",
        default=None,
        help="measure only the stages from latents on synthetic "
        "latents of these sizes (comma-separated), e.g. 1000000,10000000",
    )
    ap.add_argument(
        "--latents-stages", default="index,search", help=f"with --latents-sizes: of {LATENT_STAGES}"
    )
    args = ap.parse_args()
    if args.latents_sizes:
        args.latents_stages = [x for x in args.latents_stages.split(",") if x]
        if bad := set(args.latents_stages) - set(LATENT_STAGES):
            ap.error(f"--latents-stages: {', '.join(sorted(bad))} not among {', '.join(LATENT_STAGES)}")
        latents_main(
            args, {**os.environ, "ANONYMIZED_TELEMETRY": "False", "MLFLOW_DISABLE_TELEMETRY": "true"}
        )
        return
    if args.from_json:
        report_again(Path(args.from_json), args)
        return
    args.bands = [b for b in args.bands.split(",") if b]
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    if len(sizes) < 2:
        ap.error("--sizes needs at least two sizes")
    from libhyrax.errors import HyraxError

    try:
        models = growth_models(args.set)  # also checks the --set keys before hours of running
    except HyraxError as e:
        ap.error(str(e))
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "ANONYMIZED_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        "ORT_DISABLE_TELEMETRY": "1",
    }
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hyrax-scale-"))
    ours = not scratch.exists() or not any(scratch.iterdir())  # a folder of someone else's stays
    scratch.mkdir(parents=True, exist_ok=True)
    if taken := [f.name for f in (scratch / "warmup", *(scratch / f"n{n}" for n in sizes)) if f.exists()]:
        ap.error(f"{scratch} already holds {', '.join(taken)}; choose another --dir")
    result = {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "settings": {
            "sizes": sizes,
            "bands": args.bands,
            "size": args.size,
            "train_n": args.train_n,
            "epochs": args.epochs,
            "set": args.set,
        },
        "machine": {
            "date": dt.date.today().isoformat(),
            "host": platform.node(),
            "cores": os.cpu_count(),
            "memory_gib": os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30,
            "load_before": os.getloadavg()[0],
        },
        "sizes": {},
    }
    print(f"scratch folder {scratch}", file=sys.stderr)
    done = False
    try:
        if args.warmup:
            t0 = time.perf_counter()
            run_size(args.warmup, scratch / "warmup", args, env, quiet=True)
            if not args.keep:
                shutil.rmtree(scratch / "warmup", ignore_errors=True)
            print(f"warm-up at {args.warmup:,} objects: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for n in sizes:
            result["sizes"][n] = run_size(n, scratch / f"n{n}", args, env)
            if not args.keep:  # the next size gets the disk space
                shutil.rmtree(scratch / f"n{n}", ignore_errors=True)
        result["machine"]["load_after"] = os.getloadavg()[0]
        done = True
    finally:
        if not done:
            print(
                f"kept {scratch} to look at (the stage logs are <size>/<stage>.stderr.log)", file=sys.stderr
            )
        elif not args.keep:
            for f in (scratch / "warmup", *(scratch / f"n{n}" for n in sizes)):
                shutil.rmtree(f, ignore_errors=True)
            if ours:
                shutil.rmtree(scratch, ignore_errors=True)
    report(result, args, models)


if __name__ == "__main__":
    main()
