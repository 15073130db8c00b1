"""Starting a run: the one call every stage opens with. It settles, before any work, the config (or a
resumed run's own), the input runs (`--from`, a pipe, a resumed run's lineage or the newest), which
options a resumed run may be given again, the shard and the run name; then opens the run.

    start = start_run("anomaly", config, overrides, from_run=from_run, resume=resume, shard=shard,
                      run_name=run_name, given=[Given("--method", "anomaly.method", method)])
    with start.open(key=[start.input.path]) as run:      # a new, resumed or sharded run alike
        ...                                              # start.config, start.input, run.output(...)

A resumed run continues with exactly what it started with: its own runtime_config.toml (a config or
--set given with --resume must agree with it, apart from RESUME_MAY_CHANGE and the stage's own
`may_change`), the runs it read (a --from given must be one of them), and its options (--engine,
--method...: given again, they must agree). An input file whose size changed since is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from libhyrax import redact, stages
from libhyrax.errors import UsageError
from libhyrax.results import Result, input_run
from libhyrax.rundir import (
    CONFIG_FILE,
    INPUTS,
    PROVENANCE_FILE,
    check_run_name,
    check_stage,
    read_provenance,
    upstream_paths,
)
from libhyrax.runs import existing_run_dir, open_run
from libhyrax.sharding import Shard, choose_shard

# settings a resumed run may change: they don't change what it writes
RESUME_MAY_CHANGE = ("general.log_level", "general.device", "general.results_dir", "general.trusted_runs",
                     "general.mlflow_tracking_uri", "data_loader.num_workers")


@dataclass(frozen=True)
class Given:
    """A command-line option that sets a config key (`--engine` sets infer.engine); None when not given.
    `add`: a list the option adds to (`--labels`) instead of replacing."""

    flag: str
    key: str
    value: Any
    add: bool = False


@dataclass
class Start:
    """What a stage starts its run with (from :func:`start_run`)."""

    stage: str
    config: dict
    from_run: Path | None  # the input run given (or a resumed run's); None: the newest
    resume: Path | None = None
    shard: Shard | None = None
    name: str | None = None
    upstream: list[Result] = field(default_factory=list)  # a resumed run's input runs, main input first

    @cached_property
    def input(self) -> Result:
        """The run this stage reads (the registry's `needs`): the one given, else the newest finished."""
        return input_run(self.stage, self.config, self.from_run)

    def recorded(self, flag: str, given, *stage_names: str):
        """Another input run (`--reducer`, `--index`): `given` for a new run; for a resumed run, the run of
        `stage_names` it read (given again, it must be that one)."""
        if self.resume is None:
            return given
        run = next((u for u in self.upstream if u.stage in stage_names), None)
        if given is not None and (run is None or Path(given).resolve() != run.path.resolve()):
            started = f"without {flag}" if run is None else f"with {flag} {run.path}"
            raise UsageError(f"--resume {self.resume} was started {started}; leave out {flag}")
        return run.path if run is not None else None

    def open(self, key: Iterable = ()):
        """Open the run (libhyrax.runs.open_run). `key`: what, besides the config, the tasks of a plain
        loop of shards must agree on (the input run), so they compute the same directory."""
        return open_run(self.stage, self.config, shard=self.shard, resume=self.resume, name=self.name,
                        key=[str(k) for k in key])


def start_run(stage: str, config=None, overrides: Sequence[str] = (), *, from_run=None, resume=None,
              shard: str | Shard | None = None, run_name: str | None = None, given: Iterable[Given] = (),
              may_change: Sequence[str] = ()) -> Start:
    """Settle what a run of `stage` starts with (see the module docstring); nothing is written yet.

    config, overrides: the config file (or dict) and --set. from_run: the input run (--from or a pipe).
    resume: a run to continue. shard: "I/N" (else the Slurm array task's share, for the stages the
    registry marks `shards`). run_name: the directory name. given: options that set config keys.
    may_change: keys besides RESUME_MAY_CHANGE a resumed run may be given new values for (train.epochs).
    """
    from libhyrax.config import resolve

    the_shard = _shard_of(stage, shard)  # a bad --shard fails before anything loads
    if run_name is not None:
        check_run_name(run_name)
    given = list(given)
    if resume is None:
        cfg = resolve(config, overrides)
        for g in given:
            if g.value is not None:
                _set(cfg, g.key, [*_get(cfg, g.key), *g.value] if g.add else g.value)
        return Start(stage, cfg, Path(from_run) if from_run else None, shard=the_shard, name=run_name)
    path = existing_run_dir(Path(resume))
    cfg = _resumed_config(stage, path, config, overrides, may_change)
    for g in given:
        recorded = _get(cfg, g.key)
        if g.value is not None and g.value != recorded:
            raise UsageError(f"the resumed run was started with {g.flag} {recorded}, not {g.value}; "
                             f"leave out {g.flag}")
    upstream = _resumed_inputs(path, from_run)
    main = next((u.path for u in upstream if u.stage in stages.get(stage).needs), None)
    given_run = Path(from_run) if from_run else None
    return Start(stage, cfg, main or given_run, path, the_shard, run_name, upstream)


def _shard_of(stage: str, shard) -> Shard | None:
    if stages.get(stage).shards:
        return choose_shard(shard)
    if shard is not None:
        raise UsageError(f"`hyrax {stage}` does not run in shards; leave out --shard")
    return None  # a train run in a Slurm array job is one whole run, not a share of one


def _resumed_config(stage: str, path: Path, config, overrides, may_change: Sequence[str]) -> dict:
    """The resumed run's own config, with the settings it may change taken from `config`/`overrides`."""
    from libhyrax.config import read_toml, resolve

    check_stage(path, read_provenance(path), stage)
    own = resolve(read_toml(path / CONFIG_FILE))
    if config is None and not overrides:
        return own
    wanted = resolve(own if config is None else config, overrides)
    differ = [k for k in differences(own, wanted) if k not in may_change]
    if differ and may_change:
        raise UsageError(f"--resume {path}: a resumed run continues with its own settings; only "
                         f"{', '.join(may_change)} may change, not {', '.join(differ[:5])} "
                         "(start a new run for other settings)")
    if differ:
        raise UsageError(f"--resume {path}: a resumed run continues with its own settings, but "
                         f"{', '.join(differ[:5])} differ{'s' if len(differ) == 1 else ''} from them; leave "
                         f"out -c/--set (its settings are in {path / CONFIG_FILE}), or start a new run")
    return wanted


def _resumed_inputs(path: Path, from_run) -> list[Result]:
    """The runs a resumed run read, checked: still there, `from_run` one of them, its input files as
    they were."""
    upstream = [Result(p) for p in upstream_paths(path)]
    if from_run is not None and upstream:
        if Path(from_run).resolve() not in {u.path.resolve() for u in upstream}:
            raise UsageError(f"--resume {path} continues from {upstream[0].path}, not {from_run}: its rows "
                             f"so far came from that run; leave out --from, or start a new run to use "
                             f"{from_run}")
    missing = [u.path for u in upstream if not (u.path / PROVENANCE_FILE).is_file()]
    if missing:
        raise UsageError(f"--resume {path}: the run it read, {missing[0]}, is gone (moved or deleted); "
                         "put it back beside this run, or start a new run")
    for rec in read_provenance(path).get(INPUTS, []):
        file = Path(rec["path"])
        if "size" in rec and file.is_file() and file.stat().st_size != rec["size"]:
            raise UsageError(f"--resume {path}: its input {file} changed since the run started (size "
                             f"{rec['size']} -> {file.stat().st_size}); start a new run")
    return upstream


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs, apart from RESUME_MAY_CHANGE."""
    keys = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        if name in RESUME_MAY_CHANGE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differences(va, vb, name + ".")
        elif redact.value(k, va) != redact.value(k, vb):
            keys.append(name)
    return keys


def _get(cfg: dict, key: str):
    section, name = key.split(".")
    return cfg[section][name]


def _set(cfg: dict, key: str, value) -> None:
    section, name = key.split(".")
    cfg[section][name] = value

