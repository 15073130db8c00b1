"""How much of the latents' neighbourhoods a map keeps (issue 25): distances on a 2-D map are only worth
trusting as far as an object's neighbours on the map are its neighbours in the latent space.

- `knn_overlap`: the mean fraction of each object's k nearest neighbours in the latent space that are among
  its k nearest neighbours on the map (1: every neighbourhood kept; a random map: about k / n).
- `trustworthiness`: sklearn's (Venna & Kaski): 1 when no object's map neighbours are strangers in the
  latent space, penalised by how far down the latent ranking they are; ~0.5 for a random map.

Both in Euclidean distances (those `search`, `index` and the k-NN anomaly score use), on a seeded sample of
the latents, so the cost is bounded (a sample of 2,000 takes about a second).
"""

from __future__ import annotations

import numpy as np

K = 10


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows (indices), in x's Euclidean distances."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    return idx[:, 1:]


def knn_overlap(latent: np.ndarray, mapped: np.ndarray, k: int = K) -> float:
    a, b = neighbours(latent, k), neighbours(mapped, k)
    # per row, the size of the intersection of two sets of k indices
    shared = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def neighbourhood_fidelity(latent: np.ndarray, mapped: np.ndarray, k: int = K) -> dict | None:
    """{"n", "k", "knn_overlap", "trustworthiness"} of a map of `latent`; None when there are too few
    objects for k neighbours (trustworthiness needs k < n / 2)."""
    from sklearn.manifold import trustworthiness

    latent = np.asarray(latent, np.float64)
    mapped = np.asarray(mapped, np.float64)
    n = len(latent)
    k = min(k, (n - 1) // 2)
    if k < 1:
        return None
    return {"n": n, "k": k, "knn_overlap": round(knn_overlap(latent, mapped, k), 4),
            "trustworthiness": round(float(trustworthiness(latent, mapped, n_neighbors=k)), 4)}
