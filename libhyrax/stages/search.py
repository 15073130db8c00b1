"""`search`: the k nearest objects of an object id, a vector or an image, with distances and catalog columns.

    hyrax search --id <object_id> --show                  # the newest index run; prints a table to stderr
    hyrax search --vector query.npy -k 20 --from results/<index-run>
    hyrax search --image cutout.npy                      # through the model that made the index's latents
    hyrax search --labels labels.csv -k 50       # more like these: the interesting ones of a label file

    hits = libhyrax.search(object_ids=["HDF-0001"])     # a notebook: the same table
    hits.to_pandas(); libhyrax.show_neighbors(hits)      # the neighbours' cutouts as a grid

Each search writes `neighbors.csv` (query, rank, object_id, distance, catalog columns) into its results
directory. Object id -> vector is an O(log N) lookup in the index; distances are L2. The catalog columns
come from the data of the index's infer run, and an image goes through the model that made its latents:
both are found by walking the index run's lineage.

More like these: with a label file (libhyrax.labels) the query is the set of its objects labelled
interesting (label >= rank.positive_from), and the answer one list of the k objects nearest to all of
them at once: ranked by their mean distance to the set, from among the members' own neighbours (the set
itself left out).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import IdIndex
from libhyrax.results import Result, check_run
from libhyrax.rundir import INDEX_DIR
from libhyrax.start import start_run
from libhyrax.tables import catalog_rows, cell, format_table, read_table, write_table
from libhyrax.vector_index import VectorIndex

log = logging.getLogger("hyrax.search")
TABLE_FILE = "neighbors.csv"


class Neighbors(Result):
    """A search's results directory and its table: `hits["distance"]`, `len(hits)`, `hits.to_pandas()`."""

    def __init__(self, path, columns: dict[str, np.ndarray] | None = None):
        super().__init__(path)
        self.columns = columns if columns is not None else read_table(Path(path) / TABLE_FILE)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.columns)

    def format(self, max_rows: int = 100) -> str:
        return format_table(self.columns, max_rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{cell(self.columns[c][i])}</td>" for c in self.columns) + "</tr>"
            for i in range(min(len(self), 200))
        )
        return f"<table><tr>{head}</tr>{body}</table>"


def search(
    config=None,
    *,
    from_run: str | os.PathLike | None = None,
    object_ids=None,
    vectors=None,
    image: str | os.PathLike | None = None,
    labels=None,
    k: int | None = None,
    model_run: str | os.PathLike | None = None,
    overrides=(),
) -> Neighbors:
    """The `k` nearest objects of each query: `object_ids`, `vectors` (Q, D) or an `image` file (.npy or
    FITS, bands x H x W) run through the model of the index's latents; or, for `labels` (label files), the
    `k` nearest to all their interesting objects together. `from_run`: an index run (else the newest).
    `model_run`: the train run the image must go through (refused if the index's latents came from
    another model)."""
    plan = start_run("search", config, overrides, from_run=from_run)
    cfg = plan.config
    k = int(cfg["search"]["k"] if k is None else k)
    if k < 1:
        raise UsageError(f"k must be at least 1, not {k}")
    given = [
        name
        for name, v in (
            ("object ids", object_ids),
            ("vectors", vectors),
            ("an image", image),
            ("labels", labels),
        )
        if v is not None and (not isinstance(v, list | tuple) or len(v))
    ]
    if len(given) != 1:
        raise UsageError(
            "give exactly one query: object ids (--id), vectors (--vector), an image (--image) or "
            "a label file (--labels)" + (f"; got {' and '.join(given)}" if given else "")
        )
    src = plan.input
    idx = VectorIndex.open(src.file(INDEX_DIR), cfg["general"]["trusted_runs"])
    try:  # an unknown id or a vector of the wrong length is the user's to fix: a usage error (exit 2)
        if labels is not None:
            positives = labelled_interesting(labels, idx, cfg["rank"]["positive_from"])
            ids, dist = more_like(idx, positives, k)
            queries = [f"{len(positives)} interesting in {', '.join(Path(p).name for p in _paths(labels))}"]
        elif object_ids is not None:
            queries = [str(i) for i in np.atleast_1d(np.asarray(object_ids))]
            ids, dist = idx.search_by_id(queries, k)
        else:
            if image is not None:
                vectors = embed_image(image, src, model_run, cfg["general"]["trusted_runs"])
                queries = [Path(image).name] * len(vectors)
            else:
                vectors = np.asarray(vectors, dtype=np.float32)
                queries = [f"vector {i}" for i in range(len(np.atleast_2d(vectors)))]
            ids, dist = idx.search(vectors, k)
    except DataError as e:
        raise UsageError(str(e)) from None
    group = src.require("infer").data_group()  # the catalog of the objects the index holds
    table = neighbor_table(queries, ids, dist, catalog_rows(group, ids.ravel(), idx.rows(ids.ravel())))
    with plan.open() as run:
        run.add_upstream(src.path)
        write_table(run.file(TABLE_FILE), table)
        run.record(n_queries=len(queries), k=k, query=queries[:20], backend=type(idx).backend)
    return Neighbors(run.path, table)


def _paths(labels) -> list:
    return [labels] if isinstance(labels, str | os.PathLike) else list(labels)


def labelled_interesting(labels, idx: VectorIndex, positive_from: float) -> np.ndarray:
    """The ids a label file calls interesting that the index holds (others counted in a warning)."""
    from libhyrax.labels import keep_known, read_labels

    positives = keep_known(read_labels(_paths(labels)), idx.object_ids()).positives(positive_from)
    if not len(positives):
        raise UsageError(
            f"no object in {', '.join(map(str, _paths(labels)))} is labelled interesting (a label "
            f">= rank.positive_from = {positive_from:g}): nothing to search around"
        )
    return positives


def more_like(idx: VectorIndex, query_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k objects nearest to a set of objects together, as one row: (ids (1, k), mean L2 distance to
    the set (1, k)), the set itself left out. The candidates are the members' own nearest neighbours
    (k + the set's size each): an object near none of them is not considered."""
    queries = idx.vectors(query_ids)
    near, _ = idx.search(queries, k + len(query_ids))
    candidates = np.setdiff1d(np.unique(near), query_ids)
    vectors = idx.vectors(candidates).astype(np.float64)
    d2 = (
        (vectors**2).sum(1)[:, None]
        - 2 * vectors @ queries.T.astype(np.float64)
        + (queries.astype(np.float64) ** 2).sum(1)
    )
    mean = np.sqrt(np.maximum(d2, 0)).mean(1)
    best = np.argsort(mean, kind="stable")[:k]
    return candidates[best][None], mean[best].astype(np.float32)[None]


def neighbor_table(queries, ids: np.ndarray, dist: np.ndarray, catalog: dict[str, np.ndarray]) -> dict:
    q, width = ids.shape
    table = {
        "query": np.repeat(np.asarray(queries, dtype=str), width),
        "rank": np.tile(np.arange(1, width + 1), q),
        "object_id": ids.ravel(),
        "distance": dist.ravel(),
    }
    return table | {c: v for c, v in catalog.items() if c not in table}


# --- search by image ---------------------------------------------------------------------------------


def embed_image(image, index_run: Result, model_run=None, trusted_runs=()) -> np.ndarray:
    """The latent vector(s) of an image file, through the model whose latents the index holds (found
    through its lineage: a `model_run` given must be that model)."""
    made_by = str(index_run.require("train").path.resolve())  # through its infer (and export) run
    if model_run is not None:
        model_run = str(check_run(model_run, "train").resolve())
        if model_run != made_by:
            raise UsageError(
                f"the index {index_run} holds latents of the model trained in {made_by}, but the "
                f"query image would go through the model of {model_run}: distances between "
                "latents of different models mean nothing. Build an index from that model's "
                f"latents (hyrax infer --from {model_run} | hyrax index) or leave out --model"
            )
    from libhyrax.data.fits import read_image
    from libhyrax.data.transforms import Transform
    from libhyrax.inference import TorchEngine, check_input_shape

    engine = TorchEngine(
        Path(made_by), device="cpu", trusted_runs=trusted_runs
    )  # the weights and transforms infer used
    images = Transform.from_config({"data_set": engine.data_set})(read_image(image))
    check_input_shape(engine, images, f"the image {Path(image).name}")
    return np.asarray(engine.outputs({"image": images})["latent"], dtype=np.float32)


def show_neighbors(
    result: Neighbors | str | os.PathLike,
    *,
    max_queries: int = 10,
    pad: int = 2,
    path: str | os.PathLike | None = None,
):
    """The neighbours' cutouts as a grid (a :class:`libhyrax.viz.mosaic.Mosaic`), one row per query,
    nearest on the left. `path`: also write it as a PNG."""
    from libhyrax.viz.mosaic import mosaic

    hits = result if isinstance(result, Neighbors) else Neighbors(check_run(result, "search"))
    infer_run = hits.find("infer")
    group = infer_run.data_group() if infer_run else None
    if group is None:
        raise DataError(
            f"the cutouts of {hits.path} can't be read: the data of its infer run can't be opened"
        )
    queries = list(dict.fromkeys(hits["query"].tolist()))[:max_queries]
    id_rows = IdIndex(group.object_ids())
    grid = []
    for q in queries:
        rows = id_rows.rows(hits["object_id"][hits["query"] == q])
        grid.append(list(group.read_rows(rows[rows >= 0])["image"]))
    return mosaic(grid, pad, path)
