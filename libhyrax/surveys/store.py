"""What `hyrax download` writes, and the rule that keeps it exact under Ctrl-C, SIGTERM and kill -9.

`cutouts.h5` (docs/hdf5-format.md) holds the fetched objects in catalogue order. `download.h5` records
every object and band of the catalogue (h5py; `download.csv` is the same written as text when a run ends):

    attrs        format="hyrax-download", format_version, provider, bands, committed (a prefix of the
                 catalogue whose objects have an outcome), cutout_rows (the rows of cutouts.h5 they hold),
                 next_request, complete
    /object_id   (n,) the catalogue's ids, in its order
    /row         (n,) the object's row in cutouts.h5, -1 for none
    /status      (n, bands) enum pending, ok, missing, rejected, failed
    /reason      (n, bands) why a cutout is not ok ("" when it is)
    /fetched_at  (n, bands) Unix time of the answer (NaN: none yet)
    /request     (n, bands) the number of the request that answered (-1: none)
    /attempts    (n, bands) tries of that request
    /http_status (n, bands) its last HTTP status (0: no answer)

An object is ok when every band is; missing when a band is (outside the footprint: not asked again),
rejected when an answer could not be used (not asked again), failed when a band may come next time
(5xx after the retries, a timeout, a dropped connection; `--resume` asks again).

The commit rule: answers come in request order, so objects reach an outcome in catalogue order. A batch
of them is appended to cutouts.h5 (flushed), then recorded in download.h5 with the new `committed` and
`cutout_rows` (flushed). A crash between the two leaves rows past `cutout_rows` in cutouts.h5: they are
dropped when the run resumes, and those objects fetched again. A failed object keeps a row (NaN in the
bands that failed) that a resumed run fills in place, so catalogue order never needs a rewrite; the run
completes only when none is left. Only if a resumed object then turns out missing or rejected is the
file compacted (copied without its row) before it completes.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np

from libhyrax import atomic
from libhyrax.data.hdf5_dataset import CutoutWriter
from libhyrax.errors import RunError
from libhyrax.hdf5 import as_id_bytes, id_dtype
from libhyrax.surveys.base import Fetched, Missing, Outcome, Rejected, Target
from libhyrax.surveys.catalog import Catalog

log = logging.getLogger("hyrax.download")

FORMAT, FORMAT_VERSION = "hyrax-download", 1
PENDING, OK, MISSING, REJECTED, FAILED = range(5)
STATUS_NAMES = ("pending", "ok", "missing", "rejected", "failed")
STATUS = h5py.enum_dtype(dict(zip(STATUS_NAMES, range(5), strict=True)), basetype="u1")
KIND = {Fetched: OK, Missing: MISSING, Rejected: REJECTED}  # anything else: FAILED
COMMIT_OBJECTS, COMMIT_SECONDS = 128, 2.0  # a kill loses at most this much work
CELLS = ("status", "reason", "fetched_at", "request", "attempts", "http_status")


def object_status(cells: np.ndarray) -> np.ndarray:
    """Objects' status from their bands' (n, bands): missing > rejected > failed > pending > ok."""
    out = np.full(len(cells), OK, dtype=np.uint8)
    for status in (PENDING, FAILED, REJECTED, MISSING):  # later wins
        out[(cells == status).any(axis=1)] = status
    return out


@dataclass
class _Open:
    """An object whose answers are coming in: its bands' outcomes so far."""

    target: Target
    cells: dict = field(default_factory=dict)  # band -> (Outcome, Answer)


class Store:
    """cutouts.h5 + download.h5 for one catalogue (or one shard of it), new or resumed."""

    def __init__(self, cutouts: Path, record: Path, catalog: Catalog, bands: list[str], size: int, *,
                 provider: str, pixel_scale: float | None = None, keep_fits: Path | None = None):
        self.cutouts_path, self.record_path, self.catalog = Path(cutouts), Path(record), catalog
        self.bands, self.size, self.n = list(bands), int(size), len(catalog)
        self.provider, self.pixel_scale, self.keep_fits = provider, pixel_scale, keep_fits
        self.id_length = max((len(i.encode("utf-8")) for i in catalog.ids), default=1)
        self.record = self._open_record()
        self.committed = int(self.record.attrs["committed"])
        self.next_request = int(self.record.attrs["next_request"])  # request numbers go on across resumes
        self.writer = self._open_cutouts(int(self.record.attrs["cutout_rows"]))
        self.asked: dict[int, Target] = {}  # targets handed out whose answers are not all in
        self.open: dict[int, _Open] = {}
        self.ready: list[_Open] = []
        self.last_commit = time.monotonic()
        self.counts = Counter()  # objects by status name, this run
        if keep_fits:
            keep_fits.mkdir(exist_ok=True)

    # --- opening, new or resumed ------------------------------------------------------------------

    def _open_record(self) -> h5py.File:
        path = self.record_path
        if path.exists():
            f = h5py.File(path, "a")
            if f.attrs.get("format") == FORMAT and self._same_catalogue(f):
                return f
            f.close()
            log.warning("%s is not the record of this catalogue and bands; starting it afresh", path.name)
        f = h5py.File(path, "w")
        n, c = self.n, len(self.bands)
        f.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "provider": self.provider,
                "bands": self.bands,
                "committed": 0,
                "cutout_rows": 0,
                "next_request": 0,
                "complete": False,
            }
        )
        rows = max(1, min(n, 4096))
        f.create_dataset("object_id", data=as_id_bytes(self.catalog.ids).astype(id_dtype(self.id_length)))
        f.create_dataset("row", data=np.full(n, -1, np.int64), chunks=(rows,))
        cell = {
            "status": (STATUS, PENDING),
            "reason": (h5py.string_dtype(), ""),
            "fetched_at": ("f8", np.nan),
            "request": ("i8", -1),
            "attempts": ("u1", 0),
            "http_status": ("i2", 0),
        }
        for name, (dtype, fill) in cell.items():
            f.create_dataset(name, shape=(n, c), dtype=dtype, chunks=(rows, c), fillvalue=fill)
        f.flush()
        return f

    def _same_catalogue(self, f: h5py.File) -> bool:
        return (
            list(f.attrs.get("bands", [])) == self.bands
            and f["object_id"].shape[0] == self.n
            and bool(np.array_equal(f["object_id"][:], as_id_bytes(self.catalog.ids)))
        )

    def _open_cutouts(self, rows: int) -> CutoutWriter | None:
        path = self.cutouts_path
        if self.record.attrs["complete"]:
            return None
        if _is_complete(path):  # a crash after cutouts.h5 was finished, before the record was: finish that
            if self.committed == self.n and not (self._object_status() == FAILED).any():
                self._finish_record()
                return None
            raise RunError(f"{path} is complete but {self.record_path.name} is not; start a new run")
        writer = CutoutWriter(
            path,
            (len(self.bands), self.size, self.size),
            self.bands,
            pixel_scale=self.pixel_scale,
            id_length=self.id_length,
            attrs={"provider": self.provider},
        )
        if writer.rows_written < rows:  # cutouts.h5 was lost or unreadable: start both again
            log.warning(
                "%s holds %d rows, its record %d; fetching everything again",
                path.name,
                writer.rows_written,
                rows,
            )
            self._reset_record()
        elif writer.rows_written > rows:  # appended, but not recorded before the crash: those come again
            writer.rows_written = rows
            writer.file.attrs["rows_written"] = rows
        return writer

    def _reset_record(self) -> None:
        f = self.record
        f.attrs.update({"committed": 0, "cutout_rows": 0})
        f["row"][:] = -1
        for name in CELLS:
            f[name][:] = f[name].fillvalue
        self.committed = 0

    # --- what is left to fetch -----------------------------------------------------------------------

    def _object_status(self, stop: int | None = None) -> np.ndarray:
        stop = self.committed if stop is None else stop
        return object_status(self.record["status"][:stop])

    def targets(self):
        """The objects (and their bands) still to fetch, in catalogue order: failed ones first, then every
        object after the committed prefix."""
        if self.writer is None:
            return
        cat, c = self.catalog, len(self.bands)
        failed = np.flatnonzero(self._object_status() == FAILED)
        status = (
            self.record["status"][: self.committed][failed] if len(failed) else np.zeros((0, c), np.uint8)
        )
        for i, cells in zip(failed, status, strict=True):
            yield self._ask(
                Target(
                    int(i),
                    str(cat.ids[i]),
                    float(cat.ra[i]),
                    float(cat.dec[i]),
                    tuple(int(b) for b in np.flatnonzero(cells != OK)),
                )
            )
        everything = tuple(range(c))
        for i in range(self.committed, self.n):
            yield self._ask(Target(i, str(cat.ids[i]), float(cat.ra[i]), float(cat.dec[i]), everything))

    def _ask(self, target: Target) -> Target:
        self.asked[target.index] = target
        return target

    def todo_objects(self) -> int:
        if self.writer is None:
            return 0
        return int((self._object_status() == FAILED).sum()) + self.n - self.committed

    # --- taking answers ---------------------------------------------------------------------------------

    def add(self, answer, outcomes: dict[tuple[int, int], Outcome]) -> int:
        """Take one answer's outcomes (libhyrax.surveys.fetch.Answer, Provider.outcomes); returns how many
        objects now have all their bands."""
        done, self.next_request = 0, max(self.next_request, answer.number + 1)
        for (i, b), outcome in outcomes.items():
            if self.keep_fits is None and isinstance(outcome, Fetched):
                outcome = Fetched(outcome.image)  # the FITS bytes are not kept: free them now
            obj = self.open.get(i)
            if obj is None:
                obj = self.open[i] = _Open(self.asked.pop(i))
            obj.cells[b] = (outcome, answer)
            if len(obj.cells) == len(obj.target.bands):
                self.ready.append(self.open.pop(i))
                done += 1
        if len(self.ready) >= COMMIT_OBJECTS or time.monotonic() - self.last_commit > COMMIT_SECONDS:
            self.commit()
        return done

    def commit(self) -> None:
        """Write the objects whose every band has an outcome: cutouts.h5 first, then the record."""
        ready, self.ready = sorted(self.ready, key=lambda o: o.target.index), []
        self.last_commit = time.monotonic()
        if not ready or self.writer is None:
            return
        old = [o for o in ready if o.target.index < self.committed]
        new = [o for o in ready if o.target.index >= self.committed]
        if new and [o.target.index for o in new] != list(range(self.committed, self.committed + len(new))):
            raise RunError("download: answers came out of catalogue order (a bug in Hyrax); --resume the run")
        cells = self._cells(ready, len(old))
        status = object_status(cells["status"])
        rows = self._write_cutouts(ready, old, new, status[len(old) :], cells)
        self._write_record(ready, cells, rows, len(old))
        self.counts.update(STATUS_NAMES[s] for s in status)

    def _cells(self, ready: list[_Open], n_old: int) -> dict[str, np.ndarray]:
        """The record's per-band columns for `ready` (resumed objects keep what their other bands had)."""
        n, c = len(ready), len(self.bands)
        out = {
            "status": np.full((n, c), PENDING, np.uint8),
            "reason": np.full((n, c), "", dtype=object),
            "fetched_at": np.full((n, c), np.nan),
            "request": np.full((n, c), -1, np.int64),
            "attempts": np.zeros((n, c), np.uint8),
            "http_status": np.zeros((n, c), np.int16),
        }
        if n_old:
            idx = [o.target.index for o in ready[:n_old]]
            for name in CELLS:
                out[name][:n_old] = self.record[name][idx]
        for k, obj in enumerate(ready):
            for b, (outcome, answer) in obj.cells.items():
                out["status"][k, b] = KIND.get(type(outcome), FAILED)
                out["reason"][k, b] = "" if isinstance(outcome, Fetched) else outcome.reason
                out["fetched_at"][k, b] = answer.finished
                out["request"][k, b] = answer.number
                out["attempts"][k, b] = min(answer.attempts, 255)
                out["http_status"][k, b] = answer.status
            if self.keep_fits is not None:
                self._keep(obj)
        return out

    def _write_cutouts(self, ready, old, new, new_status, cells) -> np.ndarray:
        """Rows of cutouts.h5 for `ready` (-1: none): resumed objects' bands filled in place, new objects
        that are ok or failed appended (failed bands NaN)."""
        rows = np.full(len(ready), -1, np.int64)
        images = self.writer.file["images"]
        if old:
            rows[: len(old)] = self.record["row"][[o.target.index for o in old]]
            for k, obj in enumerate(old):
                for b, (outcome, _) in obj.cells.items():
                    if isinstance(outcome, Fetched):
                        images[rows[k], b] = outcome.image
        keep = [k for k, s in enumerate(new_status) if s in (OK, FAILED)]
        if keep:
            stack = np.full((len(keep), len(self.bands), self.size, self.size), np.nan, np.float32)
            for j, k in enumerate(keep):
                for b, (outcome, _) in new[k].cells.items():
                    if isinstance(outcome, Fetched):
                        stack[j, b] = outcome.image
            at = np.array([new[k].target.index for k in keep])
            first = self.writer.rows_written
            self.writer.append(
                self.catalog.ids[at], stack, catalog={k: v[at] for k, v in self.catalog.columns.items()}
            )
            rows[len(old) + np.array(keep)] = np.arange(first, first + len(keep))
        elif old:
            self.writer.file.flush()
        return rows

    def _write_record(self, ready, cells, rows, n_old: int) -> None:
        f, idx = self.record, [o.target.index for o in ready]
        if n_old:
            for name in CELLS:
                f[name][idx[:n_old]] = cells[name][:n_old]
        if len(idx) > n_old:
            a, b = idx[n_old], idx[-1] + 1
            for name in CELLS:
                f[name][a:b] = cells[name][n_old:]
            f["row"][a:b] = rows[n_old:]
            self.committed = b
        f.attrs.update(
            {
                "committed": self.committed,
                "cutout_rows": self.writer.rows_written,
                "next_request": self.next_request,
            }
        )
        f.flush()

    def _keep(self, obj: _Open) -> None:
        """--keep-fits: each FITS file as the service sent it, `<id>-<band>.fits`, or `<id>.fits` for a
        cube of several bands. The id is URL-quoted: it can't name another folder."""
        files: dict[int, tuple[bytes, list[int]]] = {}
        for b, (outcome, _) in sorted(obj.cells.items()):
            if isinstance(outcome, Fetched) and outcome.fits is not None:
                files.setdefault(id(outcome.fits), (outcome.fits, []))[1].append(b)
        name = quote(obj.target.object_id, safe="")
        for fits, bands in files.values():
            stem = name if len(bands) > 1 else f"{name}-{quote(self.bands[bands[0]], safe='')}"
            atomic.write_bytes(self.keep_fits / f"{stem}.fits", fits)

    # --- ending --------------------------------------------------------------------------------------

    def finish(self) -> dict:
        """After the last answer: complete both files when no object is failed (compacting cutouts.h5 if a
        resumed object lost its row); returns the counts of objects by status and the top reasons."""
        self.commit()
        if self.writer is not None and self.committed == self.n:
            status = self._object_status()
            if not (status == FAILED).any() and (status == OK).any():
                if (self.record["row"][:][status != OK] >= 0).any():
                    self._compact(status)
                else:
                    self.writer.close()
                self.writer = None
                self._finish_record()
        return self.summary()

    def _compact(self, status: np.ndarray) -> None:
        keep = np.flatnonzero(status == OK)
        log.info(
            "%s: %d objects with a row turned out missing or rejected; writing it without them",
            self.cutouts_path.name,
            int((self.record["row"][:] >= 0).sum()) - len(keep),
        )
        old_rows, images = self.record["row"][:][keep], self.writer.file["images"]
        # replaced when complete: a crash from then on finishes the record on resume
        with atomic.replacing(self.cutouts_path) as tmp:
            with CutoutWriter(
                tmp,
                images.shape[1:],
                self.bands,
                n_rows=len(keep),
                pixel_scale=self.pixel_scale,
                id_length=self.id_length,
                attrs={"provider": self.provider},
            ) as out:
                for a in range(0, len(keep), COMMIT_OBJECTS):
                    at = keep[a : a + COMMIT_OBJECTS]
                    out.append(
                        self.catalog.ids[at],
                        images[old_rows[a : a + COMMIT_OBJECTS]],
                        catalog={k: v[at] for k, v in self.catalog.columns.items()},
                    )
            self.writer.close(complete=False)

    def _finish_record(self) -> None:
        """cutouts.h5 is complete: its rows are the ok objects, in order."""
        f = self.record
        status = self._object_status(self.n)
        row = np.full(self.n, -1, np.int64)
        row[status == OK] = np.arange(int((status == OK).sum()))
        f["row"][:] = row
        f.attrs["complete"] = True
        f.flush()

    def summary(self) -> dict:
        """Objects by status (pending: not asked yet), and the five commonest reasons a band is not ok."""
        counts, reasons = Counter(), Counter()
        for a in range(0, self.n, 65536):
            cells = self.record["status"][a : a + 65536]
            counts.update(object_status(cells).tolist())
            rows = np.flatnonzero(((cells != OK) & (cells != PENDING)).any(axis=1))
            if len(rows):
                got = self.record["reason"][a + rows[0] : a + rows[-1] + 1][rows - rows[0]]
                reasons.update(r.decode() if isinstance(r, bytes) else r for r in got.ravel() if r)
        return {
            "objects": self.n,
            **{name: counts[s] for s, name in enumerate(STATUS_NAMES)},
            "reasons": dict(reasons.most_common(5)),
        }

    def close(self) -> None:
        """Write what is ready, and leave both files to resume from (nothing if finished)."""
        try:
            if self.writer is not None:
                self.commit()
        finally:
            if self.writer is not None:
                self.writer.close(complete=False)
                self.writer = None
            if self.record.id.valid:
                self.record.close()

    def write_csv(self, path: Path) -> None:
        """download.csv: the record as text, one line per object and band (written whole, atomically)."""
        with (
            atomic.replacing(path) as tmp,
            h5py.File(self.record_path, "r") as f,
            open(tmp, "w", newline="", encoding="utf-8") as fh,
        ):
            out = csv.writer(fh)
            out.writerow(
                ["object_id", "band", "status", "reason", "http_status", "attempts", "request", "fetched_at"]
            )
            bands = np.array(self.bands)
            for a in range(0, self.n, 65536):
                b = min(a + 65536, self.n)
                cols = {name: f[name][a:b] for name in ("object_id", *CELLS)}
                ids = np.char.decode(cols["object_id"].astype("S"), "utf-8")
                for k in range(b - a):
                    for j, band in enumerate(bands):
                        t = cols["fetched_at"][k, j]
                        when = (
                            dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
                            if t == t
                            else ""
                        )
                        reason = cols["reason"][k, j]
                        out.writerow(
                            [
                                ids[k],
                                band,
                                STATUS_NAMES[cols["status"][k, j]],
                                reason.decode() if isinstance(reason, bytes) else reason,
                                cols["http_status"][k, j],
                                cols["attempts"][k, j],
                                cols["request"][k, j],
                                when,
                            ]
                        )


def _is_complete(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete"))
    except (OSError, KeyError):
        return False
