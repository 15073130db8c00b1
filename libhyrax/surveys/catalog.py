"""The catalogue `hyrax download` fetches: one row per object with an id and a position in degrees, in any
table format astropy reads (FITS, CSV, ECSV, Parquet, VOTable). Its other columns are carried into the
cutout file's /catalog, with ra and dec under those names.

Checked before anything is fetched, each a DataError naming the rows: duplicate or empty ids, missing or
non-finite coordinates, a declination outside -90..90.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from libhyrax.errors import UsageError, did_you_mean

log = logging.getLogger("hyrax.download")
SHOWN = 5  # rows named in a message


@dataclass
class Catalog:
    path: Path
    ids: np.ndarray  # str
    ra: np.ndarray  # float64 degrees, 0..360
    dec: np.ndarray
    columns: dict[str, np.ndarray]  # what goes into /catalog: ra, dec and the table's other 1-D columns

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, start: int, stop: int) -> Catalog:
        return Catalog(self.path, self.ids[start:stop], self.ra[start:stop], self.dec[start:stop],
                       {k: v[start:stop] for k, v in self.columns.items()})


def read_catalog(d: dict) -> Catalog:
    """The catalogue `[download]` names (`catalog`, `id_column`, `ra_column`, `dec_column`), checked."""
    from libhyrax.data.fits import read_table

    if not d["catalog"]:
        raise UsageError(
            "download.catalog is not set: name a table of objects (id, ra, dec in degrees), e.g. "
            "--set download.catalog=objects.csv"
        )
    path = Path(d["catalog"]).expanduser()
    table = read_table(path)
    for key in ("id_column", "ra_column", "dec_column"):
        if d[key] not in table:
            raise UsageError(
                f"catalogue {path} has no column {d[key]!r}{did_you_mean(d[key], table) or ';'} its "
                f"columns: {', '.join(table)}; set download.{key} to the right name"
            )
    ids = np.asarray(table[d["id_column"]]).astype(str)
    ra = _degrees(table[d["ra_column"]], d["ra_column"], path)
    dec = _degrees(table[d["dec_column"]], d["dec_column"], path)
    _check(path, ids, ra, dec)
    columns = {"ra": ra % 360.0, "dec": dec}
    for name, col in table.items():
        if name in (d["id_column"], d["ra_column"], d["dec_column"]) or name in columns:
            continue
        if np.ndim(col) != 1 or col.dtype.kind not in "biufUS":
            log.info(
                "catalogue column %s (%s, shape %s) is not carried into /catalog", name, col.dtype, col.shape
            )
            continue
        columns[name] = col
    return Catalog(path, ids, columns["ra"], dec, columns)


def _degrees(values, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(
            np.ma.filled(values, np.nan) if np.ma.isMaskedArray(values) else values, dtype=np.float64
        )
    except (TypeError, ValueError):
        raise UsageError(f"catalogue {path}: column {name!r} is not numbers (degrees)") from None


def _check(path: Path, ids: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> None:
    if not len(ids):
        raise UsageError(f"catalogue {path} has no rows")
    empty = np.flatnonzero(np.char.str_len(np.char.strip(ids)) == 0)
    if len(empty):
        raise UsageError(
            f"catalogue {path}: {len(empty)} rows have no id (rows {_rows(empty)}); every object needs one"
        )
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise UsageError(
            f"catalogue {path}: {len(dup)} ids appear more than once ({', '.join(dup[:SHOWN])}"
            f"{', ...' if len(dup) > SHOWN else ''}); ids must be unique: drop the duplicate rows"
        )
    bad = np.flatnonzero(~np.isfinite(ra) | ~np.isfinite(dec))
    if len(bad):
        raise UsageError(
            f"catalogue {path}: {len(bad)} rows have a missing or non-finite ra/dec (ids "
            f"{', '.join(ids[bad[:SHOWN]])}{', ...' if len(bad) > SHOWN else ''}); fix or drop them"
        )
    bad = np.flatnonzero(np.abs(dec) > 90)
    if len(bad):
        raise UsageError(
            f"catalogue {path}: {len(bad)} rows have a declination outside -90..90 (ids "
            f"{', '.join(ids[bad[:SHOWN]])}); are ra and dec in degrees, and the right columns?"
        )


def _rows(rows: np.ndarray) -> str:
    return ", ".join(str(r) for r in rows[:SHOWN]) + (", ..." if len(rows) > SHOWN else "")
