"""Image transforms chosen by `[data_set]`: centre crop, a NaN/inf policy, per-band normalisation.
All numpy, applied to a batch (B, C, H, W) as it is read, in that order."""

from __future__ import annotations

import logging

import numpy as np

from libhyrax.errors import ConfigError, unknown_choice

log = logging.getLogger("hyrax.data")

NORMALISATIONS = ("asinh", "tanh", "none")
NAN_MODES = ("zero", "quantile")


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central size x size pixels of (..., H, W) images (unchanged when already that small)."""
    h, w = images.shape[-2:]
    if size >= h and size >= w:
        return images
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return images[..., top:top + size, left:left + size]


def all_finite(images: np.ndarray) -> bool:
    """True when no pixel is NaN or inf: one pass over the batch (a float array is checked as-is)."""
    if images.dtype.kind != "f":
        return True
    return bool(np.isfinite(images).all())


def replace_nonfinite(images: np.ndarray, mode: str = "zero", quantile: float = 0.05,
                      inplace: bool = False) -> tuple[np.ndarray, int]:
    """Replace NaN/inf pixels with zero, or with a low quantile of the finite pixels of the same band of
    the same image. Returns (images, number of pixels replaced). `inplace`: `images` may be overwritten
    (a freshly read buffer nobody else holds)."""
    if not images.size or all_finite(images):
        return images, 0  # the common case: one cheap pass, nothing replaced, nothing copied
    bad = ~np.isfinite(images)
    n_bad = int(bad.sum())
    if not inplace:
        images = images.copy()
    if mode == "zero":
        images[bad] = 0.0
    else:
        flat = images.reshape(*images.shape[:-2], -1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band: falls back to zero
                fill = np.nanquantile(np.where(np.isfinite(flat), flat, np.nan), quantile, axis=-1)
        fill = np.nan_to_num(fill, nan=0.0).astype(images.dtype)
        np.copyto(images, fill[..., None, None], where=bad)
    return images, n_bad


class Transform:
    """The `[data_set]` transforms as one callable on an image batch; counts replaced pixels."""

    def __init__(self, transform: str = "asinh", asinh_scale: float = 0.1, crop_to=False,
                 nan_mode: str = "zero", nan_quantile: float = 0.05):
        if transform not in NORMALISATIONS:
            raise ConfigError(unknown_choice("data_set.transform", transform, NORMALISATIONS))
        if nan_mode not in NAN_MODES:
            raise ConfigError(unknown_choice("data_set.nan_mode", nan_mode, NAN_MODES))
        if transform == "asinh" and not asinh_scale > 0:
            raise ConfigError(f"data_set.asinh_scale must be positive, not {asinh_scale!r}")
        if crop_to is not False and (not isinstance(crop_to, int) or crop_to < 1):
            raise ConfigError(
                f"data_set.crop_to must be a size in pixels (e.g. 48) or false, not {crop_to!r}"
            )
        self.transform, self.asinh_scale, self.crop_to = transform, float(asinh_scale), crop_to
        self.nan_mode, self.nan_quantile = nan_mode, float(nan_quantile)
        self.replaced_pixels = 0

    @classmethod
    def from_config(cls, cfg: dict) -> Transform:
        ds = cfg.get("data_set") or {}
        return cls(
            ds.get("transform", "asinh"),
            ds.get("asinh_scale", 0.1),
            ds.get("crop_to", False),
            ds.get("nan_mode", "zero"),
            ds.get("nan_quantile", 0.05),
        )

    def describe(self) -> dict:
        """What a trained model records so inference applies the same preprocessing."""
        return {
            "transform": self.transform,
            "asinh_scale": self.asinh_scale,
            "crop_to": self.crop_to,
            "nan_mode": self.nan_mode,
            "nan_quantile": self.nan_quantile,
        }

    def __call__(self, images: np.ndarray, inplace: bool = False) -> np.ndarray:
        """The transformed batch. `inplace`: `images` is a fresh buffer of the caller's that may be
        overwritten (no copies are made then; the result may be `images` itself or a view of it)."""
        arr = np.asarray(images)
        if arr.dtype != np.float32:
            arr, inplace = arr.astype(np.float32), True  # the cast made a private copy
        images = arr
        if self.crop_to is not False:
            images = center_crop(images, self.crop_to)
        images, n_bad = replace_nonfinite(images, self.nan_mode, self.nan_quantile, inplace)
        inplace = inplace or n_bad > 0  # replacing made a private copy
        if n_bad:
            if not self.replaced_pixels:
                log.warning(
                    "replacing NaN/inf pixels (nan_mode=%s); the total is logged at the end", self.nan_mode
                )
            self.replaced_pixels += n_bad
            log.debug(
                "replaced %d NaN/inf pixels in a batch of %d (total %d)",
                n_bad,
                len(images),
                self.replaced_pixels,
            )
        if self.transform == "asinh":
            if inplace:
                images = np.divide(images, np.float32(self.asinh_scale), out=images)
                images = np.arcsinh(images, out=images)
            else:
                images = np.arcsinh(images / np.float32(self.asinh_scale))
        elif self.transform == "tanh":
            images = np.tanh(images, out=images) if inplace else np.tanh(images)
        return np.ascontiguousarray(images, dtype=np.float32)
