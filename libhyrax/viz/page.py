"""The interactive map: a bokeh layout of the embedding, self-contained (resources inlined).

    WebGL scatter coloured by a column (a Select chooses it; a colour bar shows the scale)
    hover: object id, the chosen fields and the cutout thumbnail where there is one
    box/lasso selection -> a table of the selected objects and a button that saves their ids as CSV
    many points: a 2-D histogram image of all of them under a random subset drawn as points
"""

from __future__ import annotations

import html

import numpy as np

# Reads the chosen column into the colour column and rescales the colour bar.
RECOLOR_JS = """
const v = source.data[cb_obj.value];
let lo = Infinity, hi = -Infinity;
for (let i = 0; i < v.length; i++) { const a = v[i]; if (Number.isFinite(a)) { if (a < lo) lo = a; if (a > hi) hi = a; } }
if (!(lo < hi)) { hi = lo + 1; }
source.data['_color'] = v;
mapper.low = lo; mapper.high = hi; bar.title = cb_obj.value;
source.change.emit();
"""
# Copies the selected rows into the table's source.
SELECT_JS = """
const idx = source.selected.indices;
const out = {};
for (const k of columns) { const col = source.data[k]; out[k] = Array.from(idx, i => col[i]); }
table_source.data = out;
count.text = idx.length + ' selected';
"""
# Saves the selected ids as a CSV file (a download; no server needed).
CSV_JS = """
const ids = table_source.data['object_id'];
const csv = 'object_id\\n' + Array.from(ids, s => '"' + String(s).replace(/"/g, '""') + '"').join('\\n') + '\\n';
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


def density_image(x: np.ndarray, y: np.ndarray, bins: int = 512):
    """log(1 + counts) of a 2-D histogram, with its extent (x0, y0, width, height)."""
    xr = (float(np.min(x)), float(np.max(x)))
    yr = (float(np.min(y)), float(np.max(y)))
    h, xe, ye = np.histogram2d(x, y, bins=bins, range=[xr, yr])
    img = np.log1p(h.T).astype(np.float32)
    img[img == 0] = np.nan  # empty bins stay transparent
    return img, (xe[0], ye[0], xe[-1] - xe[0], ye[-1] - ye[0])


def build_page(x, y, object_id, columns: dict[str, np.ndarray], *, color: str | None, fields: list[str],
               thumbs: list[str] | None, density=None, cmap: str = "Viridis256", title: str = "Hyrax map"):
    """The layout: `columns` are numeric columns to colour by; `fields` (names in `columns` or string
    arrays in `columns`) show on hover and in the table; `thumbs` are <img> tags ('' where none)."""
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
        Select,
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
    source = ColumnDataSource(data)

    p = figure(title=title, output_backend="webgl", tools="pan,wheel_zoom,box_select,lasso_select,reset,save",
               active_scroll="wheel_zoom", sizing_mode="stretch_both", min_width=500, min_height=500,
               x_axis_label="embedding 1", y_axis_label="embedding 2")
    if density is not None:
        img, (x0, y0, dw, dh) = density
        from bokeh.palettes import Greys256

        shades = LinearColorMapper(palette=list(reversed(Greys256))[32:], nan_color=(0, 0, 0, 0))
        p.image(image=[img], x=x0, y=y0, dw=dw, dh=dh, color_mapper=shades, level="image")
    finite = data["_color"][np.isfinite(data["_color"])]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mapper = LinearColorMapper(palette=cmap, low=lo, high=hi if hi > lo else lo + 1, nan_color="#bbbbbb")
    n = len(data["_x"])
    size, alpha = (5, 0.8) if n < 20_000 else (3, 0.5)
    points = p.scatter("_x", "_y", source=source, size=size, alpha=alpha, line_color=None,
                       fill_color={"field": "_color", "transform": mapper})
    tips = "<div><b>@object_id</b></div>" + "".join(
        f"<div>{html.escape(f)}: @{{{f}}}</div>" for f in fields if f in columns)
    if thumbs is not None:
        tips += "<div>@_thumb{safe}</div>"
    p.add_tools(HoverTool(renderers=[points], tooltips=tips))
    bar = ColorBar(color_mapper=mapper, title=color or "", width=12)
    p.add_layout(bar, "right")

    controls = []
    if numeric:
        select = Select(title="Colour by", value=color or numeric[0], options=numeric, width=220)
        select.js_on_change("value", CustomJS(args={"source": source, "mapper": mapper, "bar": bar},
                                              code=RECOLOR_JS))
        controls.append(select)
    shown = ["object_id"] + [f for f in fields if f in columns]
    table_source = ColumnDataSource({k: [] for k in shown})
    table = DataTable(source=table_source, columns=[TableColumn(field=k, title=k) for k in shown], width=320,
                      height=400, index_position=None)
    count = Div(text="0 selected")
    source.selected.js_on_change("indices", CustomJS(
        args={"source": source, "table_source": table_source, "columns": shown, "count": count}, code=SELECT_JS))
    button = Button(label="Save selected ids (CSV)", button_type="primary", width=220)
    button.js_on_event("button_click", CustomJS(args={"table_source": table_source}, code=CSV_JS))
    side = column(*controls, count, table, button, width=340)
    return row(p, side, sizing_mode="stretch_both"), source


def write_html(layout, path, title: str) -> int:
    """Write one self-contained HTML file (bokeh's JS inlined: it opens with no network); its size."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    text = file_html(layout, INLINE, title=title)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path.stat().st_size
