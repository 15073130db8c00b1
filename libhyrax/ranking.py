"""The rank stage's engine: a model of what the user finds interesting, learned from a few labelled
latents, combined with the unsupervised anomaly score (Astronomaly's loop, Lochner & Bassett 2021).

    model = LabelModel(exploration=0.2).fit(labelled_latents, labels / 5, sample_latents)
    score = model.score(latents, anomaly)          # a batch at a time; higher = look at it sooner
    model.cross_validate(labelled_latents, labels / 5)   # how well it agrees with labels it did not see

For each object:
    anomaly    the unsupervised score as a rank percentile (0 = most ordinary, 1 = most unusual)
    interest   the model's probability that the user would call it interesting (label >= positive_from):
               extremely randomised trees fitted on the labelled latents, the two classes weighted
               equally (fast, and fine with a hundred labels)
    novelty    how far the object lies from every labelled one, 0 (labelled) .. 1 (far away), in units
               of the median such distance over a seeded sample of all objects
    score      anomaly^2 x ((1 - e * novelty) * interest + e * novelty)

`e` is the exploration (0..1): at 0 the model's prediction is trusted everywhere (exploitation: more of
what was liked); towards 1, objects far from every label keep their anomaly score, so unusual objects in
regions nobody has looked at still surface. With labels of one class only there is nothing to tell apart,
so the trees learn the labelled objects against a sample of all: the interest is how much an object looks
like them (only interesting ones: more like these) or how little (only boring ones: anything but these).
"""

from __future__ import annotations

import numpy as np

DIST_BATCH = 65536  # objects per batch when measuring the distance to the labelled ones
# the anomaly percentile counts squared: as a percentile the top 5% (the clearly unusual) and the next 5%
# are barely apart, so objects the trees merely guess about crowded out the clearly unusual ones. Over seven
# 20k-object synthetic surveys (benchmarks/bench_active.py) precision@50 after 5 rounds was 0.88 on average
# (worst 0.76) squared, 0.81 (worst 0.46) as is, 0.83 cubed.
ANOMALY_POWER = 2
ONE_CLASS_SAMPLE = 1000  # objects of the sample the labelled ones are told apart from when all are one class


class LabelModel:
    """Estimator contract: construction stores parameters; `fit` returns self; fitted state ends in _."""

    def __init__(self, exploration: float = 0.2, n_estimators: int = 200, seed: int = 0,
                 positive_from: float = 0.6):
        self.exploration, self.n_estimators, self.seed = float(exploration), int(n_estimators), int(seed)
        self.positive_from = float(
            positive_from
        )  # interest (label / scale) at or above which it is "interesting"

    def fit(self, latents: np.ndarray, interest: np.ndarray, sample: np.ndarray) -> LabelModel:
        """`latents` (L, D) of the labelled objects, `interest` (L,) their labels scaled to 0..1, and
        `sample` (S, D): a seeded sample of all objects (the distance scale of `novelty`)."""
        self.labelled_ = np.ascontiguousarray(latents, dtype=np.float32)
        self.labelled64_ = self.labelled_.astype(np.float64)  # float64: the same distances whatever the batch
        self.labelled_sq_ = (self.labelled64_**2).sum(1)
        y = np.asarray(interest, np.float64)
        positive = y >= self.positive_from
        self.classes_ = (
            "both" if 0 < positive.sum() < len(y) else "interesting" if positive.all() else "boring"
        )
        if self.classes_ == "both":
            self.trees_ = _trees(self.labelled_, positive, self.n_estimators, self.seed)
        else:  # one class: how much an object looks like the labelled ones rather than like any object
            rng = np.random.default_rng(self.seed)
            others = np.asarray(sample, np.float32)[
                rng.choice(len(sample), min(len(sample), ONE_CLASS_SAMPLE), replace=False)
            ]
            like = np.r_[np.ones(len(y), bool), np.zeros(len(others), bool)]
            self.trees_ = _trees(np.concatenate([self.labelled_, others]), like, self.n_estimators, self.seed)
        d = self.distance(sample)
        far = d[d > 0]
        self.scale_ = float(np.median(far)) if far.size else 1.0
        return self

    def distance(self, latents: np.ndarray) -> np.ndarray:
        """The distance from each object to the nearest labelled one."""
        x = np.asarray(latents, np.float32)
        out = np.empty(len(x), np.float32)
        for start in range(0, len(x), DIST_BATCH):
            b = x[start : start + DIST_BATCH].astype(np.float64)
            d2 = (b**2).sum(1)[:, None] - 2 * (b @ self.labelled64_.T) + self.labelled_sq_[None]
            out[start : start + len(b)] = np.sqrt(np.maximum(d2.min(1), 0))
        return out

    def predict(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(interest, novelty) of each object, both 0..1."""
        x = np.asarray(latents, np.float32)
        novelty = 1 - np.exp(-self.distance(x) / self.scale_)
        interest = self.trees_.predict_proba(x)[:, 1]
        if self.classes_ == "boring":
            interest = 1 - interest  # anything but these
        return np.clip(interest, 0, 1).astype(np.float32), novelty.astype(np.float32)

    def score(self, latents: np.ndarray, anomaly: np.ndarray) -> dict[str, np.ndarray]:
        """score, interest and novelty of a batch; `anomaly`: its rank percentiles (0..1)."""
        interest, novelty = self.predict(latents)
        e = self.exploration
        score = np.asarray(anomaly, np.float32) ** ANOMALY_POWER * (
            (1 - e * novelty) * interest + e * novelty
        )
        return {"score": score.astype(np.float32), "interest": interest, "novelty": novelty}

    def cross_validate(self, latents: np.ndarray, interest: np.ndarray, folds: int = 5) -> dict:
        """The model's agreement with labels it was not fitted on: k-fold (stratified) predictions of
        the labelled objects, as ROC AUC and accuracy (P >= 0.5) against interesting (>= positive_from)
        or not. Needs at least 2 labels of each class; else the reason why there is no figure."""
        from sklearn.model_selection import StratifiedKFold

        y = np.asarray(interest, np.float64)
        positive = y >= self.positive_from
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        k = min(folds, n_pos, n_neg)
        if k < 2:
            return {
                "folds": 0,
                "roc_auc": None,
                "accuracy": None,
                "why_none": f"needs at least 2 interesting and 2 boring labels (has {n_pos} and {n_neg})",
            }
        x = np.asarray(latents, np.float32)
        held_out = np.empty(len(y))  # P(interesting) from a model that did not see the object
        for train, test in StratifiedKFold(k, shuffle=True, random_state=self.seed).split(x, positive):
            trees = _trees(
                x[train], positive[train], self.n_estimators, self.seed
            )  # k <= each class's count:
            held_out[test] = trees.predict_proba(x[test])[:, 1]  # both in every fold
        from libhyrax.scorers import roc_auc

        return {
            "folds": k,
            "roc_auc": roc_auc(held_out, positive),
            "accuracy": float(np.mean((held_out >= 0.5) == positive)),
        }


def _trees(x: np.ndarray, positive: np.ndarray, n_estimators: int, seed: int):
    """Extremely randomised trees telling positive from negative, the classes weighted equally however
    few positives there are; `.predict_proba(x)[:, 1]` is P(positive)."""
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(
        n_estimators=n_estimators, random_state=seed, n_jobs=1, class_weight="balanced"
    ).fit(x, positive)


def rank_percentile(scores: np.ndarray) -> np.ndarray:
    """0 = lowest, 1 = highest; ties share their mean rank. NaN counts as the lowest."""
    from scipy.stats import rankdata

    s = np.where(np.isfinite(scores), scores, -np.inf)
    return ((rankdata(s) - 1) / max(len(s) - 1, 1)).astype(np.float32)
