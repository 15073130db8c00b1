"""Train/validate/test splits: seeded, disjoint, recorded in the train run as `split.h5`.

split.h5 follows the result-array conventions: `/object_id` (N,) and `/split` (N,) naming each object's
split ("" for an object in none), so plain h5py shows which object went where.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from libhyrax.errors import ConfigError, DataError
from libhyrax.hdf5 import IdIndex, as_id_bytes, write_arrays


def make_splits(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Disjoint sorted row indices per split, sizes round(fraction * n) (the last split takes the
    rounding remainder when the fractions sum to 1). The same n, fractions and seed give the same split."""
    fractions = {k: float(v) for k, v in fractions.items() if v is not False}
    if any(v < 0 for v in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise ConfigError(f"[split] fractions must be between 0 and 1 and sum to at most 1, not {fractions}")
    fractions = {k: v for k, v in fractions.items() if v > 0}
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(f * n)) for f in fractions.values()]
    if sizes and abs(sum(fractions.values()) - 1) < 1e-9:
        sizes[-1] = n - sum(sizes[:-1])
    out, start = {}, 0
    for name, size in zip(fractions, sizes, strict=True):
        out[name] = np.sort(order[start:start + max(size, 0)])
        start += size
    return out


def save_splits(path, splits: dict[str, np.ndarray], object_ids) -> Path:
    ids = as_id_bytes(object_ids)
    width = max([len(s.encode()) for s in splits] + [1])
    labels = np.zeros(len(ids), dtype=f"S{width}")
    for name, rows in splits.items():
        labels[rows] = name.encode()
    return write_arrays(path, ids, attrs={"splits": list(splits)}, split=labels)


def load_splits(path, object_ids=None) -> dict[str, np.ndarray]:
    """Row indices per split. With `object_ids` (the current data's ids), rows are looked up by id, so a
    split is reused even when the data's order changed; an id not in the data is an error."""
    path = Path(path)
    if path.is_dir():
        path = path / "split.h5"
    try:
        with h5py.File(path, "r") as f:
            saved_ids = f["object_id"][:]
            labels = f["split"][:]
            names = [str(n) for n in f.attrs.get("splits", [])]
    except (OSError, KeyError) as e:
        raise DataError(f"{path} can't be read as a split file ({e}); point split.from_run at a train run") from None
    if object_ids is None:
        rows = np.arange(len(saved_ids))
    else:
        rows = IdIndex(object_ids).rows(saved_ids)
        if (rows < 0).any():
            missing = [x.decode() for x in np.asarray(saved_ids[rows < 0][:3], dtype=bytes)]
            raise DataError(f"{path}: {int((rows < 0).sum())} objects of the saved split are not in the data "
                            f"(e.g. {', '.join(missing)}); the split belongs to other data")
    return {name: np.sort(rows[labels == name.encode()]) for name in names}

