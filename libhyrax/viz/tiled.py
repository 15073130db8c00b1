"""The tiled map's layer of the page (viz.page.build_page(..., tiled=...)): density tiles under the points,
and the points of the cells in view loaded once a view holds at most `budget` objects.

On every pan or zoom (debounced) the page picks the density level whose pixels are about the screen's,
shows that level's tiles in view (an image_url glyph: <img> loads, which work from file://), and, when the
cells in view hold at most `budget` objects, adds <script src="points/CELL.js"> for each cell not yet
loaded; the file calls hyraxPoints(), which appends its objects to the points source. Points stay once
loaded, so selection, the ids table, labelling and hover work on them as on the small page.

In the notebook the page is a Jupyter widget, where paths relative to the page lead nowhere: there the
page asks Python instead (serve_from_python), which answers with the tiles as data URIs and streams the
cells' objects into the points source, so selections come back to Python as on the small map.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from libhyrax.viz.tiles import LEVELS, TILE, TiledMap, read_point_file

# The map's state lives in window.hyraxMap: built once (on document ready), then updated on range changes.
TILED_JS = """
const M = window.hyraxMap || (window.hyraxMap = {loaded: new Set(), mode: meta.mode, pending: false});
if (!M.init) {
  M.init = true;
  const bytes = s => {
    const b = atob(s), u = new Uint8Array(b.length);
    for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i);
    return u;
  };
  M.counts = new Map();
  const cells = new Uint32Array(bytes(meta.cells).buffer),
    counts = new Uint32Array(bytes(meta.counts).buffer);
  for (let i = 0; i < cells.length; i++) M.counts.set(cells[i], counts[i]);
  M.have = {};
  for (const [mode, levels] of Object.entries(meta.tiles)) {
    M.have[mode] = {};
    for (const [z, list] of Object.entries(levels)) M.have[mode][z] = new Set(list);
  }
  window.hyraxPoints = (cell, p) => {
    const f32 = s => new Float32Array(bytes(s).buffer);
    const raw = bytes(p.id), dec = new TextDecoder(), ids = new Array(p.n);
    for (let i = 0; i < p.n; i++)
      ids[i] = dec.decode(raw.subarray(i * p.idw, (i + 1) * p.idw)).replace(/\\0+$/, '');
    const add = {_x: f32(p.x), _y: f32(p.y), object_id: ids};
    for (const [k, v] of Object.entries(p.num)) add[k] = f32(v);
    for (const [k, v] of Object.entries(p.str)) add[k] = v;
    if ('_thumb' in source.data) {
      add._thumb = new Array(p.n).fill('');
      for (const [i, t] of Object.entries(p.thumb || {})) add._thumb[+i] = t;
    }
    add._color = bar.title && bar.title in add ? add[bar.title] : new Float32Array(p.n);
    const plain = {};
    for (const k of Object.keys(source.data)) plain[k] = Array.from(add[k]);
    source.stream(plain);
    // labels kept in the browser for objects not drawn before get their rings now
    const at = new Map(ids.map((id, i) => [id, i])), d = labels.data;
    if (d.object_id.some((id, j) => at.has(id) && !Number.isFinite(d._x[j]))) {
      const x = Array.from(d._x), y = Array.from(d._y);
      d.object_id.forEach((id, j) => {
        if (at.has(id)) { x[j] = add._x[at.get(id)]; y[j] = add._y[at.get(id)]; }
      });
      labels.data = {...d, _x: x, _y: y};
    }
    M.report();
  };
  M.report = () => {
    const loaded = source.data._x.length.toLocaleString();
    status.text = M.inView > meta.budget
      ? M.inView.toLocaleString() + ' objects in view: zoom in to see them as points (' + loaded + ' loaded)'
      : loaded + ' objects loaded as points';
  };
}
if (typeof mode_select !== 'undefined' && mode_select && cb_obj === mode_select)
  M.mode = mode_select.value === 'count' ? 'count' : 'mean';
if (M.pending) return;
M.pending = true;
setTimeout(() => {
  M.pending = false;
  const W = Math.max(plot.inner_width || 800, 100), span = xr.end - xr.start;
  let z = 0;
  while (z < meta.levels - 1 && meta.tile * 2 ** z / meta.w < W / span) z++;
  const n = 2 ** z, tw = meta.w / n, th = meta.h / n;
  const range = (a, b, o, s, k) =>
    [Math.max(0, Math.floor((a - o) / s)), Math.min(k - 1, Math.floor((b - o) / s))];
  const [tx0, tx1] = range(xr.start, xr.end, meta.x0, tw, n),
    [ty0, ty1] = range(yr.start, yr.end, meta.y0, th, n);
  const t = {url: [], x: [], y: [], w: [], h: []}, have = M.have[M.mode][z];
  for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) {
    if (!have.has(ty * n + tx)) continue;
    t.url.push('tiles/' + M.mode + '/' + z + '/' + tx + '_' + ty + '.png');
    t.x.push(meta.x0 + tx * tw); t.y.push(meta.y0 + ty * th); t.w.push(tw); t.h.push(th);
  }
  const fromPython = requests.tags.includes('python');  // the notebook's live app: Python reads the files
  const ask = {kind: [], key: [], x: [], y: [], w: [], h: []};
  if (fromPython) for (let i = 0; i < t.url.length; i++) {
    ask.kind.push('tile'); ask.key.push(t.url[i]); for (const k of ['x', 'y', 'w', 'h']) ask[k].push(t[k][i]);
  } else tiles.data = t;
  const c = 2 ** meta.r, cw = meta.w / c, ch = meta.h / c;
  const [cx0, cx1] = range(xr.start, xr.end, meta.x0, cw, c),
    [cy0, cy1] = range(yr.start, yr.end, meta.y0, ch, c);
  const want = [];
  let inView = 0;
  for (let cy = cy0; cy <= cy1; cy++) for (let cx = cx0; cx <= cx1; cx++) {
    const cell = cy * c + cx, k = M.counts.get(cell);
    if (k) { inView += k; if (!M.loaded.has(cell)) want.push(cell); }
  }
  // a cell denser than the budget (where 512 x 512 cells are too coarse) loads once the view is about its
  // size
  M.inView = inView <= meta.budget || (cx1 - cx0 <= 1 && cy1 - cy0 <= 1) ?
    Math.min(inView, meta.budget) : inView;
  if (M.inView <= meta.budget) for (const cell of want) {
    M.loaded.add(cell);
    if (fromPython) {
      ask.kind.push('cell'); ask.key.push('points/' + cell + '.js');
      for (const k of ['x', 'y', 'w', 'h']) ask[k].push(0);
      continue;
    }
    const s = document.createElement('script');
    s.src = 'points/' + cell + '.js';
    document.head.appendChild(s);
  }
  if (fromPython) requests.data = ask;
  M.report();
}, 50);
"""


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def add_tiled_layer(p, source, bar, labels, tiled: TiledMap) -> tuple[list, object, dict]:
    """Add the tiles and the loader to figure `p`; the controls for the side panel, the loader (a
    CustomJS run on load and on every range change) and the models serve_from_python needs."""
    budget = tiled.budget
    from bokeh.models import ColumnDataSource, CustomJS, Div, Range1d, Select

    e = tiled.extent
    p.x_range, p.y_range = Range1d(e.x0, e.x0 + e.w), Range1d(e.y0, e.y0 + e.h)
    tiles = ColumnDataSource({"url": [], "x": [], "y": [], "w": [], "h": []}, name="tiles")
    p.image_url(url="url", x="x", y="y", w="w", h="h", anchor="bottom_left", source=tiles, level="image")
    meta = {
        "x0": e.x0,
        "y0": e.y0,
        "w": e.w,
        "h": e.h,
        "levels": LEVELS,
        "tile": TILE,
        "r": tiled.cell_level,
        "cells": b64(tiled.cells.astype("<u4")),
        "counts": b64(tiled.cell_counts.astype("<u4")),
        "tiles": {m: {str(z): t for z, t in levels.items()} for m, levels in tiled.tiles.items()},
        "budget": int(budget),
        "mode": "mean" if "mean" in tiled.tiles else "count",
    }
    status = Div(text="", name="map-status", width=320)
    requests = ColumnDataSource({k: [] for k in ("kind", "key", "x", "y", "w", "h")}, name="map-requests")
    args = {
        "meta": meta,
        "source": source,
        "tiles": tiles,
        "plot": p,
        "xr": p.x_range,
        "yr": p.y_range,
        "bar": bar,
        "labels": labels,
        "status": status,
        "requests": requests,
    }
    controls = [
        Div(
            text=f"<b>{tiled.n_objects:,} objects</b>: density where there are many, "
            f"points where a view holds at most {budget:,}",
            width=320,
        ),
        status,
    ]
    if "mean" in tiled.tiles:
        mode = Select(
            title="Density shows",
            value=f"mean {tiled.color}",
            options=[f"mean {tiled.color}", "count"],
            width=220,
            name="density-mode",
        )
        args["mode_select"] = mode
        controls.insert(1, mode)
    loader = CustomJS(args=args, code=TILED_JS)
    for r in (p.x_range, p.y_range):
        r.js_on_change("start", loader)
        r.js_on_change("end", loader)
    if "mode_select" in args:
        args["mode_select"].js_on_change("value", loader)
    return controls, loader, {"tiles": tiles, "requests": requests, "status": status}


def serve_from_python(page, root: Path) -> None:
    """Answer the tiled page's requests from the results directory `root` (see the module docstring)."""
    requests, tiles, status = (page.tiled[k] for k in ("requests", "tiles", "status"))
    requests.tags = ["python"]

    def answer(attr, old, new):
        tile = [i for i, kind in enumerate(new["kind"]) if kind == "tile"]
        if tile:
            tiles.data = {
                "url": [png_uri(root / new["key"][i]) for i in tile],
                **{k: [new[k][i] for i in tile] for k in ("x", "y", "w", "h")},
            }
        for key, kind in zip(new["key"], new["kind"], strict=True):
            if kind == "cell":
                columns = read_point_file(root / key)
                page.source.stream(
                    {
                        k: columns.get(k, [""] * len(columns["_x"]))
                        if k != "_color"
                        else columns.get(page.color_bar.title, np.zeros(len(columns["_x"]), np.float32))
                        for k in page.source.data
                    }
                )
                status.text = f"{len(page.source.data['_x']):,} objects loaded as points"

    requests.on_change("data", answer)


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
