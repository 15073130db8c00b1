"""Batches for training and inference: contiguous block reads, a training order that shuffles blocks.

Shuffling single rows would make h5py read row by row (about 10x slower); shuffling blocks of
`block` contiguous rows, then batches made of whole blocks, keeps every read contiguous while each
epoch still sees every object once, in a new order.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("hyrax.data")


def batch_plan(indices, batch_size: int, shuffle: bool, seed: int, epoch: int = 0,
               block: int = 64) -> list[np.ndarray]:
    """Row indices of each batch. Every index appears exactly once per epoch."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    if shuffle:
        rng = np.random.default_rng([int(seed), int(epoch)])
        blocks = [idx[i:i + block] for i in range(0, len(idx), block)]
        order = rng.permutation(len(blocks))
        idx = np.concatenate([blocks[i] for i in order]) if blocks else idx
    return [np.sort(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]


class _Batches:
    """Map-style: item i is batch i (a dict of numpy arrays). Picklable for DataLoader workers."""

    def __init__(self, group, plan):
        self.group, self.plan = group, plan

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, i):
        rows = self.plan[i]
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return self.group.read(int(rows[0]), int(rows[-1]) + 1)
        return self.group.read_rows(rows)


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
                                collate_fn=_identity, persistent_workers=False, prefetch_factor=2)
            yield from loader
        if transform.replaced_pixels > before:
            log.info("replaced %d NaN/inf pixels (data_set.nan_mode=%s)", transform.replaced_pixels - before,
                     transform.nan_mode)


def make_loader(group, indices=None, batch_size: int = 256, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, epoch: int = 0, block: int | None = None) -> BatchLoader:
    """Batches of `group` rows `indices` (all rows when None). With shuffle, blocks of `block` contiguous
    rows (default: data_loader.shuffle_block) are shuffled with (seed, epoch); pass the epoch number for
    a new order each epoch."""
    block = block or getattr(group, "shuffle_block", 64)
    if indices is None:
        indices = np.arange(len(group))
    plan = batch_plan(indices, int(batch_size), shuffle, seed, epoch, block)
    return BatchLoader(group, plan, num_workers)
