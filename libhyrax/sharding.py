"""Sharding a stage over Slurm array tasks (or a plain shell loop): which share of the input a process
handles, and the name of the one results directory all shares write into (libhyrax.runs opens it).

    sbatch --array=0-9 --wrap 'hyrax infer --from results/<train-run>'      # 10 shards, automatically
    for i in 0 1 2; do hyrax infer --shard $i/3; done                        # a plain loop

A task's shard is `--shard I/N`, else (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP
of SLURM_ARRAY_TASK_COUNT. All tasks of one array job write into `slurm-<SLURM_ARRAY_JOB_ID>-<stage>-array`
(a plain loop: `shards-<key>-<stage>-<N>`, the key derived from the inputs, or `--run-name`), so no task
needs to know another's directory.

Each task writes its rows to `<stem>.shard-IIII-of-NNNN.h5` (marked complete when written), its own
`provenance.shard-IIII-of-NNNN.json` and its own log; see libhyrax.runs for the lifecycle.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from libhyrax.errors import DataError, UsageError

# what a process records of the Slurm job it runs in (provenance.json, MLflow tags)
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
              "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_JOB_NAME", "SLURM_PROCID",
              "SLURM_NTASKS", "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION")


def slurm_environment() -> dict[str, str]:
    """The SLURM_VARS this process has (empty outside Slurm)."""
    return {k: os.environ[k] for k in SLURM_VARS if k in os.environ}


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


def shard_range(n_rows: int, index: int, count: int) -> tuple[int, int]:
    """The contiguous rows shard `index` of `count` handles (sizes differ by at most one)."""
    if not 0 <= index < count:
        raise DataError(f"shard {index} of {count} does not exist (shards are 0..{count - 1})")
    base, extra = divmod(n_rows, count)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)
