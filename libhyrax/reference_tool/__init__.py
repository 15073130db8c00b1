"""Coming from the reference Hyrax (lincc-frameworks/hyrax): everything of its names, in this one package.

A notebook, dataset or model package written for the reference runs here with its import lines changed:

    from hyrax import Hyrax                              ->  from libhyrax.reference_tool import Hyrax
    from hyrax.datasets import HyraxDataset              ->  from libhyrax.reference_tool import HyraxDataset
    from hyrax.models.model_registry import hyrax_model  ->  from libhyrax.reference_tool import hyrax_model

and is named in the config by class name or import path as before. What is where:

    facade.py     `Hyrax`: the reference's notebook calls (set_config, the verbs, database_connection, lookup)
    settings.py   its config forms, the settings this package honours, and what to use instead of the others
    prepared.py   what `h.prepare()` returns: the data the request describes, a provider per group
    config_utils  its `find_most_recent_results_dir`, where its notebooks import it from (hyrax.config_utils)
    datasets.py   `HyraxDataset` on top of libhyrax.data.Dataset (the dataset contract's adapter)
    models.py     `@hyrax_model`: a reference model wrapped for the model contract (it steps itself)

The core (stages, config, data, models, training) never imports this package; this package imports the
core. `check_dataset(cls)` and `check_model(cls)` check such classes too. Importing this package imports
torch only when `hyrax_model` is used.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "Hyrax": "libhyrax.reference_tool.facade",
    "HyraxDataset": "libhyrax.reference_tool.datasets",
    "HyraxImageDataset": "libhyrax.reference_tool.datasets",
    "hyrax_model": "libhyrax.reference_tool.models",
    "check_dataset": "libhyrax.data",
    "check_model": "libhyrax.models",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'libhyrax.reference_tool' has no attribute {name!r}; it has "
                             f"{', '.join(__all__)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
