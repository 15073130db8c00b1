"""The dataset contract: one small base class.

A dataset is `__len__` plus one getter per field, `get_<field>(index) -> numpy`, and optionally a batch
getter `get_<field>_batch(start, stop) -> numpy` over a contiguous range (much faster for files):

    class MyCutouts(Dataset):
        def __init__(self, config, data_location=None):
            super().__init__(config, data_location)
            self.images = np.load(self.data_location)         # dataset_config: self.dataset_config

        def __len__(self):
            return len(self.images)

        def get_image(self, index):
            return self.images[index]

        def get_object_id(self, index):
            return f"obj-{index}"

Subclassing registers the class under its name, so a config can say `dataset_class = "MyCutouts"` as
soon as the class is defined (in a notebook too: running the cell again replaces the class); a class
elsewhere can also be named by its import path (`my_pkg.data.MyCutouts`). Two different classes can't share
a name (see libhyrax.registry). `check_dataset(MyCutouts)` tells you, in plain words, what is missing.
"""

from __future__ import annotations

import numpy as np

from libhyrax.errors import DataError
from libhyrax.registry import Registry

# every Dataset subclass registers here under its class name, as it is defined
REGISTRY: Registry[type[Dataset]] = Registry(
    "dataset_class", import_paths=True,
    rename_hint="rename one of the classes (a dataset class is registered under its class name)")


class Dataset:
    """Base class of every dataset. `config` is the resolved config; this class's options are
    `self.dataset_config` (the `[data_set.<ClassName>]` table merged with the request's dataset_config)."""

    reads_data_location = True  # False for a dataset that makes its data: a data_location is then not checked

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY.register(cls.__name__, cls)

    def __init__(self, config: dict | None = None, data_location: str | None = None):
        self.config = config or {}
        self.data_location = data_location
        self.dataset_config = dict((self.config.get("data_set") or {}).get(type(self).__name__) or {})

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    # --- fields -------------------------------------------------------------------------------------

    @property
    def fields(self) -> list[str]:
        """Field names: one per `get_<field>` method."""
        names = {n[4:] for n in dir(type(self)) if n.startswith("get_") and callable(getattr(type(self), n))}
        return sorted(n for n in names if not (n.endswith("_batch") and n[:-6] in names))

    def get(self, field: str, index: int):
        return getattr(self, f"get_{field}")(int(index))

    def catalog_columns(self) -> list[str]:
        """Fields that are one scalar per object (shown in plots and tables)."""
        return [f for f in self.fields if f not in ("image", "object_id", "mask", "variance")]

    def column(self, field: str) -> np.ndarray:
        """All values of one field (ids, a catalog column), read in large contiguous batches."""
        step = 65536
        parts = [self.read([field], s, min(s + step, len(self)))[field] for s in range(0, len(self), step)]
        return np.concatenate(parts) if parts else np.array([])

    # --- reading --------------------------------------------------------------------------------------

    def read(self, fields: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows start..stop of `fields` as stacked numpy arrays. Uses `get_<field>_batch` when defined, and
        the dataset's own `collate` when it has one."""
        if callable(getattr(self, "collate", None)):
            return self._collated(fields, start, stop)
        out = {}
        for f in fields:
            batch = getattr(self, f"get_{f}_batch", None)
            if batch is not None:
                out[f] = np.asarray(batch(start, stop))
            else:
                out[f] = np.asarray([np.asarray(self.get(f, i)) for i in range(start, stop)])
        if "object_id" in out:
            out["object_id"] = out["object_id"].astype(str)
        return out

    def _collated(self, fields: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """A dataset whose fields differ in shape per object (light curves, spectra) batches them itself:
        `collate(items)` takes a list of {field: value} (one per object, every field) and returns {field:
        array} with one row per object (padded, say). It is called only when a field read here differs in
        shape; fields of one shape are stacked as usual. Per object, in Python: such data are small."""
        rows = range(start, stop)
        values = {f: [np.asarray(self.get(f, i)) for i in rows] for f in fields}
        out = {
            f: np.stack(v) if v else np.zeros(0) for f, v in values.items() if len({x.shape for x in v}) <= 1
        }
        if len(out) < len(fields):
            items = [
                {f: values[f][k] if f in values else self.get(f, i) for f in self.fields}
                for k, i in enumerate(rows)
            ]
            collated = {k: np.asarray(v) for k, v in self.collate(items).items()}
            missing = [f for f in fields if f not in out and f not in collated]
            wrong = [
                f"{f} ({len(collated[f])} rows)"
                for f in fields
                if f in collated and len(collated[f]) != len(rows)
            ]
            if missing or wrong:
                raise DataError(
                    f"{type(self).__name__}.collate must return every field with one row per object; "
                    f"missing: {', '.join(missing) or 'none'}; wrong length: {', '.join(wrong) or 'none'}"
                )
            out |= {f: collated[f] for f in fields if f not in out}
        if "object_id" in out:
            out["object_id"] = out["object_id"].astype(str)
        return out

    def read_rows(self, fields: list[str], rows) -> dict[str, np.ndarray]:
        """Any rows, in the order given: read as sorted contiguous runs, then put back in order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return {f: v[:0] for f, v in self.read(fields, 0, min(1, len(self))).items()}
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        uniq, inverse = np.unique(srt, return_inverse=True)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        parts = [self.read(fields, int(run[0]), int(run[-1]) + 1) for run in np.split(uniq, breaks)]
        out = {}
        for f in fields:
            joined = np.concatenate([p[f] for p in parts])[inverse]
            res = np.empty_like(joined)
            res[order] = joined
            out[f] = res
        return out


def dataset_class(name: str) -> type[Dataset]:
    """A registered class by name, or any class by import path (`pkg.module.Class`)."""
    from libhyrax.data import builtins_loaded  # noqa: F401  (registers the built-in classes)

    return REGISTRY.lookup(name)
