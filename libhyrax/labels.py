"""Label files: what the user said about some objects, as CSV that any tool writes.

    object_id,label,time
    SYN-00042,5,2026-11-20T10:31:02.114Z
    SYN-00107,no,

A label is a number from 0 (boring) to 5 (what I am looking for), or yes/no (5/0). `time` (ISO 8601) is
optional; other columns are ignored, so `top_anomalies.csv` or a search's `neighbors.csv` with a `label`
column added is a label file; a row with an empty label is an object not labelled yet. The map
(`visualize`) saves its labels in this form as `labels.csv`.

Reading several files (or one with repeats): the newest label of an object wins (by `time`; without one,
the later row, and a later file over an earlier one), and a warning says how many were overridden.
A label outside 0..5 or not a number is an error naming the file and line; ids that are not in the run
are counted in a warning and left out (`keep_known`).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from libhyrax.errors import UsageError

log = logging.getLogger("hyrax.labels")
LABEL_MAX = 5.0
WORDS = {"yes": LABEL_MAX, "y": LABEL_MAX, "true": LABEL_MAX, "interesting": LABEL_MAX,
         "no": 0.0, "n": 0.0, "false": 0.0, "boring": 0.0}
FILE_NAME = "labels.csv"


@dataclass
class Labels:
    """Labels of objects, one per object: `object_id` (str), `label` (0..5), `time` (ISO text, '' unknown)."""

    object_id: np.ndarray
    label: np.ndarray
    time: np.ndarray
    notes: dict = field(default_factory=dict)  # what reading them found: files, rows, overridden, unknown ids

    def __len__(self) -> int:
        return len(self.object_id)

    def interesting(self, positive_from: float) -> np.ndarray:
        return self.label >= positive_from

    def positives(self, positive_from: float) -> np.ndarray:
        """The ids labelled interesting (label >= positive_from)."""
        return self.object_id[self.interesting(positive_from)]

    def table(self) -> dict[str, np.ndarray]:
        return {"object_id": self.object_id, "label": self.label, "time": self.time}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.table())

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(str(i))}</td><td>{v:g}</td><td>{html.escape(str(t))}</td></tr>"
            for i, v, t in zip(self.object_id[:200], self.label[:200], self.time[:200], strict=True)
        )
        more = f"<p>({len(self) - 200} more)</p>" if len(self) > 200 else ""
        return f"<table><tr><th>object_id</th><th>label</th><th>time</th></tr>{rows}</table>{more}"

    def __repr__(self) -> str:
        return f"<{len(self)} labels, {int((self.label >= 3).sum())} of them 3 or more>"

    def save(self, path: str | os.PathLike) -> Path:
        from libhyrax.tables import write_table

        write_table(Path(path), self.table())
        return Path(path)


def read_labels(paths) -> Labels:
    """The labels of one or more files, merged (the newest per object wins). A UsageError for a file
    that is missing or has no object_id/label columns, a label that is not 0..5, or no labels at all."""
    paths = [Path(p).expanduser() for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    if not paths:
        raise UsageError("no label files given: a label file is a CSV with object_id and label columns")
    rows: list[tuple[str, float, str, int]] = []  # id, label, time, order
    blank = 0
    for path in paths:
        for line, (oid, text, when) in _rows(path):
            if not text.strip():
                blank += 1
                continue
            rows.append((oid, _label(text, path, line), _time(when, path, line), len(rows)))
    if not rows:
        raise UsageError(
            f"no labels in {', '.join(map(str, paths))}"
            + (f" ({blank} rows with an empty label)" if blank else "")
        )
    # newest last: rows with a time by time, rows without keep their order (and count as older than any time)
    rows.sort(key=lambda r: (r[2] != "", _sort_time(r[2]), r[3]))
    latest = {oid: (label, when) for oid, label, when, _ in rows}
    overridden = len(rows) - len(latest)
    if overridden:
        log.warning(
            "%d older label%s of objects labelled more than once overridden: the newest label of each "
            "object wins",
            overridden,
            "s" if overridden > 1 else "",
        )
    ids = np.array(list(latest), dtype=str)
    return Labels(
        ids,
        np.array([v[0] for v in latest.values()], np.float32),
        np.array([v[1] for v in latest.values()], dtype=str),
        {"files": [str(p) for p in paths], "rows": len(rows), "blank_rows": blank, "overridden": overridden},
    )


def keep_known(labels: Labels, known: np.ndarray) -> Labels:
    """Only the labels of objects in `known` (the run's ids); a warning counts (and names a few of) the
    others. No labels left is a UsageError."""
    from libhyrax.hdf5 import IdIndex

    found = IdIndex(np.asarray(known).astype(str)).rows(labels.object_id) >= 0
    unknown = labels.object_id[~found]
    notes = labels.notes | {"unknown_ids": len(unknown)}
    if len(unknown):
        log.warning(
            "%d labelled object%s not in this run (left out): %s%s",
            len(unknown),
            " is" if len(unknown) == 1 else "s are",
            ", ".join(unknown[:5]),
            ", ..." if len(unknown) > 5 else "",
        )
    if not found.any():
        raise UsageError(
            f"none of the {len(labels)} labelled objects is in this run (e.g. {unknown[0]}): are the "
            "labels for another data set?"
        )
    return Labels(labels.object_id[found], labels.label[found], labels.time[found], notes)


def _rows(path: Path):
    """(line number, object_id, label text, time text) of each data row. Read as Excel and the map save
    them: UTF-8 (with or without a byte-order mark) or UTF-16 ("Unicode text"), separated by commas,
    semicolons (a comma-decimal locale) or tabs."""
    if not path.is_file():
        raise UsageError(f"label file {path}: no such file")
    with open(path, "rb") as f:
        encoding = "utf-16" if f.read(2) in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        yield from _read_rows(path, encoding)
    except UnicodeDecodeError as e:
        raise UsageError(
            f"label file {path} is not UTF-8 or UTF-16 text (byte {e.start}); save it as CSV (UTF-8)"
        ) from None


def _read_rows(path: Path, encoding: str):
    with open(path, newline="", encoding=encoding) as f:
        first = f.readline()
        f.seek(0)
        delimiter = max(",;\t", key=first.count)  # the header's separator: it names at least two columns
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        if "object_id" not in header or "label" not in header:
            raise UsageError(
                f"label file {path} needs object_id and label columns; it has: "
                f"{', '.join(header) or 'nothing'}"
            )
        i_id, i_label = header.index("object_id"), header.index("label")
        i_time = header.index("time") if "time" in header else None
        for line, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            oid, label, when = (
                row[i].strip() if i is not None and i < len(row) else "" for i in (i_id, i_label, i_time)
            )
            if not oid:
                raise UsageError(f"{path}, line {line}: no object_id")
            yield line, (oid, label, when)


def _label(text: str, path: Path, line: int) -> float:
    word = WORDS.get(text.lower())
    if word is not None:
        return word
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"{path}, line {line}: label {text!r} is not a number; a label is a number from 0 "
            f"(boring) to {LABEL_MAX:g} (interesting), or yes/no"
        ) from None
    if not 0 <= value <= LABEL_MAX:  # NaN fails too
        raise UsageError(
            f"{path}, line {line}: label {text!r} is out of range; a label is a number from 0 "
            f"(boring) to {LABEL_MAX:g} (interesting), or yes/no"
        )
    return value


def _time(text: str, path: Path, line: int) -> str:
    if text:
        try:
            _sort_time(text)
        except ValueError:
            raise UsageError(
                f"{path}, line {line}: time {text!r} is not an ISO 8601 time (e.g. 2026-11-20T10:31:02Z)"
            ) from None
    return text


def _sort_time(text: str) -> float:
    if not text:
        return 0.0
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a person writes it
    return when.timestamp()
