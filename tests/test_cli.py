"""The command line: exit codes, the stdout contract through a real shell pipe, fast imports, aliases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from libhyrax.stages import ALIASES, STAGES

HEAVY = (
    "torch",
    "mlflow",
    "chromadb",
    "umap",
    "bokeh",
    "astropy",
    "sklearn",
    "skimage",
    "ignite",
    "onnxruntime",
)


def test_help_lists_every_stage(hyrax):
    out = hyrax("--help", check=True).stdout
    for stage in STAGES:
        assert stage.name in out


def test_bare_hyrax_shows_help_without_traceback(hyrax):
    proc = hyrax()
    assert "Usage" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--help"]] + [[s.name, "--help"] for s in STAGES])
def test_help_imports_nothing_heavy(args):
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from hyrax_cli.main import build_app
        result = CliRunner().invoke(build_app(), {args!r})
        assert result.exit_code == 0, result.output
        print(",".join(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"`hyrax {' '.join(args)}` imported {out.strip()}"


# a stage's path imports what it uses and no more before it reads its first row (issue 16, "the first minute")
LEAN_PATHS = [
    # infer's device (libhyrax.device): Ignite is for training, and imports all of torch.distributed
    ("from libhyrax.device import pick_device; pick_device('cpu')", ("ignite", "mlflow")),
    # a single process asks its rank (pick_device on a GPU): no process group, no Ignite
    (
        "from libhyrax.training import distributed as d; assert (d.rank(), d.world_size()) == (0, 1)",
        ("ignite",),
    ),
    # visualize asks whether it runs in a notebook; a kernel has imported IPython long before
    ("from libhyrax.stages.visualize import in_notebook; assert not in_notebook()", ("IPython",)),
]


@pytest.mark.parametrize("code, unneeded", LEAN_PATHS)
def test_a_stage_path_imports_only_what_it_uses(code, unneeded):
    check = f"import sys\n{code}\nprint(','.join(m for m in {unneeded!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"{code!r} imported {out.strip()}"


def test_version(hyrax):
    assert hyrax("--version", check=True).stdout.startswith("hyrax ")


def test_config_prints_resolved_toml_on_stdout(hyrax, workdir):
    proc = hyrax("config", "--set", "train.epochs=3", cwd=workdir, check=True)
    import tomlkit

    cfg = tomlkit.parse(proc.stdout).unwrap()
    assert cfg["train"]["epochs"] == 3 and cfg["config_version"] == 8
    assert not (workdir / "results").exists()  # a tool, not a stage


@pytest.mark.parametrize(
    "args, message",
    [
        (["config", "-c", "missing.toml"], "missing.toml does not exist"),
        (["config", "--set", "train.epoch=3"], "did you mean train.epochs"),
        (["config", "--set", "noequals"], "key=value"),
    ],
)
def test_config_errors_exit_2_without_traceback(hyrax, workdir, args, message):
    proc = hyrax(*args, cwd=workdir)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_option_is_a_usage_error(hyrax):
    assert hyrax("config", "--nope").returncode == 2


def test_debug_shows_the_traceback(hyrax, workdir):
    proc = hyrax("config", "-c", "missing.toml", "--debug", cwd=workdir)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


PIPE_STAGE = textwrap.dedent("""
    import sys
    from hyrax_cli.common import input_run, run_stage
    from libhyrax.config import load_config
    from libhyrax.results import Result, find_run
    from libhyrax.runs import open_run

    stage, needs = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)

    def body():
        cfg = load_config()
        upstream = find_run(needs, cfg, input_run(None)).path if needs else None
        with open_run(stage, cfg) as run:
            if upstream:
                run.add_upstream(upstream)
            print("log line that must not reach stdout", file=sys.stderr)
        return Result(run.path)

    run_stage(body)
""")


def test_stdout_carries_only_the_path_through_a_real_pipe(workdir):
    """Two stage processes joined by a shell pipe: the second reads the first's directory from stdin."""
    (workdir / "stage.py").write_text(PIPE_STAGE)
    py = sys.executable
    proc = subprocess.run(
        f"{py} stage.py train | {py} stage.py infer train",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and "-infer-" in lines[0] and Path(lines[0]).is_dir()
    from libhyrax.results import Result
    from libhyrax.rundir import read_provenance

    trains = list((workdir / "results").glob("*-train-*"))
    assert read_provenance(lines[0])["upstream_runs"] == [trains[0].name]  # beside it: by name
    assert Result(lines[0]).find("train") == Result(trains[0])


def test_usage_error_exits_2_keeps_stdout_empty(workdir):
    (workdir / "stage.py").write_text(PIPE_STAGE)
    proc = subprocess.run(
        [sys.executable, "stage.py", "infer", "train"],
        cwd=workdir,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2  # no train run to read: a usage error
    assert proc.stdout == "" and "run `hyrax train` first" in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "results").exists()  # a usage error found before the run starts writes nothing


def test_interrupt_exits_130(workdir):
    (workdir / "stage.py").write_text(
        textwrap.dedent("""
        from hyrax_cli.common import run_stage
        def body():
            raise KeyboardInterrupt
        run_stage(body)
    """)
    )
    proc = subprocess.run([sys.executable, "stage.py"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 130


def test_reference_aliases_work_and_point_to_our_names():
    from hyrax_cli.main import build_app
    from typer.testing import CliRunner

    app = build_app()
    assert set(ALIASES) == {"reduce_dimensions", "save_to_database", "to_onnx"}  # lookup is its own tool
    for alias in ALIASES:
        result = CliRunner().invoke(app, [alias, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, alias
    assert ALIASES["to_onnx"] == "export" and ALIASES["reduce_dimensions"] == "umap"


def test_per_stage_executables_exist_for_every_stage():
    bindir = Path(sys.executable).parent
    for stage in STAGES:
        exe = bindir / f"hyrax-{stage.name}"
        assert exe.exists() or shutil.which(f"hyrax-{stage.name}"), f"hyrax-{stage.name} is not installed"
    proc = subprocess.run(
        [str(bindir / "hyrax-config"), "--set", "train.epochs=2"], capture_output=True, text=True, check=True
    )
    assert "epochs = 2" in proc.stdout


def test_failure_while_running_exits_1_and_marks_the_run_failed(workdir):
    (workdir / "stage.py").write_text(
        textwrap.dedent("""
        from hyrax_cli.common import run_stage
        from libhyrax.config import load_config
        from libhyrax.runs import open_run

        def body():
            with open_run("train", load_config()):
                raise RuntimeError("disk on fire")
        run_stage(body)
    """)
    )
    proc = subprocess.run([sys.executable, "stage.py"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "disk on fire" in proc.stderr and "--debug" in proc.stderr and "Traceback" not in proc.stderr
    assert len(list((workdir / "results").glob("*-train-*.failed"))) == 1


def test_an_empty_pipe_is_an_error_not_a_stale_run(workdir):
    """`hyrax train | hyrax infer` where train failed: infer must not fall back to an older train run."""
    (workdir / "stage.py").write_text(PIPE_STAGE)
    py = sys.executable
    first = subprocess.run(
        [py, "stage.py", "train"], cwd=workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert first.returncode == 0  # an older train run exists
    proc = subprocess.run(
        f"true | {py} stage.py infer train", shell=True, cwd=workdir, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "printed no results directory" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_help_text_is_shown_as_written(stage):
    """A [section] name in a help text is text, not markup that the renderer drops ("else )." was shown)."""
    from hyrax_cli.main import build_app
    from typer.testing import CliRunner

    out = CliRunner().invoke(build_app(), [stage, "--help"], terminal_width=200).output
    assert "else )" not in out and "()" not in out.replace("(s)", "")
    if stage == "train":
        assert "the path piped in, else [data_request])." in " ".join(out.split())
