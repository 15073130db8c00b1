"""A data request group (train, infer, ...) opened as one map-style, numpy-only source of batches.

    g = open_group(cfg, "train")
    len(g), g.fields, g.sample_shape
    g.read(0, 256)            # {"image": (256, C, H, W) float32, transformed, "object_id": str, ...}
    g.read_rows([5, 2, 900])  # any rows, read as contiguous runs, returned in the order asked
    g.object_ids(), g.catalog_columns(), g.catalog("x")

Fields of other datasets in the group are aligned row by row with the primary dataset, or, with a
`join_field`, left-joined on the primary's ids by sorted arrays and `searchsorted` (never a dict of all
ids). A joined dataset adds a boolean `<name>.matched` field; its missing values are NaN for float
columns and zero/empty otherwise. A field name used by two datasets is `<name>.<field>` for the second.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from libhyrax.data.base import Dataset, dataset_class
from libhyrax.data.request import DatasetSpec, parse_group, primary_name
from libhyrax.data.transforms import Transform, all_finite
from libhyrax.errors import ConfigError, DataError, HyraxError, did_you_mean
from libhyrax.hdf5 import IdIndex, as_id_bytes

log = logging.getLogger("hyrax.data")


def open_dataset(cfg: dict, spec: DatasetSpec, where: str = "data_request") -> Dataset:
    """Construct one dataset of a request (its class resolved, its location checked)."""
    cls = dataset_class(spec.dataset_class)
    # a dataset that fetches its data (CIFAR-10, LSST cutouts) makes its folder the first time; one that
    # makes its data (random) reads none
    if spec.data_location and not getattr(cls, "fetches_into_location", False) and \
            getattr(cls, "reads_data_location", True) and not Path(spec.data_location).expanduser().exists():
        raise DataError(f"{where}.data_location {spec.data_location!r} does not exist (looked from "
                        f"{Path.cwd()}); give the path of the data for {spec.dataset_class}")
    data_set = dict(cfg.get("data_set") or {})
    own = dict(spec.dataset_config)
    nested = own.pop(cls.__name__, None)  # {ClassName = {size = 30}}: the reference's form, nested by class
    if isinstance(nested, dict):
        own |= nested
    data_set[cls.__name__] = {**(data_set.get(cls.__name__) or {}), **own}
    sub = {**cfg, "data_set": data_set}
    try:
        return cls(sub, spec.data_location)
    except HyraxError:
        raise
    except Exception as e:
        raise DataError(f"{where}: {spec.dataset_class}({spec.data_location!r}) failed to open: "
                        f"{type(e).__name__}: {e}") from e


def open_group(cfg: dict, group: str) -> DataGroup:
    """The data of request group `group` (a missing group falls back to "train")."""
    request = cfg.get("data_request") or {}
    name = group if group in request else "train"
    if name not in request:
        raise ConfigError(f"data_request has no {group!r} group and no train group to fall back on; "
                          f"add [data_request.{group}.<name>] (groups there: {', '.join(request) or 'none'})")
    if name != group:
        log.info("data_request has no %s group; reading the train group", group)
    specs, errors = parse_group(name, request[name])
    if errors:
        raise ConfigError("invalid data_request:\n  " + "\n  ".join(errors))
    datasets = {f: open_dataset(cfg, s, f"data_request.{name}.{f}") for f, s in specs.items()}
    g = DataGroup(name, specs, datasets, Transform.from_config(cfg))
    g.shuffle_block = int((cfg.get("data_loader") or {}).get("shuffle_block") or 64)
    return g


def _missing_fill(values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    if values.dtype.kind == "f" and values.ndim == 1:
        out[:] = np.nan
    return out


NO_DATA = "_no_data"  # a batch's flags of objects with a band that has no finite pixel (when asked for)


def no_data_flags(images: np.ndarray) -> np.ndarray:
    """Per object of a (N, bands, H, W) batch: whether some band has no finite pixel at all. Such an object
    becomes a blank image once its NaNs are replaced, which a model maps to "perfectly ordinary"."""
    images = np.asarray(images)
    if images.dtype.kind != "f" or images.ndim < 3 or all_finite(images):
        return np.zeros(len(images), bool)
    finite_anywhere = np.isfinite(images).any(axis=(-2, -1))
    return ~finite_anywhere.all(axis=tuple(range(1, finite_anywhere.ndim)))


class DataGroup:
    def __init__(self, name: str, specs: dict[str, DatasetSpec], datasets: dict[str, Dataset],
                 transform: Transform | None = None):
        self.name, self.specs, self.datasets = name, specs, datasets
        self.transform = transform or Transform("none")
        self.flag_no_data = False  # infer sets it: batches then carry NO_DATA (see no_data_flags)
        self.shuffle_block = 64
        self.primary = primary_name(specs)
        pspec, pds = specs[self.primary], datasets[self.primary]
        self.id_field = pspec.primary_id_field or "object_id"
        self._check_fields(self.primary, [self.id_field])
        self._plan: dict[str, list[tuple[str, str]]] = {}  # dataset -> [(field, output key)]
        keys: set[str] = {"object_id"}
        for friendly, spec in specs.items():
            ds = datasets[friendly]
            fields = spec.fields or ds.fields
            self._check_fields(friendly, fields)
            plan = []
            for f in fields:
                if friendly == self.primary and f == self.id_field:
                    continue
                key = f if f not in keys else f"{friendly}.{f}"
                keys.add(key)
                plan.append((f, key))
            self._plan[friendly] = plan
        self._maps: dict[str, np.ndarray | None] = {}
        for friendly, spec in specs.items():
            if friendly != self.primary:
                self._maps[friendly] = self._align(friendly, spec, datasets[friendly], pds)

    def _check_fields(self, friendly: str, fields) -> None:
        have = self.datasets[friendly].fields
        for f in fields:
            if f not in have:
                raise ConfigError(
                    f"data_request.{self.name}.{friendly}: {self.specs[friendly].dataset_class} "
                    f"has no field {f!r}{did_you_mean(f, have)} Its fields: {', '.join(have)}"
                )

    def _align(self, friendly: str, spec: DatasetSpec, ds: Dataset, pds: Dataset) -> np.ndarray | None:
        if not spec.join_field:
            if len(ds) != len(pds):
                raise DataError(
                    f"data_request.{self.name}.{friendly} has {len(ds)} rows but the primary "
                    f"dataset {self.primary} has {len(pds)}; give join_field to join them on an "
                    "id instead of row by row"
                )
            return None
        self._check_fields(friendly, [spec.join_field])
        try:
            index = IdIndex(ds.column(spec.join_field))
        except DataError as e:
            raise DataError(
                f"data_request.{self.name}.{friendly}: join_field {spec.join_field!r}: {e}"
            ) from None
        rows = index.rows(self.object_ids())
        missing = int((rows < 0).sum())
        if missing:
            log.info("%s: %d of %d objects have no match in %s", self.name, missing, len(rows), friendly)
        return rows

    def __getstate__(self):
        # DataLoader workers get a copy: leave out the cached id array (large at 100M objects)
        return {k: v for k, v in self.__dict__.items() if k != "_ids"}

    # --- the contract -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.datasets[self.primary])

    @property
    def fields(self) -> list[str]:
        out = ["object_id"]
        for friendly, plan in self._plan.items():
            out += [key for _, key in plan]
            if self._maps.get(friendly) is not None:
                out.append(f"{friendly}.matched")
        return out

    def id_width(self) -> int:
        """Bytes (UTF-8) of the longest object id: the width a result file's /object_id needs."""
        pds = self.datasets[self.primary]
        if self.id_field == "object_id" and hasattr(pds, "id_width"):
            return int(pds.id_width())
        width, step = 1, 1 << 16
        for a in range(0, len(self), step):
            ids = as_id_bytes(
                np.asarray(pds.read([self.id_field], a, min(a + step, len(self)))[self.id_field])
            )
            width = max(width, int(ids.dtype.itemsize))
        return width

    def object_ids(self) -> np.ndarray:
        return self._ids

    def id_blocks(self, step: int = 1 << 16):
        """(first row, object ids as UTF-8 bytes) in contiguous blocks of `step`: every id in turn,
        without holding them all (a split of 100M objects)."""
        pds = self.datasets[self.primary]
        for a in range(0, len(self), step):
            ids = pds.read([self.id_field], a, min(a + step, len(self)))[self.id_field]
            yield a, as_id_bytes(np.asarray(ids))

    @cached_property
    def _ids(self) -> np.ndarray:
        return np.asarray(self.datasets[self.primary].column(self.id_field)).astype(str)

    @cached_property
    def sample_shape(self) -> tuple[int, ...]:
        if not any(key == "image" for plan in self._plan.values() for _, key in plan):
            raise DataError(f"data_request.{self.name} reads no 'image' field; add it to fields")
        return tuple(self.read(0, 1)["image"].shape[1:])

    def read(self, start: int, stop: int, id_bytes: bool = False) -> dict[str, np.ndarray]:
        """Contiguous rows start..stop of every field (images transformed). `id_bytes`: object ids as
        UTF-8 bytes (as stored, no decoding; what result writers take) instead of str."""
        start, stop = max(0, int(start)), min(len(self), int(stop))
        pds = self.datasets[self.primary]

        def read_aligned(ds, fields):
            if ds is pds and id_bytes and getattr(ds, "reads_id_bytes", False):
                return ds.read(fields, start, stop, id_bytes=True)
            return ds.read(fields, start, stop)

        return self._gather(
            read_aligned, lambda friendly: self._maps[friendly][start:stop], id_bytes, self._image_fresh
        )

    def read_rows(self, indices) -> dict[str, np.ndarray]:
        """Any rows, in the order given."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise DataError(f"rows out of range for {len(self)} objects")
        # read_rows gathers into new arrays: the images can be transformed in place
        return self._gather(
            lambda ds, fields: ds.read_rows(fields, rows),
            lambda friendly: self._maps[friendly][rows],
            False,
            True,
        )

    @cached_property
    def _image_fresh(self) -> bool:
        """Whether read() gets the images in a new array nobody else holds (then transformed in place)."""
        for friendly, plan in self._plan.items():
            if any(key == "image" for _, key in plan):
                return self._maps.get(friendly) is not None or bool(
                    getattr(self.datasets[friendly], "fresh_arrays", False)
                )
        return False

    def _gather(
        self, read_aligned, mapped_rows, id_bytes: bool = False, fresh: bool = False
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        pds = self.datasets[self.primary]
        raw = read_aligned(pds, [self.id_field] + [f for f, _ in self._plan[self.primary]])
        ids = np.asarray(raw[self.id_field])
        if id_bytes:
            out["object_id"] = ids if ids.dtype.kind == "S" else as_id_bytes(ids)
        else:
            out["object_id"] = ids if ids.dtype.kind == "U" else ids.astype(str)
        out |= {key: raw[f] for f, key in self._plan[self.primary]}
        for friendly, plan in self._plan.items():
            if friendly == self.primary or not plan and self._maps.get(friendly) is None:
                continue
            ds, fields = self.datasets[friendly], [f for f, _ in plan]
            if self._maps[friendly] is None:
                raw = read_aligned(ds, fields)
                out |= {key: raw[f] for f, key in plan}
                continue
            rows = mapped_rows(friendly)
            hit = rows >= 0
            out[f"{friendly}.matched"] = hit
            if not plan:
                continue
            got = ds.read_rows(fields, rows[hit])
            for f, key in plan:
                full = _missing_fill(got[f], len(rows))
                full[hit] = got[f]
                out[key] = full
        if "image" in out:
            if self.flag_no_data:
                out[NO_DATA] = no_data_flags(out["image"])
            out["image"] = self.transform(out["image"], inplace=fresh)
        return out

    # --- catalog ------------------------------------------------------------------------------------

    def catalog_columns(self) -> list[str]:
        """Per-object scalar columns (for colouring plots and tables), from every dataset in the group."""
        cols = list(self.datasets[self.primary].catalog_columns())
        for friendly in self.specs:
            if friendly != self.primary:
                cols += [
                    c if c not in cols else f"{friendly}.{c}"
                    for c in self.datasets[friendly].catalog_columns()
                ]
        return cols

    def catalog(self, column: str, rows=None) -> np.ndarray:
        """The values of a catalog column, one per object in group order; with `rows`, only those rows
        (read as contiguous runs: a table of k neighbours never reads a 100M-row column whole)."""
        pds = self.datasets[self.primary]
        if column in pds.catalog_columns():
            return pds.column(column) if rows is None else pds.read_rows([column], rows)[column]
        for friendly in self.specs:
            if friendly == self.primary:
                continue
            ds = self.datasets[friendly]
            name = column.removeprefix(f"{friendly}.")
            if name in ds.catalog_columns():
                mapped = self._maps[friendly]
                if mapped is None:  # index-aligned
                    return ds.column(name) if rows is None else ds.read_rows([name], rows)[name]
                theirs = mapped if rows is None else mapped[np.asarray(rows, dtype=np.int64)]
                hit = theirs >= 0
                values = ds.read_rows([name], theirs[hit])[name]
                full = _missing_fill(values, len(theirs))
                full[hit] = values
                return full
        cols = self.catalog_columns()
        raise DataError(
            f"no catalog column {column!r}{did_you_mean(column, cols)} Columns: {', '.join(cols)}"
        )
