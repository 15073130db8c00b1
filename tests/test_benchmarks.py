"""The GPU check script runs its steps on the CPU at a small size where there is no GPU, so the script that
a GPU session runs once is known to work before that session starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=1500, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "no GPU: CPU at a small size" in out or "cuda" in out
    for step in (
        "train, fp32",
        "stored as float32",
        "stored as float16",
        "exact k-NN",
        "torchrun",
        "gpu_check done",
    ):
        assert step in out, step
    assert "ok: " in out and "world_size" in out


@pytest.mark.slow
def test_scale_run_measures_every_stage_at_two_sizes(tmp_path):
    """benchmarks/scale_run.py at a tiny size: every stage a process fed by the one before through a pipe,
    its figures in --json and the docs/scale.md block written between the markers of --markdown."""
    import json

    md = tmp_path / "scale.md"
    md.write_text("# Scale\n<!-- scale_run: begin -->\nTO BE MEASURED\n<!-- scale_run: end -->\nafter\n")
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "scale_run.py"),
        "--sizes",
        "300,600",
        "--train-n",
        "200",
        "--epochs",
        "1",
        "--warmup",
        "0",
        "--dir",
        str(tmp_path / "scratch"),
        "--keep",
        "--json",
        str(tmp_path / "scale.json"),
        "--markdown",
        str(md),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((tmp_path / "scale.json").read_text())
    stages = ("prepare", "train", "infer", "umap", "index", "search", "anomaly", "visualize")
    for n in ("300", "600"):
        for stage in stages:
            f = figures["sizes"][n][stage]
            assert f["wall_s"] > 0 and f["cpu_s"] > 0 and f["peak_rss_mib"] > 20 and f["disk_bytes"] > 0, (
                n,
                stage,
            )
            assert f["tree_peak_mib"] >= f["peak_rss_mib"] and Path(f["run"]).is_dir(), (n, stage)
        assert figures["sizes"][n]["infer"]["objects"] == int(n)
    assert figures["sizes"]["600"]["train"]["objects"] == 200  # --train-n objects x 1 epoch, not N
    # each stage read the run the one before printed; train finds the prepare run only through the pipe
    # (without one it reads [data_request], the built-in sample)
    sizes = figures["sizes"]["600"]
    for stage, upstream in (("train", "prepare"), ("infer", "train"), ("umap", "infer"), ("search", "index")):
        recorded = json.loads((Path(sizes[stage]["run"]) / "provenance.json").read_text())["upstream_runs"]
        assert Path(sizes[upstream]["run"]).name in [Path(r).name for r in recorded], stage
    assert set(figures["growth"]) == set(stages) and set(figures["projection"]["stages"]) == set(stages)
    assert figures["projection"]["stages"]["infer"]["tasks"] >= 1
    text = md.read_text()
    assert "TO BE MEASURED" not in text and text.endswith("after\n") and "| `visualize` | 600 |" in text
    assert "infer-array.sbatch" in text


@pytest.mark.slow
def test_bench_map_prints_its_figures(tmp_path):
    """benchmarks/bench_map.py just above max_points: a tiled map written, its figures printed."""
    import re

    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_map.py"), "250000", "--paints", "1"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(
        r"n=\s+250,000: written in ([\d.]+) s .* peak RSS (\d+) MiB, (\d+) MB on disk \((\d+) tiles, "
        r"(\d+) point files",
        proc.stdout,
    )
    assert found, proc.stdout
    assert float(found[1]) > 0 and int(found[2]) > 50 and int(found[4]) > 10 and int(found[5]) > 10
    assert not list(tmp_path.glob("bench_map-*"))  # its folder removed


def test_scale_run_takes_its_stages_and_pipes_from_the_stage_registry():
    """scale_run keeps no list of its own: the registry's stages (less those it says it doesn't run), each
    fed the run of the first stage it reads; a new stage with `needs` joins the pipeline."""
    import importlib.util

    from libhyrax.stages import STAGES

    spec = importlib.util.spec_from_file_location("scale_run", REPO / "benchmarks" / "scale_run.py")
    scale_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale_run)
    assert set(scale_run.STAGES) == {s.name for s in STAGES if s.makes_run} - set(scale_run.NOT_RUN)
    assert scale_run.STAGES[0] == "prepare" and scale_run.STAGES[-1] == "visualize"
    assert scale_run.UPSTREAM == {
        "train": "prepare",
        "infer": "train",
        "umap": "infer",
        "index": "infer",
        "search": "index",
        "anomaly": "infer",
        "visualize": "umap",
    }


def test_benchmark_history_flags_a_regression_beyond_the_noise(tmp_path):
    """benchmarks/asv/compare.py (make bench-compare) on the recorded results of a commit and a made-up later
        commit: the same figures pass; one benchmark five times slower (its median, confidence interval and
    samples) fails, and is named. (Three times slower would pass: on 2 cores shared at a load of ~15, the
    recorded 99% interval of `hyrax --help` spans 2.3-7.4 s.)"""
    import json
    import shutil

    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "asv" / "results", results)
    conf = json.loads((REPO / "benchmarks" / "asv" / "asv.conf.json").read_text())
    (tmp_path / "asv.conf.json").write_text(json.dumps({**conf, "repo": str(REPO), "results_dir": "results"}))
    machine = next(p.parent for p in results.glob("*/machine.json"))
    first = min(
        (f for f in machine.glob("*.json") if f.name != "machine.json"),
        key=lambda f: json.loads(f.read_text())["date"],
    )
    data = json.loads(first.read_text())
    newest = max(
        json.loads(f.read_text())["date"] for f in machine.glob("*.json") if f.name != "machine.json"
    )
    later = "f" * 40

    def record(scale: float) -> None:
        out = json.loads(json.dumps(data))
        out["commit_hash"], out["date"] = later, newest + 1
        cols = out["result_columns"]
        row = out["results"]["benchmarks.CLI.time_help"]
        for name in ("result", "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75", "samples"):
            if name in cols and cols.index(name) < len(row):  # samples: with asv run --record-samples
                row[cols.index(name)] = [
                    [v * scale for v in s] if isinstance(s, list) else s * scale
                    for s in row[cols.index(name)]
                ]
        (machine / first.name.replace(data["commit_hash"][:8], later[:8])).write_text(json.dumps(out))

    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "asv" / "compare.py"),
        "--config",
        str(tmp_path / "asv.conf.json"),
        "--before",
        data["commit_hash"][:8],
        "--after",
        later[:8],
    ]
    record(1.0)
    same = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "REGRESSION" not in same.stderr
    record(5.0)
    slower = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert slower.returncode == 1, slower.stdout + slower.stderr
    worse = slower.stdout.split("got worse")[1]
    flagged = [line for line in worse.splitlines() if line.startswith("| +")]
    assert len(flagged) == 1 and "benchmarks.CLI.time_help" in flagged[0], slower.stdout
    assert "REGRESSION" in slower.stderr
