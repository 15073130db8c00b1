"""Coming from the reference Hyrax (lincc-frameworks/hyrax): its plugin and notebook names, here.

A dataset or model package written for the reference runs here with its import lines changed:

    from hyrax import Hyrax                              ->  from libhyrax.reference import Hyrax
    from hyrax.datasets import HyraxDataset              ->  from libhyrax.reference import HyraxDataset
    from hyrax.models.model_registry import hyrax_model  ->  from libhyrax.reference import hyrax_model

and is named in the config by class name or import path as before. `libhyrax.data.reference` and
`libhyrax.models.reference` say how the reference's contracts map onto ours; `check_dataset(cls)` and
`check_model(cls)` check such classes too. `Hyrax` (libhyrax.api) takes the reference's notebook calls:
`set_config`, `train`, `infer`, `umap`, `visualize`, `save_to_database`, `database_connection`, `lookup`,
`to_onnx`, `engine`. Importing this module imports torch only when `hyrax_model` is used.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "Hyrax": "libhyrax.api",
    "HyraxDataset": "libhyrax.data.reference",
    "HyraxImageDataset": "libhyrax.data.reference",
    "hyrax_model": "libhyrax.models.reference",
    "check_dataset": "libhyrax.data",
    "check_model": "libhyrax.models",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'libhyrax.reference' has no attribute {name!r}; it has {', '.join(__all__)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
