"""Data an earlier run made: a download or prepare run's cutouts.h5, as the data a later stage reads.

    hyrax download -c survey.toml | hyrax train | hyrax infer

`train` given such a run (`--from`, or the path piped in) trains on its cutouts, and, like any run whose
data lies in a run's directory, records that run as its upstream. `infer` whose config names no data of
its own (the default data request) reads the data its model was trained on, found through the model's
lineage. A sharded download's shards are read as one (libhyrax.hdf5.result_file).
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
    from libhyrax.results import PROVENANCE_FILE

    folder = Path(data_location).expanduser().resolve().parent
    return folder if (folder / PROVENANCE_FILE).is_file() else None


def with_trained_data(cfg: dict, model_run: str | os.PathLike) -> dict:
    """`cfg` reading the data a model was trained on (a download or prepare run in its lineage) when the
    config names no data of its own; else `cfg` as it is."""
    from libhyrax.config import default_config
    from libhyrax.results import Result

    if cfg["data_request"] != default_config()["data_request"]:
        return cfg
    data_run = Result(model_run).find(*DATA_STAGES)
    return {**cfg, "data_request": request_of_run(data_run.path)} if data_run is not None else cfg
