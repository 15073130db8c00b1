"""check_scorer, check_reducer, check_index, check_provider: a good class passes with a summary, a broken
one fails with every problem said in plain words."""

from __future__ import annotations

import numpy as np
import pytest

import libhyrax
from libhyrax.errors import UsageError
from libhyrax.reducers import Reducer
from libhyrax.scorers import SCORERS, Scorer
from libhyrax.surveys.base import Fetched, Provider, Request
from libhyrax.vector_index import REGISTRY as INDEXES
from libhyrax.vector_index import VectorIndex


def test_check_scorer_passes_the_built_ins_and_explains_a_broken_one(monkeypatch):
    from libhyrax.scorers import IsolationForestScore, KnnDistance, ReconError

    assert libhyrax.check_scorer(KnnDistance) == {"class": "KnnDistance", "name": "knn", "needs": ["latent"]}
    assert libhyrax.check_scorer(ReconError)["needs"] == ["recon_error"]
    assert libhyrax.check_scorer(IsolationForestScore)["name"] == "isolation_forest"

    class Unnamed(Scorer):
        needs = ("pixels",)

    with pytest.raises(UsageError) as e:
        libhyrax.check_scorer(Unnamed)
    assert "1. define score(self, batch)" in str(e.value)
    assert "2. give it a name" in str(e.value) and "not ['pixels']" in str(e.value)

    monkeypatch.setattr(SCORERS, "_entries", dict(SCORERS._entries))

    class OneNumber(Scorer):
        name = "one_number"

        def score(self, batch):
            return np.float32(1.0)  # one number for the whole batch instead of one per object

    with pytest.raises(UsageError, match=r"shape \(16,\) for 16 objects; it returned float32 \(\)"):
        libhyrax.check_scorer(OneNumber)
    with pytest.raises(UsageError, match="pass KnnDistance itself, not an instance"):
        libhyrax.check_scorer(KnnDistance())


def test_check_reducer_passes_pca_and_explains_a_broken_one():
    from libhyrax.reducers.pca import PCAReducer

    assert libhyrax.check_reducer(PCAReducer) == {"class": "PCAReducer", "name": "pca",
                                                  "output_shape": [200, 2]}

    class FirstColumns(Reducer):
        def fit(self, x):
            return None  # forgets to return self

        def transform(self, x):
            return x[:, :3]  # ignores n_components

    with pytest.raises(UsageError) as e:
        libhyrax.check_reducer(FirstColumns)
    assert "1. fit(x) must return self" in str(e.value)
    assert "2. transform(x) must return (200, n_components=2) floats; it returned float32 (200, 3)" in (
        str(e.value))
    with pytest.raises(UsageError, match="does not subclass libhyrax.reducers.Reducer"):
        libhyrax.check_reducer(dict)


def test_check_index_passes_exact_and_explains_a_broken_one(monkeypatch):
    from libhyrax.vector_index.exact import ExactIndex

    assert libhyrax.check_index(ExactIndex) == {"class": "ExactIndex", "backend": "exact", "n_vectors": 50,
                                                "dim": 8}
    monkeypatch.setattr(INDEXES, "_entries", dict(INDEXES._entries))

    class Squared(ExactIndex):  # similarity-style scores: squared distances
        backend = "squared_check"

        def _search(self, vectors, k):
            rows, dist = super()._search(vectors, k)
            return rows, np.asarray(dist) ** 2 + 1.0

    with pytest.raises(UsageError, match="_search must return L2 distances"):
        libhyrax.check_index(Squared)

    class Nothing(VectorIndex):
        pass

    with pytest.raises(UsageError) as e:
        libhyrax.check_index(Nothing)
    assert "define _add(self, rows, vectors)" in str(e.value) and "give it a backend name" in str(e.value)


def test_check_provider_passes_url_template_and_explains_a_broken_one():
    from libhyrax.surveys.url_template import URLTemplate

    settings = {"url": "https://archive.example.org/c?ra={ra}&dec={dec}&size={size}&band={band}"}
    assert libhyrax.check_provider(URLTemplate, settings) == {"class": "URLTemplate", "name": "url_template",
                                                              "requests": 4, "cells": 4}

    class FirstBandOnly(Provider):
        def requests(self, targets):
            for t in targets:
                yield Request([(t.index, 0)], "GET", self.url)

        def read(self, request, body):
            return {(0, 0): Fetched(np.zeros((16, 16), np.float32))}

    with pytest.raises(UsageError) as e:
        libhyrax.check_provider(FirstBandOnly)
    assert "no request fetches the cells [(0, 1), (1, 1)]" in str(e.value)
