"""Sharding a stage over Slurm array tasks (or a plain shell loop): which share of the input a process
handles, and the one results directory all shares write into.

    sbatch --array=0-9 --wrap 'hyrax infer --from results/<train-run>'      # 10 shards, automatically
    for i in 0 1 2; do hyrax infer --shard $i/3; done                        # a plain loop

A task's shard is `--shard I/N`, else (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP
of SLURM_ARRAY_TASK_COUNT. All tasks of one array job write into `slurm-<SLURM_ARRAY_JOB_ID>-<stage>-array`
(a plain loop: `shards-<key>-<stage>-<N>`, the key derived from the inputs, or `--run-name`), so no task
needs to know another's directory.

A sharded results directory is created directly under its final name. Its `provenance.json` says it is
sharded into N; each task writes its output shard atomically (`<stem>.shard-IIII-of-NNNN.h5`, renamed from
`.partial` when complete), its own `provenance.shard-IIII-of-NNNN.json` and its own log. The run counts as
finished when every shard's provenance says complete (libhyrax.results.read_provenance merges them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from libhyrax import log as hlog
from libhyrax.errors import UsageError
from libhyrax.results import (
    CONFIG_FILE,
    PROVENANCE_FILE,
    Run,
    _new_provenance,
    mark_ended,
    now,
    results_root,
    shard_provenance_name,
    write_json_atomic,
)

log = logging.getLogger("hyrax.sharding")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`; `job_id` is the Slurm array job id when Slurm chose it."""

    index: int
    count: int
    job_id: str | None = None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        return f"shard-{self.index:04d}-of-{self.count:04d}"


def parse_shard(text: str) -> Shard:
    """`"I/N"` -> Shard(I, N), checked."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} needs the form I/N, e.g. --shard 0/4 (shards 0..N-1)") from None
    if n < 1 or not 0 <= i < n or n > 9999:
        raise UsageError(f"--shard {text}: I must be in 0..N-1 and N in 1..9999")
    return Shard(i, n)


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of this Slurm array task, or None outside an array job."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", task))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", 1)) or 1
        count = int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
    except ValueError:
        raise UsageError("the SLURM_ARRAY_TASK_* variables are not integers; pass --shard I/N") from None
    index, off = divmod(task - lo, step)
    if off or not 0 <= index < count:
        # e.g. --array=1,4,5: ids that are not an even range can't say which share a task is
        raise UsageError(f"Slurm array task {task} (min {lo}, step {step}, count {count}) is not an evenly "
                         f"spaced range; use --array=0-{count - 1} or pass --shard I/{count}")
    return Shard(index, count, env.get("SLURM_ARRAY_JOB_ID"))


def choose_shard(shard: str | Shard | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """`--shard` when given (it overrides Slurm), else the Slurm array task's shard, else None."""
    if isinstance(shard, Shard):
        return shard
    if shard:
        return parse_shard(shard)
    return shard_from_env(env)


def shared_run_name(stage: str, shard: Shard, key: str = "") -> str:
    """The directory name every task of one sharded run computes on its own."""
    if shard.job_id:
        return f"slurm-{shard.job_id}-{stage}-array"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"shards-{digest}-{stage}-{shard.count}"


class ShardRun(Run):
    """One task's view of a shared sharded results directory: its provenance is its own file."""

    shard: Shard

    def save_provenance(self) -> None:
        write_json_atomic(self.path / shard_provenance_name(self.shard.index, self.shard.count), self.provenance)


def _claim_directory(path: Path, stage: str, config: dict, shard: Shard, stems: tuple[str, ...]) -> None:
    """Make the shared directory and its top provenance.json, or check an existing one matches."""
    from libhyrax.config import dump_config

    path.mkdir(parents=True, exist_ok=True)
    top = path / PROVENANCE_FILE
    if top.exists():
        prov = json.loads(top.read_text(encoding="utf-8"))
        info = prov.get("sharded") or {}
        if prov.get("stage") != stage or info.get("count") != shard.count:
            raise UsageError(f"{path} already holds a {prov.get('stage')} run in {info.get('count')} shards; "
                             f"this task is {stage} shard {shard}: pick another --run-name or --resume")
        return
    prov = {"stage": stage, "status": "sharded", "started": now().isoformat(), "finished": None,
            "sharded": {"count": shard.count, "stems": list(stems), "job_id": shard.job_id},
            "config_version": config.get("config_version"), "inputs": [], "upstream_runs": [], "error": None}
    if not write_json_atomic(top, prov, exclusive=True):  # another task of the array claimed it first
        return _claim_directory(path, stage, config, shard, stems)
    cfg_tmp = path / f".{CONFIG_FILE}.{shard.tag}.tmp"
    cfg_tmp.write_text(dump_config(config), encoding="utf-8")
    os.replace(cfg_tmp, path / CONFIG_FILE)


@contextmanager
def sharded_run(stage: str, config: dict, shard: Shard, *, name: str | None = None, into: str | os.PathLike | None = None,
                stems: tuple[str, ...] = ("latents",)):
    """Like :func:`libhyrax.results.new_run`, for one shard of a shared directory (`into`, else
    `results_dir/name`). Yields a :class:`ShardRun`; the task's provenance records success or failure."""
    path = Path(into) if into else results_root(config) / (name or shared_run_name(stage, shard))
    _claim_directory(path, stage, config, shard, stems)
    run = ShardRun(stage, path, path, config, _new_provenance(stage, config))
    run.shard = shard
    run.provenance["shard"] = {"index": shard.index, "count": shard.count}
    run.save_provenance()
    handler = hlog.add_file_log(path / f"{stage}.{shard.tag}.log")
    log.info("%s shard %s: writing into %s", stage, shard, path)
    try:
        yield run
    except BaseException as exc:
        interrupted = mark_ended(run, handler, exc)
        log.error("%s shard %s %s; rerun it with --shard %s --resume %s", stage, shard,
                  "was interrupted" if interrupted else "failed", shard, path)
        raise
    mark_ended(run, handler)
