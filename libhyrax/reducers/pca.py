"""PCA (scikit-learn): linear, fast, exact; a good first look and a baseline for UMAP."""

from __future__ import annotations

import numpy as np

from libhyrax.reducers import Reducer


class PCAReducer(Reducer):
    name = "pca"

    def fit(self, x: np.ndarray) -> PCAReducer:
        from sklearn.decomposition import PCA

        self.model_ = PCA(**self.kwargs).fit(np.asarray(x, dtype=np.float32))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.transform(np.asarray(x, dtype=np.float32)), dtype=np.float32)
