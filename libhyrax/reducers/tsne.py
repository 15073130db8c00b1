"""t-SNE (scikit-learn), beside UMAP and PCA: a map of the objects it is fitted on. It has no way to place
new points, so `transform` returns the fitted map's rows for those same objects and refuses others: fit it
on every object (`reduce_dimensions.fit_sample_size` at least the number of objects)."""

from __future__ import annotations

import numpy as np

from libhyrax.errors import DataError
from libhyrax.reducers import Reducer


def _row_keys(x: np.ndarray) -> np.ndarray:
    """Each row's bytes as one comparable value (a numpy void), so rows are looked up without Python loops."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()


class TSNEReducer(Reducer):
    name = "tsne"

    def fit(self, x: np.ndarray) -> TSNEReducer:
        from sklearn.manifold import TSNE

        x = np.asarray(x, dtype=np.float32)
        perplexity = float(self.kwargs.get("perplexity", 30.0))
        if perplexity >= len(x):
            raise DataError(
                f"t-SNE's perplexity ({perplexity:g}) must be below the number of objects ({len(x)}); "
                "set reduce_dimensions.tsne.kwargs.perplexity lower"
            )
        self.embedding_ = TSNE(**self.kwargs).fit_transform(x).astype(np.float32)
        keys = _row_keys(x)
        self.order_ = np.argsort(keys, kind="stable")
        self.keys_ = keys[self.order_]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        keys = _row_keys(np.asarray(x, dtype=np.float32))
        pos = np.minimum(np.searchsorted(self.keys_, keys), len(self.keys_) - 1)
        found = self.keys_[pos] == keys
        if not found.all():
            raise DataError(
                f"t-SNE maps only the objects it was fitted on, and {int((~found).sum())} of these "
                "were not among them: set reduce_dimensions.fit_sample_size to at least the number "
                "of objects (t-SNE can't place new points; UMAP and PCA can)"
            )
        return self.embedding_[self.order_[pos]]
