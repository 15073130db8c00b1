"""Compile UMAP's numba code once, into the cache every later `hyrax umap` reads, so a new user's first
map takes seconds instead of a minute of compiling. `make install` runs it (and the image build can):

    python -m libhyrax.reducers.warm          # into $NUMBA_CACHE_DIR, default ~/.cache/hyrax-numba

It fits the default UMAP (the settings `hyrax umap` uses) on a small random sample and maps more points
through it in a worker-like second step, which compiles what both fit and transform use.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def warm() -> float:
    from libhyrax.config import default_config
    from libhyrax.reducers import import_heavy_for_unpickle
    from libhyrax.reducers.umap import UMAPReducer

    import_heavy_for_unpickle()  # sets NUMBA_CACHE_DIR before numba loads
    t0 = time.perf_counter()
    kwargs = dict(default_config()["reduce_dimensions"].get("umap", {}).get("kwargs", {}))
    kwargs.setdefault("random_state", 42)
    x = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    UMAPReducer(**kwargs).fit(x[:500]).transform(x[500:])
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"UMAP compiled into numba's cache in {warm():.1f} s", file=sys.stderr)
