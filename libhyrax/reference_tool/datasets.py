"""The reference Hyrax's dataset base class, here: a dataset class written for lincc-frameworks/hyrax runs
with its import line changed (`libhyrax.reference_tool` re-exports what is here).

    from libhyrax.reference_tool import HyraxDataset   # was: from hyrax.datasets import HyraxDataset

    class MyCutouts(HyraxDataset):
        def __init__(self, config, data_location=None):
            self.images = np.load(Path(data_location) / "images.npy")
            super().__init__(config, metadata_table=Table({"redshift": z}))   # last, as the reference asks

        def __len__(self):
            return len(self.images)

        def get_image(self, index):                  # (bands, H, W), or (H, W) for one band; numpy or torch
            return self.images[index]

        def get_object_id(self, index):
            return f"obj{index:05d}"

Named as before: `dataset_class = "MyCutouts"` (defined in a notebook) or its import path. How the two
contracts meet:

- `super().__init__(config, metadata_table=None, object_id_column_name=None)`, called last, keeps what the
  subclass set (its `data_location` too); a subclass that forgets it is initialised anyway;
- each column of `metadata_table` becomes a field `get_<column>` (a catalog column: plots, tables), read in
  batches; `metadata_fields()` / `metadata(idxs, fields)` work as in the reference;
- a getter's torch tensor becomes numpy, and a 2-D image gets a band axis (single-band data);
- without `get_object_id` (and no object id column), the id is the zero-padded index;
- the `HyraxImageDataset` mixin's transforms are not applied a second time: the `[data_set]` transform and
  `crop_to` apply to every dataset's images here, once;
- a plugin that reads a config key this Hyrax doesn't have gets a DataError naming the key (and saying when
  it is one of the reference's own settings) instead of a bare KeyError.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import MethodType

import numpy as np

from libhyrax.data.base import Dataset
from libhyrax.errors import DataError
from libhyrax.reference_tool.settings import INSTEAD

log = logging.getLogger("hyrax.data")

# --- the config as a reference plugin sees it ------------------------------------------------------

class MissingSetting(KeyError):
    """A plugin read a config key that isn't there; the message names the whole key."""

    def __init__(self, path: tuple[str, ...]):
        super().__init__(".".join(map(str, path)))
        self.key = ".".join(map(str, path))

    def explain(self, who: str, section: str = "data_set") -> str:
        """In plain words, for class `who` whose own options live in [<section>.<who>]."""
        from libhyrax.config import _reference_keys

        index = "".join(f"[{p!r}]" for p in self.key.split("."))
        if self.key in INSTEAD or self.key in _reference_keys():
            hint = INSTEAD.get(self.key, f"give {who} the value in [{section}.{who}] and read it from there")
            return (
                f"{who} reads config{index} ({self.key}), a setting of the reference Hyrax that this Hyrax "
                f"doesn't have: {hint}"
            )
        return (
            f"{who} reads config{index} ({self.key}), which is not in the config: add it (a class's own "
            f"options go in [{section}.{who}])"
        )

    def __str__(self) -> str:
        return f"config key {self.key} is not set"


class ReferenceConfig(dict):
    """A config whose missing keys raise MissingSetting with their dotted path (tables are wrapped as
    they are read; the plugin may keep and read it as a plain dict)."""

    def __init__(self, data=(), path: tuple[str, ...] = ()):
        super().__init__(data)
        self._path = path

    def _wrap(self, key, value):
        return (
            ReferenceConfig(value, (*self._path, key))
            if isinstance(value, dict) and not isinstance(value, ReferenceConfig)
            else value
        )

    def __getitem__(self, key):
        try:
            return self._wrap(key, super().__getitem__(key))
        except KeyError:
            raise MissingSetting((*self._path, key)) from None

    def get(self, key, default=None):
        return self._wrap(key, super().get(key, default))

    def __reduce__(self):  # pickled (DataLoader workers) as a plain dict with its path
        return (ReferenceConfig, (dict(self), self._path))


def reference_config(config) -> ReferenceConfig:
    return config if isinstance(config, ReferenceConfig) else ReferenceConfig(config or {})


# --- values as the framework takes them ----------------------------------------------------------


def to_numpy(value):
    """A torch tensor (or a list of numbers) as numpy; anything else as it is."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


# --- the base class ------------------------------------------------------------------------------


class HyraxDataset(Dataset):
    """The reference's dataset base class on top of `libhyrax.data.Dataset` (see the module docstring)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_hyrax_reference", False):
            cls.__init__ = _checked_init(cls, init)

    def __init__(self, config=None, metadata_table=None, object_id_column_name=None):
        location = self.__dict__.get("data_location")  # what the subclass set before calling us
        if isinstance(
            metadata_table, (str, Path)
        ):  # a subclass without __init__, built as (config, location)
            location, metadata_table = metadata_table, None
        Dataset.__init__(self, reference_config(config), location)
        self._config = self.config  # the reference keeps it there
        self._metadata_table = metadata_table
        self._reference_ready = True
        if metadata_table is None:
            return
        id_column = object_id_column_name or ("object_id" if "object_id" in metadata_table.colnames else None)
        for col in metadata_table.colnames:
            name = "object_id" if col == id_column else col
            if _subclass_defines(self, f"get_{name}"):
                continue
            setattr(self, f"get_{name}", MethodType(_column_getter(col), self))
            setattr(self, f"get_{name}_batch", MethodType(_column_batch(col), self))

    # --- the reference's interface ---------------------------------------------------------------

    def get_object_id(self, index):
        width = len(str(max(len(self) - 1, 0)))
        return f"{int(index):0{width}d}"

    def metadata_fields(self) -> list[str]:
        table = self.__dict__.get("_metadata_table")
        return [] if table is None else list(table.colnames)

    def metadata(self, idxs, fields: list[str]):
        have = self.metadata_fields()
        columns = [f for f in fields if f in have]
        if not columns:
            raise DataError(
                f"none of the metadata fields {fields} are in {type(self).__name__} (it has "
                f"{', '.join(have) or 'none'})"
            )
        result = self._metadata_table[idxs][columns].as_array()
        return np.ma.filled(result, np.nan) if np.ma.isMaskedArray(result) else result

    # --- the framework's interface ---------------------------------------------------------------

    @property
    def fields(self) -> list[str]:
        names = set(super().fields)
        names |= {n[4:] for n, v in vars(self).items() if n.startswith("get_") and callable(v)}
        return sorted(n for n in names if not (n.endswith("_batch") and n[:-6] in names))

    def get(self, field: str, index: int):
        value = to_numpy(getattr(self, f"get_{field}")(int(index)))
        if field == "image":
            value = np.asarray(value)
            if value.ndim == 2:
                value = value[None]  # one band: (1, H, W)
        return value


def _subclass_defines(obj, name: str) -> bool:
    """Whether `obj`'s class defines `name` itself (not our index-id default)."""
    found = getattr(type(obj), name, None)
    return found is not None and found is not HyraxDataset.__dict__.get(name)


def _column_getter(col: str):
    def getter(self, index):
        return self._metadata_table[col][index]

    return getter


def _column_batch(col: str):
    def batch(self, start, stop):
        values = self._metadata_table[col][start:stop]
        return (
            np.ma.filled(values, np.nan)
            if np.ma.isMaskedArray(values) and values.dtype.kind == "f"
            else np.asarray(values)
        )

    return batch


def _checked_init(cls, init):
    """The subclass's __init__, given the config as a ReferenceConfig; a missing key becomes a DataError
    that names it, and a subclass that never calls super().__init__ is initialised anyway."""

    @functools.wraps(init)
    def __init__(self, config=None, *args, **kwargs):
        try:
            init(self, reference_config(config), *args, **kwargs)
        except MissingSetting as e:
            raise DataError(e.explain(cls.__name__)) from None
        if not self.__dict__.get("_reference_ready"):
            HyraxDataset.__init__(self, config)

    __init__._hyrax_reference = True
    return __init__


class HyraxImageDataset:
    """The reference's image-transform mixin. Here the `[data_set]` transform and `crop_to` are applied to
    every dataset's images by the framework, once; so these keep a reference dataset working without
    transforming its images a second time."""

    def set_function_transform(self):
        log.debug("%s: the [data_set] transform is applied by Hyrax to every image", type(self).__name__)

    def set_crop_transform(self, cutout_shape=None):
        log.debug("%s: [data_set] crop_to is applied by Hyrax to every image", type(self).__name__)

    def apply_transform(self, data):
        return to_numpy(data)
