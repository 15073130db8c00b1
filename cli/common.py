"""What every stage command shares: the common options, reading the input run from a pipe, printing the
results path on stdout, and turning errors into exit codes and short messages."""

from __future__ import annotations

import errno
import os
import stat
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="A TOML config file.",
                                                show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set train.epochs=5 "
                                                   "(repeatable; the value is TOML).", show_default=False)]
FromOpt = Annotated[Path | None, typer.Option("--from", help="The results directory to read (default: the "
                                               "path piped on stdin, else the newest finished run).",
                                               show_default=False)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
# sharded stages (infer, umap, anomaly): the same three options, so Slurm array scripts read alike
ShardOpt = Annotated[str | None, typer.Option("--shard", help="Process share I of N (0-based), e.g. 2/10; "
                                              "default: the Slurm array task's share, else everything.",
                                              show_default=False)]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="An interrupted run's results directory to "
                                                "finish (for a sharded run: the shared directory).",
                                                show_default=False)]


def show_option(what: str):
    """`--show`: also print `what` (a table the stage wrote) to stderr; stdout keeps only the run's path."""
    return Annotated[bool, typer.Option("--show", help=f"Also print {what} to stderr.")]


def print_table(result, file_name: str) -> None:
    """The first rows of a CSV table of `result` on stderr (`--show`)."""
    from libhyrax.tables import format_table, read_table

    if result.file(file_name).exists():
        print(format_table(read_table(result.file(file_name)), max_rows=20), file=sys.stderr)


def _plain_name(name: str | None) -> str | None:
    if name is not None:
        from libhyrax.errors import UsageError
        from libhyrax.rundir import check_run_name

        try:
            check_run_name(name)
        except UsageError as e:
            raise typer.BadParameter(str(e)) from None
    return name


RunNameOpt = Annotated[
    str | None,
    typer.Option(
        "--run-name",
        help="The shared directory's name for shards run by a plain loop outside Slurm.",
        show_default=False,
        callback=_plain_name,
    ),
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def piped_run_dir() -> Path | None:
    """The results directory an upstream stage printed, when stdin is a pipe (`hyrax train | hyrax infer`).
    The last non-empty line wins, so a pipe carrying several lines still works. An empty pipe means the
    upstream stage failed: an error, not a silent fall-back to an older run."""
    from libhyrax.errors import UsageError

    if _ranks_launched() > 1:
        return None  # srun/torchrun hand every rank an empty pipe: a rank of a multi-process run reads none
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            return None
        lines = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()]
    except (OSError, ValueError):
        return None
    if not lines:
        raise UsageError(
            "stdin is a pipe, but the stage before this one printed no results directory (did "
            "it fail?); pass --from DIR, or run this stage with </dev/null to use the newest run"
        )
    return Path(lines[-1])


def _ranks_launched() -> int:
    """Processes a launcher started for this command (torchrun's WORLD_SIZE, srun's SLURM_NTASKS in a
    step)."""
    n = os.environ.get("WORLD_SIZE") or (
        os.environ.get("SLURM_NTASKS") if "SLURM_STEP_ID" in os.environ else None
    )
    try:
        return int(n or 1)
    except ValueError:
        return 1


def input_run(from_run: Path | None) -> Path | None:
    return from_run or piped_run_dir()


def run_stage(body: Callable[[], object], debug: bool = False) -> None:
    """Run a stage body; print its results directory (or a tool's text, returned as a str) on stdout; exit
    with the contract's code. The stage resolves its config itself, once (its `general.log_level` then
    applies, unless --debug pins it).

    Stdout carries that one answer and nothing else: while the body runs, file descriptor 1 points at
    stderr, so whatever a library prints (MLflow's "View run ..." lines, a C library's chatter) lands in
    the log, never in `T=$(hyrax train)`. A reader that went away (`| head`, a next stage that failed at
    once) doesn't fail a run that completed: a broken pipe exits 0."""
    from libhyrax.errors import HyraxError
    from libhyrax.log import setup_logging
    from libhyrax.redact import text as safe

    setup_logging("debug" if debug else "info", pin=debug)
    answer = _stdout_to_stderr()
    try:
        result = body()
    except HyraxError as e:
        if debug:
            print(safe(traceback.format_exc()), file=sys.stderr, end="")
        print(f"error: {safe(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated: Slurm's time limit, scancel)
        print(f"interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", EXIT_INTERRUPTED))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            _unexpected(e, debug, safe)
        print(
            f"error: {e.strerror}{f': {e.filename}' if e.filename else ''}; free some space there, then "
            "resume the run (the log above names the command)",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILURE)
    except Exception as e:  # a bug or an unexpected failure: short message, traceback on --debug
        _unexpected(e, debug, safe)
    finally:
        _restore_stdout(answer)
    if result is not None:
        text = result if isinstance(result, str) else os.fspath(getattr(result, "path", result))
        _answer(text if text.endswith("\n") else text + "\n")


def _unexpected(e: Exception, debug: bool, safe) -> None:
    if debug:
        print(safe(traceback.format_exc()), file=sys.stderr, end="")
    print(
        f"error: {type(e).__name__}: {safe(str(e))}\n(rerun with --debug for the traceback)", file=sys.stderr
    )
    sys.exit(EXIT_FAILURE)


def _stdout_to_stderr() -> int | None:
    """Point fd 1 at stderr; returns a copy of the real stdout (None when there is no fd 1 to move)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        return saved
    except (OSError, ValueError, AttributeError):
        return None


def _restore_stdout(saved: int | None) -> None:
    if saved is None:
        return
    try:
        sys.stdout.flush()  # what a library printed goes to stderr, where fd 1 points still
    except (OSError, ValueError):
        pass
    os.dup2(saved, 1)
    os.close(saved)


def _answer(text: str) -> None:
    """Write the stage's answer on stdout. A reader gone away is not a failure of the run: stdout is
    pointed at /dev/null so Python's own flush at exit doesn't fail either."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
