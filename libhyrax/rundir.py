"""A results directory on disk: its names, its files and its provenance, the one home of the format
that `libhyrax.runs` writes and `libhyrax.results` reads.

    <results_dir>/YYYYMMDD-HHMMSS-<stage>-<uid>/
        runtime_config.toml   the full resolved config, with config_version
        provenance.json       versions, host, command line, times, seed, Slurm ids, git commit, inputs,
                              the runs it read (upstream_runs), its status and error
        <stage>.log           the stage's log
        ...                   the stage's outputs (HDF5 where they are arrays)

A run is written as `<name>.partial` and renamed to `<name>` when it succeeds. A failed or interrupted
run becomes `<name>.failed`, with its error in provenance.json; it is never taken as a finished input,
and `--resume` can pick it up again. A sharded run (libhyrax.sharding) is one shared directory whose
provenance.json has status "sharded"; each shard writes `provenance.shard-IIII-of-NNNN.json`, and the
run is complete when every shard's is (read_provenance merges them).

Lineage: `upstream_runs` names each run this one read by its name when it lies in the same results
directory (the usual case), else by its absolute path, so a results tree copied to another disk or
machine still chains.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from enum import StrEnum
from pathlib import Path

from libhyrax.errors import UsageError, a_run

PARTIAL, FAILED = ".partial", ".failed"  # suffixes of a run being written, and of one that failed
CONFIG_FILE, PROVENANCE_FILE = "runtime_config.toml", "provenance.json"
CLAIM_FILE = ".hyrax-claim"  # the lock of the process writing the run (libhyrax.runs.Claim)
# what one stage writes and later stages read (docs/architecture.md): array files by stem, and a folder
LATENTS, EMBEDDING, SCORES = "latents", "embedding", "scores"
INDEX_DIR = "index"
# provenance.json keys other modules read
STAGE, STATUS, ERROR, UPSTREAM, INPUTS = "stage", "status", "error", "upstream_runs", "inputs"


class Status(StrEnum):
    """A run's `status` in provenance.json (stored as the plain string)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SHARDED = "sharded"  # the shared directory's own file; read_provenance reports the merged status
    INCOMPLETE = "incomplete"  # a sharded run with a shard not finished
    MISSING = "missing"  # a shard that wrote no provenance


def results_root(config: dict) -> Path:
    return Path(config.get("general", {}).get("results_dir", "./results")).expanduser()


def now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def run_name(stage: str, when: dt.datetime | None = None) -> str:
    """YYYYMMDD-HHMMSS-<stage>-<uid>: the random uid keeps two jobs starting in the same second on a
    shared filesystem apart."""
    when = when or now()
    return f"{when:%Y%m%d-%H%M%S}-{stage}-{secrets.token_hex(4)}"


def check_run_name(name: str) -> str:
    """A run name is one directory name inside results_dir: `--run-name ../x` must not write elsewhere."""
    bad = (not name or name in (".", "..") or name.startswith(".")
           or any(c in name for c in ("/", "\\", "\0")))
    if bad or name.endswith((PARTIAL, FAILED)):
        raise UsageError(f"--run-name {name!r} must be a plain directory name (letters, digits, - _ .; "
                         f"no '/', not starting with '.', not ending in {PARTIAL} or {FAILED})")
    return name


def base_name(path: Path) -> str:
    """A run's name without `.partial`/`.failed`."""
    return path.name.removesuffix(FAILED).removesuffix(PARTIAL)


def shard_provenance_name(index: int, count: int) -> str:
    return f"provenance.shard-{index:04d}-of-{count:04d}.json"


def read_provenance(run_dir: str | os.PathLike) -> dict:
    """provenance.json; for a sharded run, merged with its shards' own files."""
    p = Path(run_dir) / PROVENANCE_FILE
    try:
        prov = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{run_dir} is not a Hyrax results directory (no {PROVENANCE_FILE})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{p} is damaged ({e}); rerun the stage that made it") from None
    return _merge_shards(Path(run_dir), prov) if prov.get(STATUS) == Status.SHARDED else prov


def check_stage(path: Path, prov: dict, stage: str, option: str = "--resume") -> None:
    """`path` (given as `option`) must be a run of `stage`: the one "is an X run, not a Y run" check."""
    if prov.get(STAGE) != stage:
        raise UsageError(f"{option} {path} is {a_run(prov.get(STAGE))}, not {a_run(stage)}")


def _merge_shards(run_dir: Path, prov: dict) -> dict:
    """A sharded run is complete when every shard's own provenance says so; else its error names the
    unfinished shards and the command that reruns the first."""
    count = prov["sharded"]["count"]
    shards = []
    for i in range(count):
        try:
            shards.append(json.loads((run_dir / shard_provenance_name(i, count)).read_text(encoding="utf-8")))
        except (FileNotFoundError, json.JSONDecodeError):
            shards.append({STATUS: Status.MISSING})
    merged = dict(prov, shards=[s.get(STATUS) for s in shards])
    for key in (INPUTS, UPSTREAM):
        once = {json.dumps(x, sort_keys=True): x for s in shards for x in s.get(key, [])}
        merged[key] = list(once.values())
    bad = [i for i, s in enumerate(shards) if s.get(STATUS) != Status.COMPLETE]
    if not bad:
        merged |= {STATUS: Status.COMPLETE, "finished": max(s.get("finished") or "" for s in shards)}
        return merged
    upstream = [resolve_recorded(run_dir, u) for u in merged[UPSTREAM]]
    listed = ", ".join(f"{i}/{count} ({shards[i].get(STATUS)})" for i in bad)
    src = f" --from {upstream[0]}" if upstream else ""
    merged |= {STATUS: Status.INCOMPLETE,
               ERROR: f"shard(s) {listed} not finished; rerun with: "
                      f"hyrax {prov.get(STAGE)}{src} --shard {bad[0]}/{count} --resume {run_dir}"}
    return merged


# --- lineage: how a run names the runs it read ----------------------------------------------------

def recorded_path(run_dir: Path, upstream: str | os.PathLike) -> str:
    """How `run_dir`'s provenance names an upstream run: by name when both lie in one results directory
    (so the tree can move as a whole), else by absolute path."""
    up = Path(upstream).resolve()
    return up.name if up.parent == Path(run_dir).resolve().parent else str(up)


def resolve_recorded(run_dir: str | os.PathLike, recorded: str) -> Path:
    """The upstream run a provenance entry names, from `run_dir`'s point of view. An absolute path that
    is gone (a tree moved or copied since) is looked for under the same name beside `run_dir`."""
    p, here = Path(recorded), Path(run_dir).parent
    if not p.is_absolute():
        return here / p
    if not p.exists() and (here / p.name).exists():
        return here / p.name
    return p


def upstream_paths(run_dir: str | os.PathLike) -> list[Path]:
    """The runs `run_dir` read, in the order it recorded them (the stage's main input first)."""
    return [resolve_recorded(run_dir, u) for u in read_provenance(run_dir).get(UPSTREAM, [])]
