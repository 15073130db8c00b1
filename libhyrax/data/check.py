"""check_dataset: run a dataset class through the contract and say, in plain words, what is wrong."""

from __future__ import annotations

import numpy as np

from libhyrax.errors import DataError


def _is_numpy_like(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic, int, float, str, bool, bytes))


def check_dataset(cls, config: dict | None = None, data_location=None, n_rows: int = 3) -> str:
    """Construct `cls(config, data_location)`, read a few rows every way a stage does, and raise a
    DataError listing every problem. Returns a one-line summary when the class is fine."""
    from libhyrax.data.base import Dataset

    name = getattr(cls, "__name__", repr(cls))
    problems: list[str] = []
    if not isinstance(cls, type):
        raise DataError(
            f"check_dataset takes a class, not {type(cls).__name__}: pass {name} itself, not an instance"
        )
    if not issubclass(cls, Dataset):
        raise DataError(f"{name} does not subclass libhyrax.data.Dataset; write `class {name}(Dataset):`")
    if config is None:
        from libhyrax.config import load_config

        config = load_config(data={})
    try:
        ds = cls(config, data_location)
    except TypeError as e:
        raise DataError(
            f"{name}(config, data_location) failed: {e}; its __init__ must take "
            "(self, config, data_location=None) and call super().__init__(config, data_location)"
        ) from None
    if not hasattr(ds, "dataset_config"):
        problems.append(f"{name}.__init__ does not call super().__init__(config, data_location)")
    if type(ds).__len__ is Dataset.__len__:
        raise DataError(f"{name} has no __len__; define __len__(self) returning the number of objects")
    try:
        n = len(ds)
    except Exception as e:
        raise DataError(f"len() of {name} failed: {type(e).__name__}: {e}") from None
    if n < 1:
        problems.append(f"{name} has {n} objects; a dataset needs at least one")
    fields = ds.fields
    if "image" not in fields and not getattr(cls, "tabular", False):  # a table (HyraxCSVDataset) needs none
        problems.append(f"{name} has no get_image(index); define it to return a (bands, height, width) array")
    if "object_id" not in fields:
        problems.append(
            f"{name} has no get_object_id(index); define it to return a unique id string per object"
        )
    rows = list(range(min(n, n_rows)))
    for field in fields:
        values = []
        for i in rows:
            try:
                v = ds.get(field, i)
            except Exception as e:
                problems.append(f"get_{field}({i}) raised {type(e).__name__}: {e}")
                break
            if not _is_numpy_like(v):
                problems.append(
                    f"get_{field}({i}) returned a {type(v).__module__}.{type(v).__name__}; "
                    "getters must return numpy arrays or plain scalars (use .numpy() for tensors)"
                )
                break
            values.append(np.asarray(v))
        if len(values) != len(rows):
            continue
        shapes = {v.shape for v in values}
        if len(shapes) > 1 and not callable(getattr(ds, "collate", None)):
            problems.append(
                f"get_{field} returns different shapes for different objects ({sorted(shapes)}); "
                "every object must have the same shape (crop or pad them)"
            )
        if field == "image" and values:
            v = values[0]
            if v.ndim != 3:
                problems.append(
                    f"get_image returns shape {v.shape}; it must be (bands, height, width); "
                    "add a band axis for single-band images: image[None]"
                )
            elif v.dtype.kind not in "fiu":
                problems.append(f"get_image returns {v.dtype}; it must be numeric (float32 is best)")
        if field == "object_id" and values and any(v.ndim for v in values):
            problems.append("get_object_id must return one id (a string), not an array")
        batch = getattr(ds, f"get_{field}_batch", None)
        if batch is not None and rows:
            try:
                got = np.asarray(batch(0, len(rows)))
                want = np.stack(values)
                if got.shape != want.shape or (
                    field != "object_id" and not np.array_equal(got, want, equal_nan=True)
                ):
                    problems.append(
                        f"get_{field}_batch(0, {len(rows)}) does not match get_{field} row by row "
                        f"(shapes {got.shape} and {want.shape})"
                    )
            except Exception as e:
                problems.append(f"get_{field}_batch(0, {len(rows)}) raised {type(e).__name__}: {e}")
    if callable(getattr(ds, "collate", None)) and rows and not problems:  # it batches its own fields
        try:
            ds.read(fields, 0, len(rows))
        except Exception as e:
            problems.append(
                f"reading {len(rows)} objects through its collate failed: {type(e).__name__}: {e}"
            )
    if "object_id" in fields and n > 1 and not problems:
        ids = ds.column("object_id")
        if len(set(ids.tolist())) != len(ids):
            problems.append(f"{name} has duplicate object ids; each object needs a unique id")
    if problems:
        raise DataError(f"{name} breaks the dataset contract:\n  - " + "\n  - ".join(problems))
    return f"{name}: {n} objects, fields {', '.join(fields)}: ok"
