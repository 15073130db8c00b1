"""The README's commands run as written (all but the two set-up commands), so the README can't rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = blocks("bash")[0]
    assert [ln.split("#")[0].strip() for ln in first.strip().splitlines()] == ["make demo", "make test"]


def test_readme_stage_table_is_the_stage_registry():
    """The table says what each stage reads and writes, as the registry does (and a test in test_lineage
    runs every stage and checks it writes those files): it can't drift from the code."""
    from libhyrax.stages import STAGES

    rows = ["| stage | reads | writes |", "|---|---|---|"]
    rows += [
        f"| `{s.name}` | {s.reads} | {', '.join(f'`{w}`' for w in s.writes)} |" for s in STAGES if s.makes_run
    ]
    table = "\n".join(rows)
    assert table in README, f"update the README's stage table to:\n{table}"


def test_readme_toml_example_is_a_valid_config(tmp_path):
    from libhyrax.config import load_config

    (tmp_path / "c.toml").write_text(blocks("toml")[0])
    cfg = load_config(tmp_path / "c.toml")
    assert cfg["train"]["epochs"] == 20


@pytest.mark.slow
def test_readme_shell_commands_run(workdir):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for block in blocks("bash")[1:]:
        for line in block.strip().splitlines():
            command = line.split(" #")[0].strip()
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
            assert proc.returncode == 0, f"README command failed: {command}\n{proc.stderr[-2000:]}"
            out = proc.stdout.strip().splitlines()
            assert len(out) == 1 and (workdir / out[0]).is_dir(), f"{command} printed {proc.stdout!r}"


@pytest.mark.slow
def test_readme_python_example_runs(workdir):
    code = blocks("python")[0]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((workdir / "results").glob("*-train-*"))) == 2  # libhyrax.train and Hyrax.train
