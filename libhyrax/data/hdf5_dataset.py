"""Cutout files (docs/hdf5-format.md): writing them in a stream, and reading them as a dataset.

    attrs: format="hyrax-cutouts", format_version, bands, pixel_scale (when known), rows_written, complete
    /object_id        (N,) UTF-8 strings, unique
    /images           (N, C, H, W) float32 (or float16: half the bytes to read; read back as float32),
                      chunked by whole rows (~1 MiB) so contiguous batches are cheap
    /catalog/<col>    (N,) one array per catalog column
    /masks, /variance (N, C, H, W), optional
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from libhyrax import atomic
from libhyrax.data.base import Dataset
from libhyrax.errors import DataError, RunError
from libhyrax.hdf5 import (
    IdIndex,
    as_id_bytes,
    check_id_width,
    chunk_rows,
    id_dtype,
    read_ids,
    reopen_unfinished,
    write_failed,
)

FORMAT, FORMAT_VERSION = "hyrax-cutouts", 1
PIXEL_DTYPES = ("float32", "float16")  # how pixels are stored; they are always read back as float32
FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT16_TINY = float(np.finfo(np.float16).smallest_normal)  # 6.1e-05: below it precision goes, then all
PLANES = ("images", "masks", "variance")  # per-pixel arrays; fields "image", "mask", "variance"
FIELD_OF = {"images": "image", "masks": "mask", "variance": "variance"}


def _column_dtype(values: np.ndarray):
    if values.dtype.kind in "USO":
        return h5py.string_dtype("utf-8")  # variable length: a later batch may hold longer strings
    if values.dtype.kind == "b":
        return np.dtype(bool)
    return values.dtype


class CutoutWriter:
    """Stream objects into a cutout file, batch by batch; memory stays flat whatever N is.

        with CutoutWriter(path, shape=(3, 64, 64), bands=["g", "r", "i"]) as w:
            w.append(object_ids, images, catalog={"ra": ra, "dec": dec})

    `n_rows` (when known) preallocates; otherwise the file grows. Every batch carries as many ids as
    images and catalog rows. An interrupted write (no `complete` attribute) resumes after its last
    `rows_written` when reopened with the same shape. `close()` checks the object ids are unique.
    `dtype="float16"` stores pixels in half the bytes (what a GPU's input pipeline reads); a pixel beyond
    float16's range (65504) is an error rather than an infinity.
    """

    def __init__(self, path, shape: tuple[int, int, int], bands, n_rows: int | None = None,
                 pixel_scale: float | None = None, planes: tuple[str, ...] = ("images",),
                 id_length: int = 64, attrs: dict | None = None, dtype: str = "float32"):
        self.path, self.shape, self.n_rows = Path(path), tuple(int(s) for s in shape), n_rows
        if len(self.shape) != 3:
            raise DataError(f"cutouts must be (bands, height, width), not shape {self.shape}")
        if str(dtype) not in PIXEL_DTYPES:
            from libhyrax.errors import ConfigError, unknown_choice

            raise ConfigError(unknown_choice("pixel dtype", dtype, PIXEL_DTYPES))
        self.dtype = np.dtype(str(dtype))
        self.file = reopen_unfinished(self.path, FORMAT, lambda f: f["images"].shape[1:] == self.shape)
        if self.file is None:
            self.file = h5py.File(self.path, "w")
            self._create(bands, pixel_scale, planes, id_length, attrs or {})
        self.rows_written = int(self.file.attrs["rows_written"])
        self.arrays: dict[str, h5py.Dataset] = {}
        self.broken = False

    def _create(self, bands, pixel_scale, planes, id_length, attrs) -> None:
        f = self.file
        bands = [str(b) for b in bands]
        if len(bands) != self.shape[0]:
            raise DataError(f"{len(bands)} band names for cutouts of {self.shape[0]} bands")
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "bands": bands,
                        "rows_written": 0, "complete": False})
        if pixel_scale:
            f.attrs["pixel_scale"] = float(pixel_scale)
        f.attrs.update(attrs)
        n = self.n_rows or 0
        rows = chunk_rows(self.shape, self.dtype)
        f.create_dataset("object_id", shape=(n,), maxshape=(None,), dtype=id_dtype(id_length), chunks=(4096,))
        for plane in planes:
            f.create_dataset(plane, shape=(n, *self.shape), maxshape=(None, *self.shape), dtype=self.dtype,
                             chunks=(rows, *self.shape))
        f.require_group("catalog")

    def _ensure(self, name: str, values: np.ndarray) -> h5py.Dataset:
        if name in self.file:
            return self.file[name]
        if self.rows_written:
            raise DataError(f"{self.path.name}: catalog column {name.split('/')[-1]!r} appeared after "
                            f"{self.rows_written} rows were written; give every column in every batch")
        tail = values.shape[1:]
        return self.file.create_dataset(name, shape=(self.n_rows or 0, *tail), maxshape=(None, *tail),
                                        dtype=_column_dtype(values), chunks=(4096, *tail))

    def append(self, object_id, images, catalog: dict | None = None, masks=None, variance=None) -> None:
        ids = as_id_bytes(object_id)
        n = len(ids)
        arrays = {"images": images, "masks": masks, "variance": variance}
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items() if v is not None}
        if self.dtype == np.float16:
            for name, arr in arrays.items():
                _check_float16_range(name, arr, ids)
        arrays |= {f"catalog/{k}": np.asarray(v) for k, v in (catalog or {}).items()}
        for name, arr in arrays.items():
            if len(arr) != n:
                raise DataError(
                    f"batch for {self.path.name} has {n} object ids but {len(arr)} rows of {name}"
                )
            if name in PLANES and arr.shape[1:] != self.shape:
                raise DataError(
                    f"{name} of shape {arr.shape[1:]} don't fit {self.path.name}, made for {self.shape}"
                )
        check_id_width(ids, self.file["object_id"], self.path.name)
        start, stop = self.rows_written, self.rows_written + n
        if self.n_rows is not None and stop > self.n_rows:
            raise DataError(f"{self.path.name}: writing rows {start}:{stop} past its {self.n_rows} rows")
        targets = {"object_id": ids} | arrays
        if self.broken:
            raise RunError(f"{self.path.name} is closed: an earlier write to it failed")
        try:
            for name, arr in targets.items():
                # kept open: a write that fails as a temporary h5py object closes its dataset is lost
                if name not in self.arrays:
                    self.arrays[name] = self.file[name] if name in self.file else self._ensure(name, arr)
                ds = self.arrays[name]
                if ds.shape[0] < stop:
                    ds.resize(stop, axis=0)
                if h5py.check_string_dtype(ds.dtype):
                    arr = as_id_bytes(arr)
                    arr = arr.astype(object) if ds.dtype.kind == "O" else arr.astype(ds.dtype)
                ds[start:stop] = arr
            self.file.flush()  # the rows reach the file before the count that says they are there
            self.file.attrs["rows_written"] = stop
            self.file.flush()
        except (OSError, RuntimeError) as e:
            self.broken = True  # HDF5 can't be asked anything more about this file: it would crash
            raise write_failed(self.file, self.path, e) from e
        self.rows_written = stop

    def close(self, complete: bool = True) -> None:
        if self.broken or not self.file.id.valid:
            if complete:
                raise RunError(f"{self.path.name} can't be finished: an earlier write to it failed")
            return
        try:
            if complete:
                if self.n_rows is not None and self.rows_written != self.n_rows:
                    raise DataError(
                        f"{self.path.name}: {self.rows_written} rows written, {self.n_rows} expected"
                    )
                for name in self._all_arrays():
                    if self.file[name].shape[0] != self.rows_written:
                        self.file[name].resize(self.rows_written, axis=0)
                IdIndex(read_ids(self.file["object_id"]))  # raises on duplicate ids
                self.file.attrs["complete"] = True
            self.file.flush()
        except (OSError, RuntimeError) as e:
            self.broken = True  # HDF5 can't be asked anything more about this file: it would crash
            raise write_failed(self.file, self.path, e) from e
        finally:
            if not self.broken and self.file.id.valid:
                self.file.close()

    def _all_arrays(self) -> list[str]:
        names = ["object_id"] + [p for p in PLANES if p in self.file]
        return names + [f"catalog/{c}" for c in self.file["catalog"]]

    def __enter__(self) -> CutoutWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(complete=exc_type is None)


def _check_float16_range(name: str, arr: np.ndarray, ids: np.ndarray) -> None:
    """Pixels float16 can't hold are an error, not infinities (overflow) or zeros (underflow): an object
    whose largest pixel is below float16's smallest normal number would be stored as zeros, or nearly."""
    largest = np.abs(np.where(np.isfinite(arr), arr, 0)).reshape(len(arr), -1).max(axis=1, initial=0)
    if len(largest) and float(largest.max()) > FLOAT16_MAX:
        raise DataError(
            f"{name} hold values up to {float(largest.max()):.4g}, beyond float16's "
            f"{FLOAT16_MAX:g}; store these cutouts as float32 (or scale them first)"
        )
    tiny = (largest > 0) & (largest < FLOAT16_TINY)
    if tiny.any():
        first = int(np.flatnonzero(tiny)[0])
        example = ids[first].decode(errors="replace")
        raise DataError(
            f"{name} of {tiny.sum()} object(s), e.g. {example!r}, are no larger than "
            f"{float(largest[first]):.3g}, below float16's smallest normal number "
            f"{FLOAT16_TINY:.3g}: stored as float16 they would become zeros; store these cutouts "
            "as float32 (or scale them first)"
        )


def write_cutouts(
    path,
    object_id,
    images,
    catalog: dict | None = None,
    bands=None,
    pixel_scale: float | None = None,
    masks=None,
    variance=None,
    dtype: str = "float32",
) -> Path:
    """Write a whole (small) cutout file at once, atomically (tmp + rename)."""
    path = Path(path)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise DataError(f"images must be (N, bands, height, width), not shape {images.shape}")
    bands = list(bands) if bands is not None else [f"band{i}" for i in range(images.shape[1])]
    ids = as_id_bytes(object_id)
    planes = tuple(p for p, v in zip(PLANES, (images, masks, variance), strict=True) if v is not None)
    with (
        atomic.replacing(path) as tmp,
        CutoutWriter(
            tmp,
            images.shape[1:],
            bands,
            n_rows=len(ids),
            pixel_scale=pixel_scale,
            planes=planes,
            id_length=max(ids.dtype.itemsize, 1),
            dtype=dtype,
        ) as w,
    ):
        w.append(ids, images, catalog=catalog, masks=masks, variance=variance)
    return path


def as_float32(arr: np.ndarray) -> np.ndarray:
    """float16 pixels as float32 (a new array: models and transforms compute in float32); others as they
    are."""
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def open_cutouts(path) -> h5py.File:
    """Open and check a cutout file; every problem is a DataError naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"cutout file {path} does not exist; check data_location (or run `hyrax prepare`)")
    if path.is_dir():
        raise DataError(f"{path} is a folder; data_location of HyraxHDF5Dataset must be an .h5 cutout file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        kind = "is not an HDF5 file" if not h5py.is_hdf5(path) else "can't be read (truncated or damaged?)"
        raise DataError(
            f"{path} {kind} ({str(e).split('(')[0].strip()}); "
            "make it again with `hyrax prepare` or libhyrax.data.write_cutouts"
        ) from None
    try:
        _check(path, f)
    except BaseException:
        f.close()
        raise
    return f


def _check(path: Path, f: h5py.File) -> None:
    if "images" not in f:
        raise DataError(
            f"{path} has no /images array; a cutout file needs /object_id and /images "
            "(N, bands, height, width); see docs/hdf5-format.md"
        )
    if "object_id" not in f:
        raise DataError(f"{path} has no /object_id array; write one id per image (see docs/hdf5-format.md)")
    if f.attrs.get("format") == FORMAT and not f.attrs.get("complete", True):
        raise DataError(
            f"{path} was not finished ({f.attrs.get('rows_written')} rows written); rerun the "
            "step that writes it, which resumes where it stopped"
        )
    n = f["object_id"].shape[0]
    if f["images"].ndim != 4:
        raise DataError(
            f"{path}: /images has shape {f['images'].shape}; it must be 4-D (N, bands, height, "
            "width); add a band axis of length 1 for single-band images"
        )
    lengths = {"object_id": n} | {name: f[name].shape[0] for name in PLANES if name in f}
    if "catalog" in f:
        lengths |= {f"catalog/{c}": f["catalog"][c].shape[0] for c in f["catalog"]}
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise DataError(
            f"{path}: arrays of different lengths: /object_id has {n} rows but "
            + ", ".join(f"/{k} has {v}" for k, v in bad.items())
            + "; every array must have one row per object, in the same order"
        )
    if not f.attrs.get("complete"):  # our writer checked uniqueness when it completed the file
        _unique_ids(path, f)


def _id_str(raw: np.ndarray) -> np.ndarray:
    """Stored ids -> numpy str: a plain cast for ASCII ids (about 5x faster than decoding), UTF-8 else."""
    if raw.dtype.kind == "S":
        try:
            return raw.astype("U")
        except UnicodeDecodeError:
            return np.char.decode(raw, "utf-8")
    if raw.dtype.kind == "O":
        return np.char.decode(raw.astype("S"), "utf-8") if len(raw) else raw.astype("U")
    return raw.astype(str)


def _id_bytes(raw: np.ndarray) -> np.ndarray:
    """Stored ids -> numpy bytes (UTF-8), as stored: no copy for fixed-length ids."""
    if raw.dtype.kind == "S":
        return raw
    if raw.dtype.kind == "O":
        return (
            np.array([v if isinstance(v, bytes) else str(v).encode() for v in raw], dtype="S")
            if len(raw)
            else np.zeros(0, "S1")
        )
    return as_id_bytes(raw)


def _unique_ids(path: Path, f: h5py.File) -> IdIndex:
    try:
        return IdIndex(read_ids(f["object_id"]))
    except DataError as e:
        raise DataError(f"{path}: {e}; object ids must be unique: fix the file's /object_id") from None


class HyraxHDF5Dataset(Dataset):
    """A cutout file (docs/hdf5-format.md). Fields: image, object_id, mask/variance when present, and
    every catalog column. The h5py handle opens lazily, once per process (each DataLoader worker)."""

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location)
        if not data_location:
            raise DataError(f"{type(self).__name__} needs data_location: the path of a cutout .h5 file")
        self.path = Path(data_location).expanduser()
        f = open_cutouts(self.path)
        try:
            self.n = f["object_id"].shape[0]
            self.sample_shape = tuple(f["images"].shape[1:])
            self.bands = [
                str(b) for b in f.attrs.get("bands", [f"band{i}" for i in range(self.sample_shape[0])])
            ]
            self.pixel_scale = f.attrs.get("pixel_scale")
            self._planes = [p for p in PLANES if p in f]
            self._catalog = sorted(f["catalog"]) if "catalog" in f else []
        finally:
            f.close()
        self._file, self._pid, self._arrays = None, None, {}
        self._index: IdIndex | None = None

    def __getstate__(self):
        return self.__dict__ | {"_file": None, "_pid": None, "_arrays": {}}

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            self._arrays = {}
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._arrays = None, {}

    def __len__(self) -> int:
        return self.n

    @property
    def fields(self) -> list[str]:
        return ["image", "object_id"] + [FIELD_OF[p] for p in self._planes[1:]] + self._catalog

    def catalog_columns(self) -> list[str]:
        return list(self._catalog)

    def _dataset(self, field: str) -> h5py.Dataset:
        f = self.file
        if field not in self._arrays:  # h5py object lookups cost ~0.3 ms: once per process
            plane = {v: k for k, v in FIELD_OF.items()}.get(field)
            if plane in self._planes or field == "object_id":
                self._arrays[field] = f[plane or field]
            elif field in self._catalog:
                self._arrays[field] = f["catalog"][field]
            else:
                raise DataError(f"{self.path} has no field {field!r}; it has {', '.join(self.fields)}")
        return self._arrays[field]

    # every array read() returns is freshly allocated (the group may transform it in place), and read()
    # takes id_bytes=True
    fresh_arrays = reads_id_bytes = True

    def read(self, fields, start, stop, id_bytes: bool = False):
        """Contiguous rows of `fields`. Strings (object ids) are str, or with `id_bytes` the stored UTF-8
        bytes (no decoding: what result writers take)."""
        out = {}
        start, stop = min(max(int(start), 0), self.n), min(max(int(stop), int(start), 0), self.n)
        for field in fields:
            ds = self._dataset(field)
            if field == "object_id" or ds.dtype.kind in "SO":
                raw = ds[start:stop]
                out[field] = _id_bytes(raw) if id_bytes else _id_str(raw)
            else:
                arr = np.empty((stop - start, *ds.shape[1:]), dtype=ds.dtype)
                if stop > start:  # read_direct: straight into our array, ~10% faster than slicing
                    ds.read_direct(arr, np.s_[start:stop])
                out[field] = as_float32(arr)
        return out

    def id_width(self) -> int:
        """Bytes needed to store the longest object id (the stored width for fixed-length ids)."""
        ds = self._dataset("object_id")
        if ds.dtype.kind == "S":
            return max(int(ds.dtype.itemsize), 1)
        step, width = 1 << 16, 1
        for a in range(0, self.n, step):
            width = max(width, int(_id_bytes(ds[a : a + step]).dtype.itemsize))
        return width

    def read_rows(self, fields, rows):
        """Any rows: each contiguous run of the sorted rows is read straight into the output array."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        if len(srt) < 2 or (np.diff(srt) == 0).any():
            return super().read_rows(fields, rows)  # duplicates: the general path
        in_order = bool((order == np.arange(len(order))).all())
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        starts, offsets = srt[np.r_[0, breaks]], np.r_[0, breaks]
        lengths = np.diff(np.r_[offsets, len(srt)])
        out = {}
        for field in fields:
            ds = self._dataset(field)
            if field == "object_id" or ds.dtype.kind in "SO":
                got = _id_str(np.concatenate([ds[a : a + n] for a, n in zip(starts, lengths, strict=True)]))
            else:
                got = np.empty((len(srt), *ds.shape[1:]), dtype=ds.dtype)
                for a, o, n in zip(starts, offsets, lengths, strict=True):
                    ds.read_direct(got, np.s_[a : a + n], np.s_[o : o + n])
                got = as_float32(got)
            if not in_order:
                res = np.empty_like(got)
                res[order] = got
                got = res
            out[field] = got
        return out

    def get(self, field, index):
        return self.read([field], int(index), int(index) + 1)[field][0]

    def get_image(self, index):
        return self.get("image", index)

    def get_object_id(self, index):
        return self.get("object_id", index)

    def column(self, field):
        return self.read([field], 0, self.n)[field]

    def rows_of(self, object_ids) -> np.ndarray:
        """Rows of `object_ids` (-1 where absent) in O(log N) each; the sorted index is built once."""
        if self._index is None:
            self._index = IdIndex(self.column("object_id"))
        return self._index.rows(object_ids)
