"""Compile UMAP's numba code once, into the cache every later `hyrax umap` reads, so a new user's first
map takes seconds instead of a minute of compiling. `make install` runs it (and the image build can):

    python -m libhyrax.reducers.warm          # into $NUMBA_CACHE_DIR, default ~/.cache/hyrax-numba

It fits the default UMAP (the settings `hyrax umap` uses) on random samples and maps more points through
each fit in a worker-like second step, which compiles what both fit and transform use: once below
umap-learn's NNDESCENT_FROM objects (exact neighbours) and once above, where umap-learn searches the
neighbours with pynndescent, whose numba code is most of the compiling a first large map would do. That
sample has WIDE dimensions, so pynndescent's trees split it level by level in parallel as they split any
large map (a node of more than 1 MiB of vectors), not only in the small-node code.
"""

from __future__ import annotations

import sys
import time

import numpy as np

NNDESCENT_FROM = 4096  # umap-learn finds the neighbours of this many objects or more with pynndescent
WIDE = 128  # 4,096 x 128 float32 is 2 MiB: past pynndescent's 1 MiB a node, so its level-split code runs


def warm() -> float:
    from libhyrax.config import default_config
    from libhyrax.reducers import import_heavy_for_unpickle
    from libhyrax.reducers.umap import UMAPReducer

    import_heavy_for_unpickle()  # sets NUMBA_CACHE_DIR before numba loads
    t0 = time.perf_counter()
    kwargs = dict(default_config()["reduce_dimensions"].get("umap", {}).get("kwargs", {}))
    kwargs.setdefault("random_state", 42)
    rng = np.random.default_rng(0)
    small = rng.normal(size=(600, 16)).astype(np.float32)
    UMAPReducer(**kwargs).fit(small[:500]).transform(small[500:])
    large = rng.normal(size=(NNDESCENT_FROM + 200, WIDE)).astype(np.float32)
    UMAPReducer(**kwargs).fit(large[:NNDESCENT_FROM]).transform(large[NNDESCENT_FROM:])
    # a large map also measures distances between float64 points (its embedding) with umap-learn's own
    # euclidean, a signature neither fit above compiles: the last thing a first 10k-object map compiled
    from umap.distances import euclidean

    euclidean(np.zeros(2), np.ones(2))
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"UMAP compiled into numba's cache in {warm():.1f} s", file=sys.stderr)
