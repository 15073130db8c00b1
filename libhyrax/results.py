"""Finding runs: the run a stage reads (the registry's `needs`, `--from`, a pipe or the newest finished
one), and walking a run's lineage. The directory's format is libhyrax.rundir; writing a run,
libhyrax.runs.

:class:`Result` walks the lineage: `Result(run).find("train")` is the nearest train run upstream of
`run`, whatever stages lie between.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from libhyrax import stages
from libhyrax.errors import HyraxError, UsageError, a_run
from libhyrax.rundir import (
    CONFIG_FILE,
    FAILED,
    PARTIAL,
    PROVENANCE_FILE,
    STAGE,
    STATUS,
    Status,
    read_provenance,
    results_root,
    upstream_paths,
)

log = logging.getLogger("hyrax.results")

# --- finding runs ---------------------------------------------------------------------------------

def is_complete(run_dir: Path) -> bool:
    if run_dir.name.endswith((PARTIAL, FAILED)) or not (run_dir / PROVENANCE_FILE).is_file():
        return False
    try:
        return read_provenance(run_dir).get(STATUS) == Status.COMPLETE
    except HyraxError:
        return False


def check_run(run_dir: str | os.PathLike, stage_names: str | tuple[str, ...]) -> Path:
    """`run_dir` as a finished run of one of `stage_names`, or a UsageError saying what it is instead."""
    wanted = (stage_names,) if isinstance(stage_names, str) else tuple(stage_names)
    p = Path(run_dir).expanduser()
    if not p.is_dir():
        raise UsageError(f"{p} is not a directory; give a results directory made by `hyrax {wanted[0]}`")
    prov = read_provenance(p)
    if prov.get(STAGE) not in wanted:
        raise UsageError(f"{p} is {a_run(prov.get(STAGE))}; this needs {a_run(' or '.join(wanted))}")
    if prov.get(STATUS) != Status.COMPLETE:
        raise UsageError(f"{p} did not finish ({prov.get('status')}: {prov.get('error')}); "
                         f"rerun it or resume it with --resume")
    return p


def newest_run(stage: str, config: dict, *, reading: str | os.PathLike | None = None) -> Path:
    """The newest finished run of `stage` in the results directory (by its recorded finish time).
    `reading`: only runs that read that run (e.g. the newest anomaly run of these latents), looked for
    first beside it (a results tree read where it lies, or moved there), then in the results directory."""
    roots = [results_root(config)]
    if reading is not None:
        roots.insert(0, Path(reading).parent)
    runs: list[Path] = []
    for root in dict.fromkeys(r.resolve() for r in roots):
        runs = _finished_runs(root, stage, reading)
        if runs:
            break
    if not runs:
        of = f" of {reading}" if reading is not None else ""
        raise UsageError(
            f"no finished `{stage}` run{of} in {results_root(config)}; run `hyrax {stage}` first "
            f"or pass --from DIR"
        )
    best = max(runs, key=lambda p: (read_provenance(p).get("finished") or "", p.name))
    log.info("using the newest %s run: %s", stage, best)
    return best


def _finished_runs(root: Path, stage: str, reading: str | os.PathLike | None) -> list[Path]:
    candidates = root.glob(f"*-{stage}-*") if root.is_dir() else []
    # the recorded stage decides, not the name: a --run-name may contain "-train-"
    runs = [p for p in candidates if p.is_dir() and is_complete(p) and read_provenance(p).get(STAGE) == stage]
    if reading is not None:
        target = Path(reading).resolve()
        runs = [p for p in runs if target in {u.resolve() for u in upstream_paths(p)}]
    return runs


def find_run(
    stage_names: str | tuple[str, ...],
    config: dict,
    given: str | os.PathLike | None = None,
    *,
    reading: str | os.PathLike | None = None,
) -> Result:
    """`given` when there is one (checked to be a finished run of one of `stage_names`), else the newest
    finished run of the first of them that has one (`reading`: only runs that read that run)."""
    wanted = (stage_names,) if isinstance(stage_names, str) else tuple(stage_names)
    if given:
        return Result(check_run(given, wanted))
    errors = []
    for s in wanted:
        try:
            return Result(newest_run(s, config, reading=reading))
        except UsageError as e:
            errors.append(str(e))
    raise UsageError(errors[0])


def input_run(stage: str, config: dict, from_run: str | os.PathLike | None = None) -> Result:
    """The run `stage` reads, as the stage registry says (`Stage.needs`): `from_run` (`--from`, a pipe)
    when given, else the newest finished one."""
    needs = stages.get(stage).needs
    if not needs:
        raise UsageError(f"`hyrax {stage}` reads no earlier run")
    return find_run(needs, config, from_run)


class Result:
    """A results directory, as the notebook API returns it and stages read it. Outputs load lazily.

    Its lineage: `upstream` (the runs it read), `find("train")` (the nearest run of a stage upstream),
    `lineage()` (every run upstream, nearest first).
    """

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

    @property
    def upstream(self) -> list[Result]:
        """The runs this one read that are still there (a deleted one is skipped: provenance names it)."""
        out = []
        for p in upstream_paths(self.path):
            if (p / PROVENANCE_FILE).is_file():
                out.append(Result(p))
            else:
                log.debug("%s: upstream run %s is gone", self.path, p)
        return out

    def lineage(self) -> Iterator[Result]:
        """Every run upstream of this one, nearest first (breadth first), each once."""
        seen, level = {self.path.resolve()}, self.upstream
        while level:
            nxt = []
            for r in level:
                key = r.path.resolve()
                if key in seen:
                    continue
                seen.add(key)
                yield r
                nxt += r.upstream
            level = nxt

    def find(self, *stage_names: str) -> Result | None:
        """The nearest run upstream whose stage is one of `stage_names` (this run itself counts), or None."""
        if self.stage in stage_names:
            return self
        return next((r for r in self.lineage() if _stage_of(r) in stage_names), None)

    def require(self, *stage_names: str) -> Result:
        """Like :meth:`find`, or a UsageError saying which run is missing."""
        found = self.find(*stage_names)
        if found is None:
            gone = [
                str(p)
                for r in (self, *self.lineage())
                for p in upstream_paths(r.path)
                if not (p / PROVENANCE_FILE).is_file()
            ]
            why = (
                f"; it read {', '.join(gone)}, which is gone (moved or deleted): put it back beside the run"
                if gone
                else ""
            )
            raise UsageError(f"{self.path} has no {' or '.join(stage_names)} run upstream{why}")
        return found

    def data_group(self, group: str = "infer"):
        """The data group this run read, opened from its own recorded config (for an infer run: the objects
        of its latents, in the same order), or None with a warning when it can't be opened (the data
        moved): catalog columns and cutouts are then left out, and the caller goes on without them."""
        try:
            from libhyrax.data import open_group

            return open_group(self.config, group)
        except (HyraxError, ImportError, OSError) as e:
            log.warning(
                "the data of %s can't be opened (%s); catalog columns and cutouts left out", self.path, e
            )
            return None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, Result) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __repr__(self) -> str:
        return f"<hyrax {self.stage} result {self.path}>"


def _stage_of(result: Result) -> str | None:
    try:
        return result.stage
    except HyraxError:
        return None
