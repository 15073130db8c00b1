"""The Apptainer definition files, checked without Apptainer (it can't be installed here): their apps
match the stage registry, the environment and runscript are what read-only, offline compute nodes need,
and (slow) a tiny root in the SIF layout runs its runscript and apps through chroot."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from libhyrax.stages import STAGES, Stage

REPO = Path(__file__).resolve().parent.parent
container = runpy.run_path(str(REPO / "scripts" / "container_apps.py"), run_name="container_apps")
container = type("container", (), {k: staticmethod(v) for k, v in container.items() if callable(v)})
DEFS = sorted((REPO / "containers").glob("*.def"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TELEMETRY_OFF = {
    "NUMBA_CACHE_DIR": "/tmp/numba_cache",
    "MPLCONFIGDIR": "/tmp/mpl",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "ORT_DISABLE_TELEMETRY": "1",
}


def test_both_images_are_defined():
    assert [p.name for p in DEFS] == ["hyrax-gpu.def", "hyrax.def"]


@pytest.mark.parametrize("path", DEFS, ids=lambda p: p.name)
def test_committed_apps_match_the_stage_registry(path):
    text = path.read_text()
    assert container.render(text) == text, "run: python scripts/container_apps.py containers/*.def"
    s = container.sections(text)
    assert sorted(k.split()[1] for k in s if k.startswith("apprun ")) == sorted(st.name for st in STAGES)
    for st in STAGES:
        assert s[f"apprun {st.name}"].splitlines()[0].strip() == f'exec hyrax {st.name} "$@"'
        assert st.help in s[f"apphelp {st.name}"]


def test_check_mode_reports_a_stale_file_and_rewrite_fixes_it(tmp_path):
    stale = tmp_path / "x.def"
    stale.write_text(container.render((REPO / "containers" / "hyrax.def").read_text(), STAGES[:2]))
    cmd = [sys.executable, str(REPO / "scripts" / "container_apps.py")]
    proc = subprocess.run([*cmd, "--check", str(stale)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "out of date" in proc.stderr
    assert subprocess.run([*cmd, str(stale)], cwd=REPO).returncode == 0
    assert subprocess.run([*cmd, "--check", *map(str, DEFS), str(stale)], cwd=REPO).returncode == 0
    assert stale.read_text() == (REPO / "containers" / "hyrax.def").read_text()


def test_a_new_stage_becomes_an_app():
    text = container.render(
        (REPO / "containers" / "hyrax.def").read_text(),
        (*STAGES, Stage("cluster", "Group objects by their latents.", needs=("infer",))),
    )
    s = container.sections(text)
    assert s["apprun cluster"].split("\n")[0].strip() == 'exec hyrax cluster "$@"'
    assert "Group objects by their latents." in s["apphelp cluster"]


def test_render_refuses_a_file_without_the_markers():
    with pytest.raises(ValueError, match="BEGIN apps generated"):
        container.render('Bootstrap: docker\nFrom: debian\n%runscript\n    exec hyrax "$@"\n')


@pytest.mark.parametrize("path", DEFS, ids=lambda p: p.name)
def test_definition_has_what_a_read_only_offline_image_needs(path):
    s = container.sections(path.read_text())
    assert {"help", "labels", "files", "environment", "post", "runscript", "test"} <= set(s)
    assert "Bootstrap: docker" in s["header"] and "From: python:3.11" in s["header"]
    assert s["runscript"].strip().splitlines()[-1].strip() == 'exec hyrax "$@"'
    env = _sourced_environment(s["environment"])
    assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF
    assert env["PATH"].split(":")[0] == "/opt/hyrax/venv/bin"
    # installed under /opt: /home and /tmp are bind-mounted over at run time
    assert "python3 -m venv /opt/hyrax/venv" in s["post"]
    labels = dict(line.split(None, 1) for line in s["labels"].strip().splitlines())
    assert labels["Version"] == PYPROJECT["project"]["version"]
    for line in s["files"].strip().splitlines():  # every file the image copies exists in the repository
        source, dest = line.split()
        assert (REPO / source).exists() and dest.startswith("/opt/hyrax/"), line
    assert "import libhyrax" in s["test"] and "hyrax --version" in s["test"]


def test_cpu_image_pins_the_cpu_torch_of_pyproject():
    post = container.sections((REPO / "containers" / "hyrax.def").read_text())["post"]
    pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert pin == "torch==2.13.0"
    # one pip pass installs the stack: the CPU build of that same torch (+cpu meets the project's pin, and
    # PyPI has no +cpu build, so a missing CPU index fails instead of pulling CUDA), Hyrax and its kernel
    installs = [
        line.split() for line in post.splitlines() if "pip install" in line and "--upgrade pip" not in line
    ]
    assert len(installs) == 1, installs
    words = installs[0]
    assert f"{pin}+cpu" in words and "/opt/hyrax/src" in words and "ipykernel" in words
    assert words[words.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"


def test_gpu_image_takes_the_cuda_torch_and_says_to_run_with_nv():
    s = container.sections((REPO / "containers" / "hyrax-gpu.def").read_text())
    torch_line = next(line for line in s["post"].splitlines() if " torch==" in line)
    assert torch_line.split()[-1] == "torch==2.13.0" and "whl/cpu" not in torch_line
    assert "torch.version.cuda" in s["test"] and "--nv" in s["help"]
    assert (
        s["environment"] == container.sections((REPO / "containers" / "hyrax.def").read_text())["environment"]
    )


def _sourced_environment(body: str) -> dict[str, str]:
    out = subprocess.run(
        ["sh", "-c", f"{body}\nenv -0"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    return dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)


# --- a tiny root in the SIF layout, run with chroot as the notes describe (no Python stack) ----------

# Stands in for the installed `hyrax`: prints its arguments one a line, then the environment it sees.
FAKE_HYRAX = """#!/bin/sh
for a in "$@"; do echo "arg=$a"; done
echo "NUMBA_CACHE_DIR=$NUMBA_CACHE_DIR MLFLOW_DISABLE_TELEMETRY=$MLFLOW_DISABLE_TELEMETRY"
echo "ANONYMIZED_TELEMETRY=$ANONYMIZED_TELEMETRY ORT_DISABLE_TELEMETRY=$ORT_DISABLE_TELEMETRY PATH=$PATH"
"""


def assemble_root(def_text: str, root: Path) -> None:
    """Lay a definition file's scripts out as `apptainer build` does: /.singularity.d/{runscript,
    env/90-environment.sh,labels.json}, /singularity, /scif/apps/<app>/scif/runscript; plus /bin/sh and
    its libraries from the host, and a fake hyrax where %post would install the real one."""
    s = container.sections(def_text)
    sd = root / ".singularity.d"
    (sd / "env").mkdir(parents=True)
    _script(sd / "runscript", s["runscript"])
    _script(
        sd / "env" / "90-environment.sh", "# Custom environment shell code should follow\n" + s["environment"]
    )
    labels = dict(line.split(None, 1) for line in s["labels"].strip().splitlines())
    (sd / "labels.json").write_text(json.dumps(labels))
    (root / "singularity").symlink_to(".singularity.d/runscript")
    for key, body in s.items():
        if key.startswith("apprun "):
            _script(root / "scif" / "apps" / key.split()[1] / "scif" / "runscript", body)
    _script(root / "opt" / "hyrax" / "venv" / "bin" / "hyrax", FAKE_HYRAX.removeprefix("#!/bin/sh\n"))
    (root / "bin").mkdir()
    shutil.copy("/bin/sh", root / "bin" / "sh")
    libs = subprocess.run(["ldd", "/bin/sh"], capture_output=True, text=True, check=True).stdout
    for lib in (w for w in libs.split() if w.startswith("/")):
        (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, root / lib.lstrip("/"))


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _run_in(root: Path, script: str, *args: str) -> list[str]:
    cmd = f'. /.singularity.d/env/90-environment.sh; exec {script} "$@"'
    proc = subprocess.run(
        [shutil.which("chroot"), str(root), "/bin/sh", "-c", cmd, "sh", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("chroot"), reason="chroot needs root")
@pytest.mark.parametrize("path", DEFS, ids=lambda p: p.name)
def test_runscript_and_apps_run_in_a_sif_layout_root(path, tmp_path):
    root = tmp_path / "root"
    assemble_root(path.read_text(), root)
    env_lines = [
        "NUMBA_CACHE_DIR=/tmp/numba_cache MLFLOW_DISABLE_TELEMETRY=true",
        "ANONYMIZED_TELEMETRY=False ORT_DISABLE_TELEMETRY=1 PATH=/opt/hyrax/venv/bin:/usr/bin:/bin",
    ]
    # `apptainer run hyrax.sif train --set "a b"`: arguments pass through whole, spaces included
    assert _run_in(root, "/singularity", "train", "--set", "train.run_name='a b'") == [
        "arg=train",
        "arg=--set",
        "arg=train.run_name='a b'",
        *env_lines,
    ]
    # `apptainer run --app infer hyrax.sif --shard 0/3`
    assert _run_in(root, "/scif/apps/infer/scif/runscript", "--shard", "0/3") == [
        "arg=infer",
        "arg=--shard",
        "arg=0/3",
        *env_lines,
    ]
    assert sorted(p.name for p in (root / "scif" / "apps").iterdir()) == sorted(s.name for s in STAGES)
