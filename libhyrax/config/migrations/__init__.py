"""Config migrations: one self-registering module per step, named `NNN_what.py`.

A step module decorates one function with `@step(FROM_VERSION, "what it does")`; the function takes the
raw config dict of version FROM_VERSION, changes it in place to FROM_VERSION + 1 and returns a list of
human-readable lines saying what it renamed or moved. The current version is one past the highest step.

Versions 1-7 are the reference Hyrax's (lincc-frameworks/hyrax); 8 is our first schema.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

Migrate = Callable[[dict], list[str]]


@dataclass(frozen=True)
class Step:
    from_version: int
    summary: str
    migrate: Migrate


STEPS: dict[int, Step] = {}


def step(from_version: int, summary: str):
    def register(fn: Migrate) -> Migrate:
        if from_version in STEPS:
            raise RuntimeError(f"two migration steps from config_version {from_version}")
        STEPS[from_version] = Step(from_version, summary, fn)
        return fn

    return register


def load_steps() -> dict[int, Step]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return STEPS


def current_version() -> int:
    return max(load_steps()) + 1


# --- small helpers the steps share ---------------------------------------------------------------

def pop_path(cfg: dict, dotted: str, default=None):
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.get(p)
        if not isinstance(node, dict):
            return default
    return node.pop(leaf, default)


def has_path(cfg: dict, dotted: str) -> bool:
    node = cfg
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


def set_path(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def move(cfg: dict, old: str, new: str) -> list[str]:
    if not has_path(cfg, old):
        return []
    set_path(cfg, new, pop_path(cfg, old))
    return [f"{old} -> {new}"]


def remainder_to_the_rest(split: dict) -> list[str]:
    """The reference gave the splits a config didn't size what the sized ones left (a notebook's
    `train = 1.0` means all of it for training); our defaults (0.8/0.1/0.1) would overfill instead."""
    rest = [s for s in ("train", "validate", "test") if s not in split]
    given = sum(float(v) for k, v in split.items() if k in ("train", "validate", "test") and v is not False)
    share = round(max(0.0, 1.0 - given) / len(rest), 10) if rest else 0.0
    for s in rest:
        split[s] = share
    return [f"split.{s} = {share} (what the other splits leave)" for s in rest]
