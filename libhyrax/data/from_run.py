"""Data an earlier run made: a download or prepare run's cutouts.h5, as the data a later stage reads.

    hyrax download -c survey.toml | hyrax train | hyrax infer

`train` given such a run (`--from`, or the path piped in) trains on its cutouts, and, like any run whose
data lies in a run's directory, records that run as its upstream. `infer` whose config names no data of
its own (the default data request) reads the data its model was trained on: the train run's own
`[data_request]` (a user's files, or a download run's cutouts), never the built-in sample in its place.
A sharded download's shards are read as one (libhyrax.hdf5.result_file).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_STAGES = ("download", "prepare")  # stages whose runs hold a cutout file, cutouts.h5
STEM = "cutouts"


def request_of_run(run_dir: str | os.PathLike) -> dict:
    """A `[data_request]` whose train and infer groups read the run's cutouts.h5."""
    from libhyrax.hdf5 import result_file

    spec = {"dataset_class": "HyraxHDF5Dataset", "data_location": str(result_file(Path(run_dir), STEM)),
            "fields": ["image", "object_id"], "primary_id_field": "object_id"}
    return {"train": {STEM: spec}, "infer": {STEM: dict(spec)}}


def run_holding(data_location: str | os.PathLike) -> Path | None:
    """The results directory a data file lies in (it holds provenance.json), or None."""
    from libhyrax.rundir import PROVENANCE_FILE

    folder = Path(data_location).expanduser().resolve().parent
    return folder if (folder / PROVENANCE_FILE).is_file() else None


def with_trained_data(cfg: dict, model_run: str | os.PathLike) -> dict:
    """`cfg` reading the data a model was trained on (its train run's `[data_request]`, relative paths
    taken from where that run ran) when the config names no data of its own; else `cfg` as it is."""
    from libhyrax.config import default_config
    from libhyrax.errors import UsageError
    from libhyrax.results import Result

    if cfg["data_request"] != default_config()["data_request"]:
        return cfg
    trained = Result(model_run).find("train")  # an export run: the train run it exported
    if trained is None:
        raise UsageError(f"{model_run} does not say what its model was trained on (its train run is gone); "
                         "name the data to infer in [data_request] (data_request.infer)")
    request = trained.config.get("data_request") or {}
    return {**cfg, "data_request": _absolute(request, Path(trained.provenance.get("cwd") or "."))}


def _absolute(request: dict, cwd: Path) -> dict:
    """A data request whose relative data_location paths are taken from `cwd` (where its run ran)."""
    out = {}
    for group, specs in request.items():
        out[group] = {}
        for name, spec in specs.items():
            loc = spec.get("data_location") if isinstance(spec, dict) else None
            if loc and not Path(loc).expanduser().is_absolute():
                spec = {**spec, "data_location": str(cwd / loc)}
            out[group][name] = spec
    return out
