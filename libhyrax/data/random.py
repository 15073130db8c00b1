"""HyraxRandomDataset: seeded random images and labels, for tests and for trying a model quickly."""

from __future__ import annotations

import numpy as np

from libhyrax.data.base import Dataset
from libhyrax.errors import ConfigError


class HyraxRandomDataset(Dataset):
    """dataset_config: size, shape, seed, provided_labels, number_invalid_values, invalid_value_type
    ("nan", "inf" or "-inf": pixels set to it, to exercise the NaN policy)."""

    reads_data_location = False

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location)
        c = self.dataset_config
        size, shape = int(c.get("size", 100)), tuple(int(s) for s in c.get("shape", (3, 16, 16)))
        if not shape or min(shape) < 1:  # any shape, as the reference's: [2, 3] is a 2x3 array per object
            raise ConfigError(
                f"HyraxRandomDataset shape must be a list of sizes (e.g. [3, 16, 16] or [2, 3]), "
                f"not {list(shape)}"
            )
        rng = np.random.default_rng(int(c.get("seed", 42)))
        self.images = rng.random((size, *shape), dtype=np.float32)
        n_bad = int(c.get("number_invalid_values", 0))
        if n_bad:
            kind = c.get("invalid_value_type", "nan")
            value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(kind)
            if value is None:
                raise ConfigError(f"invalid_value_type must be nan, inf or -inf, not {kind!r}")
            flat = self.images.reshape(-1)
            flat[rng.choice(flat.size, size=min(n_bad, flat.size), replace=False)] = value
        labels = np.asarray(c.get("provided_labels", [0, 1, 2]))
        self.labels = labels[rng.integers(0, len(labels), size)] if len(labels) else np.zeros(size, np.int64)
        width = len(str(max(size - 1, 0)))
        self.ids = np.array([f"rand-{i:0{width}d}" for i in range(size)])

    def __len__(self):
        return len(self.images)

    def get_image(self, index):
        return self.images[index]

    def get_image_batch(self, start, stop):
        return self.images[start:stop]

    def get_label(self, index):
        return self.labels[index]

    def get_label_batch(self, start, stop):
        return self.labels[start:stop]

    def get_object_id(self, index):
        return self.ids[index]

    def get_object_id_batch(self, start, stop):
        return self.ids[start:stop]
