"""A synthetic survey with known oddities: ground truth for anomaly ranking and labels for classifiers.

Objects are Sersic galaxies (disks, n~1, bluer; ellipticals, n~4, redder) and stars, convolved with a
Gaussian PSF, on a sky with Gaussian noise. A known fraction become anomalies of one of
`ANOMALY_KINDS`. The catalog records `label` (0 disk, 1 elliptical, 2 star), `is_anomaly`,
`anomaly_kind` ("none" for normal objects), `ra`, `dec`, `mag`, `r_eff`, `sersic_n`.

    from libhyrax.data.synthetic import generate_survey
    generate_survey("survey.h5", n=5000, size=32, anomaly_fraction=0.05, seed=0)

or, in a config, `dataset_class = "SyntheticSurvey"` with `dataset_config = {n = 5000, seed = 1}`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from libhyrax import atomic
from libhyrax.data.hdf5_dataset import CutoutWriter, HyraxHDF5Dataset

CLASSES = ("disk", "elliptical", "star")
ANOMALY_KINDS = ("ring", "arc", "merger", "trail", "hot_pixel", "point_source")
PIXEL_SCALE = 0.2  # arcsec per pixel
SKY_SIGMA = 0.01
BATCH = 256


def _draw_params(n: int, n_bands: int, anomaly_fraction: float, rng) -> dict[str, np.ndarray]:
    """Every per-object parameter, drawn up front (a few scalars per object) so the images don't depend
    on the batch size."""
    label = rng.choice(3, size=n, p=[0.45, 0.35, 0.2])
    n_anom = int(round(anomaly_fraction * n))
    is_anom = np.zeros(n, bool)
    is_anom[rng.choice(n, size=n_anom, replace=False)] = True
    kind = np.full(n, "none", dtype=object)
    kind[is_anom] = rng.choice(ANOMALY_KINDS, size=n_anom)
    # rings, arcs, mergers and point sources sit on galaxies
    on_galaxy = np.isin(kind, ["ring", "arc", "merger", "point_source"])
    label[on_galaxy & (label == 2)] = rng.choice(2, size=int((on_galaxy & (label == 2)).sum()))
    sersic = np.where(label == 0, rng.uniform(0.7, 1.5, n), rng.uniform(2.5, 4.0, n))
    colours = {0: [1.0, 0.8, 0.65], 1: [0.45, 0.75, 1.0], 2: [0.8, 0.9, 0.9]}
    colour = np.array([np.resize(colours[c], n_bands) for c in range(3)])[label]
    colour *= rng.uniform(0.85, 1.15, (n, n_bands))
    return {
        "label": label,
        "is_anomaly": is_anom,
        "anomaly_kind": kind.astype(str),
        "sersic_n": sersic,
        "r_eff": rng.uniform(1.5, 4.5, n),
        "q": np.where(label == 0, rng.uniform(0.3, 1, n), rng.uniform(0.6, 1, n)),
        "theta": rng.uniform(0, np.pi, n),
        "flux": 10 ** rng.uniform(0.6, 1.6, n),
        "colour": colour,
        "dx": rng.uniform(-1, 1, n),
        "dy": rng.uniform(-1, 1, n),
        "psf": rng.uniform(0.9, 1.4, n),
        "ra": rng.uniform(149.5, 150.5, n),
        "dec": rng.uniform(1.7, 2.7, n),
    }


def _sersic(yy, xx, p, sl, dx=0.0, dy=0.0) -> np.ndarray:
    """Unit-flux Sersic images (B, H, W) for the objects in slice `sl`."""
    n, re, q, th = (p[k][sl][:, None, None] for k in ("sersic_n", "r_eff", "q", "theta"))
    x = xx - p["dx"][sl][:, None, None] - dx
    y = yy - p["dy"][sl][:, None, None] - dy
    xr, yr = x * np.cos(th) + y * np.sin(th), -x * np.sin(th) + y * np.cos(th)
    r = np.sqrt(xr**2 + (yr / q) ** 2)
    b = 2 * n - 1 / 3 + 0.009876 / n
    img = np.exp(-b * ((r / re) ** (1 / n) - 1))
    return img / img.sum(axis=(1, 2), keepdims=True)


def _gauss(yy, xx, sigma, cx, cy) -> np.ndarray:
    g = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sigma**2)
    return g / g.sum(axis=(-2, -1), keepdims=True)


def _psf_convolve(img: np.ndarray, yy, xx, sigma: np.ndarray) -> np.ndarray:
    psf = _gauss(yy, xx, sigma[:, None, None], 0.0, 0.0)
    psf = np.fft.ifftshift(psf, axes=(-2, -1))
    return np.fft.irfft2(np.fft.rfft2(img) * np.fft.rfft2(psf), s=img.shape[-2:])


def _render(p: dict, sl: slice, size: int, n_bands: int, rng) -> np.ndarray:
    m = sl.stop - sl.start
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    label, kind = p["label"][sl], p["anomaly_kind"][sl]
    flux, colour, psf = p["flux"][sl], p["colour"][sl], p["psf"][sl]
    base = _sersic(yy, xx, p, sl)  # (m, H, W)
    extra = np.zeros((m, size, size))  # structure added before the PSF, same colour as the object
    for i in np.flatnonzero(kind != "none"):
        k = kind[i]
        r = np.hypot(yy, xx)
        if k == "ring":
            radius = rng.uniform(2.5, 4.0) * p["r_eff"][sl][i]
            radius = min(radius, size / 2 - 3)
            extra[i] = np.exp(-0.5 * ((r - radius) / 0.8) ** 2)
            extra[i] *= 0.6 / extra[i].sum()
        elif k == "arc":
            radius, phi0 = rng.uniform(size / 5, size / 3), rng.uniform(0, 2 * np.pi)
            dphi = np.angle(np.exp(1j * (np.arctan2(yy, xx) - phi0)))
            extra[i] = np.exp(-0.5 * ((r - radius) / 0.8) ** 2) * (np.abs(dphi) < 0.6)
            extra[i] *= 0.6 / max(extra[i].sum(), 1e-9)
        elif k == "merger":
            ang, sep = rng.uniform(0, 2 * np.pi), rng.uniform(4, size / 4)
            one = slice(sl.start + i, sl.start + i + 1)
            extra[i] = _sersic(yy, xx, p, one, sep * np.cos(ang), sep * np.sin(ang))[0] * rng.uniform(
                0.5, 1.0
            )
    stars = label == 2
    images = np.empty((m, n_bands, size, size))
    galaxy = _psf_convolve(base + extra, yy, xx, psf)
    star = _gauss(yy, xx, psf[:, None, None], p["dx"][sl][:, None, None], p["dy"][sl][:, None, None])
    shape = np.where(stars[:, None, None], star, galaxy)
    images[:] = shape[:, None] * (flux[:, None] * colour)[:, :, None, None]
    for i in np.flatnonzero(kind == "point_source"):
        ang, sep = rng.uniform(0, 2 * np.pi), rng.uniform(2, 5)
        pt = _gauss(yy, xx, psf[i], sep * np.cos(ang), sep * np.sin(ang))
        images[i] += pt[None] * flux[i] * 0.5 * np.array(np.resize([1.0, 0.6, 0.35], n_bands))[:, None, None]
    images += rng.normal(0, SKY_SIGMA, images.shape)
    for i in np.flatnonzero(kind == "trail"):
        ang, off = rng.uniform(0, np.pi), rng.uniform(-size / 4, size / 4)
        dist = np.abs(xx * np.sin(ang) - yy * np.cos(ang) - off)
        images[i] += np.exp(-0.5 * (dist / 0.7) ** 2)[None] * rng.uniform(0.2, 0.5)
    for i in np.flatnonzero(kind == "hot_pixel"):
        k = rng.integers(3, 10)
        images[i, rng.integers(0, n_bands, k), rng.integers(0, size, k), rng.integers(0, size, k)] += (
            rng.uniform(1, 3, k)
        )
    return images.astype(np.float32)


def generate_survey(
    path,
    n: int = 1000,
    size: int = 32,
    bands=("g", "r", "i"),
    anomaly_fraction: float = 0.05,
    seed: int = 0,
    labels: bool = True,
) -> Path:
    """Write a synthetic cutout file of `n` objects (streamed in batches; written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = list(bands)
    rng = np.random.default_rng(seed)
    p = _draw_params(int(n), len(bands), float(anomaly_fraction), rng)
    width = len(str(n))
    attrs = {
        "generator": "libhyrax.data.synthetic",
        "seed": int(seed),
        "anomaly_fraction": float(anomaly_fraction),
    }
    with atomic.replacing(path) as tmp:
        # ids as wide as they are ("SYN-" + width digits), not the 64-byte default: every reader holds
        # them as numpy str, 4 bytes a character of the stored width, for each of the N objects
        with CutoutWriter(
            tmp,
            (len(bands), size, size),
            bands,
            n_rows=int(n),
            pixel_scale=PIXEL_SCALE,
            id_length=4 + width,
            attrs=attrs,
        ) as w:
            for b, start in enumerate(range(0, n, BATCH)):
                sl = slice(start, min(start + BATCH, n))
                images = _render(p, sl, size, len(bands), np.random.default_rng([seed, b]))
                catalog = {
                    k: p[k][sl] for k in ("is_anomaly", "anomaly_kind", "ra", "dec", "sersic_n", "r_eff")
                }
                catalog["mag"] = (25.0 - 2.5 * np.log10(p["flux"][sl])).astype(np.float32)
                if labels:
                    catalog["label"] = p["label"][sl].astype(np.int64)
                w.append([f"SYN-{i:0{width}d}" for i in range(sl.start, sl.stop)], images, catalog)
    return path


class SyntheticSurvey(HyraxHDF5Dataset):
    """A generated survey (see the module docstring). dataset_config: n, size, seed, anomaly_fraction,
    bands. Built once per parameter set and cached under $HYRAX_CACHE_DIR (or written to data_location
    when that is given and doesn't exist yet)."""

    OPTIONS = {"n": 1000, "size": 32, "seed": 0, "anomaly_fraction": 0.05, "bands": ["g", "r", "i"]}

    def __init__(self, config=None, data_location=None):
        from libhyrax.data.base import Dataset
        from libhyrax.data.sample import cache_dir

        Dataset.__init__(self, config, data_location)
        opts = {**self.OPTIONS, **{k: v for k, v in self.dataset_config.items() if k in self.OPTIONS}}
        if data_location:
            path = Path(data_location)
        else:
            key = hashlib.sha1(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:12]
            path = cache_dir() / f"synthetic-{key}.h5"
        if not path.exists():
            generate_survey(
                path,
                n=int(opts["n"]),
                size=int(opts["size"]),
                bands=opts["bands"],
                anomaly_fraction=float(opts["anomaly_fraction"]),
                seed=int(opts["seed"]),
            )
        super().__init__(config, str(path))
        self.dataset_config = {**self.dataset_config, **opts}
