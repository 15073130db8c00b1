"""scripts/build-sif.sh and scripts/run-sif.sh, fast: the scripts parse and refuse what they can't do,
`make sif` and CI call them, the kernel spec is right, and run-sif.sh runs a tiny SIF (a root in the SIF
layout around a stand-in `hyrax`, packed with mksquashfs and siftool) the way `apptainer run` does:
arguments whole, apps, read-only root, writable binds, environment, exit codes and signals.
The real image (build, in-image pipeline, Slurm through the image, Jupyter kernel) is
tests/test_sif_image.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_containers import DEFS, assemble_root, container

from libhyrax.stages import STAGES

REPO = Path(__file__).resolve().parent.parent
BUILD, RUN = REPO / "scripts" / "build-sif.sh", REPO / "scripts" / "run-sif.sh"
HANDLED = {
    "help",
    "labels",
    "files",
    "environment",
    "post",
    "runscript",
    "test",
    "apprun",
    "apphelp",
    "appenv",
}


@pytest.mark.parametrize("path", [BUILD, RUN], ids=lambda p: p.name)
def test_scripts_parse_are_executable_and_explain_themselves(path):
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert os.access(path, os.X_OK)
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "usage" not in out.stderr and path.name in out.stdout


def test_build_usage_and_what_it_refuses(tmp_path):
    assert subprocess.run([str(BUILD)], capture_output=True, timeout=10).returncode == 2
    for header, section, why in [
        ("Bootstrap: library\nFrom: ubuntu", "", "only 'docker'"),
        ("Bootstrap: docker\nFrom: ubuntu:22.04", "", "python:3.X-slim"),
        (
            "Bootstrap: docker\nFrom: python:3.11-slim-bookworm",
            "%setup\n    true\n",
            "%setup: this section is not handled",
        ),
    ]:
        (tmp_path / "x.def").write_text(f'{header}\n\n{section}%runscript\n    exec hyrax "$@"\n')
        proc = subprocess.run(
            [str(BUILD), str(tmp_path / "x.sif"), str(tmp_path / "x.def")],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert proc.returncode == 1 and why in proc.stderr, proc.stderr


@pytest.mark.parametrize("path", DEFS, ids=lambda p: p.name)
def test_build_sif_handles_every_section_of_our_definitions(path):
    keys = {k.split()[0] for k in container.sections(path.read_text()) if k != "header"}
    assert keys <= HANDLED, keys - HANDLED
    # the script copies no content of the definition: no package, label or path of hyrax.def in it
    script = BUILD.read_text()
    assert "hyrax" not in re.sub(r"#.*", "", script).replace("hyrax-build", "")


def test_run_usage_errors_exit_255(tmp_path):
    (tmp_path / "not.sif").write_text("no")
    for args in ([], ["--nv", "x.sif"], ["--frobnicate", "x.sif"], [str(tmp_path / "missing.sif")]):
        proc = subprocess.run([str(RUN), *args], capture_output=True, text=True, timeout=10)
        assert proc.returncode == 255 and proc.stderr.startswith("run-sif: "), (args, proc.stderr)
    if shutil.which("siftool"):
        proc = subprocess.run(
            [str(RUN), str(tmp_path / "not.sif")], capture_output=True, text=True, timeout=10
        )
        assert proc.returncode == 255 and "no primary squashfs partition" in proc.stderr


def test_make_sif_uses_apptainer_when_installed_else_build_sif():
    make = (REPO / "Makefile").read_text()
    assert "apptainer build --force hyrax.sif containers/hyrax.def" in make
    assert "scripts/build-sif.sh hyrax.sif containers/hyrax.def" in make
    for target in ("sif:", "demo:", "test:", "test-slow:", "test-sif:", "lint:"):
        assert re.search(rf"^{target}", make, re.M), target
    ignored = (REPO / ".gitignore").read_text().split()
    assert "*.sif" in ignored and ".sif-cache/" in ignored


def test_ci_builds_and_runs_the_image_in_its_own_bounded_step():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^timeout \d+ make test-sif$", ci, re.M)
    for pkg in ("debootstrap", "squashfs-tools", "siftool"):
        assert pkg in ci
    assert "-m sif" in (REPO / "Makefile").read_text() and "not sif" in (REPO / "Makefile").read_text()


def test_kernel_json_starts_ipykernel_in_the_image():
    spec = json.loads((REPO / "apptainer" / "kernel.json").read_text())
    argv = spec["argv"]
    assert argv[:2] == ["apptainer", "exec"] and argv[2].endswith("hyrax.sif")
    assert argv[3:] == ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["language"] == "python" and "Hyrax" in spec["display_name"]
    post = container.sections((REPO / "containers" / "hyrax.def").read_text())["post"]
    assert "ipykernel" in next(
        line for line in post.splitlines() if "/opt/hyrax/src" in line and "pip" in line
    )


# --- run-sif.sh on a tiny SIF -------------------------------------------------------------------------

needs_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("siftool", "mksquashfs", "unsquashfs", "unshare")),
    reason="run-sif.sh needs root, siftool and squashfs-tools (apt-get install siftool squashfs-tools)",
)


def pack_sif(root: Path, def_text: str, out: Path) -> Path:
    """A SIF as build-sif.sh packs it: the definition and the squashfs root as the primary partition."""
    squash = out.with_suffix(".squashfs")
    subprocess.run(
        ["mksquashfs", str(root), str(squash), "-noappend", "-comp", "gzip", "-all-root", "-quiet"],
        check=True,
        timeout=60,
    )
    (out.parent / "x.def").write_text(def_text)
    for cmd in (
        ["new", str(out)],
        ["add", "--groupid", "1", "--datatype", "1", str(out), str(out.parent / "x.def")],
        [
            "add",
            "--groupid",
            "1",
            "--datatype",
            "4",
            "--parttype",
            "2",
            "--partfs",
            "1",
            "--partarch",
            "2",
            str(out),
            str(squash),
        ],
    ):
        subprocess.run(["siftool", *cmd], check=True, capture_output=True, timeout=30)
    with open(out, "r+b") as f:
        f.write(b"#!/usr/bin/env run-singularity\n")
    return out


@pytest.fixture(scope="module")
def tiny_sif(tmp_path_factory) -> Path:
    if os.geteuid() != 0 or not all(
        shutil.which(t) for t in ("siftool", "mksquashfs", "unsquashfs", "unshare")
    ):
        pytest.skip(
            "run-sif.sh needs root, siftool and squashfs-tools (apt-get install siftool squashfs-tools)"
        )
    d = tmp_path_factory.mktemp("tiny")
    text = (REPO / "containers" / "hyrax.def").read_text()
    assemble_root(text, d / "root")
    return pack_sif(d / "root", text, d / "tiny.sif")


def run_sif(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run(
        [str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**base, **(env or {})},
    )


ENV_LINES = [
    "NUMBA_CACHE_DIR=/tmp/numba_cache MLFLOW_DISABLE_TELEMETRY=true",
    "ANONYMIZED_TELEMETRY=False ORT_DISABLE_TELEMETRY=1 PATH=/opt/hyrax/venv/bin:/usr/local/sbin:"
    "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
]


@needs_tools
def test_run_passes_arguments_whole_and_sources_the_environment(tiny_sif, tmp_path):
    for args in (["run", str(tiny_sif)], [str(tiny_sif)]):  # `apptainer run IMAGE` and the short form
        proc = run_sif(*args, "train", "--set", "train.run_name='a b'", "", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            "arg=train",
            "arg=--set",
            "arg=train.run_name='a b'",
            "arg=",
            *ENV_LINES,
        ]


@needs_tools
def test_run_app_runs_the_apps_runscript_and_lists_apps(tiny_sif, tmp_path):
    proc = run_sif("run", "--app", "infer", str(tiny_sif), "--shard", "0/3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["arg=infer", "arg=--shard", "arg=0/3", *ENV_LINES]
    proc = run_sif("--app", "nope", str(tiny_sif), cwd=tmp_path)
    assert proc.returncode == 255 and "no app 'nope'" in proc.stderr and "infer" in proc.stderr
    listed = run_sif("inspect", "--list-apps", str(tiny_sif), cwd=tmp_path).stdout.split()
    assert sorted(listed) == sorted(s.name for s in STAGES)


@needs_tools
def test_root_is_read_only_and_binds_are_writable(tiny_sif, tmp_path):
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "echo cwd=$(pwd); echo hi > here.txt; echo x > /data/out.txt;"
        " echo x > /ro/y 2>/dev/null || echo ro-bind-refused;"
        " echo x > /opt/hyrax/new 2>/dev/null || echo image-refused;"
        " echo x > /new 2>/dev/null || echo root-refused;"
        " echo t > /tmp/run-sif-probe-$$ && echo tmp-ok"
    )
    proc = run_sif(
        "exec",
        "--bind",
        f"{other / 'data'}:/data",
        "-B",
        f"{other}:/ro:ro",
        str(tiny_sif),
        "/bin/sh",
        "-c",
        script,
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"cwd={work}",
        "ro-bind-refused",
        "image-refused",
        "root-refused",
        "tmp-ok",
    ]
    assert (work / "here.txt").read_text() == "hi\n" and (other / "data" / "out.txt").read_text() == "x\n"
    # nothing of the run is left in the host's mount table
    assert "/run/run-sif" not in Path("/proc/self/mountinfo").read_text()


@needs_tools
def test_environment_passes_through_unless_cleanenv(tiny_sif, tmp_path):
    show = ["exec", str(tiny_sif), "/bin/sh", "-c", 'echo "$FOO|$BAR|$APPTAINER_NAME|$PATH"']
    proc = run_sif(*show, cwd=tmp_path, env={"FOO": "1", "APPTAINERENV_BAR": "2", "LD_LIBRARY_PATH": "/host"})
    assert (
        proc.stdout.strip()
        == "1|2|tiny.sif|/opt/hyrax/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    proc = run_sif(show[0], "--cleanenv", *show[1:], cwd=tmp_path, env={"FOO": "1", "APPTAINERENV_BAR": "2"})
    assert proc.stdout.strip().startswith("|2|tiny.sif|")


@needs_tools
def test_exit_code_and_signals_reach_the_command(tiny_sif, tmp_path):
    assert run_sif("exec", str(tiny_sif), "/bin/sh", "-c", "exit 7", cwd=tmp_path).returncode == 7
    # the chain of execs keeps one process: SIGTERM to the one Slurm started reaches the command itself
    loop = 'trap "echo got-TERM; exit 143" TERM; echo ready; while :; do :; done'
    proc = subprocess.Popen(
        [str(RUN), "exec", str(tiny_sif), "/bin/sh", "-c", loop],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143 and out.strip() == "got-TERM"
