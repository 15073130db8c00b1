"""The reference Hyrax's settings and names, mapped: which of its config keys the facade honours, and what
to use instead of the ones this Hyrax doesn't have.

The config loader (libhyrax.config) migrates a reference config file and returns the reference keys it
left out; the facade (facade.py) honours the run-naming ones below and says what to do about the rest.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path
from typing import Any

from libhyrax.config.migrations import remainder_to_the_rest
from libhyrax.errors import ConfigError

# the reference's settings that name a run to read, by the verb that reads them (the config itself has
# no such keys here: the facade holds them)
RUN_KEYS = {
    "umap": "results.inference_dir",
    "lookup": "results.inference_dir",
    "index": "vector_db.infer_results_dir",
    "export": "onnx.input_model_directory",
    "engine": "engine.model_directory",
    "database_connection": "vector_db.vector_db_dir",
}
# the reference's verb arguments that name a run to read
RUN_ARGS = {
    "umap": "input_dir",
    "visualize": "input_dir",
    "index": "input_dir",
    "export": "input_model_directory",
    "engine": "model_directory",
    "database_connection": "database_dir",
    "lookup": "results_dir",
}

# the reference's verbs this Hyrax doesn't have, and what to use instead
UNSUPPORTED = {
    "rebuild_manifest": "libhyrax.prepare() (`hyrax prepare`) reads a download folder's manifest.fits as it "
    "is and lists failed downloads in rejected.csv",
    "infer_stream": "streams are not supported: write the objects to files, libhyrax.prepare() them and "
    "h.infer()",
    "train_stream": "streams are not supported: write the objects to files, libhyrax.prepare() them and "
    "h.train()",
    "visualize_v2": "use h.visualize(): an interactive map with cutouts, inline and as visualize.html",
    "create_splits": "h.train() makes the splits from [split] and keeps them in the train run (split.h5); "
    "reuse them with split.from_run",
    "raw_data_dimensions": "the cutouts are prepare.cutout_size square; libhyrax.open_group(h.config, "
    "'train').sample_shape is the model's input shape",
    "vdb_index": "use h.save_to_database() and h.database_connection()",
}

# reference settings that live elsewhere here: what a plugin (or a config) that sets them should use instead
INSTEAD = {
    "data_set.filters": "the band order is prepare.bands (or the dataset's own option)",
    "data_set.use_cache": "there is no cache setting: data are read in contiguous batches",
    "data_set.filter_catalog": "give the dataset a catalog of the objects to read "
    "(FitsImageDataset: catalog)",
    "train.weights_filename": "a train run's weights are its model.pt",
    "general.dev_mode": "there is no dev mode",
}

# the reference's settings the facade acts on itself, with the reference's defaults; h.config shows them
HONOURED = {"train.weights_filename": "example_model.pth"}

INSTEAD |= {
    "general.log_destination": "logs go to stderr, and each run keeps its own <stage>.log",
    "train.split": "training reads the train split of [split] (fractions train, validate, test)",
    "data_set.crop_to": "set data_set.crop_to to one size in pixels (a square centre crop)",
    "reduce_dimensions.umap.model_path": "h.umap(model_path=<a umap run or its reducer.pkl>)",
    "onnx.opset_version": "the export writes the opset onnxruntime runs best; leave it out",
}
DEFAULTS_FILE = Path(__file__).resolve().parent / "reference_v7_defaults.txt"


@functools.cache
def reference_defaults() -> dict[str, Any]:
    """The reference's v7 defaults by dotted key (class-named tables unquoted: torch.optim.SGD.lr)."""
    lines = DEFAULTS_FILE.read_text().splitlines()
    pairs = (ln.split(" = ", 1) for ln in lines if ln.strip() and not ln.startswith("#"))
    return {key: ast.literal_eval(value) for key, value in pairs}


def refused(ignored: dict[str, Any]) -> list[str]:
    """What the facade says about the reference's keys the config left out that it doesn't honour: one line
    per key set to other than the reference's default (a default is no setting, and is dropped)."""
    defaults = reference_defaults()
    lines = []
    for key, value in sorted(ignored.items()):
        if key in defaults and defaults[key] == value:
            continue
        hint = INSTEAD.get(key, "this Hyrax has no such setting; leave it out")
        lines.append(f"{key} = {value!r}: {hint}")
    return lines


# the reference's [data_set] keys for its FitsImageDataset, as that class's own options here
FITS_KEYS = {
    "filter_catalog": "catalog",
    "object_id_column_name": "object_id_column",
    "filter_column_name": "filter_column",
    "filename_column_name": "filename_column",
}


def split_key(key: str) -> list[str]:
    """A dotted key's parts, read as TOML reads a dotted key:
    "'torch.optim.SGD'.lr" -> [torch.optim.SGD, lr]."""
    try:
        node = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            f"{key!r} is not a dotted key (quote a part that has dots: \"'torch.optim.SGD'.lr\")"
        ) from None
    parts = []
    while isinstance(node, dict):
        ((part, node),) = node.items()
        parts.append(part)
    return parts


def reference_forms(cfg: dict) -> None:
    """A notebook's config dict in the reference's forms, as this Hyrax takes it (in place):
    - `[split]` fractions a table doesn't give share what the given ones leave (`{"train": 0.8,
      "validate": 0.2}` has no test split, as there), and `split.infer` is all of the infer group;
    - the FitsImageDataset settings in `[data_set]` (`filter_catalog`, `*_column_name`) become that class's
      own options, and `crop_to = [w, h]` one size."""
    split = cfg.get("split")
    if isinstance(split, dict):
        infer = split.pop("infer", False)
        if infer not in (False, 1, 1.0):
            raise ConfigError(
                f"split.infer = {infer!r}: infer reads every object of data_request.infer; give "
                "that group the objects to infer on (a catalog of them) instead of a fraction"
            )
        if any(k in split for k in ("train", "validate", "test")):
            remainder_to_the_rest(split)
    data_set = cfg.get("data_set")
    if isinstance(data_set, dict):
        fits = data_set.setdefault("FitsImageDataset", {})
        for theirs, ours in FITS_KEYS.items():
            value = data_set.pop(theirs, False)
            if value not in (False, None, ""):
                fits[ours] = value
        if not fits:
            data_set.pop("FitsImageDataset")
        crop = data_set.get("crop_to")
        if isinstance(crop, (list, tuple)) and crop:
            if len(set(crop)) != 1:
                raise ConfigError(f"data_set.crop_to = {list(crop)}: crops here are square; give one size")
            data_set["crop_to"] = int(crop[0])
