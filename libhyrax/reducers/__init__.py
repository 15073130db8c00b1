"""Reducers: the extension point that maps latent vectors to a few dimensions, scikit-learn style.

    class MyReducer(Reducer):
        name = "mine"                       # `reduce_dimensions.algorithm = "mine"` picks it
        def fit(self, x):                   # x: (n, d) float32, finite
            self.mean_ = x.mean(0); return self
        def transform(self, x):             # -> (n, n_components) float32
            return (x - self.mean_)[:, :self.n_components]

Construction only stores keyword arguments (`self.kwargs`); `fit` returns `self`; fitted state ends in
`_`. `save(path)`/`Reducer.load(path)` pickle the fitted object, so a reducer fitted once (`hyrax umap`)
maps new data later (`hyrax umap --reducer RUN_DIR`). Unpickling runs code, so `save` signs the file and
`load` refuses one this account's Hyrax didn't write unless its run is trusted (libhyrax.trust).
Subclasses register themselves by `name` (two different classes can't share one; see libhyrax.registry).
Built in: `umap` (umap-learn), `pca` and `tsne` (scikit-learn; a map of the objects it is fitted on).
Nothing heavy is imported until `fit`/`load`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from libhyrax import atomic, trust
from libhyrax.errors import DataError
from libhyrax.registry import Registry

REDUCER_FILE = "reducer.pkl"
# the built-ins, imported when first named (umap-learn and scikit-learn load later still, in fit)
BUILT_IN = {
    "umap": "libhyrax.reducers.umap",
    "pca": "libhyrax.reducers.pca",
    "tsne": "libhyrax.reducers.tsne",
}


class Reducer:
    name: ClassVar[str] = ""

    def __init__(self, **kwargs):
        self.kwargs = dict(kwargs)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            REGISTRY.register(cls.name, cls)

    @property
    def n_components(self) -> int:
        return int(self.kwargs.get("n_components", 2))

    def fit(self, x: np.ndarray) -> Reducer:
        raise NotImplementedError

    def transform(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic.replacing(path) as tmp:  # shards of one run may save at once
            with open(tmp, "wb") as f:
                pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            trust.sign(tmp)  # its signature goes first: the pickle is never there unsigned
            os.replace(tmp.with_name(tmp.name + trust.SUFFIX), path.with_name(path.name + trust.SUFFIX))
        return path

    @staticmethod
    def load(path: str | os.PathLike, trusted_runs=()) -> Reducer:
        """A fitted reducer from a file written by `save`, or from a umap run's directory. It must be
        signed by this account's Hyrax, or lie in one of `trusted_runs` (general.trusted_runs)."""
        path = Path(path)
        if path.is_dir():
            path = path / REDUCER_FILE
        if not path.is_file():
            raise DataError(
                f"no fitted reducer at {path}; give the results directory of a `hyrax umap` "
                f"run (each saves its reducer as {REDUCER_FILE})"
            )
        trust.check_loadable(path, "a pickled reducer", trusted_runs)
        import_heavy_for_unpickle()
        try:
            with open(path, "rb") as f:
                reducer = pickle.load(f)
        except Exception as e:  # a truncated file, or a class that no longer imports
            raise DataError(f"{path} can't be loaded as a fitted reducer ({type(e).__name__}: {e})") from None
        if not isinstance(reducer, Reducer):
            raise DataError(f"{path} holds a {type(reducer).__name__}, not a Hyrax reducer")
        return reducer

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({args})"


def import_heavy_for_unpickle() -> None:
    """Unpickling a UMAP model needs numba's cache to be writable (read-only installs crash otherwise)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "hyrax-numba"))


# defined after Reducer: an import path must name a Reducer subclass
REGISTRY: Registry[type[Reducer]] = Registry(
    "reduce_dimensions.algorithm",
    import_paths=True,
    base=Reducer,
    lazy=BUILT_IN,
    rename_hint="give one of the classes another `name = ...`",
)


def make_reducer(algorithm: str, kwargs: dict) -> Reducer:
    """A new (unfitted) reducer: a registered name (`umap`, `pca`) or an import path `pkg.mod.Class`."""
    return REGISTRY.lookup(algorithm)(**kwargs)


__all__ = ["REDUCER_FILE", "REGISTRY", "Reducer", "make_reducer"]
