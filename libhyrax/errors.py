"""Errors a user can catch, all rooted at :class:`HyraxError`.

    HyraxError                 exit 1 from the CLI: a failure while running
    ├── UsageError             exit 2: a wrong command line (bad flag value, missing input run)
    │   └── ConfigError        exit 2: a config file that can't be used (unknown key, wrong type, too new)
    ├── DataError              exit 1: an input file or dataset that can't be read as asked
    ├── ModelError             exit 1: a model class or weights that break the model contract
    └── RunError               exit 1: a stage failed part-way (its results directory is marked failed)

    KeyboardInterrupt          exit 130: Ctrl-C (the run is marked interrupted and can be resumed)
    └── Terminated             exit 143: SIGTERM, as Slurm sends at a job's time limit or on scancel

Every message says what is wrong and what to do about it; the CLI prints it without a traceback
(``--debug`` shows one).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HyraxError(Exception):
    exit_code = 1


class UsageError(HyraxError):
    exit_code = 2


class ConfigError(UsageError):
    exit_code = 2


class DataError(HyraxError):
    pass


class ModelError(HyraxError):
    pass


class RunError(HyraxError):
    pass


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (Slurm's time limit, scancel, a container stop): handled like Ctrl-C, so the run
    in progress writes what it has, is marked interrupted and says how to resume."""

    exit_code = 143

    def __init__(self, signal_name: str = "SIGTERM"):
        super().__init__(f"received {signal_name} (a Slurm time limit, scancel, or kill)")


def a_run(stage) -> str:
    """'an infer run', 'a train run': the article for a stage's name."""
    return f"{'an' if str(stage)[:1].lower() in 'aeio' else 'a'} {stage} run"  # a umap run


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """A short '; did you mean X?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(close) + "?"


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """'unknown model 'Foo'; did you mean 'Bar'? Known: a, b, c' — the astropy-registry style."""
    choices = sorted(set(choices))
    hint = did_you_mean(name, choices)
    return f"unknown {kind} {name!r}{hint}{' ' if hint else '; '}Known: {', '.join(choices) or '(none)'}"
