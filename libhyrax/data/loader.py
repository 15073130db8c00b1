"""Batches for training and inference: contiguous block reads, a training order that shuffles blocks.

Shuffling single rows would make h5py read row by row (about 10x slower); shuffling blocks of
`block` contiguous rows, then batches made of whole blocks, keeps every read contiguous while each
epoch still sees every object once, in a new order. Inference reads rows in input order instead
(`contiguous_batches`), ahead of the model in a thread or in DataLoader worker processes.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

log = logging.getLogger("hyrax.data")
PREFETCH = 2  # batches read ahead of the model (by the read-ahead thread, or by each DataLoader worker)


class BatchPlan:
    """Row indices of each batch, computed when asked (item i: a sorted int64 array, or a `range` of
    contiguous rows). Memory: the sorted `indices` (none when all rows are read) plus one int per block
    when shuffling; no per-object Python objects. Every index appears exactly once per epoch."""

    def __init__(self, indices, batch_size: int, shuffle: bool, seed: int, epoch: int = 0, block: int = 64,
                 n: int | None = None):
        if indices is None:
            self.idx, self.n = None, int(n or 0)
        else:
            idx = np.asarray(indices, dtype=np.int64)
            self.idx = idx if idx.size < 2 or (np.diff(idx) > 0).all() else np.sort(idx)
            self.n = len(self.idx)
        self.batch_size, self.block = max(int(batch_size), 1), max(int(block), 1)
        self.order = self.ends = None
        if shuffle and self.n:
            n_blocks = -(-self.n // self.block)
            self.order = np.random.default_rng([int(seed), int(epoch)]).permutation(n_blocks)
            lengths = np.full(n_blocks, self.block, dtype=np.int64)
            lengths[-1] = self.n - self.block * (n_blocks - 1)
            self.ends = np.cumsum(lengths[self.order])  # end position of each shuffled block

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def positions(self, i: int):
        """Positions (into the sorted indices) of batch i, in the shuffled order."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        a, b = i * self.batch_size, min((i + 1) * self.batch_size, self.n)
        if self.order is None:
            return range(a, b)
        first, last = np.searchsorted(self.ends, [a, b - 1], side="right")
        parts = []
        for k in range(first, last + 1):  # the shuffled blocks this batch overlaps
            blk_start = self.ends[k - 1] if k else 0  # position of block k in the shuffled sequence
            lo, hi = max(a, blk_start), min(b, self.ends[k])
            src = int(self.order[k]) * self.block + (lo - blk_start)
            parts.append(np.arange(src, src + (hi - lo), dtype=np.int64))
        return np.concatenate(parts)

    def __getitem__(self, i: int):
        pos = self.positions(i)
        if isinstance(pos, range):
            if self.idx is None:
                return pos
            return self.idx[pos.start:pos.stop]
        rows = pos if self.idx is None else self.idx[pos]
        return np.sort(rows)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class _Batches:
    """Map-style: item i is batch i (a dict of numpy arrays). Picklable for DataLoader workers."""

    def __init__(self, group, plan):
        self.group, self.plan = group, plan

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, i):
        return counted(self.group, self._read, i)

    def _read(self, i):
        rows = self.plan[i]
        if isinstance(rows, range):
            return self.group.read(rows.start, rows.stop)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return self.group.read(int(rows[0]), int(rows[-1]) + 1)
        return self.group.read_rows(rows)


REPLACED = "_nan_pixels_replaced"  # a worker's count of replaced pixels, carried home with its batch


def counted(group, read, *args):
    """`read(*args)`; in a DataLoader worker process, the batch also carries how many NaN/inf pixels the
    worker's copy of the transform replaced, so the main process can count them (else they are lost
    with the worker)."""
    before = group.transform.replaced_pixels
    batch = read(*args)
    data = sys.modules.get("torch.utils.data")  # not loaded: not in a worker (and torch stays unloaded)
    if data is not None and data.get_worker_info() is not None:
        (batch[1] if isinstance(batch, tuple) else batch)[REPLACED] = group.transform.replaced_pixels - before
    return batch


def add_worker_counts(group, batch: dict) -> dict:
    """Take a worker's replaced-pixel count off its batch into this process's transform."""
    group.transform.replaced_pixels += batch.pop(REPLACED, 0)
    return batch


def _identity(batch):
    return batch


class BatchLoader:
    """An iterable of numpy batch dicts; `len()` is the number of batches."""

    def __init__(self, group, plan, num_workers: int = 0):
        self.batches, self.num_workers = _Batches(group, plan), int(num_workers)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        transform = self.batches.group.transform
        before = transform.replaced_pixels
        if self.num_workers <= 0:
            for i in range(len(self.batches)):
                yield self.batches[i]
        else:
            from torch.utils.data import DataLoader

            loader = DataLoader(self.batches, batch_size=None, shuffle=False, num_workers=self.num_workers,
                                collate_fn=_identity, persistent_workers=False, prefetch_factor=PREFETCH)
            for batch in loader:
                yield add_worker_counts(self.batches.group, batch)
        if transform.replaced_pixels > before:
            log.info("replaced %d NaN/inf pixels (data_set.nan_mode=%s)", transform.replaced_pixels - before,
                     transform.nan_mode)


def make_loader(group, indices=None, batch_size: int = 256, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, epoch: int = 0, block: int | None = None) -> BatchLoader:
    """Batches of `group` rows `indices` (all rows when None). With shuffle, blocks of `block` contiguous
    rows (default: data_loader.shuffle_block) are shuffled with (seed, epoch); pass the epoch number for
    a new order each epoch."""
    block = block or getattr(group, "shuffle_block", 64)
    plan = BatchPlan(indices, int(batch_size), shuffle, seed, epoch, block, n=len(group))
    return BatchLoader(group, plan, num_workers)


T = TypeVar("T")


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a thread, up to `depth` items ahead of the consumer: h5py and numpy release the
    GIL for the bulk of a read, torch while it computes, so reading overlaps the model. An error in the
    reader is raised in the consumer; a consumer that stops early (or fails) stops the reader."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)
            return
        put(end)

    thread = threading.Thread(target=reader, daemon=True, name="hyrax-read-ahead")
    thread.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# --- input order: contiguous batches for inference ---------------------------------------------------

def contiguous_batches(group, start: int, stop: int, batch_size: int, read_ahead: bool = False,
                       num_workers: int = 0) -> Iterator[tuple[int, dict]]:
    """Contiguous batches (first row, batch) of `group` rows start..stop, in order, object ids as UTF-8
    bytes (as stored: no decoding). With `num_workers`, read by that many DataLoader worker processes
    (order kept); else with `read_ahead`, read by one thread PREFETCH batches ahead of the consumer (worth
    it when the model runs on a GPU; on a CPU the thread would take cores from torch); else read in this
    thread."""
    if num_workers > 0 and stop > start:
        yield from _read_in_workers(group, start, stop, batch_size, num_workers)
    elif read_ahead:
        yield from _read_in_thread(group, start, stop, batch_size)
    else:
        yield from _read_blocks(group, start, stop, batch_size)


def _read_blocks(group, start: int, stop: int, batch_size: int) -> Iterator[tuple[int, dict]]:
    for a in range(start, stop, batch_size):
        yield a, group.read(a, min(a + batch_size, stop), id_bytes=True)


def _read_in_thread(group, start: int, stop: int, batch_size: int) -> Iterator[tuple[int, dict]]:
    return read_ahead(_read_blocks(group, start, stop, batch_size), depth=PREFETCH)


def _read_in_workers(group, start: int, stop: int, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    loader = DataLoader(_Blocks(group, stop, batch_size), batch_size=None,
                        sampler=_BlockStarts(start, stop, batch_size), num_workers=num_workers,
                        collate_fn=_identity, prefetch_factor=PREFETCH, persistent_workers=False)
    for a, batch in loader:
        yield a, add_worker_counts(group, batch)


class _Blocks:
    """Map-style for a torch DataLoader: item `a` (a first row) is (a, rows a..a+batch_size of the group,
    ids as bytes). Picklable: each worker opens its own h5py handles lazily."""

    def __init__(self, group, stop: int, batch_size: int):
        self.group, self.stop, self.batch_size = group, stop, batch_size

    def __getitem__(self, a: int):
        return counted(self.group, self._read, a)

    def _read(self, a: int):
        return a, self.group.read(a, min(a + self.batch_size, self.stop), id_bytes=True)


class _BlockStarts:
    """A sampler yielding the first row of each batch, lazily: memory does not grow with N."""

    def __init__(self, start: int, stop: int, batch_size: int):
        self.range = range(start, stop, batch_size)

    def __iter__(self):
        return iter(self.range)

    def __len__(self) -> int:
        return len(self.range)
