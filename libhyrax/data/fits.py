"""FITS cutouts: a folder with one FITS file per object and band, plus a catalog in any table format
astropy reads (columns object_id, filter, filename; ra, dec and anything else are carried along).

A folder the reference Hyrax's `hyrax download` made is read as it is: its `manifest.fits` (a row per object
and band: object_id, filter, filename, tract, ra, dec, dim, ...; files named
`<object_id>_<type>_<ra>_<dec>_<tract>_<filter>.fits`) is the catalog, a row whose download failed
(filename "Attempted" or empty) makes its object rejected, and HSC bands default to G, R, I, Z, Y order.

`FitsImageDataset` reads such a folder directly; `hyrax prepare` turns it into one HDF5 cutout file,
skipping bad objects (listed in rejected.csv). Both use the helpers here.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from libhyrax.data.base import Dataset
from libhyrax.data.transforms import center_crop
from libhyrax.errors import DataError, UsageError, did_you_mean

log = logging.getLogger("hyrax.data")
TABLE_SUFFIXES = (
    ".fits",
    ".fit",
    ".csv",
    ".ecsv",
    ".parquet",
    ".hdf5",
    ".h5",
    ".txt",
    ".dat",
    ".vot",
    ".xml",
)
MANIFEST = "manifest.fits"  # the reference Hyrax's download inventory
FAILED_DOWNLOAD = "Attempted"  # a manifest's filename for a download that did not finish
# a manifest row describes one file; these columns describe the object (carried into the cutout file)
MANIFEST_OBJECT_COLUMNS = ("ra", "dec", "tract")
HSC_BANDS = ("HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y")  # by wavelength, as the reference downloads them


class BadCutout(Exception):
    """One object can't be used: `reason` says why (written to rejected.csv)."""

    def __init__(self, reason: str, band: str = "", filename: str = ""):
        super().__init__(reason)
        self.reason, self.band, self.filename = reason, band, filename


def read_table(path, text_columns=()) -> dict[str, np.ndarray]:
    """Every column of a table file astropy can read, as numpy arrays (strings as str). In a CSV file the
    `text_columns` are read as text, not numbers (an id "000123" keeps its zeros)."""
    from astropy.io import ascii
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise UsageError(f"catalog {path} does not exist; check the catalog path")
    try:
        if path.suffix == ".csv":
            table = Table.read(
                path, format="ascii.csv", converters={c: [ascii.convert_numpy(str)] for c in text_columns}
            )
        else:
            table = Table.read(path)
    except Exception as e:
        raise DataError(
            f"catalog {path} can't be read as a table ({type(e).__name__}: {e}); astropy reads "
            "FITS tables, CSV, ECSV, Parquet, VOTable"
        ) from None
    out = {}
    for name in table.colnames:
        col = np.asarray(table[name])
        if col.dtype.kind == "S":
            col = np.char.decode(col, "utf-8")
        if np.ma.isMaskedArray(table[name]) and col.dtype.kind in "f":
            col = np.ma.filled(table[name], np.nan)
        out[name] = np.char.strip(col) if col.dtype.kind == "U" else col
    return out


def find_catalog(folder: Path, catalog) -> Path:
    if catalog:
        path = Path(catalog).expanduser()
        return path if path.is_absolute() or path.exists() else folder / path
    found = [p for p in sorted(folder.glob("catalog.*")) if p.suffix.lower() in TABLE_SUFFIXES]
    if not found and (folder / MANIFEST).is_file():
        return folder / MANIFEST
    if len(found) != 1:
        raise DataError(
            f"{folder}: {'no' if not found else 'several'} catalog.* files (and no {MANIFEST}); name "
            "the catalog with prepare.catalog (or dataset_config catalog)"
        )
    return found[0]


def is_manifest(path) -> bool:
    return Path(path).name == MANIFEST


def manifest_columns(columns: dict[str, np.ndarray], file_col: str = "filename") -> dict[str, np.ndarray]:
    """A reference download manifest as a catalog: its per-object columns kept, its per-file ones (dim, sw,
    sh, type, rerun, ...) left out, and a failed try dropped where the same file was downloaded later."""
    keep = {
        k: v for k, v in columns.items() if k in ("object_id", "filter", file_col, *MANIFEST_OBJECT_COLUMNS)
    }
    if not {"object_id", "filter", file_col} <= set(keep):
        return keep  # group_catalog names the missing column
    failed = np.isin(np.char.strip(keep[file_col].astype(str)), (FAILED_DOWNLOAD, ""))
    file_key = np.char.add(np.char.add(keep["object_id"].astype(str), "\0"), keep["filter"].astype(str))
    retried = failed & np.isin(file_key, file_key[~failed])
    return {k: np.asarray(v)[~retried] for k, v in keep.items()}


def group_catalog(
    columns: dict[str, np.ndarray],
    id_col: str,
    filter_col: str,
    file_col: str,
    bands=None,
    where: str = "catalog",
):
    """One row per object: (object ids, band names, files (n_objects, n_bands) with "" where a band is
    missing, other columns' values at each object's first row). Objects keep their catalog order."""
    if filter_col not in columns and bands and len(bands) == 1 and id_col in columns:
        # a single-band catalogue: every row is a cutout in the one band prepare.bands names
        columns = {**columns, filter_col: np.full(len(columns[id_col]), str(bands[0]))}
    for col in (id_col, filter_col, file_col):
        if col == filter_col and col not in columns and col not in (id_col, file_col):
            raise DataError(
                f"{where} has no column {col!r}{did_you_mean(col, columns)} Columns: "
                f"{', '.join(columns)}; set prepare.filter_column to the band column, or for a "
                'single-band catalogue name its band: prepare.bands = ["I"]'
            )
        if col not in columns:
            raise DataError(
                f"{where} has no column {col!r}{did_you_mean(col, columns)} Columns: "
                f"{', '.join(columns)}; set prepare.{_key(col, id_col, filter_col)} to the right name"
            )
    ids_raw = columns[id_col].astype(str)
    filters = columns[filter_col].astype(str)
    files = columns[file_col].astype(str)
    band_list = [str(b) for b in bands] if bands else default_bands(filters)
    uniq, first, inverse = np.unique(ids_raw, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # catalog order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    obj = rank[inverse]
    band_sorted = np.argsort(band_list)
    pos = np.searchsorted(np.asarray(band_list)[band_sorted], filters)
    pos_c = np.minimum(pos, len(band_list) - 1)
    known = np.asarray(band_list)[band_sorted][pos_c] == filters
    table = np.full((len(uniq), len(band_list)), "", dtype=object)
    table[obj[known], band_sorted[pos_c[known]]] = files[known]
    extra = {k: v[first[order]] for k, v in columns.items() if k not in (id_col, filter_col, file_col)}
    return uniq[order], band_list, table, extra


def default_bands(filters: np.ndarray) -> list[str]:
    """Sorted band names; HSC bands (a reference download) in wavelength order, G R I Z Y."""
    names = set(filters.tolist())
    if names and names <= set(HSC_BANDS):
        return [b for b in HSC_BANDS if b in names]
    return sorted(names)


def _key(col, id_col, filter_col) -> str:
    return (
        "object_id_column" if col == id_col else "filter_column" if col == filter_col else "filename_column"
    )


def read_fits_image(path: Path) -> np.ndarray:
    """The first 2-D image in a FITS file, as float32; BadCutout when it is missing or unreadable."""
    from astropy.io import fits

    if not path.exists():
        raise BadCutout("file not found", filename=str(path))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*truncated")  # astropy only warns: reject the file
            return _first_image(fits, path)
    except BadCutout:
        raise
    except Exception as e:
        raise BadCutout(
            f"unreadable FITS file ({type(e).__name__}: {str(e)[:120]})", filename=str(path)
        ) from None


def _first_image(fits, path: Path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            data = getattr(hdu, "data", None)
            if data is not None and getattr(data, "ndim", 0) >= 2:
                data = np.asarray(data, dtype=np.float32)
                data = (
                    data.reshape(data.shape[-2:]) if data.ndim > 2 and np.prod(data.shape[:-2]) == 1 else data
                )
                if data.ndim != 2:
                    raise BadCutout(f"image has shape {data.shape}, not 2-D", filename=str(path))
                return data
    raise BadCutout("no image data in the FITS file", filename=str(path))


def stack_bands(files, bands, folder: Path, size: int | None, pad_smaller: bool = False) -> np.ndarray:
    """(bands, size, size) from one file per band, centre-cropped to a common size (`size`, or the
    smallest band when None); with `pad_smaller`, a side shorter than `size` is zero-padded (centred)
    instead of the cutout being rejected. BadCutout names the band and file that failed."""
    planes = []
    for band, name in zip(bands, files, strict=True):
        if not name:
            raise BadCutout("missing band", band=band)
        if name == FAILED_DOWNLOAD:
            raise BadCutout(f"download failed ({MANIFEST} says {FAILED_DOWNLOAD!r})", band=band)
        path = Path(name) if Path(name).is_absolute() else folder / name
        try:
            planes.append(read_fits_image(path))
        except BadCutout as e:
            raise BadCutout(e.reason, band, name) from None
    target = size or min(min(p.shape) for p in planes)
    if pad_smaller:
        planes = [pad_to(p, target) for p in planes]
    for band, name, p in zip(bands, files, planes, strict=True):
        if min(p.shape) < target:
            raise BadCutout(
                f"cutout {p.shape[0]}x{p.shape[1]} is smaller than {target}x{target}; set "
                f"prepare.cutout_size = {min(p.shape)}, or prepare.pad_smaller = true",
                band,
                name,
            )
    cut = [center_crop(p, target) for p in planes]
    for band, name, p in zip(bands, files, cut, strict=True):
        if not np.isfinite(p).any():
            # nothing to learn from, and after NaN replacement it would look like the most normal object
            raise BadCutout("every pixel is NaN or inf", band, name)
    return np.stack(cut)


def pad_to(plane: np.ndarray, size: int) -> np.ndarray:
    """`plane` with each side shorter than `size` zero-padded to it, centred (longer sides untouched)."""
    extra = [max(size - n, 0) for n in plane.shape]
    if not any(extra):
        return plane
    return np.pad(plane, [(e // 2, e - e // 2) for e in extra])


class FitsImageDataset(Dataset):
    """A folder of FITS cutouts (data_location) plus its catalog. dataset_config: catalog (default: the
    folder's catalog.*), object_id_column, filter_column, filename_column, bands, cutout_size. Objects
    with a missing band are left out (counted in the log); an unreadable file is an error when read:
    run `hyrax prepare` to skip bad files once and read a fast HDF5 file instead."""

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location)
        if not data_location or not Path(data_location).is_dir():
            raise DataError(
                f"FitsImageDataset needs data_location: a folder of FITS files, not {data_location!r}"
            )
        self.folder = Path(data_location)
        c = self.dataset_config
        columns = self.catalog_table()
        ids, self.bands, files, extra = group_catalog(
            columns,
            c.get("object_id_column", "object_id"),
            c.get("filter_column", "filter"),
            c.get("filename_column", "filename"),
            c.get("bands") or None,
            where=str(self.catalog_path),
        )
        complete = ((files != "") & (files != FAILED_DOWNLOAD)).all(axis=1)
        if not complete.all():
            log.warning(
                "%s: %d objects lack a band (or its download failed) and are left out",
                self.catalog_path,
                int((~complete).sum()),
            )
        self.ids, self.files = ids[complete], files[complete]
        self.extra = {k: v[complete] for k, v in extra.items()}
        self.size = int(c.get("cutout_size") or 0) or None
        if self.size is None and len(self.ids):
            self.size = int(min(read_fits_image(self._path(self.files[0, 0])).shape))

    def catalog_table(self) -> dict[str, np.ndarray]:
        """The catalog's columns (a row per object and band); sets `catalog_path`."""
        self.catalog_path = find_catalog(self.folder, self.dataset_config.get("catalog"))
        columns = read_table(self.catalog_path)
        if is_manifest(self.catalog_path):
            columns = manifest_columns(columns, self.dataset_config.get("filename_column", "filename"))
        return columns

    def _path(self, name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else self.folder / name

    def __len__(self):
        return len(self.ids)

    @property
    def fields(self):
        return ["image", "object_id", *self.extra]

    def catalog_columns(self):
        return list(self.extra)

    def get_image(self, index):
        try:
            return stack_bands(self.files[index], self.bands, self.folder, self.size)
        except BadCutout as e:
            raise DataError(
                f"{self.folder}: object {self.ids[index]}, band {e.band} ({e.filename}): {e.reason}; "
                "fix or remove it, or run `hyrax prepare` to skip bad objects"
            ) from None

    def get_object_id(self, index):
        return str(self.ids[index])

    def get(self, field, index):
        if field in self.extra:
            return self.extra[field][index]
        return super().get(field, index)

    def read(self, fields, start, stop):
        out = {f: self.extra[f][start:stop] for f in fields if f in self.extra}
        rest = [f for f in fields if f not in self.extra]
        return out | (super().read(rest, start, stop) if rest else {})


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A cutout (bands, H, W) or a stack (N, bands, H, W) from .npy or FITS."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"image file {p} does not exist")
    if p.suffix == ".npy":
        img = np.load(p)
    elif p.suffix.lower() in (".fits", ".fit", ".fz") or p.name.lower().endswith(".fits.gz"):
        from astropy.io import fits

        img = fits.getdata(p)
    else:
        raise UsageError(f"image file {p}: use a .npy array or a FITS file (bands x height x width)")
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    return img[None] if img.ndim == 3 else img
