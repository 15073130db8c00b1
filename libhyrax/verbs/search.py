"""`search`: the k nearest objects of an object id, a vector or an image, with distances and catalog columns.

    hyrax search --id <object_id> --show                  # the newest index run; prints a table to stderr
    hyrax search --vector query.npy -k 20 --from results/<index-run>
    hyrax search --image cutout.npy                      # through the model that made the index's latents

    hits = libhyrax.search(object_ids=["hxdf_0042"])     # a notebook: the same table
    hits.to_pandas(); libhyrax.show_neighbors(hits)      # the neighbours' cutouts as a grid

Each search writes `neighbors.csv` (query, rank, object_id, distance, catalog columns) into its results
directory. Object id -> vector is an O(log N) lookup in the index; distances are L2.
"""

from __future__ import annotations

import csv
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from libhyrax.config import resolve
from libhyrax.errors import DataError, HyraxError, ModelError, UsageError
from libhyrax.hdf5 import IdIndex
from libhyrax.results import Result, check_run, find_input_run, new_run, unique_tmp
from libhyrax.vector_index import VectorIndex
from libhyrax.verbs.index import INDEX_DIR, model_run_of, upstream_of

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
        body = "".join("<tr>" + "".join(f"<td>{_cell(self.columns[c][i])}</td>" for c in self.columns) + "</tr>"
                       for i in range(min(len(self), 200)))
        return f"<table><tr>{head}</tr>{body}</table>"


def search(config=None, *, from_run: str | os.PathLike | None = None, object_ids=None, vectors=None,
           image: str | os.PathLike | None = None, k: int | None = None,
           model_run: str | os.PathLike | None = None, overrides=()) -> Neighbors:
    """The `k` nearest objects of each query: `object_ids`, `vectors` (Q, D) or an `image` file (.npy or
    FITS, bands x H x W) run through the model of the index's latents. `from_run`: an index run (else the
    newest). `model_run`: the train run the image must go through (refused if the index's latents came
    from another model)."""
    cfg = resolve(config, overrides)
    k = int(k or cfg["search"]["k"])
    if k < 1:
        raise UsageError(f"k must be at least 1, not {k}")
    given = [name for name, v in (("object ids", object_ids), ("vectors", vectors), ("an image", image))
             if v is not None and (not isinstance(v, list | tuple) or len(v))]
    if len(given) != 1:
        raise UsageError("give exactly one query: object ids (--id), vectors (--vector) or an image (--image)"
                         + (f"; got {' and '.join(given)}" if given else ""))
    src = find_input_run("index", cfg, from_run)
    idx = VectorIndex.open(Path(src) / INDEX_DIR)
    if object_ids is not None:
        queries = [str(i) for i in np.atleast_1d(np.asarray(object_ids))]
        ids, dist = idx.search_by_id(queries, k)
    else:
        if image is not None:
            vectors = embed_image(image, src, model_run)
            queries = [Path(image).name] * len(vectors)
        else:
            vectors = np.asarray(vectors, dtype=np.float32)
            queries = [f"vector {i}" for i in range(len(np.atleast_2d(vectors)))]
        ids, dist = idx.search(vectors, k)
    table = neighbor_table(queries, ids, dist, catalog_rows(infer_run_of(src), ids.ravel(), idx.rows(ids.ravel())))
    with new_run("search", cfg) as run:
        run.add_upstream(src)
        write_table(run.file(TABLE_FILE), table)
        run.record(n_queries=len(queries), k=k, query=queries[:20], backend=type(idx).backend)
    return Neighbors(run.path, table)


def neighbor_table(queries, ids: np.ndarray, dist: np.ndarray, catalog: dict[str, np.ndarray]) -> dict:
    q, width = ids.shape
    table = {"query": np.repeat(np.asarray(queries, dtype=str), width),
             "rank": np.tile(np.arange(1, width + 1), q), "object_id": ids.ravel(), "distance": dist.ravel()}
    return table | {c: v for c, v in catalog.items() if c not in table}


def infer_run_of(index_run: str | os.PathLike) -> Path | None:
    return upstream_of(index_run, ("infer",))


def catalog_rows(infer_run: str | os.PathLike | None, object_ids, rows=None) -> dict[str, np.ndarray]:
    """The catalog columns of `object_ids` from the data the infer run read ({} when it can't be opened:
    the table then has ids and distances only). `rows`: their rows in the latents, which are the data
    group's rows (infer keeps input order), so only those rows are read; checked against the ids, with
    a lookup by id when they disagree."""
    group = open_infer_data(infer_run)
    if group is None:
        return {}
    try:
        wanted = np.asarray(object_ids).astype(str)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            ok = (rows >= 0) & (rows < len(group))
            if not ok.all() or not np.array_equal(_ids_at(group, rows), wanted):
                rows = None
        if rows is None:
            rows = IdIndex(group.object_ids()).rows(wanted)
        found = rows >= 0
        out = {}
        for column in group.catalog_columns():
            values = np.asarray(group.catalog(column, np.where(found, rows, 0)))
            if values.ndim != 1:
                continue
            if not found.all():
                values = values.astype(float if values.dtype.kind in "fiub" else object)
                values[~found] = np.nan if values.dtype.kind == "f" else None
            out[column] = values
        return out
    except HyraxError as e:
        log.warning("catalog columns left out: %s", e)
        return {}


def _ids_at(group, rows: np.ndarray) -> np.ndarray:
    """The object ids at `rows` of the group (only those rows are read)."""
    return np.asarray(group.read_rows(rows)["object_id"]).astype(str)


def open_infer_data(infer_run):
    """The infer run's data group (its own recorded config), or None with a warning."""
    if infer_run is None:
        return None
    try:
        from libhyrax.data import open_group

        return open_group(Result(infer_run).config, "infer")
    except (HyraxError, ImportError, OSError) as e:
        log.warning("the data of %s can't be opened (%s); catalog columns and cutouts left out", infer_run, e)
        return None


def format_table(columns: dict[str, np.ndarray], max_rows: int = 100) -> str:
    """A plain-text table."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    rows = [[_cell(columns[c][i]) for c in names] for i in range(min(n, max_rows))]
    widths = [max([len(name)] + [len(r[j]) for r in rows]) for j, name in enumerate(names)]
    lines = ["  ".join(name.ljust(w) for name, w in zip(names, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write_table(path: Path, table: dict[str, np.ndarray]) -> None:
    tmp = unique_tmp(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(table))
        n = len(next(iter(table.values()))) if table else 0
        for i in range(n):
            w.writerow([_cell(table[c][i]) for c in table])
    os.replace(tmp, path)


def read_table(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    cols = {name: [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])}
    return {name: _typed(name, values) for name, values in cols.items()}


ID_COLUMNS = ("query", "object_id")  # always text: "00042" is not 42, and ids overflow int64


def _typed(name: str, values: list[str]) -> np.ndarray:
    if name in ID_COLUMNS:
        return np.array(values, dtype=str)
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype)
        except (ValueError, OverflowError):
            continue
    return np.array(values, dtype=str)


def _cell(v) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    if isinstance(v, bytes):
        return v.decode()
    return "" if v is None else str(v)


# --- search by image ---------------------------------------------------------------------------------

def read_image(path: str | os.PathLike) -> np.ndarray:
    """A cutout (bands, H, W) or a stack (N, bands, H, W) from .npy or FITS."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"image file {p} does not exist")
    if p.suffix == ".npy":
        img = np.load(p)
    elif p.suffix.lower() in (".fits", ".fit", ".fz") or p.name.lower().endswith(".fits.gz"):
        from astropy.io import fits

        img = fits.getdata(p)
    else:
        raise UsageError(f"image file {p}: use a .npy array or a FITS file (bands x height x width)")
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    return img[None] if img.ndim == 3 else img


def embed_image(image, index_run, model_run=None) -> np.ndarray:
    """The latent vector(s) of an image file, through the model whose latents the index holds."""
    infer_run = infer_run_of(index_run)
    made_by = model_run_of(infer_run) if infer_run else None
    if model_run is not None:
        model_run = str(check_run(model_run, "train").resolve())
        if made_by and model_run != made_by:
            raise ModelError(f"the index {index_run} holds latents of the model trained in {made_by}, but the "
                             f"query image would go through the model of {model_run}: distances between "
                             "latents of different models mean nothing. Build an index from that model's "
                             f"latents (hyrax infer --from {model_run} | hyrax index) or leave out --model")
    model_run = model_run or made_by
    if model_run is None:
        raise UsageError(f"can't tell which model made the latents of {index_run}; pass --model <train run>")
    from libhyrax.data.transforms import Transform
    from libhyrax.verbs.infer import TorchEngine

    engine = TorchEngine(Path(model_run), device="cpu")  # the weights and transforms infer used
    images = Transform.from_config({"data_set": engine.data_set})(read_image(image))
    return np.asarray(engine.outputs({"image": images})["latent"], dtype=np.float32)


# --- the neighbours' cutouts as a grid -----------------------------------------------------------------

class Mosaic:
    """An RGB image (H, W, 3) uint8 that shows itself in a notebook and saves as PNG."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def _repr_png_(self) -> bytes:
        return png_bytes(self.array)

    def save(self, path: str | os.PathLike) -> Path:
        Path(path).write_bytes(png_bytes(self.array))
        return Path(path)


def show_neighbors(result: Neighbors | str | os.PathLike, *, max_queries: int = 10, pad: int = 2,
                   path: str | os.PathLike | None = None) -> Mosaic:
    """The neighbours' cutouts as a grid, one row per query, nearest on the left. `path`: also a PNG."""
    hits = result if isinstance(result, Neighbors) else Neighbors(check_run(result, "search"))
    index_run = upstream_of(hits.path, ("index",))
    group = open_infer_data(infer_run_of(index_run)) if index_run else None
    if group is None:
        raise DataError(f"the cutouts of {hits.path} can't be read: the data of its infer run can't be opened")
    queries = list(dict.fromkeys(hits["query"].tolist()))[:max_queries]
    id_rows = IdIndex(group.object_ids())
    grid = []
    for q in queries:
        ids = hits["object_id"][hits["query"] == q]
        rows = id_rows.rows(ids)
        images = group.read_rows(rows[rows >= 0])["image"]
        grid.append([to_rgb(im) for im in images])
    return _assemble(grid, pad, path)


def _assemble(grid: list[list[np.ndarray]], pad: int, path) -> Mosaic:
    h = max(im.shape[0] for row in grid for im in row)
    w = max(im.shape[1] for row in grid for im in row)
    cols = max(len(r) for r in grid)
    out = np.full((len(grid) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(grid):
        for j, im in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
    mosaic = Mosaic(out)
    if path is not None:
        mosaic.save(path)
    return mosaic


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A cutout (bands, H, W) as 8-bit RGB: the first three bands, each image stretched 1-99.5%."""
    im = np.asarray(image, dtype=np.float32)
    im = np.stack([im[0]] * 3) if im.shape[0] == 1 else im
    im = np.stack([im[0], im.mean(0), im[1]]) if im.shape[0] == 2 else im[:3]
    lo, hi = np.nanpercentile(im, [1, 99.5])
    scaled = np.clip((im - lo) / max(hi - lo, 1e-12), 0, 1)
    return (np.nan_to_num(scaled).transpose(1, 2, 0) * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal PNG writer (8-bit RGB, no filtering): no imaging library needed."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
