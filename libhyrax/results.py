"""Results directories: one new, self-contained directory per stage run.

    <results_dir>/YYYYMMDD-HHMMSS-<stage>-<uid>/
        runtime_config.toml   the full resolved config, with config_version
        provenance.json       versions, host, command line, times, seed, Slurm ids, git commit, inputs
        <stage>.log           the stage's log
        ...                   the stage's outputs (HDF5 where they are arrays)

A run is written as `<name>.partial` and renamed to `<name>` when it succeeds. A failed or interrupted
run becomes `<name>.failed`, with its error in provenance.json; it is never taken as a finished input,
and `--resume` can pick it up again.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import platform
import secrets
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from libhyrax import log as hlog
from libhyrax.errors import HyraxError, RunError, UsageError

log = logging.getLogger("hyrax.results")

PARTIAL, FAILED = ".partial", ".failed"
CONFIG_FILE, PROVENANCE_FILE = "runtime_config.toml", "provenance.json"
# versions recorded in provenance; read from package metadata, so nothing heavy is imported
RECORDED_PACKAGES = ("hyrax-toolkit", "numpy", "torch", "pytorch-ignite", "h5py", "astropy", "mlflow",
                     "umap-learn", "scikit-learn", "chromadb", "onnxruntime", "bokeh", "tomlkit")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
              "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_JOB_NAME", "SLURM_PROCID",
              "SLURM_NTASKS", "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION")


def now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def run_name(stage: str, when: dt.datetime | None = None) -> str:
    """YYYYMMDD-HHMMSS-<stage>-<uid>: the random uid keeps two jobs starting in the same second on a
    shared filesystem apart."""
    when = when or now()
    return f"{when:%Y%m%d-%H%M%S}-{stage}-{secrets.token_hex(4)}"


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
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
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


@dataclass
class Run:
    """A results directory being written. Stages write outputs under `run.path`."""

    stage: str
    final_path: Path
    path: Path
    config: dict
    provenance: dict = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return self.path / name

    def add_input(self, path: str | os.PathLike) -> None:
        rec = file_record(path)
        if rec["path"] not in [r["path"] for r in self.provenance["inputs"]]:
            self.provenance["inputs"].append(rec)
            self.save_provenance()

    def add_upstream(self, run_dir: str | os.PathLike) -> None:
        p = str(Path(run_dir).resolve())
        if p not in self.provenance["upstream_runs"]:
            self.provenance["upstream_runs"].append(p)
            self.save_provenance()

    def record(self, **fields: Any) -> None:
        """Add stage-specific facts to provenance.json (e.g. the split sizes, a shard)."""
        self.provenance.setdefault("stage_info", {}).update(fields)
        self.save_provenance()

    def save_provenance(self) -> None:
        write_json_atomic(self.path / PROVENANCE_FILE, self.provenance)


def unique_tmp(path: Path) -> Path:
    """A temporary name beside `path` that no other process (a Slurm array task) can pick too."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_json_atomic(path: Path, data: Any, *, exclusive: bool = False) -> bool:
    """Write JSON whole or not at all. `exclusive`: only when `path` doesn't exist yet (atomically, so of
    several racing processes exactly one wins); returns whether this call wrote it."""
    tmp = unique_tmp(path)
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    if not exclusive:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # fails if path exists: create-if-absent, atomically
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _new_provenance(stage: str, config: dict) -> dict:
    slurm = {k: os.environ[k] for k in SLURM_VARS if k in os.environ}
    return {
        "stage": stage,
        "status": "running",
        "started": now().isoformat(),
        "finished": None,
        "command_line": sys.argv,
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


def results_root(config: dict) -> Path:
    return Path(config.get("general", {}).get("results_dir", "./results")).expanduser()


@contextmanager
def new_run(stage: str, config: dict, *, resume: str | os.PathLike | None = None, name: str | None = None):
    """Make (or, with `resume`, reopen) a results directory; finish it atomically on success, mark it
    failed (with the error) on any exception or interrupt. Yields a :class:`Run`."""
    from libhyrax.config import dump_config

    root = results_root(config)
    if resume is not None:
        run = _reopen(stage, Path(resume), config)
    else:
        final, work = _claim_new_directory(root, stage, name)
        run = Run(stage, final, work, config, _new_provenance(stage, config))
    (run.path / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    run.save_provenance()
    handler = hlog.add_file_log(run.path / f"{stage}.log")
    log.info("%s: writing %s", stage, run.final_path)
    try:
        yield run
    except BaseException as exc:
        interrupted = mark_ended(run, handler, exc)
        failed = run.final_path.with_name(run.final_path.name + FAILED)
        if failed.exists():
            import shutil

            shutil.rmtree(failed)
        os.replace(run.path, failed)
        log.error("%s %s; its results directory is kept as %s", stage,
                  "was interrupted" if interrupted else "failed", failed)
        raise
    mark_ended(run, handler)
    os.replace(run.path, run.final_path)
    run.path = run.final_path


def _claim_new_directory(root: Path, stage: str, name: str | None) -> tuple[Path, Path]:
    """A new run's final and working paths. mkdir is the claim: on the rare uid clash with a job that
    started in the same second (or an existing final directory) a fresh uid is drawn; a given `name`
    that is taken is an error."""
    root.mkdir(parents=True, exist_ok=True)
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


def mark_ended(run: Run, log_handler, exc: BaseException | None = None) -> bool:
    """Record how a run ended (complete, failed or interrupted, with the error) in its provenance and
    close its log file; returns whether it was interrupted."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    status = "complete" if exc is None else "interrupted" if interrupted else "failed"
    run.provenance |= {"status": status, "finished": now().isoformat()}
    if exc is not None:
        run.provenance["error"] = f"{type(exc).__name__}: {exc}"
    run.save_provenance()
    hlog.remove_handler(log_handler)
    return interrupted


def _reopen(stage: str, path: Path, config: dict) -> Run:
    prov = read_provenance(path)
    if prov.get("stage") != stage:
        raise UsageError(f"--resume {path} is a {prov.get('stage')!r} run, not a {stage} run")
    if prov.get("status") == "complete":
        raise UsageError(f"--resume {path}: that run already finished; nothing to resume")
    name = path.name.removesuffix(FAILED).removesuffix(PARTIAL)
    final = path.with_name(name)
    work = final.with_name(name + PARTIAL)
    if path != work:
        os.replace(path, work)
    prov |= {"status": "running", "error": None}
    prov.setdefault("resumed", []).append(now().isoformat())
    return Run(stage, final, work, config, prov)


def read_provenance(run_dir: str | os.PathLike) -> dict:
    """provenance.json; for a sharded run (libhyrax.sharding), merged with its shards' own files."""
    p = Path(run_dir) / PROVENANCE_FILE
    try:
        prov = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{run_dir} is not a Hyrax results directory (no {PROVENANCE_FILE})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{p} is damaged ({e}); rerun the stage that made it") from None
    return _merge_shards(Path(run_dir), prov) if prov.get("status") == "sharded" else prov


def shard_provenance_name(index: int, count: int) -> str:
    return f"provenance.shard-{index:04d}-of-{count:04d}.json"


def _merge_shards(run_dir: Path, prov: dict) -> dict:
    """A sharded run is complete when every shard's own provenance says so; else its error names the
    unfinished shards and the command that reruns the first."""
    count = prov["sharded"]["count"]
    shards = []
    for i in range(count):
        try:
            shards.append(json.loads((run_dir / shard_provenance_name(i, count)).read_text(encoding="utf-8")))
        except (FileNotFoundError, json.JSONDecodeError):
            shards.append({"status": "missing"})
    merged = dict(prov, shards=[s.get("status") for s in shards])
    for key in ("inputs", "upstream_runs"):
        merged[key] = list({json.dumps(x, sort_keys=True): x for s in shards for x in s.get(key, [])}.values())
    bad = [i for i, s in enumerate(shards) if s.get("status") != "complete"]
    if not bad:
        merged |= {"status": "complete", "finished": max(s.get("finished") or "" for s in shards)}
        return merged
    stage, upstream = prov.get("stage"), merged["upstream_runs"]
    listed = ", ".join(f"{i}/{count} ({shards[i].get('status')})" for i in bad)
    src = f" --from {upstream[0]}" if upstream else ""
    merged |= {"status": "incomplete",
               "error": f"shard(s) {listed} not finished; rerun with: "
                        f"hyrax {stage}{src} --shard {bad[0]}/{count} --resume {run_dir}"}
    return merged


def is_complete(run_dir: Path) -> bool:
    if run_dir.name.endswith((PARTIAL, FAILED)) or not (run_dir / PROVENANCE_FILE).is_file():
        return False
    try:
        return read_provenance(run_dir).get("status") == "complete"
    except HyraxError:
        return False


def check_run(run_dir: str | os.PathLike, stages: str | tuple[str, ...]) -> Path:
    """`run_dir` as a finished run of one of `stages`, or a UsageError saying what it is instead."""
    stages = (stages,) if isinstance(stages, str) else stages
    p = Path(run_dir).expanduser()
    if not p.is_dir():
        raise UsageError(f"{p} is not a directory; give a results directory made by `hyrax {stages[0]}`")
    prov = read_provenance(p)
    if prov.get("stage") not in stages:
        raise UsageError(f"{p} is a {prov.get('stage')!r} run; this needs a {' or '.join(stages)} run")
    if prov.get("status") != "complete":
        raise UsageError(f"{p} did not finish ({prov.get('status')}: {prov.get('error')}); "
                         f"rerun it or resume it with --resume")
    return p


def newest_run(stage: str, config: dict, *, reading: str | os.PathLike | None = None) -> Path:
    """The newest finished run of `stage` in the results directory (by its recorded finish time);
    `reading`: only runs that read that run (e.g. the newest anomaly run of these latents)."""
    root = results_root(config)
    candidates = root.glob(f"*-{stage}-*") if root.is_dir() else []
    # the recorded stage decides, not the name: a --run-name may contain "-train-"
    runs = [p for p in candidates if p.is_dir() and is_complete(p) and read_provenance(p).get("stage") == stage]
    if reading is not None:
        target = str(Path(reading).resolve())
        runs = [p for p in runs if target in read_provenance(p).get("upstream_runs", [])]
    if not runs:
        of = f" of {reading}" if reading is not None else ""
        raise UsageError(f"no finished `{stage}` run{of} in {root}; run `hyrax {stage}` first or pass --from DIR")
    best = max(runs, key=lambda p: (read_provenance(p).get("finished") or "", p.name))
    log.info("using the newest %s run: %s", stage, best)
    return best


def upstream_of(run_dir: str | os.PathLike, stages: str | tuple[str, ...]) -> Path | None:
    """The run of one of `stages` that `run_dir` read (the last one its provenance lists), or None.
    An upstream run that was moved or deleted is skipped: provenance still names it."""
    stages = (stages,) if isinstance(stages, str) else stages
    for up in reversed(read_provenance(run_dir).get("upstream_runs", [])):
        try:
            if read_provenance(up).get("stage") in stages:
                return Path(up)
        except HyraxError:
            continue
    return None


def find_input_run(stage: str | tuple[str, ...], config: dict, from_run: str | os.PathLike | None = None) -> Path:
    """The run a stage reads: `from_run` when given (checked), else the newest finished run."""
    stages = (stage,) if isinstance(stage, str) else stage
    if from_run:
        return check_run(from_run, stages)
    errors = []
    for s in stages:
        try:
            return newest_run(s, config)
        except UsageError as e:
            errors.append(str(e))
    raise UsageError(errors[0])


class Result:
    """A finished results directory, as the notebook API returns it. Outputs load lazily."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @cached_property
    def provenance(self) -> dict:
        return read_provenance(self.path)

    @property
    def stage(self) -> str:
        return self.provenance["stage"]

    @cached_property
    def config(self) -> dict:
        from libhyrax.config import read_toml

        return read_toml(self.path / CONFIG_FILE)

    def file(self, name: str) -> Path:
        return self.path / name

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<hyrax {self.stage} result {self.path}>"

