"""UMAP (umap-learn), seeded: `random_state` makes fit and transform reproducible (single-threaded).

`whiten` (Hyrax's own keyword, not umap's): the latents are PCA-whitened before UMAP (centred, turned onto
their principal axes, each axis scaled to unit variance), so every direction of the latent space counts in
the neighbour distances, not just the direction of largest variance. An autoencoder's latent scale is
arbitrary (its decoder undoes any linear map): one direction may hold 99% of the variance while the types
of object differ along the small ones, and the map is then a thin curve ordered by that one number
(issue 16). The whitening is fitted with the map and saved with it. It is off by default (issue 25): it
gives noise directions the same weight as the rest, and on real galaxies the map then keeps half of what
the latents know of flux; the default autoencoder's latent is standardised already.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from libhyrax.errors import ConfigError
from libhyrax.reducers import Reducer, import_heavy_for_unpickle

# principal axes with less than this fraction of the largest variance are left out of the whitening:
# only a degenerate direction (a constant dimension, fewer objects than dimensions) is that small
WHITEN_RTOL = 1e-10


def fit_whitening(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, projection) such that (x - mean) @ projection has unit variance along every principal axis
    of x; None when x has no variance at all."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / max(len(x) - 1, 1)
    if not len(var) or not var.max() > 0:
        return None
    keep = var > WHITEN_RTOL * var.max()
    return mean, vt[keep].T / np.sqrt(var[keep])


class UMAPReducer(Reducer):
    name = "umap"

    def fit(self, x: np.ndarray) -> UMAPReducer:
        import_heavy_for_unpickle()
        import umap

        cache_compiled()
        kwargs = dict(self.kwargs)
        whiten = kwargs.pop("whiten", False)
        if not isinstance(whiten, bool):
            raise ConfigError(f"reduce_dimensions.umap.kwargs.whiten must be true or false, not {whiten!r}")
        self.whiten_ = fit_whitening(x) if whiten else None
        x = self._whitened(x)
        # UMAP needs more points than neighbours; a tiny sample would otherwise fail deep inside
        kwargs["n_neighbors"] = int(min(kwargs.get("n_neighbors", 15), max(2, len(x) - 1)))
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": we seed on purpose
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            self.model_ = umap.UMAP(**kwargs).fit(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        cache_compiled()  # in a worker process, or a reducer loaded from reducer.pkl
        return np.asarray(self.model_.transform(self._whitened(x)), dtype=np.float32)

    def _whitened(self, x: np.ndarray) -> np.ndarray:
        w = getattr(self, "whiten_", None)  # a reducer saved before `whiten` existed has none
        if w is None:
            return np.asarray(x, dtype=np.float32)
        mean, projection = w
        return ((np.asarray(x, dtype=np.float64) - mean) @ projection).astype(np.float32)


_cached = False


def cache_compiled() -> None:
    """Keep umap-learn's compiled numba functions in NUMBA_CACHE_DIR, as pynndescent's already are:
    umap-learn doesn't ask numba to cache them, so every process compiled them again (seconds in fit,
    and again in transform, in every worker: most of a small `hyrax umap`). numba's cache tells functions
    apart by module, name, line and argument types, not by compile options, so of a function compiled
    under several (umap.layouts compiles its epoch serial, as a seeded UMAP runs it, and parallel) only
    the serial compilation is cached; the others compile as before. The results are the same either way."""
    global _cached
    if _cached:
        return
    _cached = True
    import umap  # noqa: F401  (its modules, to look in)
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    groups: dict[tuple, dict[int, Dispatcher]] = {}
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "umap" or name.startswith("umap.")):
            for obj in list(vars(module).values()):
                if isinstance(obj, Dispatcher):
                    f = obj.py_func
                    groups.setdefault((f.__module__, f.__qualname__, f.__code__.co_firstlineno), {})[
                        id(obj)
                    ] = obj
    for group in groups.values():
        if any(not isinstance(d._cache, NullCache) for d in group.values()):
            continue  # cached by umap-learn itself
        pick = list(group.values())
        if len(pick) > 1:
            pick = [d for d in pick if not d.targetoptions.get("parallel")]
        if pick:
            try:
                pick[0].enable_caching()
            except Exception:  # noqa: BLE001 - no writable cache directory: it compiles, as before
                pass
