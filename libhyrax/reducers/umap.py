"""UMAP (umap-learn), seeded: `random_state` makes fit and transform reproducible (single-threaded)."""

from __future__ import annotations

import warnings

import numpy as np

from libhyrax.reducers import Reducer, import_heavy_for_unpickle


class UMAPReducer(Reducer):
    name = "umap"

    def fit(self, x: np.ndarray) -> UMAPReducer:
        import_heavy_for_unpickle()
        import umap

        kwargs = dict(self.kwargs)
        # UMAP needs more points than neighbours; a tiny sample would otherwise fail deep inside
        kwargs["n_neighbors"] = int(min(kwargs.get("n_neighbors", 15), max(2, len(x) - 1)))
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": we seed on purpose
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            self.model_ = umap.UMAP(**kwargs).fit(np.asarray(x, dtype=np.float32))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.transform(np.asarray(x, dtype=np.float32)), dtype=np.float32)
