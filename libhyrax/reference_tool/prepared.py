"""What the reference's `h.prepare()` returns: the data the request describes, one provider per group.

    prepared = h.prepare()        # {"train": DataProvider, "infer": DataProvider} for the groups of
    item = prepared["train"][0]   # [data_request]: {"data": {"image": ..., "label": ...}, "object_id": "..."}
    len(prepared["train"]); prepared["train"].ids()
    batch = prepared["train"].collate([prepared["train"][i] for i in range(8)])   # fields stacked per name

An item is keyed by the request's friendly names, as the reference's data provider gives it; the values
are what a stage reads (images with the [data_set] transform applied). This is not the FITS->HDF5 stage:
that one is `libhyrax.prepare()` (`hyrax prepare`).
"""

from __future__ import annotations

import numpy as np

from libhyrax.data import open_group


def prepare(config: dict) -> dict[str, DataProvider]:
    return {name: DataProvider(open_group(config, name)) for name in config.get("data_request") or {}}


class DataProvider:
    """One data request group, item by item as the reference serves it."""

    def __init__(self, group):
        self.group = group

    def __len__(self) -> int:
        return len(self.group)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} objects")
        index %= len(self)
        row = self.group.read(index, index + 1)
        item: dict = {}
        for key, values in row.items():
            if key == "object_id":
                continue
            friendly, field = key.split(".", 1) if "." in key else (self.group.primary, key)
            item.setdefault(friendly, {})[field] = values[0]
        item["object_id"] = str(row["object_id"][0])
        for friendly, spec in self.group.specs.items():  # a request that lists the id field gets it there too
            if "object_id" in (spec.fields or ()) and "object_id" not in item.get(friendly, {"object_id": 0}):
                item[friendly]["object_id"] = item["object_id"]
        return item

    def ids(self) -> list[str]:
        return [str(i) for i in self.group.object_ids()]

    def sample_data(self) -> dict:
        return self[0]

    def collate(self, items: list[dict]) -> dict:
        """Items as one batch: each field's values stacked (numpy), ids as an array."""
        batch: dict = {"object_id": np.array([it["object_id"] for it in items])}
        for friendly in (k for k in items[0] if k != "object_id"):
            batch[friendly] = {
                f: np.stack([np.asarray(it[friendly][f]) for it in items]) for f in items[0][friendly]
            }
        return batch

    def __repr__(self) -> str:
        return f"<DataProvider {self.group.name}: {len(self)} objects, fields {', '.join(self.group.fields)}>"
