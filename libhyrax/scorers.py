"""Anomaly scorers: how unusual each object is, higher = more unusual.

Each scorer is cheap to build (`from_config(cfg)`), learns what it needs in `fit(latents)` (a matrix or an
HDF5 dataset of all latents) and scores one batch at a time with `score(batch)`, where a batch is a dict
holding "latent" (B, D), "rows" (B,) (the objects' rows in the latents file) and, when infer saved it,
"recon_error" (B,). Subclasses register themselves by `name`; `anomaly.method` (or `--method`) picks one by
name or import path, and "combined" uses every registered scorer whose inputs (`needs`) the latents hold:

    class Brightness(Scorer):
        name = "brightness"                 # `hyrax anomaly --method brightness`; part of "combined"
        def score(self, batch):
            return np.abs(batch["latent"]).sum(1)

`libhyrax.check_scorer(Brightness)` says in plain words what a scorer class is missing. Built in:

    knn                the distance to the k-th nearest other object in latent space (exact torch
                       search, on the GPU when there is one, among all latents or a seeded sample of
                       them: `sample_size`; or an index's search)
    recon_error        the autoencoder's reconstruction error saved by `infer`
    isolation_forest   scikit-learn's IsolationForest, fitted on a seeded sample of latents

`combine_by_rank` averages the methods' rank percentiles: robust to their very different scales.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from libhyrax.errors import DataError, UsageError, unknown_choice
from libhyrax.hdf5 import read_rows
from libhyrax.registry import Registry

COMBINED = "combined"  # every registered scorer the latents can feed, combined by rank
log = logging.getLogger("hyrax.anomaly")
# exact knn is all against all: N^2 distances. Measured on 2 idle CPU cores: ~5e8 distances/s (100k objects
# 20 s; 1M about 32 min), 2.2e8 with the cores shared. Through a ChromaDB index (ef_search 800) 1M took
# about as long (10k objects in 19 s); the index's time grows as N log N, exact's as N^2.
CPU_DISTANCES_PER_S = 5e8
WARN_EXACT_CPU_N = 200_000


class Scorer:
    """The base class of anomaly scorers. `name`: how `anomaly.method` names it (registered when set);
    `needs`: the arrays of the latents file it reads ("latent", "recon_error")."""

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ("latent",)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            SCORERS.register(cls.name, cls)

    @classmethod
    def from_config(cls, cfg: dict, index=None) -> Scorer:
        """A new scorer from the resolved config (its `[anomaly]` table). `index`: the vector index of these
        latents, when `wants_index(cfg)`."""
        return cls()

    @classmethod
    def wants_index(cls, cfg: dict) -> bool:
        """Whether this scorer searches an index run's vector index under `cfg`."""
        return False

    def fit(self, latents) -> Scorer:
        return self

    def score(self, batch: dict) -> np.ndarray:
        raise NotImplementedError


# defined after Scorer: an import path must name a Scorer subclass
SCORERS: Registry[type[Scorer]] = Registry(
    "anomaly method",
    error=UsageError,
    import_paths=True,
    base=Scorer,
    rename_hint="give one of the classes another `name = ...`",
)


class KnnDistance(Scorer):
    """The distance to the k-th nearest neighbour (the object itself excluded).

    Exact search is all against all, N^2 distances. With `sample_size` > 0 and more objects than that,
    the neighbours are searched among a seeded sample of `sample_size` objects instead: N x sample_size
    distances, and memory for the sample alone. The score is then a coarser density estimate (the k-th
    neighbour among a sample sits about as far as the (k N / sample_size)-th among all), the same
    ranking in expectation. `score` needs the batch's rows ("rows") to leave a sampled object out of
    its own neighbours."""

    name = "knn"

    def __init__(self, k: int = 10, device: str = "auto", index=None, sample_size: int = 0, seed: int = 0):
        self.k, self.device, self.index = int(k), device, index
        self.sample_size, self.seed = int(sample_size), int(seed)

    @classmethod
    def from_config(cls, cfg: dict, index=None) -> KnnDistance:
        acfg = cfg["anomaly"]
        general = cfg["general"]
        return cls(acfg["k"], general["device"], index, acfg["knn_sample_size"], general["seed"])

    @classmethod
    def wants_index(cls, cfg: dict) -> bool:
        source = cfg["anomaly"]["knn_source"]
        if source not in ("auto", "exact", "index"):
            raise UsageError(unknown_choice("anomaly.knn_source", source, ("auto", "exact", "index")))
        return source != "exact"  # "auto": the stage looks for a faiss index of the latents

    def fit(self, latents) -> KnnDistance:
        self.rows_ = None  # every object is in the reference set
        if self.index is None:
            import torch

            from libhyrax.device import pick_device

            total = len(latents)
            if 0 < self.sample_size < total:
                self.rows_ = np.sort(
                    np.random.default_rng(self.seed).choice(total, self.sample_size, replace=False)
                )
                reference = np.asarray(read_rows(latents, self.rows_), dtype=np.float32)
                log.info(
                    "knn: the neighbours of %d objects are searched among a seeded sample of %d "
                    "(anomaly.knn_sample_size)",
                    total,
                    self.sample_size,
                )
            else:
                reference = np.ascontiguousarray(latents[:], dtype=np.float32)
            self.data_ = torch.from_numpy(reference).to(pick_device(self.device))
            self.data_sq_ = (self.data_ * self.data_).sum(1)
            n = len(self.data_)
            distances = float(total) * n
            if self.data_.device.type == "cpu" and distances >= float(WARN_EXACT_CPU_N) ** 2:
                log.warning(
                    "exact knn of %d objects among %d on the CPU: %.1e distances, roughly %.0f min on 2 "
                    "idle cores. A GPU (general.device) is far faster; --shard I/N (or a Slurm array) "
                    "splits the rows across machines; a smaller anomaly.knn_sample_size, or an index "
                    "(--set anomaly.knn_source=index), cuts the distances",
                    total,
                    n,
                    distances,
                    distances / CPU_DISTANCES_PER_S / 60,
                )
        else:
            n = len(self.index)
        if n < 2:
            raise DataError("the knn anomaly score needs at least 2 objects")
        self.k_ = min(self.k, n - 1)
        return self

    def score(self, batch: dict) -> np.ndarray:
        q = np.ascontiguousarray(batch["latent"], dtype=np.float32)
        if self.index is not None:
            _, dist = self.index.search(q, self.k_ + 1)
            return dist[:, -1]
        import torch

        from libhyrax.vector_index.exact import knn

        _, dist = knn(self.data_, torch.from_numpy(q).to(self.data_.device), self.k_ + 1, self.data_sq_)
        dist = dist.cpu().numpy()
        if self.rows_ is None:
            return dist[:, -1]  # column 0 is the object itself, at distance 0
        rows = np.asarray(batch["rows"])
        pos = np.minimum(np.searchsorted(self.rows_, rows), len(self.rows_) - 1)
        in_sample = self.rows_[pos] == rows  # those found themselves at distance 0: skip that column
        return np.where(in_sample, dist[:, -1], dist[:, -2])


class ReconError(Scorer):
    """The reconstruction error infer saved (autoencoders)."""

    name = "recon_error"
    needs = ("recon_error",)

    def score(self, batch: dict) -> np.ndarray:
        return np.asarray(batch["recon_error"], dtype=np.float32)


class IsolationForestScore(Scorer):
    """scikit-learn's IsolationForest on a seeded sample; the score is minus its `score_samples`."""

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 200, sample_size: int = 100_000, seed: int = 0):
        self.n_estimators, self.sample_size, self.seed = int(n_estimators), int(sample_size), int(seed)

    @classmethod
    def from_config(cls, cfg: dict, index=None) -> IsolationForestScore:
        acfg = cfg["anomaly"]
        return cls(acfg["n_estimators"], acfg["fit_sample_size"], cfg["general"]["seed"])

    def fit(self, latents) -> IsolationForestScore:
        from sklearn.ensemble import IsolationForest

        n = len(latents)
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(n, size=min(n, self.sample_size), replace=False))
        sample = np.asarray(read_rows(latents, rows) if len(rows) < n else latents[:], dtype=np.float32)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(sample)
        return self

    def score(self, batch: dict) -> np.ndarray:
        return -self.forest_.score_samples(np.asarray(batch["latent"], dtype=np.float32)).astype(np.float32)


def combine_by_rank(scores: dict[str, np.ndarray]) -> np.ndarray:
    """The mean over methods of each object's rank percentile (0 = most ordinary, 1 = most unusual);
    ties share their mean rank."""
    from scipy.stats import rankdata

    ranks = [(rankdata(s) - 1) / max(len(s) - 1, 1) for s in scores.values()]
    return np.mean(ranks, axis=0).astype(np.float32)


def precision_at_k(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, kind="stable")[:k]
    return float(np.mean(truth[top])) if len(top) else float("nan")


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """The probability that an injected anomaly scores above an ordinary object (ties count half)."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def check_scorer(cls: type, config: dict | None = None) -> dict:
    """Build `cls` from the config (default: the defaults), fit it on 64 random latents and score 16 of
    them as the anomaly stage does. Returns a summary; raises a UsageError listing every problem."""
    from libhyrax.config import resolve
    from libhyrax.contract import contract_error, missing_methods, require_subclass

    require_subclass(cls, Scorer, "check_scorer")
    problems = missing_methods(cls, Scorer, {"score": "score(self, batch) returning one number per object"})
    if not cls.name:
        problems.append(
            'give it a name (name = "mine"): anomaly.method picks a scorer by it, and "combined" '
            "uses every named one"
        )
    unknown = [a for a in cls.needs if a not in ("latent", "recon_error")]
    if unknown:
        problems.append(
            f"needs = {cls.needs!r}: a latents file holds 'latent' and 'recon_error', not {unknown}"
        )
    if problems:
        raise contract_error(cls, "anomaly scorer", problems)
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(64, 8)).astype(np.float32)
    batch = {"latent": latents[:16], "rows": np.arange(16), "recon_error": rng.random(16).astype(np.float32)}
    try:
        scorer = cls.from_config(resolve(config if config is not None else {}))
    except Exception as e:  # noqa: BLE001 - any failure is the user's to read
        raise contract_error(
            cls,
            "anomaly scorer",
            [
                f"{cls.__name__}.from_config(cfg) failed: "
                f"{type(e).__name__}: {e}; build it from the config's "
                "[anomaly] table, or give __init__ defaults"
            ],
        ) from None
    try:
        fitted = scorer.fit(latents)
        scores = np.asarray(fitted.score(batch))
    except Exception as e:  # noqa: BLE001
        raise contract_error(
            cls, "anomaly scorer", [f"fit or score failed on random latents: {type(e).__name__}: {e}"]
        ) from None
    if fitted is not scorer:
        problems.append("fit(latents) must return self")
    if scores.shape != (16,) or scores.dtype.kind not in "fiu":
        problems.append(
            f"score(batch) must return one number per object, shape (16,) for 16 objects; it "
            f"returned {scores.dtype} {scores.shape}"
        )
    elif not np.isfinite(scores).all():
        problems.append("score(batch) returned NaN or infinite values")
    if problems:
        raise contract_error(cls, "anomaly scorer", problems)
    return {"class": cls.__name__, "name": cls.name, "needs": list(cls.needs)}
