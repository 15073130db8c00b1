"""The built-in sample: real galaxies from the Hubble eXtreme Deep Field that scikit-image ships.

`skimage.data.hubble_deep_field()` is an (872, 1000, 3) RGB image. Sources are found with a
Laplacian-of-Gaussian blob detector; the 1,000 brightest at least 32 pixels from the edges become 3x64x64
cutouts (the R, G, B planes as three bands, scaled to 0..1). Ids `HDF-0001`... follow the sources' order
on the sky (by y, then x). Built once (about 2 s) and cached under $HYRAX_CACHE_DIR (default
~/.cache/hyrax); the file is written to a temporary name and renamed, so processes racing to build it
are safe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from libhyrax import atomic
from libhyrax.data.hdf5_dataset import HyraxHDF5Dataset, write_cutouts

SAMPLE_VERSION = 1
SIZE, N_SOURCES = 64, 1000
BANDS = ("R", "G", "B")


def cache_dir() -> Path:
    return Path(os.environ.get("HYRAX_CACHE_DIR") or Path.home() / ".cache" / "hyrax").expanduser()


def sample_path() -> Path:
    """The cached sample file, built on first use."""
    path = cache_dir() / f"hubble_deep_field_v{SAMPLE_VERSION}.h5"
    if not path.exists():
        build_sample(path)
    return path


def detect_sources(image: np.ndarray, size: int = SIZE, n: int = N_SOURCES) -> np.ndarray:
    """(n, 3) rows of (y, x, sigma) for the brightest blobs whose size x size cutout fits the image."""
    from skimage.feature import blob_log

    gray = image.mean(axis=-1)
    blobs = blob_log(gray, min_sigma=1, max_sigma=10, num_sigma=5, threshold=0.12)
    half = size // 2
    y, x = blobs[:, 0].astype(int), blobs[:, 1].astype(int)
    inside = (y >= half) & (y <= gray.shape[0] - half) & (x >= half) & (x <= gray.shape[1] - half)
    blobs = blobs[inside]
    peak = gray[blobs[:, 0].astype(int), blobs[:, 1].astype(int)]
    brightest = blobs[np.argsort(-peak, kind="stable")[:n]]
    return brightest[np.lexsort((brightest[:, 1], brightest[:, 0]))]


def build_sample(path, size: int = SIZE, n: int = N_SOURCES) -> Path:
    """Write the sample cutout file to `path` (atomically)."""
    from skimage.data import hubble_deep_field

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = hubble_deep_field().astype(np.float32) / 255.0  # (H, W, 3)
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))  # (3, H, W)
    sources = detect_sources(image, size, n)
    ys, xs = sources[:, 0].astype(int), sources[:, 1].astype(int)
    half = size // 2
    # one strided view of every cutout, then a single fancy-index gather: no per-object Python
    windows = np.lib.stride_tricks.sliding_window_view(planes, (size, size), axis=(1, 2))
    cutouts = np.ascontiguousarray(windows[:, ys - half, xs - half].transpose(1, 0, 2, 3))
    inner = cutouts[:, :, half - 4:half + 4, half - 4:half + 4]
    catalog = {
        "x": xs.astype(np.int32), "y": ys.astype(np.int32),
        "size": (sources[:, 2] * np.sqrt(2)).astype(np.float32),  # blob radius in pixels
        "flux": inner.sum(axis=(1, 2, 3)).astype(np.float32),  # central 8x8 flux, all bands
        "color_rb": (inner[:, 0].mean(axis=(1, 2)) - inner[:, 2].mean(axis=(1, 2))).astype(np.float32),
    }
    ids = np.array([f"HDF-{i + 1:04d}" for i in range(len(sources))])
    with atomic.replacing(path) as tmp:
        write_cutouts(tmp, ids, cutouts, catalog, bands=BANDS)
    return path


class HyraxSample(HyraxHDF5Dataset):
    """The built-in sample (about 1,000 Hubble Deep Field galaxies, 3x64x64). No data_location needed."""

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location or sample_path())
