"""Tables of objects (search neighbours, top anomalies): columns of numpy arrays, written as CSV that any
tool reads, printed as plain text, and the catalog columns of given objects looked up in a data group."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from libhyrax import atomic
from libhyrax.errors import HyraxError
from libhyrax.hdf5 import IdIndex

log = logging.getLogger("hyrax.tables")


def format_table(columns: dict[str, np.ndarray], max_rows: int = 100) -> str:
    """A plain-text table."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    rows = [[cell(columns[c][i]) for c in names] for i in range(min(n, max_rows))]
    widths = [max([len(name)] + [len(r[j]) for r in rows]) for j, name in enumerate(names)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(names, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write_table(path: Path, table: dict[str, np.ndarray]) -> None:
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(table))
        n = len(next(iter(table.values()))) if table else 0
        for i in range(n):
            w.writerow([cell(table[c][i]) for c in table])


def read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    cols = {name: [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])}
    return {name: _typed(name, values) for name, values in cols.items()}


ID_COLUMNS = ("query", "object_id")  # always text: "00042" is not 42, and ids overflow int64


def _typed(name: str, values: list[str]) -> np.ndarray:
    if name in ID_COLUMNS:
        return np.array(values, dtype=str)
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype)
        except (ValueError, OverflowError):
            continue
    return np.array(values, dtype=str)


def cell(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, bytes):
        return v.decode()
    return "" if v is None else str(v)


def catalog_rows(group, object_ids, rows=None) -> dict[str, np.ndarray]:
    """The catalog columns of `object_ids` from a data group ({} when there is none: the table then has
    ids and scores only). `rows`: their rows in the latents, which are the data group's rows (infer keeps
    input order), so only those rows are read; checked against the ids, with a lookup by id when they
    disagree."""
    if group is None:
        return {}
    try:
        wanted = np.asarray(object_ids).astype(str)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            ok = (rows >= 0) & (rows < len(group))
            if not ok.all() or not np.array_equal(_ids_at(group, rows), wanted):
                rows = None
        if rows is None:
            rows = IdIndex(group.object_ids()).rows(wanted)
        found = rows >= 0
        out = {}
        for column in group.catalog_columns():
            values = np.asarray(group.catalog(column, np.where(found, rows, 0)))
            if values.ndim != 1:
                continue
            if not found.all():
                values = values.astype(float if values.dtype.kind in "fiub" else object)
                values[~found] = np.nan if values.dtype.kind == "f" else None
            out[column] = values
        return out
    except HyraxError as e:
        log.warning("catalog columns left out: %s", e)
        return {}


def _ids_at(group, rows: np.ndarray) -> np.ndarray:
    """The object ids at `rows` of the group (only those rows are read)."""
    return np.asarray(group.read_rows(rows)["object_id"]).astype(str)
