"""check_reducer: fit a reducer class on random latents as `hyrax umap` does and say what is missing."""

from __future__ import annotations

import pickle

import numpy as np

from libhyrax.contract import contract_error, missing_methods, require_subclass
from libhyrax.reducers import Reducer


def check_reducer(cls: type, n_components: int = 2) -> dict:
    """`cls(n_components=...)` fitted on 200 random 8-dimensional latents, its `transform` checked and the
    fitted object pickled and loaded again (how `hyrax umap --reducer RUN` reuses it). Returns a summary;
    raises a UsageError listing every problem."""
    require_subclass(cls, Reducer, "check_reducer")
    problems = missing_methods(cls, Reducer, {
        "fit": "fit(self, x) learning from (n, d) latents and returning self",
        "transform": "transform(self, x) returning (n, n_components)"})
    if problems:
        raise contract_error(cls, "reducer", problems)
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    try:
        reducer = cls(n_components=n_components)
        fitted = reducer.fit(x)
        y = np.asarray(reducer.transform(x))
    except Exception as e:  # noqa: BLE001 - any failure is the user's to read
        raise contract_error(cls, "reducer", [f"building, fitting or transforming failed: "
                                              f"{type(e).__name__}: {e}"]) from None
    if fitted is not reducer:
        problems.append("fit(x) must return self")
    if y.shape != (len(x), n_components) or y.dtype.kind != "f":
        problems.append(f"transform(x) must return ({len(x)}, n_components={n_components}) floats; it "
                        f"returned {y.dtype} {y.shape} (the number of components is self.n_components)")
    elif not np.isfinite(y).all():
        problems.append("transform(x) returned NaN or infinite values")
    try:
        again = pickle.loads(pickle.dumps(reducer))
        np.asarray(again.transform(x[:5]))
    except Exception as e:  # noqa: BLE001
        problems.append(f"a fitted reducer is saved with pickle for `hyrax umap --reducer`, and this one "
                        f"can't be ({type(e).__name__}: {e}); keep fitted state in plain attributes "
                        "ending in _")
    if problems:
        raise contract_error(cls, "reducer", problems)
    return {"class": cls.__name__, "name": cls.name or None, "output_shape": list(y.shape)}
