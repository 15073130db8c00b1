"""The tiled map of a large embedding, written in streaming passes over `embedding.h5` (memory flat in N):

    tiles/count/Z/TX_TY.png    density pyramid, 256 px tiles, levels 0..LEVELS-1, greys by log(1 + count)
    tiles/mean/Z/TX_TY.png     the same pyramid coloured by the colour column's mean per pixel
    points/CELL.js             the objects of one cell of a 2^R x 2^R grid (R chosen so a cell holds at
                               most `cell_cap` objects): `hyraxPoints(CELL, {...})` with x, y, ids and
                               numeric columns as base64 float32, string columns and thumbnails as JSON

PNG tiles load through <img> and point files through <script src>: both work from file:// (fetch() does
not), so the results directory opens from disk with no server.

Passes: (1) the extent; (2) the finest density grid (LEVELS-1), counts and the colour column's sums, as
np.unique per chunk (np.histogram2d's bincount would allocate the whole grid per chunk); (3) each object
appended to one of a few bucket files by its cell (buckets hold contiguous cells, about BUCKET_ROWS
objects each); (4) each bucket read back, sorted by cell, one point file per cell. Memory: the grids
(3 x 4 bytes x 4096^2 = 192 MB with a colour column) and one chunk or bucket at a time.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from libhyrax import hdf5

TILE = 256
LEVELS = 5  # the finest density grid is TILE * 2^(LEVELS-1) = 4096 px a side
CHUNK = 1 << 20  # embedding rows per read
BUCKET_ROWS = 500_000  # objects per bucket file (the most held at once in pass 4)
MAX_CELL_LEVEL = 9  # at most 512 x 512 cells: the page lists the non-empty ones
CELL_POINTS = 20_000  # objects per point file at most (where MAX_CELL_LEVEL allows): ~1 MB of JavaScript


@dataclass
class Extent:
    x0: float
    y0: float
    w: float
    h: float

    def pixels(self, x: np.ndarray, y: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Column and row (0 at the bottom) of (x, y) on a side x side grid over the extent."""
        px = np.clip(((x - self.x0) * (side / self.w)).astype(np.int64), 0, side - 1)
        py = np.clip(((y - self.y0) * (side / self.h)).astype(np.int64), 0, side - 1)
        return px, py


@dataclass
class TiledMap:
    """What the page needs to draw a tiled map (see viz.tiled): the extent, which tiles exist, the cell
    grid and the non-empty cells with their counts."""

    extent: Extent
    n_objects: int
    tiles: dict[str, dict[int, list[int]]]  # mode ("count", "mean") -> level -> [ty * 2^level + tx]
    cell_level: int
    cells: np.ndarray  # non-empty cells (cy * 2^R + cx), ascending
    cell_counts: np.ndarray
    color: str | None  # the column the "mean" tiles show
    color_range: tuple[float, float]
    columns: dict[str, str] = field(default_factory=dict)  # name -> "num" or "str"
    label_xy: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_thumbnails: int = 0
    budget: int = 0  # the most objects in view whose points the page loads


Reader = Callable[[int, int, np.ndarray], np.ndarray]  # (start, stop, ids as bytes) -> values


def chunks(n: int):
    for start in range(0, n, CHUNK):
        yield start, min(start + CHUNK, n)


def read_xy(ds, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = ds[start:stop, :2].astype(np.float32)
    ok = np.isfinite(xy).all(axis=1)
    xy[~ok] = 0  # left out by `ok`; a finite stand-in keeps the pixel arithmetic quiet
    return xy[:, 0], xy[:, 1], ok


def find_extent(ds) -> tuple[Extent, int]:
    """Pass 1: the bounding box of the finite embedding (a little padded) and how many objects are in it."""
    lo, hi, n = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf]), 0
    for start, stop in chunks(ds.shape[0]):
        x, y, ok = read_xy(ds, start, stop)
        if ok.any():
            lo = np.minimum(lo, [x[ok].min(), y[ok].min()])
            hi = np.maximum(hi, [x[ok].max(), y[ok].max()])
            n += int(ok.sum())
    if n == 0:
        return Extent(0.0, 0.0, 1.0, 1.0), 0
    span = np.maximum(hi - lo, 1e-6)
    pad = span * 1e-3  # the largest values stay inside the last pixel
    return Extent(
        float(lo[0] - pad[0]), float(lo[1] - pad[1]), float(span[0] + 2 * pad[0]), float(span[1] + 2 * pad[1])
    ), n


def density_grids(ds, extent: Extent, color: Reader | None, ids_ds):
    """Pass 2: counts per pixel of the finest grid and, for the colour column, its finite values' sum
    and count per pixel (None without a colour column)."""
    side = TILE << (LEVELS - 1)
    counts = np.zeros(side * side, np.uint32)
    sums = np.zeros(side * side, np.float32) if color else None
    finite = np.zeros(side * side, np.uint32) if color else None
    for start, stop in chunks(ds.shape[0]):
        x, y, ok = read_xy(ds, start, stop)
        px, py = extent.pixels(x[ok], y[ok], side)
        flat = py * side + px
        cells, n = np.unique(flat, return_counts=True)
        counts[cells] += n.astype(np.uint32)
        if color:
            v = color(start, stop, hdf5.as_id_bytes(ids_ds[start:stop]))[ok].astype(np.float64)
            good = np.isfinite(v)
            cells, inverse = np.unique(flat[good], return_inverse=True)
            sums[cells] += np.bincount(inverse, weights=v[good]).astype(np.float32)
            finite[cells] += np.bincount(inverse).astype(np.uint32)
    grid = counts.reshape(side, side)
    if not color:
        return grid, None, None
    return grid, sums.reshape(side, side), finite.reshape(side, side)


def pooled(grid: np.ndarray, side: int) -> np.ndarray:
    """`grid` summed into side x side blocks."""
    f = grid.shape[0] // side
    return grid.reshape(side, f, side, f).sum(axis=(1, 3), dtype=grid.dtype)


def palette_rgb(name: str) -> np.ndarray:
    import bokeh.palettes as palettes

    colors = getattr(palettes, name, None) or palettes.all_palettes[name][max(palettes.all_palettes[name])]
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], np.uint8)


def write_tiles(
    root: Path, mode: str, z: int, colour: Callable[[tuple], np.ndarray], rgb: np.ndarray, empty: np.ndarray
) -> list[int]:
    """Level `z` of one pyramid (side TILE * 2^z): `colour(block)` gives a tile's values in 0..1; pixels
    `empty` are transparent and tiles with nothing in them are not written. The tiles written
    (ty * 2^z + tx)."""
    from PIL import Image

    # 8-bit palette PNGs (index 255 transparent): a quarter of RGBA's bytes to compress
    palette = np.zeros((256, 3), np.uint8)
    palette[:255] = rgb[np.linspace(0, len(rgb) - 1, 255).round().astype(int)]
    n = 1 << z
    out = root / "tiles" / mode / str(z)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ty in range(n):
        for tx in range(n):
            block = np.s_[ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE]
            hole = empty[block]
            if hole.all():
                continue
            idx = np.clip(colour(block) * 254, 0, 254).astype(np.uint8)
            idx[hole] = 255
            pic = Image.fromarray(idx[::-1], "P")  # row 0 is the top of a PNG, the bottom of the map
            pic.putpalette(palette.tobytes())
            pic.save(out / f"{tx}_{ty}.png", transparency=255, compress_level=1)
            written.append(ty * n + tx)
    return written


def halved(grid: np.ndarray) -> np.ndarray:
    return pooled(grid, grid.shape[0] // 2)


def write_pyramids(root: Path, counts, sums, finite, cmap: str):
    """The count pyramid (greys, darker = more) and, with a colour column, the mean pyramid (`cmap`
    over the 1st..99th percentile of the finest pixels' means), each level the one below summed 2 x 2.
    Also the colour range and the counts on a 512 x 512 grid (for the point cells)."""
    greys = palette_rgb("Greys256")  # dark to light: darkest = most
    tiles: dict[str, dict[int, list[int]]] = {"count": {}}
    lo, hi = 0.0, 1.0
    if sums is not None:
        have = finite > 0
        means = sums[have] / finite[have]
        if means.size:
            lo, hi = (float(v) for v in np.percentile(means, [1, 99]))
        hi = hi if hi > lo else lo + 1
        del have, means
        tiles["mean"] = {}
        rgb = palette_rgb(cmap)
    cells = counts
    for z in reversed(range(LEVELS)):
        if z < LEVELS - 1:
            counts = halved(counts)
            sums, finite = (halved(sums), halved(finite)) if sums is not None else (None, None)
        top = max(np.log1p(float(counts.max())), 1e-9)
        shade = lambda b, c=counts, t=top: 0.85 * (1 - np.log1p(c[b]) / t)  # noqa: E731
        tiles["count"][z] = write_tiles(root, "count", z, shade, greys, counts == 0)
        if sums is not None:
            mean = lambda b, s=sums, f=finite: (s[b] / np.maximum(f[b], 1) - lo) / (hi - lo)  # noqa: E731
            tiles["mean"][z] = write_tiles(root, "mean", z, mean, rgb, finite == 0)
        if counts.shape[0] == 1 << MAX_CELL_LEVEL:
            cells = counts
    return tiles, (lo, hi), cells


def cell_level(counts: np.ndarray, cap: int) -> int:
    """The coarsest cell grid (2^R a side) whose fullest cell holds at most `cap` objects."""
    for r in range(MAX_CELL_LEVEL + 1):
        if pooled(counts, 1 << r).max() <= cap:
            return r
    return MAX_CELL_LEVEL


def record_dtype(id_width: int, columns: dict[str, np.dtype]) -> np.dtype:
    return np.dtype(
        [("cell", "<u4"), ("row", "<i8"), ("x", "<f4"), ("y", "<f4"), ("id", f"S{id_width}")]
        + [(f"c{i}", dt) for i, dt in enumerate(columns.values())]
    )


def bucket_objects(
    ds,
    ids_ds,
    extent: Extent,
    r: int,
    bucket_of_cell: np.ndarray,
    tmp: Path,
    readers: dict[str, Reader],
    dtypes: dict[str, np.dtype],
    id_width: int,
    label_ids: np.ndarray,
) -> dict[str, tuple[float, float]]:
    """Pass 3: every object appended, as one record, to the bucket file of its cell; the positions of
    the objects in `label_ids` (bytes) on the way."""
    dtype = record_dtype(id_width, dtypes)
    files = {}
    found = {}
    try:
        for start, stop in chunks(ds.shape[0]):
            x, y, ok = read_xy(ds, start, stop)
            ids = hdf5.as_id_bytes(ids_ds[start:stop])
            px, py = extent.pixels(x, y, 1 << r)
            rec = np.empty(stop - start, dtype)
            rec["cell"], rec["row"], rec["x"], rec["y"], rec["id"] = (
                py * (1 << r) + px,
                np.arange(start, stop),
                x,
                y,
                ids,
            )
            for i, name in enumerate(dtypes):
                rec[f"c{i}"] = readers[name](start, stop, ids)
            if len(label_ids):
                for j in np.flatnonzero(np.isin(ids, label_ids) & ok):
                    found[ids[j].decode()] = (float(x[j]), float(y[j]))
            rec = rec[ok]
            bucket = bucket_of_cell[rec["cell"]]
            order = np.argsort(bucket, kind="stable")
            rec, bucket = rec[order], bucket[order]
            cuts = np.flatnonzero(np.diff(bucket)) + 1
            for part in np.split(rec, cuts):
                if len(part):
                    b = int(bucket_of_cell[part["cell"][0]])
                    if b not in files:
                        files[b] = open(tmp / f"{b}.bin", "ab")  # noqa: SIM115 (closed below)
                    files[b].write(part.tobytes())
            del rec, part  # before the next chunk's records are made: one chunk held at a time
    finally:
        for f in files.values():
            f.close()
    return found


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def write_cells(
    root: Path, tmp: Path, dtypes: dict[str, np.dtype], id_width: int, thumbs: dict[int, str]
) -> int:
    """Pass 4: each bucket read back and split by cell into point files; the thumbnails placed."""
    dtype = record_dtype(id_width, dtypes)
    out = root / "points"
    out.mkdir(exist_ok=True)
    thumb_rows = np.array(sorted(thumbs), np.int64)
    placed = 0
    for path in sorted(tmp.glob("*.bin"), key=lambda p: int(p.stem)):
        rec = np.fromfile(path, dtype)
        path.unlink()
        rec = rec[np.argsort(rec["cell"], kind="stable")]  # objects stay in file order within a cell
        cuts = np.flatnonzero(np.diff(rec["cell"])) + 1
        for part in np.split(rec, cuts):
            payload = {
                "n": len(part),
                "x": b64(part["x"]),
                "y": b64(part["y"]),
                "idw": id_width,
                "id": b64(part["id"]),
                "num": {},
                "str": {},
            }
            for i, (name, dt) in enumerate(dtypes.items()):
                values = part[f"c{i}"]
                if dt.kind == "f":
                    payload["num"][name] = b64(values)
                else:
                    payload["str"][name] = np.char.decode(values, "utf-8").tolist()
            if len(thumb_rows):
                hit = np.flatnonzero(np.isin(part["row"], thumb_rows))
                payload["thumb"] = {int(i): thumbs[int(part["row"][i])] for i in hit}
                placed += len(hit)
            cell = int(part["cell"][0])
            (out / f"{cell}.js").write_text(
                f"hyraxPoints({cell}, {json.dumps(payload)});\n", encoding="utf-8"
            )
    return placed


def read_point_file(path: Path) -> dict[str, np.ndarray | list]:
    """The objects of one point file as the page's columns: _x, _y, object_id, each column, _thumb."""
    text = path.read_text(encoding="utf-8")
    p = json.loads(text[text.index(",") + 1 : text.rindex(")")])
    f32 = lambda s: np.frombuffer(base64.b64decode(s), "<f4")  # noqa: E731
    out = {
        "_x": f32(p["x"]),
        "_y": f32(p["y"]),
        "object_id": np.char.decode(
            np.frombuffer(base64.b64decode(p["id"]), f"S{p['idw']}"), "utf-8"
        ).tolist(),
    }
    out |= {name: f32(v) for name, v in p["num"].items()} | p["str"]
    thumbs = [""] * p["n"]
    for i, tag in p.get("thumb", {}).items():
        thumbs[int(i)] = tag
    return out | {"_thumb": thumbs}


def write_map(
    root: Path,
    ds,
    ids_ds,
    *,
    readers: dict[str, Reader],
    dtypes: dict[str, np.dtype],
    color: str | None,
    cmap: str,
    budget: int,
    label_ids=(),
    thumbs: dict[int, str] | None = None,
    extent_n: tuple[Extent, int] | None = None,
) -> TiledMap:
    """Write the tiles and point files of the embedding `ds` (N, 2+) with ids `ids_ds` under `root`.
    `readers`: per column, its values for rows start:stop; `dtypes`: their record types (float32 or S<w>);
    `color`: the column the mean tiles show; `budget`: the most points the page loads at once (a cell
    holds at most a quarter of it, where the finest cells allow); `thumbs`: embedding row -> <img> tag."""
    extent, n = extent_n or find_extent(ds)
    counts, sums, finite = density_grids(ds, extent, readers.get(color) if color else None, ids_ds)
    tiles, color_range, counts = write_pyramids(root, counts, sums, finite, cmap)
    del sums, finite
    r = cell_level(counts, max(1, min(CELL_POINTS, budget // 4)))
    per_cell = pooled(counts, 1 << r).astype(np.int64).ravel()
    bucket_of_cell = ((np.cumsum(per_cell) - per_cell) // BUCKET_ROWS).astype(np.int64)
    id_width = ids_ds.dtype.itemsize if ids_ds.dtype.kind == "S" else max_id_width(ids_ds)
    tmp = root / ".buckets"
    tmp.mkdir()
    try:
        label_xy = bucket_objects(
            ds,
            ids_ds,
            extent,
            r,
            bucket_of_cell,
            tmp,
            readers,
            dtypes,
            id_width,
            hdf5.as_id_bytes(np.asarray(list(label_ids), dtype=str)),
        )
        placed = write_cells(root, tmp, dtypes, id_width, thumbs or {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cells = np.flatnonzero(per_cell)
    return TiledMap(
        extent,
        n,
        tiles,
        r,
        cells,
        per_cell[cells],
        color,
        color_range,
        {k: "num" if dt.kind == "f" else "str" for k, dt in dtypes.items()},
        label_xy,
        placed,
        budget,
    )


def max_id_width(ids_ds) -> int:
    width = 1
    for start, stop in chunks(ids_ds.shape[0]):
        width = max(width, hdf5.as_id_bytes(ids_ds[start:stop]).dtype.itemsize)
    return width
