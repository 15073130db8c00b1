"""The interactive map: a bokeh layout of the embedding, self-contained (resources inlined).

    WebGL scatter coloured by a column (a Select chooses it; a colour bar shows the scale)
    hover: object id, the chosen fields and the cutout thumbnail where there is one
    box/lasso/tap selection -> a table of the selected objects and a button that saves their ids as CSV
    labelling: buttons 0 (boring) .. 5 (interesting) label the selected objects; labelled points get a
        ring from red to green; the labels are kept in the browser (localStorage, per set of latents,
        so they survive a reload) and "Save labels (CSV)" downloads labels.csv (object_id,label,time)
        for `hyrax rank --labels`. In Jupyter the labels come back to Python live (the stage's result).
    many points (above visualize.max_points): a tiled map (viz.tiled, viz.tiles): a density pyramid of all
        objects, whose points load where a view holds at most max_points of them
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from libhyrax import atomic

# Reads the chosen column into the colour column and rescales the colour bar.
RECOLOR_JS = """
const v = source.data[cb_obj.value];
let lo = Infinity, hi = -Infinity;
for (let i = 0; i < v.length; i++) {
  const a = v[i]; if (Number.isFinite(a)) { if (a < lo) lo = a; if (a > hi) hi = a; }
}
if (!(lo < hi)) { hi = lo + 1; }
source.data['_color'] = v;
mapper.low = lo; mapper.high = hi; bar.title = cb_obj.value;
source.change.emit();
"""
# Copies the selected rows, with their labels, into the table's source.
SELECT_JS = """
const idx = source.selected.indices;
const given = new Map(labels.data['object_id'].map((id, i) => [id, labels.data['label'][i]]));
const out = {};
for (const k of columns) {
  const col = k === '_label' ?
    Array.from(source.data['object_id'], id => given.has(id) ? given.get(id) : '') : source.data[k];
  out[k] = Array.from(idx, i => col[i]);
}
table_source.data = out;
count.text = idx.length + ' selected';
"""
# The labels, shared by the callbacks below: `labels` (a ColumnDataSource: object_id, label, time and the
# point's _x, _y for its ring) is the truth in the page (and what Jupyter sees); localStorage[key] keeps
# {object_id: [label or null when cleared, time]} across reloads; the newest entry of an object wins.
LABELS_LIB = """
function current() {
  const d = labels.data, m = new Map();
  for (let i = 0; i < d.object_id.length; i++)
    m.set(d.object_id[i], {label: d.label[i], time: d.time[i], x: d._x[i], y: d._y[i]});
  return m;
}
function stamp(t) { const v = Date.parse(t); return Number.isFinite(v) ? v : 0; }
function publish(m, changed) {
  const ids = Array.from(m.keys()), rows = Array.from(m.values());
  labels.data = {object_id: ids, label: rows.map(r => r.label), time: rows.map(r => r.time),
                 _x: rows.map(r => r.x), _y: rows.map(r => r.y)};
  if (changed.length) {
    try {
      const saved = JSON.parse(localStorage.getItem(key) || '{}');
      for (const id of changed)
        saved[id] = m.has(id) ? [m.get(id).label, m.get(id).time] : [null, new Date().toISOString()];
      localStorage.setItem(key, JSON.stringify(saved));
    } catch (e) { status.text = 'labels are not kept across reloads here (' + e + '): save them as CSV'; }
  }
  const interesting = rows.filter(r => r.label >= positive).length;
  status.text = ids.length + ' labelled (' + interesting + ' interesting)';
}
"""
# A label button: the selected points get its value (null: their labels are cleared).
LABEL_JS = (
    LABELS_LIB
    + """
const idx = source.selected.indices;
if (!idx.length) { status.text = 'select points first (box, lasso or tap), then label them'; return; }
const m = current(), time = new Date().toISOString(), changed = [];
for (const i of idx) {
  const id = source.data['object_id'][i];
  if (value === null) m.delete(id);
  else m.set(id, {label: value, time: time, x: source.data['_x'][i], y: source.data['_y'][i]});
  changed.push(id);
}
publish(m, changed);
"""
    + "{"
    + SELECT_JS
    + "}"
)  # the table shows the new labels (a block: its names are its own)
# On load: the labels kept in this browser, merged over those the page was written with.
RESTORE_JS = (
    LABELS_LIB
    + """
let saved = {};
try { saved = JSON.parse(localStorage.getItem(key) || '{}'); } catch (e) {}
const m = current();
const at = new Map(Array.from(source.data['object_id'], (id, i) => [id, i]));
for (const [id, [label, time]] of Object.entries(saved)) {
  const old = m.get(id);
  if (old && stamp(old.time) > stamp(time)) continue;
  if (label === null) { m.delete(id); continue; }
  const i = at.get(id);
  m.set(id, {label: label, time: time, x: i === undefined ? NaN : source.data['_x'][i],
             y: i === undefined ? NaN : source.data['_y'][i]});
}
publish(m, []);
"""
)
# Saves the labels as labels.csv (object_id,label,time): a label file for `hyrax rank --labels`.
LABELS_CSV_JS = """
const q = s => '"' + String(s).replace(/"/g, '""') + '"';
const d = labels.data;
const lines = Array.from(d.object_id, (id, i) => q(id) + ',' + d.label[i] + ',' + d.time[i]);
const blob = new Blob(['object_id,label,time\\n' + lines.map(l => l + '\\n').join('')], {type: 'text/csv'});
const a = document.createElement('a');
a.href = URL.createObjectURL(blob); a.download = 'labels.csv';
document.body.appendChild(a); a.click(); a.remove();
"""
LABEL_COLORS = ["#d73027", "#fc8d59", "#fee08b", "#d9ef8b", "#91cf60", "#1a9850"]  # 0 boring .. 5 interesting
LABEL_MAX = 5
# Saves the selected ids as a CSV file (a download; no server needed).
CSV_JS = """
const ids = table_source.data['object_id'];
const csv = 'object_id\\n' +
  Array.from(ids, s => '"' + String(s).replace(/"/g, '""') + '"').join('\\n') + '\\n';
const blob = new Blob([csv], {type: 'text/csv'});
const a = document.createElement('a');
a.href = URL.createObjectURL(blob); a.download = 'selected_objects.csv';
document.body.appendChild(a); a.click(); a.remove();
"""


def palette(name: str) -> str:
    """A bokeh palette name for `visualize.cmap`: a bokeh name ("Viridis256"), or a matplotlib-style one
    ("viridis", as reference configs have it); anything else is a ConfigError listing the choices."""
    import bokeh.palettes as palettes

    from libhyrax.errors import ConfigError, unknown_choice

    known = [n for n in dir(palettes) if n.endswith("256")]
    if name in known or name in getattr(palettes, "__palettes__", ()):
        return name
    lowered = {n.lower().removesuffix("256"): n for n in known} | {"gray": "Greys256", "grey": "Greys256"}
    if str(name).lower() in lowered:
        return lowered[str(name).lower()]
    raise ConfigError(unknown_choice("visualize.cmap", name, known))


@dataclass
class Page:
    """The map's bokeh models: `layout`; `source` (the points); `labels` (the labels' source: object_id,
    label, time); `on_load` (the JavaScript run when the page opens: the labels kept in the browser
    restored, and on a tiled map its first tiles shown)."""

    layout: object
    source: object
    labels: object
    on_load: list
    color_bar: object = None
    tiled: dict | None = None  # a tiled map's models for viz.tiled.serve_from_python

    def document(self):
        """A bokeh Document holding the page, its labels restored when it opens."""
        from bokeh.document import Document

        return self.attach(Document())

    def attach(self, doc):
        from bokeh.events import DocumentReady

        doc.add_root(self.layout)
        for code in self.on_load:
            doc.js_on_event(DocumentReady, code)
        return doc


def build_page(
    x,
    y,
    object_id,
    columns: dict[str, np.ndarray],
    *,
    color: str | None,
    fields: list[str],
    thumbs: list[str] | None,
    tiled=None,
    cmap: str = "Viridis256",
    title: str = "Hyrax map",
    labels=None,
    labels_key: str = "hyrax-labels",
    positive_from: float = 3,
) -> Page:
    """The page: `columns` are numeric columns to colour by; `fields` (names in `columns` or string
    arrays in `columns`) show on hover and in the table; `thumbs` are <img> tags ('' where none).
    `labels`: the labels the page starts with (a libhyrax.labels.Labels, e.g. of the last ranking);
    `labels_key`: where the browser keeps labels across reloads (one key per set of objects).
    `tiled`: a viz.tiles.TiledMap: the points (none to start with) load from its point files as the view
    allows, over its density tiles."""
    from bokeh.layouts import column, row
    from bokeh.models import (
        Button,
        ColorBar,
        ColumnDataSource,
        CustomJS,
        DataTable,
        Div,
        HoverTool,
        LinearColorMapper,
        NumberFormatter,
        Select,
        StringFormatter,
        TableColumn,
    )
    from bokeh.plotting import figure

    numeric = [c for c, v in columns.items() if np.asarray(v).dtype.kind in "fiub"]
    # the plot's own columns start with "_" so that catalog columns (often named x and y: pixel
    # positions) can't overwrite the embedding coordinates
    data = {"_x": np.asarray(x, np.float32), "_y": np.asarray(y, np.float32), "object_id": list(object_id)}
    for name, values in columns.items():
        v = np.asarray(values)
        data[name] = v.astype(np.float32) if v.dtype.kind in "fiub" else [str(s) for s in v]
    if thumbs is not None:
        data["_thumb"] = thumbs
    color = color if color in numeric else None
    data["_color"] = data[color] if color else np.zeros(len(data["_x"]), np.float32)
    source = ColumnDataSource(data, name="points")
    label_source = ColumnDataSource(
        label_data(labels, data, tiled.label_xy if tiled else None), name="labels"
    )

    p = figure(
        title=title,
        output_backend="webgl",
        tools="pan,wheel_zoom,box_select,lasso_select,tap,reset,save",
        active_scroll="wheel_zoom",
        sizing_mode="stretch_both",
        min_width=500,
        min_height=500,
        x_axis_label="embedding 1",
        y_axis_label="embedding 2",
    )
    finite = data["_color"][np.isfinite(data["_color"])]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if tiled is not None and tiled.color == color:
        lo, hi = tiled.color_range  # the points' colours match the mean tiles'
    mapper = LinearColorMapper(palette=cmap, low=lo, high=hi if hi > lo else lo + 1, nan_color="#bbbbbb")
    n = len(data["_x"])
    size, alpha = (5, 0.8) if n < 20_000 else (3, 0.5)
    points = p.scatter(
        "_x",
        "_y",
        source=source,
        size=size,
        alpha=alpha,
        line_color=None,
        fill_color={"field": "_color", "transform": mapper},
    )
    rings = LinearColorMapper(palette=LABEL_COLORS, low=0, high=LABEL_MAX)
    p.scatter(
        "_x",
        "_y",
        source=label_source,
        size=size + 8,
        fill_color=None,
        line_width=2.5,
        line_color={"field": "label", "transform": rings},
    )
    tips = "<div><b>@object_id</b></div>" + "".join(
        f"<div>{html.escape(f)}: @{{{f}}}</div>" for f in fields if f in columns
    )
    if thumbs is not None:
        tips += "<div>@_thumb{safe}</div>"
    p.add_tools(HoverTool(renderers=[points], tooltips=tips))
    bar = ColorBar(color_mapper=mapper, title=color or "", width=12)
    p.add_layout(bar, "right")

    controls, on_load, tiled_models = [], [], None
    if tiled is not None:
        from libhyrax.viz.tiled import add_tiled_layer

        controls, loader, tiled_models = add_tiled_layer(p, source, bar, label_source, tiled)
        on_load.append(loader)
    if numeric:
        select = Select(title="Colour by", value=color or numeric[0], options=numeric, width=220)
        select.js_on_change(
            "value", CustomJS(args={"source": source, "mapper": mapper, "bar": bar}, code=RECOLOR_JS)
        )
        controls.append(select)
    shown = ["object_id", "_label"] + [f for f in fields if f in columns]
    table_source = ColumnDataSource({k: [] for k in shown}, name="selected")
    # columns keep a readable width (more than fit scroll sideways); numbers show 4 significant digits
    table = DataTable(
        source=table_source,
        columns=[
            TableColumn(
                field=k,
                title="your label" if k == "_label" else k,
                width=90 if k == "object_id" else 75,
                formatter=NumberFormatter(format="0.[0000]") if k in numeric else StringFormatter(),
            )
            for k in shown
        ],
        width=320,
        height=300,
        index_position=None,
        autosize_mode="none",
    )
    count = Div(text="0 selected")
    select_args = {
        "source": source,
        "table_source": table_source,
        "columns": shown,
        "count": count,
        "labels": label_source,
    }
    source.selected.js_on_change("indices", CustomJS(args=select_args, code=SELECT_JS))
    button = Button(label="Save selected ids (CSV)", width=220, name="save-selected")
    button.js_on_event("button_click", CustomJS(args={"table_source": table_source}, code=CSV_JS))

    status = Div(text="", name="label-status")
    label_args = select_args | {"status": status, "key": labels_key, "positive": float(positive_from)}
    buttons = {}
    for value in [*range(int(LABEL_MAX) + 1), None]:
        b = Button(
            label="clear label" if value is None else str(value),
            width=40 if value is not None else 100,
            name=f"label-{'clear' if value is None else value}",
            button_type="danger" if value == 0 else "success" if value == LABEL_MAX else "default",
        )
        b.js_on_event("button_click", CustomJS(args=label_args | {"value": value}, code=LABEL_JS))
        buttons[value] = b
    clear = buttons.pop(None)
    save_labels = Button(label="Save labels (CSV)", button_type="primary", width=220, name="save-labels")
    save_labels.js_on_event("button_click", CustomJS(args={"labels": label_source}, code=LABELS_CSV_JS))
    legend = Div(
        text="<b>Label the selected objects</b><br><span style='font-size:90%'>0 boring &hellip; 5 "
        "interesting: the ring round a point shows its label ("
        + "".join(f"<span style='color:{c}'>&#9679;</span>" for c in LABEL_COLORS)
        + ")</span>",
        width=320,
    )
    on_load.insert(
        0,
        CustomJS(
            args={
                "source": source,
                "labels": label_source,
                "status": status,
                "key": labels_key,
                "positive": float(positive_from),
            },
            code=RESTORE_JS,
        ),
    )
    side = column(
        *controls,
        count,
        table,
        button,
        legend,
        row(*buttons.values(), spacing=4),
        row(clear, status),
        save_labels,
        width=340,
    )
    return Page(row(p, side, sizing_mode="stretch_both"), source, label_source, on_load, bar, tiled_models)


def label_data(labels, data: dict, positions: dict | None = None) -> dict:
    """The labels' source columns; each labelled object drawn where its point is (NaN: not drawn), or
    where `positions` ({object_id: (x, y)}, a tiled map's) puts it."""
    if labels is None or not len(labels):
        return {"object_id": [], "label": [], "time": [], "_x": [], "_y": []}
    from libhyrax.hdf5 import IdIndex

    if positions is not None:
        xy = np.array(
            [positions.get(str(i), (np.nan, np.nan)) for i in labels.object_id], np.float32
        ).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
    else:
        rows = IdIndex(np.asarray(data["object_id"], dtype=str)).rows(labels.object_id)
        at = np.maximum(rows, 0)
        x = np.where(rows >= 0, data["_x"][at], np.nan).astype(np.float32)
        y = np.where(rows >= 0, data["_y"][at], np.nan).astype(np.float32)
    return {
        "object_id": [str(i) for i in labels.object_id],
        "label": np.asarray(labels.label, np.float32),
        "time": [str(t) for t in labels.time],
        "_x": x,
        "_y": y,
    }


def write_html(page: Page, path, title: str) -> int:
    """Write one self-contained HTML file (bokeh's JS inlined: it opens with no network); its size."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    text = file_html(page.document(), INLINE, title=title)
    atomic.write_text(path, text)
    return path.stat().st_size
