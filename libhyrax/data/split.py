"""Train/validate/test splits: seeded, disjoint, recorded in the train run as `split.h5`.

An object's split follows from a seeded hash of its id (`hashed_splits`): its id hashes to a number u in
[0, 1), and the fractions cut [0, 1) into consecutive intervals (train first, then validate, test), so a
split of 100M objects streams their ids in blocks and keeps only the rows it uses (at 100M with
split.train = 0.0002: 20k rows, not 100M ids and labels). The same ids, fractions and seed give the same
split in any order; sizes are the fractions of N up to sampling noise (binomial: sqrt(f N)).

split.h5 follows the result-array conventions: `/object_id` and `/split` of each object in a split
(rows in no split are left out), with the rule in its attributes (`rule = "id-hash"`, `seed`,
`fractions`). Train runs before the hash (`make_splits`, a seeded permutation of rows) recorded all N ids
("" for an object in none) and no rule; they load the same way.
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
    fractions = _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(f * n)) for f in fractions.values()]
    if sizes and abs(sum(fractions.values()) - 1) < 1e-9:
        sizes[-1] = n - sum(sizes[:-1])
    out, start = {}, 0
    for name, size in zip(fractions, sizes, strict=True):
        out[name] = np.sort(order[start:start + max(size, 0)])
        start += size
    return out


HASH_RULE = "id-hash"
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def id_hash_unit(ids: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per object id (UTF-8 bytes), from the seed and the id's bytes alone: FNV-1a over
    the bytes, one column of bytes at a time for all ids (no per-object Python), mixed by splitmix64's
    finaliser. The padding of a fixed-width array is not hashed, so the width doesn't matter."""
    ids = as_id_bytes(ids)
    width = ids.dtype.itemsize
    raw = np.frombuffer(ids.tobytes(), dtype=np.uint8).reshape(len(ids), width)
    length = np.char.str_len(ids) if len(ids) else np.zeros(0, int)
    with np.errstate(over="ignore"):
        h = np.full(len(ids), _FNV_OFFSET ^ np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF))
        for col in range(width):
            h = np.where(col < length, (h ^ raw[:, col].astype(np.uint64)) * _FNV_PRIME, h)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _check_fractions(fractions: dict) -> dict[str, float]:
    fractions = {k: float(v) for k, v in fractions.items() if v is not False}
    if any(v < 0 for v in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise ConfigError(f"[split] fractions must be between 0 and 1 and sum to at most 1, not {fractions}")
    return {k: v for k, v in fractions.items() if v > 0}


def hashed_splits(id_blocks, fractions: dict[str, float], seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Sorted rows per split, and the ids of those rows (UTF-8 bytes), from `id_blocks`: (first row,
    ids) in row order (libhyrax.data.group.DataGroup.id_blocks). Memory: the rows kept, whatever N."""
    fractions = _check_fractions(fractions)
    edges = np.cumsum([0.0, *fractions.values()])
    if abs(edges[-1] - 1) < 1e-9:
        edges[-1] = 1.0  # fractions summing to 1: every object is in a split
    rows: dict[str, list] = {k: [] for k in fractions}
    ids: dict[str, list] = {k: [] for k in fractions}
    for start, block in id_blocks:
        which = np.searchsorted(edges, id_hash_unit(block, seed), side="right") - 1
        for i, name in enumerate(fractions):
            hit = np.flatnonzero(which == i)
            rows[name].append(hit + start)
            ids[name].append(as_id_bytes(block)[hit])
    empty = np.zeros(0, np.int64)
    return ({k: np.concatenate(v).astype(np.int64) if v else empty for k, v in rows.items()},
            {k: np.concatenate(v) if v else np.array([], dtype="S1") for k, v in ids.items()})


def save_used_splits(path, splits: dict[str, np.ndarray], ids: dict[str, np.ndarray], rule: dict) -> Path:
    """split.h5 of the objects in a split only (`ids` aligned with `splits`' rows), ordered by row, with
    the rule that made it (`rule`: its attributes, e.g. {"rule": "id-hash", "seed": 7, "fractions": [..]})."""
    names = list(splits)
    rows = np.concatenate([splits[k] for k in names] + [np.zeros(0, np.int64)]).astype(np.int64)
    order = np.argsort(rows, kind="stable")
    all_ids = np.concatenate([as_id_bytes(ids[k]) for k in names] + [np.array([], dtype="S1")])
    width = max([len(s.encode()) for s in names] + [1])
    labels = np.concatenate([np.full(len(splits[k]), k.encode(), dtype=f"S{width}") for k in names]
                            + [np.array([], dtype=f"S{width}")])
    return write_arrays(path, all_ids[order], attrs={"splits": names} | rule, split=labels[order],
                        row=rows[order])


def hash_rule(fractions: dict, seed: int) -> dict:
    """The attributes of split.h5 that say how a hashed split was made."""
    fractions = _check_fractions(fractions)
    return {"rule": HASH_RULE, "seed": int(seed), "fractions": [float(v) for v in fractions.values()]}


def read_rule(path) -> dict:
    """The rule a split.h5 records ({} for one from before the hash)."""
    path = Path(path)
    with h5py.File(path / "split.h5" if path.is_dir() else path, "r") as f:
        return {k: f.attrs[k] for k in ("rule", "seed", "fractions") if k in f.attrs}


def save_splits(path, splits: dict[str, np.ndarray], object_ids) -> Path:
    ids = as_id_bytes(object_ids)
    width = max([len(s.encode()) for s in splits] + [1])
    labels = np.zeros(len(ids), dtype=f"S{width}")
    for name, rows in splits.items():
        labels[rows] = name.encode()
    return write_arrays(path, ids, attrs={"splits": list(splits)}, split=labels)


def load_splits(path, object_ids=None, id_blocks=None, with_ids: bool = False):
    """Row indices per split. With the current data's ids, rows are looked up by id, so a split is reused
    even when the data's order changed; an id not in the data is an error. The ids come as `object_ids`
    (all of them), or as `id_blocks` ((first row, ids) in row order, libhyrax.data.group.DataGroup.id_blocks),
    streamed: memory for the split's own ids. Without either, the rows recorded (all N rows in an old
    split.h5, which recorded every object). `with_ids`: also each split's ids, aligned with its rows."""
    path = Path(path)
    if path.is_dir():
        path = path / "split.h5"
    try:
        with h5py.File(path, "r") as f:
            labels = f["split"][:]
            used = labels != b""  # an old split.h5 lists every object, "" for one in no split
            saved_ids = f["object_id"][:][used]
            recorded = f["row"][:] if "row" in f else np.flatnonzero(used)
            labels = labels[used]
            names = [str(n) for n in f.attrs.get("splits", [])]
    except (OSError, KeyError) as e:
        raise DataError(
            f"{path} can't be read as a split file ({e}); point split.from_run at a train run"
        ) from None
    if id_blocks is not None:
        rows = _rows_of(as_id_bytes(saved_ids), id_blocks)
    elif object_ids is not None:
        rows = IdIndex(object_ids).rows(saved_ids)
    else:
        rows = recorded
    if (rows < 0).any():
        missing = [x.decode() for x in np.asarray(saved_ids[rows < 0][:3], dtype=bytes)]
        raise DataError(
            f"{path}: {int((rows < 0).sum())} objects of the saved split are not in the data "
            f"(e.g. {', '.join(missing)}); the split belongs to other data"
        )
    out, out_ids = {}, {}
    for name in names:
        mine = labels == name.encode()
        order = np.argsort(rows[mine], kind="stable")
        out[name], out_ids[name] = rows[mine][order], as_id_bytes(saved_ids[mine][order])
    return (out, out_ids) if with_ids else out


def _rows_of(wanted: np.ndarray, id_blocks) -> np.ndarray:
    """The row of each of `wanted` (ids, bytes) in the streamed data; -1 where absent."""
    order = np.argsort(wanted, kind="stable")
    ordered = wanted[order]
    rows = np.full(len(wanted), -1, np.int64)
    if not len(wanted):
        return rows
    for start, block in id_blocks:
        block = as_id_bytes(block)
        pos = np.minimum(np.searchsorted(ordered, block), len(ordered) - 1)
        hit = np.flatnonzero(ordered[pos] == block)
        rows[order[pos[hit]]] = start + hit
    return rows
