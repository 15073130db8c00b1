"""The real image: `scripts/build-sif.sh hyrax.sif containers/hyrax.def` (what `make sif` runs without
Apptainer), then, through scripts/run-sif.sh (read-only root from the SIF's squashfs partition): `hyrax
--help` and %test, the whole demo pipeline with no network, the Slurm infer array with `apptainer`
resolved to run-sif.sh, and a Jupyter kernel started from apptainer/kernel.json.

The image step of CI (`make test-sif`, marker `sif`); the build is skipped when hyrax.sif is up to date.
HYRAX_TEST_SIF=path/to/image.sif runs these tests on an image built elsewhere instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
from slurm_cluster import slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)
from test_containers import container

from libhyrax import hdf5
from libhyrax.results import is_complete

pytestmark = [pytest.mark.slow, pytest.mark.sif]
REPO = Path(__file__).resolve().parent.parent
BUILD, RUN = REPO / "scripts" / "build-sif.sh", REPO / "scripts" / "run-sif.sh"
TOOLS = ("debootstrap", "mksquashfs", "unsquashfs", "siftool", "unshare")
MAX_BYTES = 1.5e9
CORE_STAGES = (
    "train",
    "infer",
    "umap",
    "visualize",
    "index",
    "search",
    "anomaly",
)  # the image may predate newer ones
SMALL_MODEL = (
    "--set",
    "model.HyraxAutoencoder.base_channel_size=4",
    "--set",
    "model.HyraxAutoencoder.latent_dim=8",
)


@pytest.fixture(scope="session")
def image() -> Path:
    if os.environ.get("HYRAX_TEST_SIF"):
        path = Path(os.environ["HYRAX_TEST_SIF"]).resolve()
        assert path.is_file(), f"HYRAX_TEST_SIF={path}: no such image"
    else:
        if os.geteuid() != 0:
            pytest.skip("building the image without Apptainer needs root (scripts/build-sif.sh)")
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            pytest.skip(f"missing {', '.join(missing)}: apt-get install debootstrap squashfs-tools siftool")
        path = REPO / "hyrax.sif"
        # up to date: about a second; a full build: about 6 minutes on 2 cores
        proc = subprocess.run(
            [str(BUILD), str(path), "containers/hyrax.def"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=2400,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
    if os.geteuid() != 0:
        pytest.skip("scripts/run-sif.sh needs root (mount namespace, loop mount)")
    return path


def env_for(tmp_path: Path, **extra: str) -> dict:
    """A plain user environment: HOME in the test's directory (bound writable, where the built-in sample
    is built on first use), one thread per process (two tests share two cores)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", **extra}


def sif(*args: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUN), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def test_the_image_is_a_sif_apptainer_accepts(image, tmp_path):
    listing = subprocess.run(
        ["siftool", "list", str(image)], capture_output=True, text=True, check=True
    ).stdout
    assert "Def.FILE" in listing and "FS (Squashfs/*System/amd64)" in listing, listing
    assert Path(image).read_bytes()[:32].startswith(b"#!/usr/bin/env run-singularity\n")
    assert image.stat().st_size < MAX_BYTES, f"{image.stat().st_size / 1e6:.0f} MB"
    env = env_for(tmp_path)
    deffile = sif("inspect", "--deffile", str(image), cwd=tmp_path, env=env).stdout
    assert "%runscript" in deffile and "BEGIN apps generated" in deffile
    # one app per %apprun of the definition it was built from (the stage registry when it was built)
    apps = [k.split()[1] for k in container.sections(deffile) if k.startswith("apprun ")]
    assert sorted(sif("inspect", "--list-apps", str(image), cwd=tmp_path, env=env).stdout.split()) == sorted(
        apps
    )
    assert set(CORE_STAGES) <= set(apps)
    labels = json.loads(sif("inspect", "--labels", str(image), cwd=tmp_path, env=env).stdout)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert labels["Version"] == version and labels["Variant"] == "cpu"
    if not os.environ.get("HYRAX_TEST_SIF"):  # unchanged inputs: the rebuild is skipped
        start = time.monotonic()
        proc = subprocess.run(
            [str(BUILD), "--check", str(image), "containers/hyrax.def"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 1 and _edited_after(image, proc.stderr):
            pytest.skip(
                f"sources were edited after the image was built (a shared working tree): {proc.stderr}"
            )
        assert proc.returncode == 0 and "up to date" in proc.stderr, proc.stderr
        assert time.monotonic() - start < 60
        proc = subprocess.run(
            [str(BUILD), str(image), "containers/hyrax.def"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0 and "up to date" in proc.stderr, proc.stderr


def _edited_after(image: Path, message: str) -> bool:
    """Whether every input --check names as changed is a file modified after the image was built."""
    names = message.split("changed since it was built:", 1)[-1].split("...")[0].split()
    paths = [REPO / n for n in names if not n.startswith("(")]
    return bool(paths) and all(not p.exists() or p.stat().st_mtime > image.stat().st_mtime for p in paths)


def test_hyrax_help_test_and_apps_on_a_read_only_root(image, tmp_path):
    env = env_for(tmp_path)
    proc = sif(str(image), "--help", cwd=tmp_path, env=env)  # `apptainer run hyrax.sif --help`
    assert proc.returncode == 0, proc.stderr
    assert all(f" {name} " in proc.stdout for name in CORE_STAGES), proc.stdout
    proc = sif("test", str(image), cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "torch 2.13.0+cpu" in proc.stdout, proc.stdout + proc.stderr
    proc = sif("run", "--app", "infer", str(image), "--help", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "--from" in proc.stdout, proc.stderr
    proc = sif("exec", str(image), "sh", "-c", "touch /opt/hyrax/venv/x", cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr
    code = "import socket; socket.create_connection(('1.1.1.1', 80), timeout=5)"
    proc = sif("exec", "--net", "--network", "none", str(image), "python", "-c", code, cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "Network is unreachable" in proc.stderr, proc.stderr


def test_demo_pipeline_in_the_image_writes_only_to_the_working_directory(image, tmp_path):
    before = sha256(image)
    shim = tmp_path / "bin"
    shim.mkdir()
    # every `hyrax` of scripts/demo.sh is its own container, with no network: `apptainer run hyrax.sif ...`
    (shim / "hyrax").write_text(f'#!/bin/sh\nexec {RUN} run --net --network none {image} "$@"\n')
    (shim / "hyrax").chmod(0o755)
    demo = tmp_path / "demo"
    demo.mkdir()
    env = env_for(tmp_path, PATH=f"{shim}:{os.environ['PATH']}")
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        cwd=demo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-5000:]
    runs = sorted(p for p in (demo / "results").iterdir() if p.is_dir())
    stages = {p.name.split("-")[2] for p in runs if is_complete(p)}
    assert {
        "train",
        "infer",
        "umap",
        "visualize",
        "test",
        "export",
        "index",
        "search",
        "anomaly",
    } <= stages, runs
    assert (
        list((demo / "results").glob("*-visualize-*/*.html")) and (demo / "results" / "mlflow.db").is_file()
    )
    assert "interactive map:" in proc.stderr
    # the built-in sample was built at first use into the bound $HOME, not into the image
    assert list((tmp_path / "home" / ".cache" / "hyrax").glob("hubble_deep_field_v*.h5"))
    assert sha256(image) == before
    print(f"demo pipeline in the image: {took:.0f} s")


def _infer_read(run_dir) -> dict[str, np.ndarray]:
    with hdf5.open_result(run_dir, "latents") as f:
        return {k: hdf5.read_ids(f[k]) if k == "object_id" else f[k][:] for k in f}


@pytest.mark.slurm
def test_slurm_infer_array_through_the_image_equals_an_unsharded_run(image, slurm, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "apptainer").symlink_to(RUN)  # no Apptainer here: `apptainer` is scripts/run-sif.sh
    env = env_for(
        tmp_path,
        PATH=f"{shim}:{os.environ['PATH']}",
        HYRAX_SIF=str(image),
        HYRAX_CACHE_DIR=str(tmp_path / "cache"),
    )
    train = sif(str(image), "train", "--set", "train.epochs=1", *SMALL_MODEL, cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    train_run = train.stdout.strip().splitlines()[-1]

    sbatch_env = {k: v for k, v in env.items()} | {"HYRAX": ""}
    job = slurm.sbatch(
        "--array=0-2",
        "--cpus-per-task=1",
        "--mem-per-cpu=2G",
        str(REPO / "apptainer" / "infer-array.sbatch"),
        "--from",
        train_run,
        cwd=tmp_path,
        env=sbatch_env,
    )
    tasks = slurm.wait(job, timeout=600)
    logs = [(tmp_path / f"hyrax-infer-{job}_{i}.out").read_text() for i in range(3)]
    assert [(t.array_task, t.state, t.exit_code) for t in tasks] == [
        (i, "COMPLETED", "0:0") for i in range(3)
    ], logs
    run_dir = tmp_path / "results" / f"slurm-{job}-infer-array"
    assert sorted(p.name for p in run_dir.glob("latents.shard-*.h5")) == [
        f"latents.shard-{i:04d}-of-0003.h5" for i in range(3)
    ]
    assert is_complete(run_dir)

    full = sif("run", "--app", "infer", str(image), "--from", train_run, cwd=tmp_path, env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    sharded, whole = _infer_read(run_dir), _infer_read(tmp_path / full.stdout.strip().splitlines()[-1])
    assert sorted(sharded) == sorted(whole) and len(whole["object_id"]) > 100
    np.testing.assert_array_equal(sharded["object_id"], whole["object_id"])
    for name in whole:
        if name != "object_id":
            np.testing.assert_allclose(sharded[name], whole[name], rtol=1e-5, atol=1e-6)
    sizes = []
    for i in range(3):
        with h5py.File(run_dir / f"latents.shard-{i:04d}-of-0003.h5", "r") as f:
            sizes.append(len(f["object_id"]))
    assert sum(sizes) == len(whole["object_id"]) and max(sizes) - min(sizes) <= 1


def test_jupyter_kernel_from_kernel_json_runs_in_the_image(image, tmp_path, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    spec = json.loads((REPO / "apptainer" / "kernel.json").read_text())
    # the site's kernel.json with its two paths filled in: apptainer (here run-sif.sh) and the image
    spec["argv"] = [
        str(RUN) if a == "apptainer" else str(image) if a.endswith("hyrax.sif") else a for a in spec["argv"]
    ]
    kernels = tmp_path / "jupyter" / "kernels" / "hyrax"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(spec))
    for k, v in env_for(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    km, kc = start_new_kernel(kernel_name="hyrax", startup_timeout=180, cwd=str(tmp_path))
    try:
        out = []
        reply = kc.execute_interactive(
            "import libhyrax, torch, sys; print(libhyrax.__file__, torch.__version__, sys.prefix)",
            timeout=180,
            output_hook=lambda msg: (
                out.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None
            ),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        path, torch_version, prefix = "".join(out).split()
        assert (
            path.startswith("/opt/hyrax/venv/")
            and torch_version == "2.13.0+cpu"
            and prefix == "/opt/hyrax/venv"
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
