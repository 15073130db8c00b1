"""Writing a run: open a results directory for a stage (new, resumed, or one shard of a shared sharded
run), write outputs into it, and finish or fail it. Stages open theirs through libhyrax.start.start_run,
which settles the config, inputs and resume first; the directory's format is libhyrax.rundir.

    with open_run("infer", cfg, shard=shard, resume=resume, name=run_name, key=[src]) as run:
        run.add_upstream(src)                       # lineage (recorded relative to the results tree)
        start, stop = run.rows(n)                   # this process's rows: all of them, or its shard's
        write(run.output("latents"), start, stop)   # latents.h5, or latents.shard-IIII-of-NNNN.h5
        run.record(n_objects=n)                     # stage facts into provenance
    return Result(run.path)

Plain run: written as `<name>.partial`, renamed to `<name>` on success, to `<name>.failed` (error in
provenance.json) on any exception or interrupt; `resume` reopens a `.failed` or `.partial` run. The log
suggests `--resume` only when there is something to go on from (`Run.resumable`); a new run refused
before it wrote anything (a UsageError) is removed.

Sharded run (`--shard I/N` or a Slurm array task, see libhyrax.sharding): every task writes into one
shared directory, created under its final name: `slurm-<array job>-<stage>-array`, or for a plain loop
`shards-<key>-<stage>-<N>` where the key is a digest of the whole config and the stage's inputs (so a
rerun with other settings never finds this run's finished shards), or `name`. Its `provenance.json` says
it is sharded into N; each task writes its own output shard, `provenance.shard-IIII-of-NNNN.json` and log.
The run counts as finished when every shard's provenance says complete (results.read_provenance merges
them). `resume` is the shared directory to rerun a shard into.
"""

from __future__ import annotations

import datetime as dt
import errno
import getpass
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libhyrax import atomic, redact, stages
from libhyrax import log as hlog
from libhyrax.errors import RunError, Terminated, UsageError, a_run
from libhyrax.rundir import (
    CLAIM_FILE,
    CONFIG_FILE,
    FAILED,
    PARTIAL,
    PROVENANCE_FILE,
    STATUS,
    Status,
    base_name,
    check_run_name,
    check_stage,
    now,
    read_provenance,
    recorded_path,
    results_root,
    run_name,
    shard_provenance_name,
)
from libhyrax.sharding import Shard, choose_shard, shard_range, shared_run_name, slurm_environment

log = logging.getLogger("hyrax.runs")

# versions recorded in provenance; read from package metadata, so nothing heavy is imported
RECORDED_PACKAGES = ("hyrax-toolkit", "numpy", "torch", "pytorch-ignite", "h5py", "astropy", "mlflow",
                     "umap-learn", "scikit-learn", "chromadb", "onnxruntime", "bokeh", "tomlkit")

@dataclass
class Run:
    """A results directory being written. Stages write outputs under `run.path`."""

    stage: str
    final_path: Path
    path: Path
    config: dict
    provenance: dict = field(default_factory=dict)
    shard: Shard | None = None
    claim: Claim | None = None
    # whether `--resume` could continue this run if it failed now; by default, once it wrote an output
    # (train: once it has a checkpoint). A new run that can't be resumed is removed when it fails.
    resumable: Callable[[], bool] | None = None

    def can_resume(self) -> bool:
        return self.resumable() if self.resumable is not None else _wrote_outputs(self.path)

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()
            self.claim = None

    def file(self, name: str) -> Path:
        return self.path / name

    def output(self, stem: str) -> Path:
        """Where this process writes the array file `stem`: `<stem>.h5`, or in a sharded run its shard,
        `<stem>.shard-IIII-of-NNNN.h5` (read back as one through libhyrax.hdf5.open_result)."""
        from libhyrax.hdf5 import shard_name

        if self.shard is None:
            return self.file(f"{stem}.h5")
        return self.file(shard_name(stem, self.shard.index, self.shard.count))

    def rows(self, n: int) -> tuple[int, int]:
        """The rows of an n-row input this process handles: all, or its shard's contiguous share."""
        return shard_range(n, self.shard.index, self.shard.count) if self.shard else (0, n)

    def shards_complete(self, stem: str) -> bool:
        """Whether every shard of `stem` is written (always true for a plain run's own output)."""
        from libhyrax.hdf5 import is_complete_file, shard_name

        if self.shard is None:
            return is_complete_file(self.output(stem))
        return all(
            is_complete_file(self.file(shard_name(stem, i, self.shard.count)))
            for i in range(self.shard.count)
        )

    def add_input(self, path: str | os.PathLike) -> None:
        rec = file_record(path)
        if rec["path"] not in [r["path"] for r in self.provenance["inputs"]]:
            self.provenance["inputs"].append(rec)
            self.save_provenance()

    def add_upstream(self, run_dir: str | os.PathLike) -> None:
        """Record a run this one read: by name when it lies beside this run, else by absolute path."""
        p = recorded_path(self.final_path, run_dir)
        if p not in self.provenance["upstream_runs"]:
            self.provenance["upstream_runs"].append(p)
            self.save_provenance()

    def record(self, **fields: Any) -> None:
        """Add stage-specific facts to provenance.json (e.g. the split sizes, a shard)."""
        self.provenance.setdefault("stage_info", {}).update(fields)
        self.save_provenance()

    def save_provenance(self) -> None:
        name = (
            PROVENANCE_FILE
            if self.shard is None
            else shard_provenance_name(self.shard.index, self.shard.count)
        )
        atomic.write_json(self.path / name, self.provenance)


@contextmanager
def open_run(
    stage: str,
    config: dict,
    *,
    shard: str | Shard | None = None,
    resume: str | os.PathLike | None = None,
    name: str | None = None,
    key=(),
):
    """Open a results directory for `stage` (see the module docstring); yields a :class:`Run`.

    shard: "I/N", a Shard, or None (then the Slurm array task's share when in an array job), for the
    stages the registry marks `shards`.
    resume: a run to continue (a plain run's `.failed`/`.partial` directory, or a sharded run's shared
    directory). name: the run's directory name (`--run-name`). key: what, besides the config, a plain
    loop of shards must agree on (e.g. the input run), so its tasks compute the same directory name.
    """
    if not stages.get(stage).shards:
        if shard is not None:
            raise UsageError(f"`hyrax {stage}` does not run in shards; leave out --shard")
        the_shard = None  # a train run in a Slurm array job is one whole run, not a share of one
    else:
        the_shard = choose_shard(shard)
    if name is not None:
        check_run_name(name)
    if resume is not None:
        resume = existing_run_dir(Path(resume))
        _check_resume_matches(resume, stage, the_shard)
    if the_shard is None:
        run = _open_plain(stage, config, resume, name)
    else:
        run = _open_shard(stage, config, the_shard, resume, name, key)
    reserve_space(run)
    handler = hlog.add_file_log(
        run.path / (f"{stage}.log" if the_shard is None else f"{stage}.{the_shard.tag}.log")
    )
    log.info("%s%s: writing %s", stage, f" shard {the_shard}" if the_shard else "", run.final_path)
    try:
        with terminate_as_interrupt():
            yield run
    except BaseException as exc:
        interrupted = mark_ended(run, handler, exc)
        how = f"was interrupted ({str(exc) or type(exc).__name__})" if interrupted else "failed"
        try:
            if the_shard is not None:
                log.error(
                    "%s shard %s %s; rerun it with: hyrax %s --shard %s --resume %s",
                    stage,
                    the_shard,
                    how,
                    stage,
                    the_shard,
                    run.path,
                )
                raise
            _end_failed(run, exc, how, resumed=resume is not None)
            raise
        finally:
            run.release()
    mark_ended(run, handler)
    if the_shard is None:
        os.replace(run.path, run.final_path)
        run.path = run.final_path
        (run.path / CLAIM_FILE).unlink(missing_ok=True)  # finished: nothing can reopen it
    run.release()


def _end_failed(run: Run, exc: BaseException, how: str, resumed: bool) -> None:
    """A plain run that failed: kept as `<name>.failed`, with `--resume` suggested only when there is
    something to go on from (Run.resumable). A new run refused before it wrote anything (a UsageError: a
    config mistake, an untrusted file, credentials refused) is removed: nothing in it is worth keeping."""
    stage = run.stage
    can_resume = run.can_resume()
    if not can_resume and not resumed and isinstance(exc, UsageError):
        shutil.rmtree(run.path, ignore_errors=True)
        log.error(
            "%s was refused before it wrote any results, so no results directory is kept; fix what the "
            "error says and run it again",
            stage,
        )
        return
    failed = run.final_path.with_name(run.final_path.name + FAILED)
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(run.path, failed)
    run.path = failed
    if can_resume:
        log.error(
            "%s %s; its results directory is kept as %s; continue it with: hyrax %s --resume %s",
            stage,
            how,
            failed,
            stage,
            failed,
        )
    else:
        log.error(
            "%s %s before it wrote anything a resume could go on from (its results directory is "
            "kept as %s); start a new run",
            stage,
            how,
            failed,
        )


# what a run's directory holds besides its outputs
_BOOKKEEPING = (CONFIG_FILE, PROVENANCE_FILE)


def _wrote_outputs(path: Path) -> bool:
    """Whether a run's directory holds anything besides its config, provenance, log and claim."""
    try:
        return any(
            p.name not in _BOOKKEEPING and not p.name.startswith(CLAIM_FILE) and p.suffix != ".log"
            for p in path.iterdir()
        )
    except OSError:
        return False


def _check_resume_matches(path: Path, stage: str, shard: Shard | None) -> None:
    prov = read_provenance(path)
    check_stage(path, prov, stage)
    if prov.get("sharded") and shard is None:
        count = prov["sharded"]["count"]
        raise UsageError(
            f"{path} is sharded into {count}; resume one shard with --shard I/{count} --resume {path}"
        )
    if shard is not None and not prov.get("sharded"):
        raise UsageError(f"{path} is not a sharded run; resume it without --shard")


# --- claims: one writer per run (or per shard) ---------------------------------------------------------


@dataclass
class Claim:
    """An exclusive lock on a run being written, held by this process (flock: the system drops it when the
    process dies, even by kill -9, so a crashed writer never blocks a resume). The lock file says who
    holds it, for the message a second writer gets."""

    path: Path
    fd: int

    @classmethod
    def take(cls, path: Path) -> Claim | None:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UsageError(
                f"{path.parent} is being written by {holder}; wait for it to end (or stop it) "
                "before resuming it"
            ) from None
        except OSError as e:  # a file system without locks (some Lustre mounts): go on, unprotected
            log.warning("can't lock %s (%s); two writers of this run would not be stopped", path, e)
            return cls(path, fd)
        who = f"pid {os.getpid()} on {socket.gethostname()} since {now():%Y-%m-%d %H:%M:%S}"
        job = os.environ.get("SLURM_JOB_ID")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who}{f' (Slurm job {job})' if job else ''}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # closing drops the lock


@contextmanager
def terminate_as_interrupt():
    """SIGTERM (Slurm's time limit and scancel, `docker stop`) raises :class:`Terminated` like Ctrl-C
    raises KeyboardInterrupt: the stage writes what it has, the run is marked interrupted and the log says
    how to resume. Only the main thread can take signals; elsewhere this does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- plain runs -------------------------------------------------------------------------------------


def _open_plain(stage: str, config: dict, resume: str | os.PathLike | None, name: str | None) -> Run:
    from libhyrax.config import dump_config

    if resume is not None:
        run = _reopen(stage, Path(resume), config)
    else:
        final, work = _claim_new_directory(results_root(config), stage, name)
        run = Run(
            stage, final, work, config, new_provenance(stage, config), claim=Claim.take(work / CLAIM_FILE)
        )
    (run.path / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    run.save_provenance()
    return run


def _claim_new_directory(root: Path, stage: str, name: str | None) -> tuple[Path, Path]:
    """A new run's final and working paths. mkdir is the claim: on the rare uid clash with a job that
    started in the same second (or an existing final directory) a fresh uid is drawn; a given `name`
    that is taken is an error. A folder that can't be written in is a usage error saying which."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return _claim_in(root, stage, name)
    except OSError as e:
        if not (isinstance(e, PermissionError) or e.errno == errno.EROFS):
            raise
        raise UsageError(
            f"can't write in the results folder {root} ({e.strerror}); point "
            "general.results_dir at a folder you can write, e.g. "
            "--set \"general.results_dir='/scratch/$USER/results'\""
        ) from None


def _claim_in(root: Path, stage: str, name: str | None) -> tuple[Path, Path]:
    for _ in range(100):
        final = root / (name or run_name(stage))
        work = final.with_name(final.name + PARTIAL)
        try:
            if final.exists():
                raise FileExistsError(final)
            work.mkdir()
            return final, work
        except FileExistsError:
            if name:
                raise UsageError(f"{final} already exists; choose another run name") from None
    raise RunError(f"could not make a new results directory in {root}")


def _reopen(stage: str, path: Path, config: dict) -> Run:
    claim = Claim.take(path / CLAIM_FILE)  # before anything moves: a run still being written is refused
    try:
        prov = read_provenance(path)
        if prov.get(STATUS) == Status.COMPLETE:
            raise UsageError(f"--resume {path}: that run already finished; nothing to resume")
        name = base_name(path)
        final = path.with_name(name)
        work = final.with_name(name + PARTIAL)
        if path != work:
            os.replace(path, work)  # the claim is on the lock file itself, so it moves along
    except BaseException:
        claim.release()
        raise
    prov |= {STATUS: Status.RUNNING, "error": None}
    prov.setdefault("resumed", []).append(now().isoformat())
    return Run(stage, final, work, config, prov, claim=claim)


def existing_run_dir(path: Path) -> Path:
    """The run `--resume` names, under whichever name it has now: `X.failed` that another process has
    since reopened is `X.partial`, and that process's claim then refuses this one with its name."""
    if path.exists():
        return path
    name = base_name(path)
    for suffix in (PARTIAL, FAILED, ""):
        other = path.with_name(name + suffix)
        if other.exists():
            return other
    raise UsageError(f"--resume {path}: no such results directory")


# --- shards of a shared run ---------------------------------------------------------------------------


def _open_shard(stage: str, config: dict, shard: Shard, resume, name: str | None, key) -> Run:
    if resume is not None:
        path = Path(resume)
    else:
        # the whole config is in the key: a rerun with other settings must not find this run's shards
        digest_of = json.dumps([config, key], sort_keys=True, default=str)
        path = results_root(config) / (name or shared_run_name(stage, shard, digest_of))
    _claim_shared_directory(path, stage, config, shard)
    claim = Claim.take(path / f"{CLAIM_FILE}.{shard.tag}")  # one writer per shard
    run = Run(stage, path, path, config, new_provenance(stage, config), shard, claim)
    run.provenance["shard"] = {"index": shard.index, "count": shard.count}
    run.save_provenance()
    return run


def _claim_shared_directory(path: Path, stage: str, config: dict, shard: Shard) -> None:
    """Make the shared directory and its top provenance.json, or check an existing one matches."""
    from libhyrax.config import dump_config

    path.mkdir(parents=True, exist_ok=True)
    top = path / PROVENANCE_FILE
    if top.exists():
        prov = json.loads(top.read_text(encoding="utf-8"))
        info = prov.get("sharded") or {}
        if prov.get("stage") != stage or info.get("count") != shard.count:
            raise UsageError(
                f"{path} already holds {a_run(prov.get('stage'))} in {info.get('count')} "
                "shards; "
                f"this task is {stage} shard {shard}: pick another --run-name or --resume"
            )
        return
    prov = {
        "stage": stage,
        STATUS: Status.SHARDED,
        "started": now().isoformat(),
        "finished": None,
        "sharded": {"count": shard.count, "job_id": shard.job_id},
        "config_version": config.get("config_version"),
        "inputs": [],
        "upstream_runs": [],
        "error": None,
    }
    if not atomic.write_json(top, prov, exclusive=True):  # another task of the array claimed it first
        return _claim_shared_directory(path, stage, config, shard)
    atomic.write_text(path / CONFIG_FILE, dump_config(config))


RESERVE_BYTES = 64 << 10  # more than provenance.json and the last log lines need


def reserve_path(run: Run) -> Path:
    return run.path / (".hyrax-reserve" if run.shard is None else f".hyrax-reserve.{run.shard.tag}")


def reserve_space(run: Run) -> None:
    """Hold some disk space for recording how the run ended: a stage that fills the disk still marks its
    run failed (and says how to resume it) instead of leaving it "running". Random bytes: a file system
    that compresses would store zeros in nothing."""
    reserve_path(run).write_bytes(os.urandom(RESERVE_BYTES))


# --- ending a run -------------------------------------------------------------------------------------


def mark_ended(run: Run, log_handler, exc: BaseException | None = None) -> bool:
    """Record how a run ended (complete, failed or interrupted, with the error) in its provenance and
    close its log file; returns whether it was interrupted."""
    reserve_path(run).unlink(missing_ok=True)  # room for the record, should the disk have filled up
    interrupted = isinstance(exc, KeyboardInterrupt)
    status = Status.COMPLETE if exc is None else Status.INTERRUPTED if interrupted else Status.FAILED
    run.provenance |= {"status": status, "finished": now().isoformat()}
    if exc is not None:
        run.provenance["error"] = redact.text(f"{type(exc).__name__}: {exc}")
    run.save_provenance()
    hlog.remove_handler(log_handler)
    return interrupted


# --- provenance ------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the Hyrax source when it runs from a git checkout."""
    src = Path(__file__).resolve().parent.parent
    if not (src / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p.resolve())}
    if p.exists():
        st = p.stat()
        rec |= {"size": st.st_size, "mtime": dt.datetime.fromtimestamp(st.st_mtime).astimezone().isoformat()}
    return rec


def new_provenance(stage: str, config: dict) -> dict:
    slurm = slurm_environment()
    return {
        "stage": stage,
        "status": Status.RUNNING,
        "started": now().isoformat(),
        "finished": None,
        "command_line": [redact.text(a) for a in sys.argv],
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "seed": config.get("general", {}).get("seed"),
        "slurm": slurm or None,
        "inputs": [],
        "upstream_runs": [],
        "error": None,
    }
