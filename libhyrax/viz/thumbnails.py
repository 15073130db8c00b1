"""Cutout thumbnails for hover tooltips: 3+ bands as a Lupton RGB (astropy), 1-2 bands as asinh grey,
encoded as small JPEG data URIs (about 1 KB each for 64x64: PNG of noisy sky is 7x larger)."""

from __future__ import annotations

import base64
import io

import numpy as np

MAX_SIDE = 64  # larger cutouts are shrunk: a tooltip needs no more, and the page stays small


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W, 3) uint8. Bands are ordered blue to red (e.g. g, r, i)."""
    from astropy.visualization import make_lupton_rgb

    img = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    c = img.shape[0]
    if c >= 3:
        b, g, r = img[0], img[c // 2], img[c - 1]
        lo = np.array([np.percentile(band, 1) for band in (r, g, b)])
        hi = max(float(np.percentile(band, 99.5)) for band in (r, g, b))
        # astropy divides by each pixel's intensity inside np.where(intensity <= 0, 0, ...): the 0/0 it
        # computes for pixels at or below `minimum` is thrown away, but numpy warns about it
        with np.errstate(divide="ignore", invalid="ignore"):
            return make_lupton_rgb(r, g, b, minimum=lo, stretch=max(hi - lo.min(), 1e-6), Q=8)
    grey = img.mean(axis=0)
    lo, hi = np.percentile(grey, [1, 99.5])
    v = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    v = np.arcsinh(10 * v) / np.arcsinh(10)
    return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=2)


def data_uri(image: np.ndarray) -> str:
    """A cutout as a `data:image/jpeg;base64,...` URI, at most MAX_SIDE pixels a side."""
    from PIL import Image

    pic = Image.fromarray(to_rgb(image)[::-1])  # row 0 is the bottom in astronomy, the top in PNG
    if max(pic.size) > MAX_SIDE:
        pic.thumbnail((MAX_SIDE, MAX_SIDE))
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(uri: str, size: int = 96) -> str:
    return f'<img src="{uri}" width="{size}" height="{size}" style="image-rendering: pixelated">'
