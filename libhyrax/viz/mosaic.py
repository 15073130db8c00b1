"""Cutouts as a grid image (search neighbours: one row per query, nearest on the left) that shows itself
in a notebook and saves as PNG. Each cutout is drawn as the map's thumbnails are (viz.thumbnails.to_rgb)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from libhyrax.viz.thumbnails import to_rgb


class Mosaic:
    """An RGB image (H, W, 3) uint8 that shows itself in a notebook and saves as PNG."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def _repr_png_(self) -> bytes:
        return png_bytes(self.array)

    def save(self, path: str | os.PathLike) -> Path:
        Path(path).write_bytes(png_bytes(self.array))
        return Path(path)


def mosaic(grid: list[list[np.ndarray]], pad: int = 2, path: str | os.PathLike | None = None) -> Mosaic:
    """Cutouts (bands, H, W), a list per row, as one image with `pad` white pixels between them."""
    # row 0 is the bottom of a cutout in astronomy and the top of an image: flipped, as the map's thumbnails
    rgb = [[to_rgb(im)[::-1] for im in row] for row in grid]
    h = max((im.shape[0] for row in rgb for im in row), default=1)
    w = max((im.shape[1] for row in rgb for im in row), default=1)
    cols = max((len(r) for r in rgb), default=1)
    out = np.full((len(rgb) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rgb):
        for j, im in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
    result = Mosaic(out)
    if path is not None:
        result.save(path)
    return result


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
