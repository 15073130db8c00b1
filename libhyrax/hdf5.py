"""Array files: the HDF5 layout every stage's output shares (see docs/hdf5-format.md).

    /object_id        (N,) UTF-8 strings (fixed length), in the order of the input
    /<name>           (N, ...) arrays of the same length and order: /latent, /embedding, /score, ...
    attrs: format = "hyrax-arrays", format_version, rows_written, complete, plus stage attributes

Writing streams into preallocated, chunked datasets and records `rows_written` after each batch, so an
interrupted write resumes where it stopped (`ArrayWriter`; `BufferedWriter` when the batches are small and
many, as in `infer`). The count is written only once the rows it counts are flushed, a write that fails (a
full disk) is an error that leaves the file unfinished, and a resume keeps only the rows whose bytes are
in the file (`rows_on_disk`): an attribute alone is never trusted. A result written by N shards is
`<stem>.shard-IIII-of-NNNN.h5` files plus, once all are complete, `<stem>.h5`: a virtual dataset over
them, read in input order without copying.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from libhyrax import atomic
from libhyrax.errors import DataError, HyraxError, RunError

log = logging.getLogger("hyrax.hdf5")

FORMAT, FORMAT_VERSION = "hyrax-arrays", 1
CHUNK_BYTES = 1 << 20  # ~1 MiB chunks: contiguous batch reads touch few chunks
FLUSH_BYTES, FLUSH_S = 4 << 20, 10.0  # BufferedWriter writes blocks of about this size, or this often
SHARD_RE = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d{4})-of-(?P<n>\d{4})\.h5$")


def id_dtype(length: int) -> np.dtype:
    return h5py.string_dtype("utf-8", int(max(length, 1)))


def as_id_bytes(ids) -> np.ndarray:
    """Object ids as a numpy bytes array (UTF-8), the form they are stored and compared in."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        return ids
    if ids.dtype.kind == "U":
        try:
            return ids.astype("S")  # ASCII ids, the usual case: a cast, about 2x faster than encoding
        except UnicodeEncodeError:
            return np.char.encode(ids, "utf-8")
    if ids.dtype.kind in "iu":
        return ids.astype(str).astype("S")
    # object arrays: h5py gives variable-length strings as bytes objects; keep them as they are
    return np.array([i if isinstance(i, bytes) else str(i).encode("utf-8") for i in ids], dtype="S")


def check_id_width(ids: np.ndarray, ds: h5py.Dataset, where: str, error=DataError) -> None:
    """Object ids (bytes) must fit the fixed width of the file's /object_id. A wide numpy dtype may hold
    short ids (numpy pads): only the ids' real lengths count."""
    width = ds.dtype.itemsize
    if len(ids) and ids.dtype.itemsize > width and int(np.char.str_len(ids).max()) > width:
        raise error(f"object ids longer than {width} bytes can't be stored in {where}")


def chunk_rows(row_shape: tuple[int, ...], dtype) -> int:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize or 1
    return int(max(1, min(65536, CHUNK_BYTES // max(row_bytes, 1))))


def reopen_unfinished(path: Path, fmt: str, fits=None) -> h5py.File | None:
    """An unfinished file of format `fmt` (no `complete` attribute yet), opened to resume writing after its
    `rows_written`; None when there is none to resume: no file, a finished one, another format, one that
    `fits(file)` rejects, or one a writer killed in the middle of a metadata write left unreadable (logged;
    the caller writes it again from the start). The one resume rule of ArrayWriter and CutoutWriter.

    A file another process holds open for writing is never taken for a damaged one: that is an error."""
    if not path.exists():
        return None
    try:
        f = h5py.File(path, "a")
    except OSError as e:
        if "unable to lock file" in str(e).lower() or getattr(e, "errno", None) in (11, 35):
            raise RunError(f"{path} is open for writing in another process; wait for it to end, or stop it, "
                           "before writing this file") from None
        log.warning("%s can't be reopened (%s); writing it again from the start", path.name, e)
        return None
    try:
        if f.attrs.get("format") == fmt and not f.attrs.get("complete") and (fits is None or fits(f)):
            _keep_rows_on_disk(f, path)
            return f
    except (OSError, RuntimeError) as e:  # its metadata half-written (a full disk): nothing in it to trust
        f.close()
        log.warning("%s can't be read (%s); writing it again from the start", path.name, e)
        return None
    except BaseException:
        if f.id.valid:
            f.close()
        raise
    f.close()
    return None


def rows_on_disk(f: h5py.File, rows: int) -> int:
    """How many of the first `rows` rows of every chunked array of `f` are really in the file: each chunk
    they lie in allocated and, where the file system tells (SEEK_HOLE), none of its bytes a hole. A disk that
    filled up mid-write can leave a file whose attributes count rows its data never reached (a sparse
    stretch that reads back as zeros)."""
    arrays: list[h5py.Dataset] = []
    f.visititems(lambda _, v: arrays.append(v) if isinstance(v, h5py.Dataset) and v.chunks else None)
    if not arrays or rows <= 0:
        return max(rows, 0)
    fd = os.open(f.filename, os.O_RDONLY)
    try:
        return min(_rows_in_chunks(ds, rows, fd) for ds in arrays)
    finally:
        os.close(fd)


def _rows_in_chunks(ds: h5py.Dataset, rows: int, fd: int) -> int:
    """The rows of `ds` before its first chunk that is missing or has a hole, up to `rows`."""
    step = ds.chunks[0]
    where: dict[int, tuple[int, int]] = {}
    ds.id.chunk_iter(lambda c: where.__setitem__(c.chunk_offset[0], (c.byte_offset, c.size)))
    for start in range(0, rows, step):
        if start not in where or _has_hole(fd, *where[start]):
            return start
    return rows


def _has_hole(fd: int, offset: int, size: int) -> bool:
    try:
        data_from = os.lseek(fd, offset, os.SEEK_DATA)
        return data_from != offset or os.lseek(fd, offset, os.SEEK_HOLE) < offset + size
    except OSError as e:  # ENXIO: nothing but hole from offset on; EINVAL: the file system can't tell
        return e.errno == errno.ENXIO


def _keep_rows_on_disk(f: h5py.File, path: Path) -> None:
    """Lower an unfinished file's `rows_written` to the rows really in it (see rows_on_disk)."""
    said = int(f.attrs.get("rows_written", 0))
    real = rows_on_disk(f, said)
    if real < said:
        log.warning("%s says %d rows were written but only %d are in the file; resuming after row %d",
                    path.name, said, real, real)
        f.attrs["rows_written"] = real


def write_failed(f: h5py.File, path: Path, error: BaseException) -> RunError:
    """Close `f` after a write to it failed, writing nothing more, and return the error to raise.

    HDF5 retries the failed writes when the file is closed and, failing again, leaves its cache so that the
    next close (at the latest, at exit) crashes the process with a segfault. So the file's descriptor is
    pointed at /dev/null first: the file on disk stays as its last successful flush left it, unfinished,
    for a resume to check and continue."""
    if f.id.valid:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, f.id.get_vfd_handle())
            os.close(null)
        except Exception:  # noqa: BLE001  (a file HDF5 has already let go of)
            pass
        try:
            f.close()
        except Exception:  # noqa: BLE001  (its writes now go nowhere; what is left to fail doesn't matter)
            pass
    code = getattr(error, "errno", None) or _hdf5_errno(str(error))
    reason = os.strerror(code) if code else str(error)
    hint = f"; free some space in {path.parent.parent}, then resume the run" if code in FULL_ERRNOS else ""
    return RunError(f"writing {path.name} failed: {reason}{hint}")


def _hdf5_errno(message: str) -> int | None:
    """The errno in HDF5's message ("... errno = 28, error message = ..."): h5py raises a RuntimeError."""
    m = re.search(r"errno = (\d+)", message)
    return int(m[1]) if m else None


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class ArrayWriter:
    """Stream rows into `path`: `append(object_id, latent=..., recon_error=...)`, then `close()`.

    Every batch must carry as many ids as rows of each array, and `close()` checks the total equals
    `n_rows`, so ids and arrays can't drift apart. Reopening an incomplete file resumes after its last
    written row (`rows_written`).
    """

    def __init__(self, path: str | os.PathLike, n_rows: int, columns: dict[str, tuple[tuple[int, ...], str]],
                 id_length: int = 64, attrs: dict | None = None):
        self.path, self.n_rows = Path(path), int(n_rows)
        self.file = reopen_unfinished(self.path, FORMAT, lambda f: self._same_layout(f, columns))
        if self.file is None:
            self.file = h5py.File(self.path, "w")
            self._create(columns, id_length, attrs or {})
        self.rows_written = int(self.file.attrs["rows_written"])
        self.arrays: dict[str, h5py.Dataset] = {}
        self.broken = False

    def _same_layout(self, f: h5py.File, columns) -> bool:
        if [c for c in columns if c not in f] or f["object_id"].shape[0] != self.n_rows:
            f.close()
            raise RunError(f"{self.path} was started with other columns or length; delete it and rerun")
        return True

    @classmethod
    def reopen(cls, path: str | os.PathLike, n_rows: int) -> ArrayWriter | None:
        """The writer of an unfinished `path`, reopened after its last written row to resume it; None when
        there is nothing to resume (see :func:`reopen_unfinished`)."""
        path = Path(path)
        f = reopen_unfinished(path, FORMAT)
        if f is None:
            return None
        f.close()
        return cls(path, n_rows, {})

    def _create(self, columns, id_length, attrs) -> None:
        f = self.file
        f.attrs.update(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "rows_written": 0, "complete": False}
        )
        f.attrs.update(attrs)
        n = self.n_rows
        f.create_dataset(
            "object_id", shape=(n,), dtype=id_dtype(id_length), chunks=(min(max(n, 1), 65536),) if n else None
        )
        for name, (row_shape, dtype) in columns.items():
            rows = min(max(n, 1), chunk_rows(row_shape, dtype))
            f.create_dataset(
                name, shape=(n, *row_shape), dtype=dtype, chunks=(rows, *row_shape) if n else None
            )

    def append(self, object_id, **arrays) -> None:
        ids = as_id_bytes(object_id)
        n = len(ids)
        for name, arr in arrays.items():
            if len(arr) != n:
                raise RunError(f"batch for {self.path.name} has {n} object ids but {len(arr)} rows of {name}")
        start, stop = self.rows_written, self.rows_written + n
        if stop > self.n_rows:
            raise RunError(f"{self.path.name}: writing rows {start}:{stop} past its {self.n_rows} rows")
        check_id_width(ids, self.file["object_id"], self.path.name, RunError)
        if self.broken:
            raise RunError(f"{self.path.name} is closed: an earlier write to it failed")
        # the datasets stay open (self.arrays): a write that fails when a dataset is closed, as a temporary
        # h5py object would close it, is swallowed by h5py and breaks the file for good
        arrays = {"object_id": ids} | arrays
        try:
            for name, arr in arrays.items():
                if name not in self.arrays:
                    self.arrays[name] = self.file[name]
                self.arrays[name][start:stop] = np.asarray(arr, dtype=self.arrays[name].dtype)
            self.file.flush()  # the rows reach the file before the count that says they are there
            self.file.attrs["rows_written"] = stop
            self.file.flush()
        except (OSError, RuntimeError) as e:
            self.broken = True  # HDF5 can't be asked anything more about this file: it would crash
            raise write_failed(self.file, self.path, e) from e
        self.rows_written = stop

    def close(self, complete: bool = True) -> None:
        """Close the file; `complete` checks every row is written and marks the file finished."""
        if self.broken or not self.file.id.valid:
            if complete:
                raise RunError(f"{self.path.name} can't be finished: an earlier write to it failed")
            return
        if complete and self.rows_written != self.n_rows:
            self.file.close()
            raise RunError(f"{self.path.name}: {self.rows_written} rows written, {self.n_rows} expected")
        try:
            if complete:
                self.file.attrs["complete"] = True
            self.file.flush()
            self.file.close()
        except (OSError, RuntimeError) as e:
            self.broken = True  # HDF5 can't be asked anything more about this file: it would crash
            raise write_failed(self.file, self.path, e) from e

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(complete=exc_type is None)


def write_arrays(path: str | os.PathLike, object_id, attrs: dict | None = None, **arrays) -> Path:
    """Write a whole (small) result in one go, atomically."""
    path = Path(path)
    ids = as_id_bytes(object_id)
    columns = {k: (np.asarray(v).shape[1:], np.asarray(v).dtype.str) for k, v in arrays.items()}
    with (
        atomic.replacing(path) as tmp,
        ArrayWriter(tmp, len(ids), columns, id_length=max(ids.dtype.itemsize, 1), attrs=attrs) as w,
    ):
        w.append(ids, **arrays)
    return path


class BufferedWriter:
    """An ArrayWriter fed in blocks: `append` keeps rows in memory and writes them once they reach about
    FLUSH_BYTES, or FLUSH_S seconds after the last write. HDF5 writes (and their flushes) cost per call,
    so few large ones; a killed process loses at most one block.

        out = BufferedWriter("latents.h5", n)     # an incomplete file resumes after out.rows_written
        for ids, latent in batches:               # the rows after out.rows_written
            if not out.started:
                out.create({"latent": latent}, id_length=64)
            out.append(ids, latent=latent)
        out.close()                               # after an error: out.close(complete=False)

    `rows` counts the rows written (by this or an earlier attempt) plus those still buffered.
    """

    def __init__(self, path: str | os.PathLike, n_rows: int):
        self.path, self.n_rows = Path(path), int(n_rows)
        self.writer = ArrayWriter.reopen(self.path, self.n_rows)
        self._clear()

    def _clear(self) -> None:
        self.ids, self.arrays = [], []
        self.buffered = self.nbytes = 0
        self.since = time.monotonic()

    @property
    def started(self) -> bool:
        return self.writer is not None

    @property
    def rows_written(self) -> int:
        return self.writer.rows_written if self.writer else 0

    @property
    def rows(self) -> int:
        return self.rows_written + self.buffered

    def create(self, like: dict, id_length: int, dtype: str = "<f4") -> None:
        """Create the file: one `dtype` column per float array of `like` (others keep their own type),
        shaped like its rows, and /object_id `id_length` bytes wide."""
        columns = {
            k: (np.shape(v)[1:], dtype if np.asarray(v).dtype.kind == "f" else np.asarray(v).dtype.str)
            for k, v in like.items()
        }
        self.writer = ArrayWriter(self.path, self.n_rows, columns, id_length=id_length)

    def append(self, object_id, **arrays) -> None:
        self.ids.append(object_id)
        self.arrays.append(arrays)
        self.buffered += len(object_id)
        self.nbytes += sum(v.nbytes for v in arrays.values())
        if self.nbytes >= FLUSH_BYTES or time.monotonic() - self.since >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        ids, arrays, buffered = self.ids, self.arrays, self.buffered
        self._clear()  # a block whose write failed is dropped, never written twice
        if buffered:
            columns = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
            self.writer.append(np.concatenate(ids), **columns)

    def close(self, complete: bool = True) -> None:
        """Write what is buffered and close: `complete` checks that all n_rows are written and marks the
        file complete. After an error, `complete=False` keeps the rows appended before it for a resume,
        and closes the file even when that write fails (logged: the error being handled is the one to
        raise)."""
        if self.writer is None:
            return
        if complete:
            self.flush()
            self.writer.close()
            return
        lost = self.buffered
        try:
            self.flush()
        except HyraxError as e:
            log.warning("the last %d rows of %s weren't written: %s", lost, self.path.name, e)
        finally:
            self.writer.close(complete=False)


def no_data_rows(f: h5py.File) -> np.ndarray:
    """Rows of a latents file whose object had a band with no finite pixel (infer's /no_data): their
    latents describe a blank image, so they are not scored; all False for a file without the column."""
    if "no_data" not in f:
        return np.zeros(f["object_id"].shape[0], bool)
    return np.asarray(f["no_data"][:], bool)


def read_ids(ds: h5py.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Object ids as a numpy str array."""
    raw = ds[start:stop]
    return np.char.decode(raw.astype("S"), "utf-8") if raw.dtype.kind in "SO" else raw.astype(str)


# --- shards ----------------------------------------------------------------------------------------


def shard_name(stem: str, index: int, count: int) -> str:
    """Part `index` of `count` of the array file `stem` (read back as one by open_result)."""
    return f"{stem}.shard-{index:04d}-of-{count:04d}.h5"


def _shard_files(run_dir: Path, stem: str) -> tuple[int, dict[int, Path]]:
    found: dict[int, Path] = {}
    count = 0
    for p in run_dir.glob(f"{stem}.shard-*-of-*.h5"):
        m = SHARD_RE.match(p.name)
        if m and m["stem"] == stem:
            found[int(m["i"])] = p
            count = max(count, int(m["n"]))
    return count, found


def read_rows(ds, rows: np.ndarray) -> np.ndarray:
    """ds[rows] for sorted rows, as contiguous slices (h5py's fancy indexing is slow)."""
    if len(rows) == 0:
        return np.empty((0, *ds.shape[1:]), ds.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.concatenate([ds[r[0] : r[-1] + 1] for r in np.split(rows, breaks)])


def is_complete_file(path: str | os.PathLike, n_rows: int | None = None) -> bool:
    """Whether `path` is an array file whose writer finished it (with `n_rows` rows, when given), every
    row of it in the file (rows_on_disk)."""
    try:
        with h5py.File(path, "r") as f:
            n = f["object_id"].shape[0]
            return bool(f.attrs.get("complete")) and n_rows in (None, n) and rows_on_disk(f, n) == n
    except (OSError, KeyError):
        return False


def assemble_shards(run_dir: str | os.PathLike, stem: str, rerun_hint: str = "") -> Path:
    """Write `<stem>.h5` as a virtual dataset over all complete shards, in shard order. A missing or
    incomplete shard is an error naming it (and the command to rerun it)."""
    run_dir = Path(run_dir)
    count, found = _shard_files(run_dir, stem)
    if not count:
        raise DataError(f"{run_dir} has no {stem}.h5 and no {stem} shards")
    bad = [i for i in range(count) if i not in found or not is_complete_file(found[i])]
    if bad:
        names = ", ".join(shard_name(stem, i, count) for i in bad)
        hint = f"; rerun it with: {rerun_hint.format(shard=f'{bad[0]}/{count}')}" if rerun_hint else ""
        raise DataError(f"{run_dir}: shard(s) missing or incomplete: {names}{hint}")
    shards = [found[i] for i in range(count)]
    with h5py.File(shards[0], "r") as f0:
        names: list[str] = []  # every array, those in groups too (a cutout file's /catalog/<column>)
        f0.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
        meta = {k: (f0[k].shape[1:], f0[k].dtype) for k in names}
        attrs = dict(f0.attrs)
    lengths = []
    for s in shards:
        with h5py.File(s, "r") as f:
            lengths.append(f["object_id"].shape[0])
    target = run_dir / f"{stem}.h5"
    try:
        _write_vds(target, shards, lengths, names, meta, attrs | {"shards": count}, relative=True)
    except PermissionError:
        # a read-only run directory (another user's, an archive): a private copy of the small index file
        import tempfile

        digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
        target = Path(tempfile.gettempdir()) / f"hyrax-{digest}-{stem}.h5"
        _write_vds(target, shards, lengths, names, meta, attrs | {"shards": count}, relative=False)
    return target


def _write_vds(
    target: Path, shards: list[Path], lengths: list[int], names, meta, attrs, relative: bool
) -> None:
    # every task of a Slurm array may assemble at once: each writes its own, the last rename wins (whole)
    total = sum(lengths)
    with atomic.replacing(target) as tmp:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(attrs)
            out.attrs.update({"rows_written": total, "complete": True})
            for name in names:
                tail, dtype = meta[name]
                layout = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
                start = 0
                for s, n in zip(shards, lengths, strict=True):
                    # relative source paths: the run directory can be moved or copied whole
                    source = f"./{s.name}" if relative else str(s.resolve())
                    if n:  # an empty shard (more shards than rows) adds nothing
                        layout[start : start + n] = h5py.VirtualSource(source, name, shape=(n, *tail))
                    start += n
                out.create_virtual_dataset(name, layout)


def result_file(run_dir: str | os.PathLike, stem: str, rerun_hint: str = "") -> Path:
    """`<run_dir>/<stem>.h5`, assembling it from shards first when needed."""
    run_dir = Path(run_dir)
    path = run_dir / f"{stem}.h5"
    if path.exists():
        return path
    return assemble_shards(run_dir, stem, rerun_hint)


def open_result(run_dir: str | os.PathLike, stem: str, rerun_hint: str = "") -> h5py.File:
    """Open a result array file (sharded or not) for reading. Relative virtual sources resolve against
    the run directory."""
    path = result_file(run_dir, stem, rerun_hint)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path} can't be opened as HDF5 ({e}); rerun the stage that wrote it") from None
    if not f.attrs.get("complete"):  # its writer failed or was stopped: never read as a result
        f.close()
        raise DataError(
            f"{path} was not finished by the stage that wrote it; resume that run "
            f"(hyrax <stage> --resume {Path(run_dir)}) or rerun it"
        )
    return f


class IdIndex:
    """object_id -> row in O(log N), from a sorted copy of the ids and its argsort (no Python dict: at
    100M objects a dict costs gigabytes)."""

    def __init__(self, ids: np.ndarray):
        ids = as_id_bytes(ids)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        if len(ids) > 1 and (dups := self.sorted[1:] == self.sorted[:-1]).any():
            shown = np.unique(self.sorted[1:][dups])[:5]
            raise DataError(f"duplicate object ids, e.g. {', '.join(x.decode() for x in shown)}")

    def rows(self, ids: Iterable) -> np.ndarray:
        """Rows of `ids`; -1 where an id is absent."""
        q = as_id_bytes(np.atleast_1d(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)))
        pos = np.searchsorted(self.sorted, q)
        pos_c = np.minimum(pos, len(self.sorted) - 1)
        hit = (
            (pos < len(self.sorted)) & (self.sorted[pos_c] == q)
            if len(self.sorted)
            else np.zeros(len(q), bool)
        )
        return np.where(hit, self.order[pos_c] if len(self.sorted) else -1, -1)

    def close_matches(self, object_id: str, n: int = 3) -> list[str]:
        """Ids sorted next to `object_id`: cheap 'did you mean' for a missing id."""
        q = as_id_bytes([object_id])[0]
        pos = int(np.searchsorted(self.sorted, q))
        lo, hi = max(0, pos - n), min(len(self.sorted), pos + n)
        import difflib

        near = [x.decode() for x in self.sorted[lo:hi]]
        return difflib.get_close_matches(object_id, near, n=n, cutoff=0.3) or near[:n]
