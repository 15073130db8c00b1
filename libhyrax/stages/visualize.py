"""`visualize`: one self-contained, interactive HTML map of an embedding (and the same plot inline in
Jupyter).

    hyrax umap | hyrax visualize                       # prints the results directory; the page is
                                                       # <dir>/visualize.html (also logged)
    hyrax visualize --from results/<umap-run> --set visualize.color_column=recon_error
    res = libhyrax.visualize(from_run=emb)             # in a notebook: shows the map inline
    res.selected                                        # the ids picked with box/lasso (live in Jupyter)
    res.labels                                          # the labels given in the map (live in Jupyter)
    res.select(ids)                                     # select in the map from Python

In Jupyter the map is a widget (jupyter_bokeh): it talks to Python over the kernel's own comm channel, so it
works wherever the notebook is served (any host and port, under JupyterHub's base URL, no internet).

The title says how far to trust distances on the map: how much of the latents' 10 nearest neighbours the
map keeps, as the umap stage measured it on a seeded sample (libhyrax.reducers.fidelity).

Colour columns: the infer run's catalog columns (read from its data group, joined by object_id),
`recon_error` from its latents, `score` from the newest anomaly run of the same latents, and
`rank_score` and `interest` from the newest rank run of them (the default colour when there is one).
When the data can't be opened the map is drawn without columns or thumbnails (a warning says why).

Labelling: select points and press 0 (boring) .. 5 (interesting); "Save labels (CSV)" downloads
labels.csv for `hyrax rank --labels`. The page starts with the labels of the newest rank run of these
latents, and the browser keeps the labels given in it (per set of latents) across reloads.

Above `max_points` objects the map is tiled (libhyrax.viz.tiles): a pyramid of density tiles (count, and
the colour column's mean) and one point file per cell of a grid, written beside the page in streaming
passes over embedding.h5 (memory flat in N); the page shows the tiles and loads the points of the cells
in view once a view holds at most `max_points` objects, so zooming in shows every object with its
columns, selection, the ids table and labelling. It opens from disk (tiles are <img>, point files
<script src>). Thumbnails (at most `max_thumbnails` random objects) are made in one pass over the data in
row order: the page never embeds every image.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from libhyrax import hdf5
from libhyrax.errors import DataError, UsageError
from libhyrax.labels import Labels, read_labels
from libhyrax.results import Result, newest_run, read_provenance
from libhyrax.start import start_run
from libhyrax.viz.tiles import chunks

log = logging.getLogger("hyrax.visualize")
HTML_FILE = "visualize.html"
THUMB_BATCH = 256


class VisualizeResult(Result):
    """A visualize results directory: `.html` is the page; `.selected` the ids selected in Jupyter;
    `.labels` the labels given in the map in Jupyter (a libhyrax.labels.Labels: `.to_pandas()`,
    `.save("labels.csv")`); `.page()` builds the map's bokeh models again (what the notebook shows)."""

    selected: list[str]
    labels: Labels
    page: Callable
    _source = None  # the points of the map shown in the notebook (None when none is shown)

    @property
    def html(self) -> Path:
        return self.path / HTML_FILE

    def select(self, object_ids) -> list[str]:
        """Select these objects in the map shown in the notebook, as a box or lasso would (the map shows
        the selection; `.selected` follows it); the ids selected. Ids not drawn as points are left out."""
        if self._source is None:
            raise UsageError("select() selects in the map shown in a notebook, and none is shown here: "
                             "call libhyrax.visualize(...) in Jupyter")
        drawn = self._source.data["object_id"]
        rows = hdf5.IdIndex(np.asarray(drawn, dtype=str)).rows(np.asarray(list(object_ids), dtype=str))
        if (rows < 0).any():
            log.warning("%d of the %d ids are not drawn on the map; they are not selected",
                        int((rows < 0).sum()), len(rows))
        self._source.selected.indices = np.sort(rows[rows >= 0]).tolist()
        return self.selected


def visualize(config=None, *, from_run=None, overrides=()) -> VisualizeResult:
    """Write `visualize.html` for a umap run (`from_run`, else the newest); in Jupyter, show it inline."""
    plan = start_run("visualize", config, overrides, from_run=from_run)
    cfg = plan.config
    vz = cfg["visualize"]
    from libhyrax.viz.page import palette

    vz["cmap"] = palette(vz["cmap"])  # a bad name fails before any work
    src = plan.input
    with plan.open() as run:
        run.add_upstream(src.path)
        infer_run = src.require("infer")  # its catalog, recon_error and scores colour the map
        scored = {stage: newest_scores(infer_run, cfg, stage) for stage in ("anomaly", "rank")}
        labels = last_labels(scored["rank"])
        page_args = {
            "cmap": vz["cmap"],
            "labels": labels,
            "labels_key": f"hyrax-labels:{infer_run.path.name}",
            "positive_from": cfg["rank"]["positive_from"],
        }
        if count_objects(src.path) > vz["max_points"]:
            page = write_tiled_map(run, src, infer_run, scored, cfg, page_args)
        else:
            page = small_map(run, src, infer_run, scored, cfg, page_args)
    result = VisualizeResult(run.path)
    result.selected, result.labels, result.page = [], labels, page
    if in_notebook():
        show_inline(result, page)
    return result


def fields_shown(wanted: list[str], columns) -> list[str]:
    missing = [f for f in wanted if f not in columns]
    if missing:
        log.warning(
            "visualize.fields %s are not columns of this data (columns: %s)",
            missing,
            ", ".join(columns) or "none",
        )
    return [f for f in wanted if f in columns] or list(columns)[:4]


def small_map(run, src: Result, infer_run: Result, scored: dict, cfg: dict, page_args: dict):
    """Every object a point on one page (at most max_points); the page's factory."""
    from libhyrax.viz.page import build_page, write_html

    vz = cfg["visualize"]
    object_id, emb = read_embedding(src.path)
    n = len(object_id)
    rng = np.random.default_rng(cfg["general"]["seed"])
    columns, group = gather_columns(infer_run, object_id, scored)
    fields = fields_shown(vz["fields"], columns)
    thumbs = make_thumbnails(group, object_id, vz["max_thumbnails"], rng) if group else None
    color = pick_color(vz["color_column"], columns)
    title = f"Hyrax map of {n:,} objects ({src.path.name}){kept_neighbours(src.path)}"

    def page():  # built again for the notebook's live app
        return build_page(
            emb[:, 0],
            emb[:, 1],
            object_id,
            columns,
            color=color,
            fields=fields,
            thumbs=thumbs,
            title=title,
            **page_args,
        )

    size = write_html(page(), run.file(HTML_FILE), title)
    run.record(
        n_objects=n,
        n_points_drawn=n,
        density_layer=False,
        n_thumbnails=sum(1 for t in thumbs if t) if thumbs else 0,
        color_column=color,
        columns=list(columns),
        n_labels=len(page_args["labels"]),
        html_bytes=size,
    )
    log.info("wrote %s (%.1f MB, %d objects)", run.final_path / HTML_FILE, size / 1e6, n)
    return page


def kept_neighbours(umap_run: Path) -> str:
    """The umap run's own fidelity figure, for the title: how far to trust distances on the map."""
    f = read_provenance(umap_run).get("stage_info", {}).get("fidelity")
    if not f:
        return ""
    return (
        # short enough for the plot's width: the run name comes before it
        f": keeps {100 * f['knn_overlap']:.0f}% of latent {f['k']}-NN "
        f"(trustworthiness {f['trustworthiness']:.2f} on {f['n']:,})"
    )


def count_objects(run_dir) -> int:
    with hdf5.open_result(run_dir, "embedding") as f:
        if "embedding" not in f or f["embedding"].ndim != 2 or f["embedding"].shape[1] < 2:
            raise DataError(f"{run_dir}: embedding.h5 has no (N, 2) /embedding; rerun `hyrax umap`")
        return int(f["embedding"].shape[0])


def write_tiled_map(run, src: Result, infer_run: Result, scored: dict, cfg: dict, page_args: dict):
    """More objects than max_points: density tiles and per-cell point files (viz.tiles), written in
    streaming passes over embedding.h5, and the page that loads them as the view allows; its factory."""
    from contextlib import ExitStack

    from libhyrax.viz.page import build_page, write_html
    from libhyrax.viz.tiles import find_extent, write_map

    vz = cfg["visualize"]
    with ExitStack() as stack:
        f = stack.enter_context(hdf5.open_result(src.path, "embedding"))
        ds, ids_ds = f["embedding"], f["object_id"]
        extent, n = find_extent(ds)
        if n == 0:
            raise DataError(f"{src.path}: the embedding holds no objects to draw")
        if n < ds.shape[0]:
            log.warning("%d objects with a NaN/inf embedding are left out of the map", ds.shape[0] - n)
        readers, dtypes, group, group_aligned = column_readers(infer_run, scored, ids_ds, stack)
        columns = {name: np.empty(0, dt) for name, dt in dtypes.items()}
        fields = fields_shown(vz["fields"], columns)
        color = pick_color(vz["color_column"], columns)
        rng = np.random.default_rng(cfg["general"]["seed"])
        thumbs = tiled_thumbnails(group, group_aligned, ids_ds, vz["max_thumbnails"], rng) if group else {}
        tiled = write_map(
            run.path,
            ds,
            ids_ds,
            readers=readers,
            dtypes=dtypes,
            color=color,
            cmap=vz["cmap"],
            budget=vz["max_points"],
            label_ids=page_args["labels"].object_id,
            thumbs=thumbs,
            extent_n=(extent, n),
        )
    title = f"Hyrax map of {n:,} objects ({src.path.name}){kept_neighbours(src.path)}"

    def page():
        return build_page(
            [],
            [],
            [],
            columns,
            color=color,
            fields=fields,
            thumbs=[] if thumbs else None,
            tiled=tiled,
            title=title,
            **page_args,
        )

    size = write_html(page(), run.file(HTML_FILE), title)
    files = sum(
        p.stat().st_size for d in ("tiles", "points") for p in (run.path / d).rglob("*") if p.is_file()
    )
    run.record(
        n_objects=n,
        n_points_drawn=n,
        density_layer=True,
        n_thumbnails=tiled.n_thumbnails,
        color_column=color,
        columns=list(columns),
        n_labels=len(page_args["labels"]),
        html_bytes=size,
        tiled={
            "cell_level": tiled.cell_level,
            "n_cells": len(tiled.cells),
            "n_tiles": sum(len(t) for mode in tiled.tiles.values() for t in mode.values()),
            "files_bytes": files,
        },
    )
    log.info(
        "wrote %s (a tiled map of %d objects: %.1f MB of tiles and points, %d cells)",
        run.final_path / HTML_FILE,
        n,
        files / 1e6,
        len(tiled.cells),
    )
    return page


def column_readers(infer_run: Result, scored: dict[str, Path | None], ids_ds, stack):
    """The colour and hover columns of a tiled map as readers of embedding rows start:stop (see
    gather_columns for which columns), their record dtypes, and the data group (None when it can't be
    opened). A file listing the objects in the embedding's order (as infer, umap and anomaly write them) is
    read in slices; one in another order is joined by id, holding its ids and values."""
    sources = []  # (name, their ids, values)
    f = stack.enter_context(hdf5.open_result(infer_run.path, "latents"))
    if "recon_error" in f:
        sources.append(("recon_error", f["object_id"], f["recon_error"]))
    for stage, names in (
        ("anomaly", {"score": "score"}),
        ("rank", {"score": "rank_score", "interest": "interest"}),
    ):
        if scored.get(stage) is not None:
            g = stack.enter_context(hdf5.open_result(scored[stage], "scores"))
            sources += [(name, g["object_id"], g[key]) for key, name in names.items() if key in g]
    group, group_aligned, catalog = infer_run.data_group(), False, {}
    if group is not None:
        try:
            # infer writes its latents in the data's order, so the catalog usually streams by row
            group_aligned = len(group) == ids_ds.shape[0] and all(
                np.array_equal(hdf5.as_id_bytes(ids_ds[a:b]), group_ids(group, a, b))
                for a, b in chunks(len(group))
            )
            for col in group.catalog_columns():
                if group_aligned:
                    if (reader := catalog_reader(group, col, len(group))) is not None:
                        catalog[col] = reader
                elif (values := np.asarray(group.catalog(col))).ndim == 1:
                    sources.append((col, group.object_ids(), values))
        except Exception as e:  # a catalog that can't be read: the map is still useful without it
            log.warning(
                "the catalog of %s can't be read (%s: %s); no catalog columns", infer_run, type(e).__name__, e
            )
    readers, dtypes, order = {}, {}, {}  # order: per source of ids, None (the embedding's) or its IdIndex
    for name, their_ids, values in sources:
        key = (their_ids.file.filename, their_ids.name) if hasattr(their_ids, "file") else id(their_ids)
        if key not in order:
            order[key] = None if same_order(ids_ds, their_ids) else hdf5.IdIndex(np.asarray(their_ids[:]))
        numeric = values.dtype.kind in "fiub"
        dtypes[name] = np.dtype("<f4") if numeric else hdf5.as_id_bytes(values[:]).dtype
        readers[name] = (
            slice_reader(values, numeric) if order[key] is None else join_reader(order[key], values, numeric)
        )
    for col, (reader, dtype) in catalog.items():
        readers[col], dtypes[col] = reader, dtype
    return readers, dtypes, group, group_aligned


def group_ids(group, start: int, stop: int) -> np.ndarray:
    """The data group's object ids of rows start:stop (as bytes), read alone."""
    pds = group.datasets[group.primary]
    return hdf5.as_id_bytes(np.asarray(pds.read([group.id_field], start, stop)[group.id_field]))


def catalog_reader(group, col: str, n: int):
    """A reader of a catalog column in the embedding's row order, and its record dtype (a string column's
    width found in a pass over it)."""

    def read(start, stop):
        return np.asarray(group.catalog(col, rows=np.arange(start, stop)))

    first = read(0, min(n, 1))
    if first.ndim != 1:
        return None
    if first.dtype.kind in "fiub":
        return (lambda start, stop, ids: read(start, stop).astype(np.float32)), np.dtype("<f4")
    width = max(hdf5.as_id_bytes(read(a, b)).dtype.itemsize for a, b in chunks(n))
    return (lambda start, stop, ids: hdf5.as_id_bytes(read(start, stop))), np.dtype(f"S{width}")


def same_order(ids_ds, their_ids) -> bool:
    """Whether `their_ids` (a dataset or array) lists the objects of `ids_ds` in the same order."""
    if len(their_ids) != ids_ds.shape[0]:
        return False
    return all(
        np.array_equal(hdf5.as_id_bytes(ids_ds[a:b]), hdf5.as_id_bytes(their_ids[a:b]))
        for a, b in chunks(ids_ds.shape[0])
    )


def slice_reader(values, numeric: bool):
    if numeric:
        return lambda start, stop, ids: np.asarray(values[start:stop], np.float32)
    return lambda start, stop, ids: hdf5.as_id_bytes(values[start:stop])


def join_reader(index: hdf5.IdIndex, values, numeric: bool):
    values = np.asarray(values[:], np.float32) if numeric else hdf5.as_id_bytes(values[:])

    def read(start, stop, ids):
        rows = index.rows(ids)
        out = np.full(len(ids), np.nan, np.float32) if numeric else np.zeros(len(ids), values.dtype)
        out[rows >= 0] = values[rows[rows >= 0]]
        return out

    return read


def tiled_thumbnails(group, aligned: bool, ids_ds, cap: int, rng) -> dict[int, str]:
    """<img> tags for up to `cap` random objects of the embedding, by embedding row; read by row where
    the data lists the objects in the embedding's order (else found by id, holding the data's ids)."""
    rows = np.sort(rng.choice(ids_ds.shape[0], min(cap, ids_ds.shape[0]), replace=False)) if cap > 0 else []
    rows = np.asarray(rows, np.int64)
    if not aligned:
        ids = np.char.decode(hdf5.as_id_bytes(hdf5.read_rows(ids_ds, rows)), "utf-8")
        thumbs = make_thumbnails(group, ids, cap, rng) or []
        return {int(r): t for r, t in zip(rows, thumbs, strict=False) if t}
    from libhyrax.viz.thumbnails import data_uri, img_tag

    out = {}
    try:
        if "image" not in group.fields:
            return {}
        for start in range(0, len(rows), THUMB_BATCH):
            chunk = rows[start : start + THUMB_BATCH]
            out |= {
                int(r): img_tag(data_uri(img))
                for r, img in zip(chunk, group.read_rows(chunk)["image"], strict=True)
            }
    except Exception as e:
        log.warning("thumbnails stopped after %d of %d (%s: %s)", len(out), len(rows), type(e).__name__, e)
    return out


def read_embedding(run_dir) -> tuple[np.ndarray, np.ndarray]:
    with hdf5.open_result(run_dir, "embedding") as f:  # its shape checked by count_objects
        ids, emb = hdf5.read_ids(f["object_id"]), f["embedding"][:, :2].astype(np.float32)
    ok = np.isfinite(emb).all(axis=1)
    if not ok.all():
        log.warning("%d objects with a NaN/inf embedding are left out of the map", int((~ok).sum()))
        ids, emb = ids[ok], emb[ok]
    if len(ids) == 0:
        raise DataError(f"{run_dir}: the embedding holds no objects to draw")
    return ids, emb


def _join(ids: np.ndarray, their_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (in `their_ids` order) for `ids`; NaN (or '') where an id is absent."""
    if len(their_ids) == len(ids) and np.array_equal(their_ids, ids):
        return values
    rows = hdf5.IdIndex(their_ids).rows(ids)
    hit = rows >= 0
    if values.dtype.kind in "fiub":
        out = np.full(len(ids), np.nan, np.float32)
    else:
        out = np.full(len(ids), "", dtype=object)
    out[hit] = values[rows[hit]]
    return out


def gather_columns(infer_run: Result, ids: np.ndarray, scored: dict[str, Path | None]):
    """Per-object columns for `ids`: catalog columns of the infer run's data, recon_error, and the scores
    of the `scored` runs ({"anomaly": run or None, "rank": run or None}); and the opened data group (None
    when it can't be opened)."""
    columns: dict[str, np.ndarray] = {}
    with hdf5.open_result(infer_run.path, "latents") as f:
        if "recon_error" in f:
            columns["recon_error"] = _join(ids, hdf5.read_ids(f["object_id"]), f["recon_error"][:])
    for stage, names in (
        ("anomaly", {"score": "score"}),
        ("rank", {"score": "rank_score", "interest": "interest"}),
    ):
        scores = scored.get(stage)
        if scores is not None:
            with hdf5.open_result(scores, "scores") as f:
                score_ids = hdf5.read_ids(f["object_id"])
                columns |= {name: _join(ids, score_ids, f[key][:]) for key, name in names.items() if key in f}
    group = infer_run.data_group()
    if group is not None:
        try:
            gids = group.object_ids()
            for col in group.catalog_columns():
                values = np.asarray(group.catalog(col))
                if values.ndim == 1:
                    columns[col] = _join(
                        ids, gids, values if values.dtype.kind != "S" else values.astype(str)
                    )
        except Exception as e:  # a catalog that can't be read: the map is still useful without it
            log.warning(
                "the catalog of %s can't be read (%s: %s); no catalog columns", infer_run, type(e).__name__, e
            )
    return columns, group


def newest_scores(infer_run: Result, cfg: dict, stage: str = "anomaly") -> Path | None:
    """The newest finished anomaly (or rank) run that scored these latents, if any."""
    try:
        return newest_run(stage, cfg, reading=infer_run.path)
    except UsageError:
        return None


def last_labels(ranked: Path | None) -> Labels:
    """The labels a rank run used (none without one): the map starts with those of the newest."""
    empty = Labels(np.array([], str), np.array([], np.float32), np.array([], str))
    if ranked is None or not (ranked / "labels.csv").is_file():
        return empty
    try:
        return read_labels(ranked / "labels.csv")
    except UsageError as e:
        log.warning("the labels of %s are left out of the map: %s", ranked.name, e)
        return empty


def pick_color(wanted, columns: dict) -> str | None:
    numeric = [c for c, v in columns.items() if np.asarray(v).dtype.kind in "fiub"]
    if wanted:
        if wanted not in numeric:
            from libhyrax.errors import unknown_choice

            raise UsageError(unknown_choice("visualize.color_column", wanted, numeric))
        return wanted
    for preferred in ("rank_score", "score", "recon_error"):
        if preferred in numeric:
            return preferred
    return numeric[0] if numeric else None


def make_thumbnails(group, ids: np.ndarray, cap: int, rng) -> list[str] | None:
    """<img> tags for up to `cap` random objects of `ids` ('' for the rest), in one pass over the data
    in row order."""
    from libhyrax.viz.thumbnails import data_uri, img_tag

    try:
        if "image" not in group.fields or cap <= 0:
            return None
        rows = hdf5.IdIndex(group.object_ids()).rows(ids)
    except Exception as e:
        log.warning("no thumbnails: the data can't be read (%s: %s)", type(e).__name__, e)
        return None
    have = np.flatnonzero(rows >= 0)
    pick = have if len(have) <= cap else rng.choice(have, cap, replace=False)
    pick = pick[np.argsort(rows[pick])]  # read the data in row order: contiguous runs
    thumbs = [""] * len(ids)
    try:
        for start in range(0, len(pick), THUMB_BATCH):
            chunk = pick[start : start + THUMB_BATCH]
            images = group.read_rows(rows[chunk])["image"]
            for i, img in zip(chunk, images, strict=True):
                thumbs[i] = img_tag(data_uri(img))
    except Exception as e:
        log.warning("thumbnails stopped after %d of %d (%s: %s)", start, len(pick), type(e).__name__, e)
    return thumbs


# --- Jupyter -------------------------------------------------------------------------------------------


def in_notebook() -> bool:
    if "IPython" not in sys.modules:  # a kernel has imported it long before: no import to find out
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def follow_selection(source, selected: list) -> None:
    """Keep `selected` equal to the object ids (plain `str`) of the points selected in `source`."""

    def on_select(attr, old, new):
        ids = source.data["object_id"]
        selected[:] = [str(ids[i]) for i in new]

    source.selected.on_change("indices", on_select)


def follow_labels(label_source, result: VisualizeResult) -> None:
    """Keep `result.labels` equal to the labels given in the map (its labels source)."""

    def on_change(attr, old, new):
        result.labels = Labels(
            np.asarray(new["object_id"], dtype=str),
            np.asarray(new["label"], np.float32),
            np.asarray(new["time"], dtype=str),
        )

    label_source.on_change("data", on_change)


# Runs in the live map once it has drawn: the static copy shown above it is no longer needed (removing its
# iframe frees that second copy of the page).
HIDE_STATIC_JS = """
for (const el of document.querySelectorAll('.hyrax-static-map[data-map="' + uid + '"]')) {
  for (const frame of el.querySelectorAll('iframe')) frame.remove();
  el.style.display = 'none';
}
"""
NO_WIDGETS = (
    "This front end shows no Jupyter widgets, so the live map (whose box/lasso selection and "
    "labels come back to Python as res.selected and res.labels) can't show here, and res.selected "
    "stays empty. The page works on its own (select, label, save as CSV): {html}, opened in a browser "
    "from disk. JupyterLab shows the live map (with jupyter_bokeh where the Jupyter server runs)."
)


def show_inline(result: VisualizeResult, page_factory) -> None:
    """Show the map in the notebook as a Jupyter widget (jupyter_bokeh), so box/lasso selections and labels
    come back to Python through the kernel's own comm channel, wherever the notebook is served: the
    ids in `result.selected`, the labels in `result.labels`, updated live. BokehJS comes from the installed
    package (inline), never a CDN. Above the live map, a static copy of the page (visualize.html in an
    iframe) stays in the saved notebook: it is what shows when the notebook is reopened or rendered
    elsewhere, and the live map hides it once it has drawn."""
    import uuid

    from bokeh.document import Document
    from bokeh.events import DocumentReady
    from bokeh.io.notebook import load_notebook
    from bokeh.models import CustomJS
    from bokeh.resources import INLINE
    from IPython.display import display
    from jupyter_bokeh import BokehModel

    uid = uuid.uuid4().hex
    doc = Document()
    page = live_page(result, page_factory, doc)
    doc.js_on_event(DocumentReady, CustomJS(args={"uid": uid}, code=HIDE_STATIC_JS))
    display(
        {
            "text/html": static_copy(result.html, uid, tiled=page.tiled is not None),
            "text/plain": f"Hyrax map: {result.html}",
        },
        raw=True,
    )
    load_notebook(INLINE, hide_banner=True)
    bundle = BokehModel(page.layout)._repr_mimebundle_()
    bundle["text/plain"] = NO_WIDGETS.format(html=result.html)
    display(bundle, raw=True)


def live_page(result: VisualizeResult, page_factory, doc):
    """The page the notebook shows, in `doc`: a fresh one whose selection and labels `result` follows (a
    tiled map's files served from Python: the live page can't load files beside it)."""
    page = page_factory()
    if page.tiled is not None:
        from libhyrax.viz.tiled import serve_from_python

        serve_from_python(page, result.path)
    follow_selection(page.source, result.selected)
    follow_labels(page.labels, result)
    result._source = page.source
    page.attach(doc)
    return page


def static_copy(page: Path, uid: str, tiled: bool = False) -> str:
    """The self-contained page in an iframe (srcdoc: nothing to fetch), under a line saying what it is; a
    tiled map's page loads files beside it, so its copy is that line alone."""
    import html

    note = (
        "Static copy of the map: selections made in it don't reach Python. The live map below hides it "
        "once it has drawn; when none draws (the notebook reopened, or a front end without Jupyter "
        "widgets or jupyter_bokeh), res.selected stays empty: rerun the cell where widgets work, or open "
        f"{html.escape(str(page))}"
    )
    if tiled:
        note = note.replace(
            "Static copy of the map:",
            "This map is tiled (its tiles are files beside the page), so no copy of it is kept here:",
        )
    frame = (
        ""
        if tiled
        else (
            f'<iframe srcdoc="{html.escape(page.read_text(encoding="utf-8"), quote=True)}" '
            'style="width:100%;height:760px;border:0" title="Hyrax map"></iframe>'
        )
    )
    return (
        f'<div class="hyrax-static-map" data-map="{uid}">'
        f'<div style="font-size:90%;color:#555">{note}</div>{frame}</div>'
    )
