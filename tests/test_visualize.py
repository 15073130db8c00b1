"""The visualize stage: the HTML page's content, thumbnails, columns from the infer run's data, the
tiled map above max_points, graceful degradation, and the pages in real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from libhyrax import hdf5
from libhyrax.config import resolve
from libhyrax.errors import UsageError
from libhyrax.results import Result
from libhyrax.rundir import read_provenance
from libhyrax.runs import open_run
from libhyrax.stages.visualize import visualize

CHROMIUM = "/usr/bin/chromium"


def galaxies(n: int, bands: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    r2 = (xx[None] ** 2 + yy[None] ** 2) / rng.uniform(2, 10, size=(n, 1, 1))
    blob = np.exp(-r2)[:, None] * rng.uniform(0.5, 2, size=(n, bands, 1, 1))
    return (blob + rng.normal(scale=0.02, size=(n, bands, size, size))).astype(np.float32)


def make_runs(workdir: Path, n: int = 300, bands: int = 3, cutouts: bool = True, shuffled: bool = True,
              **visualize_cfg):
    """cutouts.h5 -> an infer-like run (latents.h5 + its data request) -> a umap-like run."""
    ids = np.array([f"gal{i:05d}" for i in range(n)])
    rng = np.random.default_rng(1)
    cfg = {"general": {"results_dir": str(workdir / "results")}, "visualize": visualize_cfg}
    if cutouts:
        from libhyrax.data import write_cutouts

        mag = rng.uniform(18, 25, n).astype(np.float32)
        kind = np.array(["spiral", "elliptical", "merger"])[np.arange(n) % 3]
        # the data holds the objects in another order than the latents: rows are joined by object_id
        order = rng.permutation(n) if shuffled else np.arange(n)
        write_cutouts(workdir / "cutouts.h5", ids[order], galaxies(n, bands)[order],
                      catalog={"mag": mag[order], "kind": kind[order]})
        cfg["data_request"] = {"infer": {"cut": {"dataset_class": "HyraxHDF5Dataset",
                                                  "data_location": str(workdir / "cutouts.h5"),
                                                  "fields": ["image", "object_id"],
                                                  "primary_id_field": "object_id"}}}
    full = resolve(cfg)
    with open_run("infer", full) as infer:
        hdf5.write_arrays(infer.file("latents.h5"), ids, latent=rng.normal(size=(n, 8)).astype(np.float32),
                          recon_error=np.arange(n, dtype=np.float32))
    with open_run("umap", full) as umap:
        umap.add_upstream(infer.path)
        emb = np.stack([np.cos(np.arange(n)), np.sin(np.arange(n))], 1) * np.arange(n)[:, None] / n
        hdf5.write_arrays(umap.file("embedding.h5"), ids, embedding=emb.astype(np.float32))
    return full, umap.path


def test_page_has_points_columns_and_thumbnails(workdir):
    cfg, src = make_runs(workdir, max_thumbnails=50, fields=["mag", "kind"])
    res = visualize(cfg, from_run=src)
    assert res.html.is_file() and res.html.parent == res.path
    info = read_provenance(res.path)["stage_info"]
    assert info["n_objects"] == 300 and info["n_points_drawn"] == 300 and not info["density_layer"]
    assert info["n_thumbnails"] == 50
    assert set(info["columns"]) == {"recon_error", "mag", "kind"} and info["color_column"] == "recon_error"
    text = res.html.read_text()
    assert text.count("data:image/jpeg;base64,") == 50
    assert "https://cdn.bokeh.org" not in text and "<script" in text  # bokeh's JS is inlined
    assert "gal00299" in text and "Save selected ids (CSV)" in text and "@_thumb{safe}" in text


def test_the_title_says_how_much_of_the_latents_neighbourhoods_the_map_keeps(workdir):
    """The umap stage records its map's fidelity (issue 25); the page shows it, so a scientist knows how far
    to trust distances on the map. A map made before that (or elsewhere) has no such line."""
    import json

    cfg, src = make_runs(workdir, max_thumbnails=0)
    assert "trustworthiness" not in visualize(cfg, from_run=src).html.read_text()
    prov = json.loads((src / "provenance.json").read_text())
    prov.setdefault("stage_info", {})["fidelity"] = {"n": 2000, "k": 10, "knn_overlap": 0.4213,
                                                     "trustworthiness": 0.9312}
    (src / "provenance.json").write_text(json.dumps(prov))
    text = visualize(cfg, from_run=src).html.read_text()
    assert "keeps 42% of latent 10-NN (trustworthiness 0.93 on 2,000)" in text


def test_thumbnails_are_lupton_rgb_or_grey():
    from libhyrax.viz.thumbnails import to_rgb

    img = galaxies(1, bands=3, size=32)[0]
    img[2] *= 3  # the reddest band brightest: a red galaxy
    rgb = to_rgb(img)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    centre = rgb[14:18, 14:18].reshape(-1, 3).mean(0)
    assert centre[0] > centre[2] and centre.max() > 100  # red dominates at the centre
    grey = to_rgb(img[:1])
    assert (grey[..., 0] == grey[..., 2]).all() and grey[16, 16, 0] > grey[0, 0, 0]


def read_point_files(run: Path) -> dict[str, tuple[float, float, float]]:
    """Every object in a tiled map's point files: object_id -> (x, y, recon_error)."""
    from libhyrax.viz.tiles import read_point_file

    out = {}
    for path in (run / "points").glob("*.js"):
        p = read_point_file(path)
        assert len(p["_x"]) == len(p["_y"]) == len(p["object_id"]) == len(p["recon_error"]) > 0
        for oid, x, y, err in zip(p["object_id"], p["_x"], p["_y"], p["recon_error"], strict=True):
            assert oid not in out, f"{oid} in two point files"
            out[oid] = (float(x), float(y), float(err))
    return out


def test_above_max_points_a_tiled_map_holds_every_object(workdir):
    from PIL import Image

    cfg, src = make_runs(workdir, n=3000, cutouts=False, max_points=500)
    res = visualize(cfg, from_run=src)
    info = read_provenance(res.path)["stage_info"]
    assert info["density_layer"] and info["n_points_drawn"] == 3000 and info["n_objects"] == 3000
    assert info["tiled"]["n_cells"] == len(list((res.path / "points").glob("*.js"))) > 4
    assert not (res.path / ".buckets").exists()  # the bucket files are gone
    with hdf5.open_result(src, "embedding") as f:
        ids, emb = hdf5.read_ids(f["object_id"]), f["embedding"][:]
    points = read_point_files(res.path)
    assert set(points) == set(ids)  # every object once, with its position and column
    i = 1234
    assert points[ids[i]] == (pytest.approx(emb[i, 0]), pytest.approx(emb[i, 1]), float(i))
    # level 0 of the count pyramid: one 256 px tile with every object in it; darker where there are more
    top = np.asarray(Image.open(res.path / "tiles" / "count" / "0" / "0_0.png").convert("RGBA"))
    assert top.shape == (256, 256, 4) and 0 < (top[..., 3] > 0).mean() < 1
    assert (res.path / "tiles" / "mean" / "4").is_dir()  # the colour column's mean, to the finest level
    text = res.html.read_text()
    # points stay in their files
    assert "hyraxPoints" in text and "points/" in text and "gal00001" not in text


@pytest.mark.parametrize("shuffled", [True, False])
def test_a_tiled_map_joins_the_catalog_by_id_and_places_thumbnails(workdir, shuffled):
    """Where the data lists the objects in another order than the embedding its columns are joined by id;
    in the same order (as infer writes latents) they are read by row."""
    from libhyrax.viz.tiles import read_point_file

    cfg, src = make_runs(
        workdir, n=600, max_points=100, max_thumbnails=40, fields=["mag", "kind"], shuffled=shuffled
    )
    res = visualize(cfg, from_run=src)
    info = read_provenance(res.path)["stage_info"]
    assert set(info["columns"]) == {"recon_error", "mag", "kind"} and info["n_thumbnails"] == 40
    rows = {}
    for path in (res.path / "points").glob("*.js"):
        p = read_point_file(path)
        rows |= {oid: (p["mag"][i], p["kind"][i], p["_thumb"][i]) for i, oid in enumerate(p["object_id"])}
    assert len(rows) == 600 and sum(1 for *_, t in rows.values() if t.startswith("<img")) == 40
    group = Result(src).require("infer").data_group()
    for oid, mag, kind in zip(group.object_ids(), group.catalog("mag"), group.catalog("kind"), strict=True):
        assert rows[oid][:2] == (pytest.approx(mag), kind.decode() if isinstance(kind, bytes) else kind)


def test_missing_data_degrades_to_a_plain_map(workdir, caplog):
    cfg, src = make_runs(workdir, n=200)
    (workdir / "cutouts.h5").unlink()  # the data moved after inference
    res = visualize(cfg, from_run=src)
    info = read_provenance(res.path)["stage_info"]
    assert info["columns"] == ["recon_error"] and info["n_thumbnails"] == 0
    assert "can't be opened" in caplog.text
    with pytest.raises(UsageError, match="unknown visualize.color_column 'magg'"):
        visualize({**cfg, "visualize": {"color_column": "magg"}}, from_run=src)


def test_cli_visualize_prints_the_run(workdir, hyrax):
    _, src = make_runs(workdir, n=100, cutouts=False)
    proc = hyrax("visualize", input=f"{src}\n", cwd=workdir, check=True)
    out = Path(proc.stdout.strip())
    assert (out / "visualize.html").is_file() and "visualize.html" in proc.stderr


# --- in a real browser --------------------------------------------------------------------------------


def open_in_chromium(page: Path, tmp: Path) -> tuple[str, Path]:
    """Load `page` in headless Chromium (no network); its console log and a screenshot."""
    shot = tmp / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,900",
        "--virtual-time-budget=15000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)}
    )
    assert shot.is_file(), proc.stderr[-2000:]
    return proc.stderr, shot


# Run inside the page once bokeh has rendered: pick a colour column, select points as box/lasso would,
# press the CSV button (capturing the file it makes) and log what the page shows.
INTERACT_JS = """<script>
function hyraxCheck() {
  const doc = Bokeh.documents[0];
  if (!doc) { setTimeout(hyraxCheck, 200); return; }
  const models = Array.from(doc.all_models);
  const [main, table] = [doc.get_model_by_name("points"), doc.get_model_by_name("selected")];
  const orig = URL.createObjectURL;
  URL.createObjectURL = b => {
    b.text().then(t => console.log("HYRAX-CSV " + JSON.stringify(t))); return orig(b);
  };
  models.find(m => m.type === "Select").value = "mag";
  main.selected.indices = [0, 1, 2, 5];
  setTimeout(() => {
    console.log("HYRAX-TABLE " + JSON.stringify(Array.from(table.data["object_id"])) + " " +
                JSON.stringify([main.data["_color"][0], main.data["mag"][0]]));
    const button = doc.get_model_by_name("save-selected");
    for (const cb of button.js_event_callbacks["button_click"]) cb.execute(button);
  }, 300);
}
window.addEventListener("load", () => setTimeout(hyraxCheck, 300));
</script>"""


def js_errors(log: str) -> list[str]:
    return [
        ln for ln in log.splitlines() if "CONSOLE" in ln and re.search(r"ERROR:CONSOLE|Uncaught|Error:", ln)
    ]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(workdir):
    from PIL import Image

    bad = workdir / "bad.html"  # the error check itself catches a broken page
    bad.write_text("<html><body><script>notAFunction();</script></body></html>")
    assert js_errors(open_in_chromium(bad, workdir / "b")[0])

    cfg, src = make_runs(workdir, n=1500, max_thumbnails=100)
    res = visualize(cfg, from_run=src)
    log, shot = open_in_chromium(res.html, workdir / "c")
    assert not js_errors(log), js_errors(log)
    pix = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    plot = pix[100:800, 100:900]  # inside the plot frame
    coloured = (plot.max(axis=2) - plot.min(axis=2)) > 60  # viridis points are far from grey
    assert coloured.mean() > 0.01, f"only {coloured.mean():.4f} of the plot's pixels are coloured"
    assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 50

    # the page's own JavaScript: colour choice, selection table, CSV of the selected ids
    text = res.html.read_text()
    end = text.rindex("</body>")
    checked = workdir / "interact.html"
    checked.write_text(text[:end] + INTERACT_JS + text[end:])
    log, _ = open_in_chromium(checked, workdir / "d")
    assert not js_errors(log), js_errors(log)
    table = re.search(r'HYRAX-TABLE (\[.*?\]) (\[.*?\])"', log)
    assert table, log[-2000:]
    import json

    selected, (color0, mag0) = json.loads(table[1].replace('\\"', '"')), json.loads(table[2])
    with hdf5.open_result(src, "embedding") as f:
        ids = hdf5.read_ids(f["object_id"])
    assert selected == list(ids[[0, 1, 2, 5]])
    assert color0 == mag0 and 18 <= mag0 <= 25
    csv = re.search(r'HYRAX-CSV "(.*?)"", source', log)
    assert csv and csv[1].split("\\n")[:3] == ["object_id", f'\\"{selected[0]}\\"', f'\\"{selected[1]}\\"']


# On a tiled map: what the page shows before zooming, then zoom into a box as the wheel would, select the
# points loaded there, label them 5 and log what the page holds.
ZOOM_JS = """<script>
async function hyraxZoom() {
  const doc = Bokeh.documents[0];
  if (!doc) { setTimeout(hyraxZoom, 200); return; }
  const pause = ms => new Promise(r => setTimeout(r, ms));
  const get = name => doc.get_model_by_name(name);
  const points = get("points"), plot = doc.roots()[0].children[0];
  await pause(500);
  console.log("HYRAX-START " + JSON.stringify([points.data.object_id.length, get("tiles").data.url.length,
                                               get("map-status").text]));
  plot.x_range.setv({start: 0.3, end: 0.4}); plot.y_range.setv({start: 0.3, end: 0.4});
  await pause(1500);
  const d = points.data, inside = [];
  for (let i = 0; i < d._x.length; i++)
    if (d._x[i] > 0.3 && d._x[i] < 0.4 && d._y[i] > 0.3 && d._y[i] < 0.4) inside.push(i);
  console.log("HYRAX-ZOOM " + JSON.stringify([Array.from(d.object_id),
                                              Array.from(inside, i => d.object_id[i]),
                                              Array.from(get("tiles").data.url), get("map-status").text]));
  points.selected.indices = inside.slice(0, 5);
  await pause(300);
  const b = get("label-5");
  for (const cb of b.js_event_callbacks["button_click"]) await cb.execute(b);
  console.log("HYRAX-TABLE " + JSON.stringify([Array.from(get("selected").data.object_id),
                                               Array.from(get("selected").data.recon_error),
                                               Array.from(get("labels").data.object_id)]));
}
window.addEventListener("load", () => setTimeout(hyraxZoom, 300));
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_tiled_map_in_headless_chromium_zooms_to_points_and_selects_them(workdir):
    import json

    cfg, src = make_runs(workdir, n=20000, cutouts=False, max_points=2000)
    res = visualize(cfg, from_run=src)
    text = res.html.read_text()
    end = text.rindex("</body>")
    checked = res.path / "zoom.html"  # beside the page: the tiles and point files are found the same way
    checked.write_text(text[:end] + ZOOM_JS + text[end:])
    log, _ = open_in_chromium(checked, workdir / "c")
    assert not js_errors(log), js_errors(log)

    def logged(what):
        found = re.search(rf'HYRAX-{what} (.*)", source', log)
        assert found, log[-3000:]
        return json.loads(found[1].replace('\\"', '"'))

    n_points, n_tiles, status = logged("START")
    assert n_points == 0 and n_tiles == 16 and status.startswith("20,000 objects in view: zoom in")
    loaded, inside, tiles, status = logged("ZOOM")
    with hdf5.open_result(src, "embedding") as f:
        ids, emb = hdf5.read_ids(f["object_id"]), f["embedding"][:]
    box = (emb > 0.3).all(axis=1) & (emb < 0.4).all(axis=1)
    assert sorted(inside) == sorted(ids[box]) and 20 < len(inside) < len(loaded) <= 2000
    assert len(set(loaded)) == len(loaded) and status == f"{len(loaded):,} objects loaded as points"
    assert tiles and all(t.startswith("tiles/mean/4/") for t in tiles)  # the finest level, few tiles
    selected, errors, labelled = logged("TABLE")
    assert selected == inside[:5] and errors == [float(ids.tolist().index(i)) for i in selected]
    assert labelled == selected  # labelled in the map: ready for "Save labels (CSV)"


@pytest.mark.slow
def test_done_when_train_infer_umap_visualize_in_a_shell_pipe(workdir):
    """`hyrax train | hyrax infer | hyrax umap | hyrax visualize` with no config (the built-in sample),
    then the page in Chromium when it is installed."""
    import sys

    bin_dir = Path(sys.executable).parent
    pipe = "hyrax train | hyrax infer | hyrax umap | hyrax visualize"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipe],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(proc.stdout.strip())
    assert "visualize.html" in proc.stderr
    info = read_provenance(run)["stage_info"]
    assert info["n_objects"] >= 500 and info["n_thumbnails"] == info["n_objects"]  # under max_thumbnails
    assert info["color_column"] == "recon_error"
    if Path(CHROMIUM).exists():
        log, _ = open_in_chromium(run / "visualize.html", workdir / "c")
        assert not js_errors(log), js_errors(log)


def test_in_jupyter_the_map_is_a_widget_with_a_static_copy_and_a_selection_from_python(workdir):
    """In a kernel, visualize() shows the map as a jupyter_bokeh widget (the kernel's comm channel; BokehJS
    inline, no CDN), above it a static copy of the page that stays in the saved notebook, and a text
    fallback that names visualize.html; select() selects in the map and `res.selected` follows (plain str).
    The browser side is tested in test_notebook_map.py."""
    import nbformat
    from nbclient import NotebookClient

    make_runs(workdir, n=120, cutouts=False)
    code = (
        f"import os; os.chdir({str(workdir)!r})\n"
        "import libhyrax\n"
        "res = libhyrax.visualize()\n"
        "print(res.html.is_file(), res.selected, len(res.labels))\n"
        "print(res.select(['gal00007', 'gal00003', 'not-drawn']), type(res.selected[0]).__name__)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "True [] 0" in text and "['gal00003', 'gal00007'] str" in text
    shown = [o.data for o in outputs if o.output_type == "display_data"]
    static = [d["text/html"] for d in shown if "hyrax-static-map" in d.get("text/html", "")]
    assert len(static) == 1 and "<iframe srcdoc=" in static[0] and "gal00119" in static[0]
    widget = [d for d in shown if "application/vnd.jupyter.widget-view+json" in d]
    assert len(widget) == 1 and "visualize.html" in widget[0]["text/plain"]  # what shows without widgets
    bokehjs = [d for d in shown if "application/vnd.bokehjs_load.v0+json" in d]
    assert bokehjs and len(bokehjs[0]["application/vnd.bokehjs_load.v0+json"]) > 500_000  # inline, not a URL
    everything = nbformat.writes(nb)
    assert "cdn.bokeh.org" not in everything


def test_selection_comes_back_to_python_as_ids():
    from libhyrax.stages.visualize import follow_selection
    from libhyrax.viz.page import build_page

    page = build_page(
        np.arange(5.0), np.arange(5.0), [f"o{i}" for i in range(5)], {}, color=None, fields=[], thumbs=None
    )
    page.document()
    selected: list[str] = []
    follow_selection(page.source, selected)
    page.source.selected.indices = [1, 3]  # what a box/lasso selection in the browser sends back
    assert selected == ["o1", "o3"]


def test_in_jupyter_a_tiled_map_is_served_by_python_and_its_selection_comes_back(workdir):
    """In the notebook's live app the page can't load files beside it: it asks Python (a requests source),
    which answers with the tiles as data URIs and streams the cells' objects into the points."""
    from bokeh.document import Document

    from libhyrax.stages.visualize import live_page

    cfg, src = make_runs(workdir, n=3000, cutouts=False, max_points=500)
    res = visualize(cfg, from_run=src)
    doc = Document()
    live_page(res, res.page, doc)  # what the notebook shows
    requests, tiles, source = (doc.get_model_by_name(n) for n in ("map-requests", "tiles", "points"))
    assert requests.tags == ["python"] and len(source.data["_x"]) == 0
    cells = sorted((res.path / "points").glob("*.js"))[:2]
    # what the page sends on a zoom: the tiles in view and the cells to load
    requests.data = {
        "kind": ["tile", "cell", "cell"],
        "key": ["tiles/count/0/0_0.png"] + [f"points/{c.name}" for c in cells],
        "x": [-1.0, 0, 0],
        "y": [-1.0, 0, 0],
        "w": [2.0, 0, 0],
        "h": [2.0, 0, 0],
    }
    assert tiles.data["url"][0].startswith("data:image/png;base64,") and tiles.data["w"] == [2.0]
    points = read_point_files(res.path)
    expected = [oid for c in cells for oid in read_point_files_one(c)]
    assert list(source.data["object_id"]) == expected and len(expected) > 10
    assert list(source.data["recon_error"][:3]) == [points[i][2] for i in expected[:3]]
    assert list(source.data["_color"][:3]) == [points[i][2] for i in expected[:3]]  # coloured by it
    source.selected.indices = [0, 2]  # what a box/lasso selection in the browser sends back
    assert res.selected == [expected[0], expected[2]]


def read_point_files_one(path: Path) -> list[str]:
    from libhyrax.viz.tiles import read_point_file

    return read_point_file(path)["object_id"]


def test_catalog_columns_named_x_and_y_do_not_move_the_points():
    """The built-in sample's catalog has pixel positions x and y: the map must still plot the embedding."""
    from libhyrax.viz.page import build_page

    emb = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    source = build_page(
        emb[:, 0],
        emb[:, 1],
        ["a", "b"],
        {"x": np.array([500.0, 900.0]), "y": np.array([10.0, 20.0])},
        color="x",
        fields=["x", "y"],
        thumbs=None,
    ).source
    assert np.allclose(source.data["_x"], emb[:, 0]) and np.allclose(source.data["_y"], emb[:, 1])
    assert np.allclose(source.data["x"], [500.0, 900.0])  # the catalog column is still there to colour by


# --- labelling in the map ------------------------------------------------------------------------------


def rank_run(cfg: dict, workdir: Path, text: str):
    """A rank run of the make_runs latents (no anomaly run: the labels alone rank them)."""
    from libhyrax.stages.rank import rank

    (workdir / "labels.csv").write_text(text)
    return rank(cfg, labels=[workdir / "labels.csv"])


def test_the_map_is_coloured_by_the_newest_ranking_and_starts_with_its_labels(workdir):
    cfg, src = make_runs(workdir, n=300, cutouts=False)
    rank_run(
        cfg, workdir, "object_id,label,time\ngal00001,5,2026-11-20T10:00:00Z\ngal00002,0,\ngal00003,4,\n"
    )
    res = visualize(cfg, from_run=src)
    info = read_provenance(res.path)["stage_info"]
    assert {"rank_score", "interest"} <= set(info["columns"]) and info["color_column"] == "rank_score"
    assert info["n_labels"] == 3 and dict(zip(res.labels.object_id, res.labels.label, strict=True)) == {
        "gal00001": 5.0,
        "gal00002": 0.0,
        "gal00003": 4.0,
    }
    infer_run = Result(src).find("infer").path.name
    text = res.html.read_text()
    assert (
        f"hyrax-labels:{infer_run}" in text and "Save labels (CSV)" in text and "2026-11-20T10:00:00Z" in text
    )


def test_labels_given_in_the_map_come_back_to_python():
    """In Jupyter the page is a bokeh app: the labels source the buttons change syncs to Python."""
    from libhyrax.stages.visualize import VisualizeResult, follow_labels
    from libhyrax.viz.page import build_page

    page = build_page(
        np.arange(5.0), np.arange(5.0), [f"o{i}" for i in range(5)], {}, color=None, fields=[], thumbs=None
    )
    page.document()
    result = VisualizeResult(".")
    follow_labels(page.labels, result)
    # what the label buttons send back: the whole labels table
    page.labels.data = {
        "object_id": ["o1", "o3"],
        "label": [5, 0],
        "time": ["2026-11-20T10:00:00Z", ""],
        "_x": [1.0, 3.0],
        "_y": [1.0, 3.0],
    }
    assert list(result.labels.object_id) == ["o1", "o3"] and list(result.labels.label) == [5.0, 0.0]
    assert list(result.labels.positives(3)) == ["o1"] and result.labels.to_pandas().shape == (2, 3)


# Label in the page as a person would (select, press 5, 0, clear), save the CSV, then reload the page:
# the labels kept in the browser come back.
LABEL_JS = """<script>
async function hyraxLabelCheck() {
  const doc = Bokeh.documents[0];
  if (!doc) { setTimeout(hyraxLabelCheck, 200); return; }
  const get = name => doc.get_model_by_name(name);
  const points = get("points"), labels = get("labels");
  const press = async name => {
    const b = get(name); for (const cb of b.js_event_callbacks["button_click"]) await cb.execute(b);
  };
  const pause = ms => new Promise(r => setTimeout(r, ms));
  const select = async rows => { points.selected.indices = rows; await pause(100); };
  const show = what => console.log("HYRAX-LABELS " + what + " " +
    JSON.stringify(Array.from(labels.data.object_id, (id, i) => [id, labels.data.label[i]])) + " " +
    JSON.stringify(get("label-status").text));
  await pause(500);
  if (sessionStorage.getItem("hyrax-reloaded")) { show("after-reload"); return; }
  const orig = URL.createObjectURL;
  URL.createObjectURL = b => {
    b.text().then(t => console.log("HYRAX-CSV " + JSON.stringify(t))); return orig(b);
  };
  show("start");
  await select([0, 1, 2, 5]); await press("label-5");
  await select([3]); await press("label-0");
  await select([1]); await press("label-clear");
  await select([0, 3]);
  console.log("HYRAX-TABLE " + JSON.stringify(get("selected").data["_label"]));
  show("labelled");
  await press("save-labels");
  await pause(300);
  sessionStorage.setItem("hyrax-reloaded", "1");
  location.reload();
}
window.addEventListener("load", () => setTimeout(hyraxLabelCheck, 300));
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_labelling_in_headless_chromium_saves_a_label_file_and_survives_a_reload(workdir):
    import json

    from libhyrax.labels import read_labels

    cfg, src = make_runs(workdir, n=400, cutouts=False)
    # the page starts with the last ranking's labels: gal00001 (5, at a time) and gal00300 (1)
    rank_run(cfg, workdir, "object_id,label,time\ngal00001,5,2026-11-20T10:00:00Z\ngal00300,1,\n")
    res = visualize(cfg, from_run=src)
    text = res.html.read_text()
    end = text.rindex("</body>")
    checked = workdir / "label.html"
    checked.write_text(text[:end] + LABEL_JS + text[end:])
    log, shot = open_in_chromium(checked, workdir / "c")
    assert not js_errors(log), js_errors(log)

    def labels_at(what):
        found = re.search(rf'HYRAX-LABELS {what} (\[.*?\]) "(.*?)"', log)
        assert found, log[-3000:]
        return dict(json.loads(found[1].replace('\\"', '"'))), found[2]

    start, status = labels_at("start")
    assert start == {"gal00001": 5, "gal00300": 1} and status == "2 labelled (1 interesting)"
    # rows 0, 1, 2, 5 -> 5; row 3 -> 0; row 1 cleared (its label from the ranking too)
    expected = {"gal00300": 1, "gal00000": 5, "gal00002": 5, "gal00005": 5, "gal00003": 0}
    labelled, status = labels_at("labelled")
    assert labelled == expected and status == "5 labelled (3 interesting)"
    assert re.search(r"HYRAX-TABLE \[5,0\]", log), log[-2000:]  # the selection table shows the labels
    csv = re.search(r'HYRAX-CSV "(.*?)"", source', log)
    assert csv, log[-2000:]
    saved = workdir / "saved.csv"
    saved.write_text(json.loads(f'"{csv[1]}"'))  # the logged text is JSON-escaped
    labels = read_labels(saved)  # the page's CSV is a label file
    assert dict(zip(labels.object_id, labels.label, strict=True)) == expected
    assert all(t.endswith("Z") for i, t in zip(labels.object_id, labels.time, strict=True) if i != "gal00300")
    after, status = labels_at("after-reload")
    assert after == expected and status == "5 labelled (3 interesting)"


def test_thumbnails_of_dark_cutouts_raise_no_numpy_warning():
    """astropy's Lupton RGB computes 0/0 for pixels at or below the black level and discards it; that
    warning used to reach the demo's stderr once per thumbnail."""
    import warnings

    from libhyrax.viz.thumbnails import to_rgb

    cutout = np.zeros((3, 16, 16), np.float32)
    cutout[:, 6:10, 6:10] = 5.0  # a source on an empty sky
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = to_rgb(cutout)
    assert rgb.shape == (16, 16, 3) and rgb[0, 0].tolist() == [0, 0, 0] and rgb[8, 8].max() > 0
