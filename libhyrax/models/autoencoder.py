"""Convolutional autoencoders: an encoder of stride-2 convolutions to a latent vector and a mirrored
decoder. Any C x H x W input from 16 x 16 up; odd sizes are restored exactly (output_padding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.errors import ModelError
from libhyrax.models.base import HyraxModel

MIN_SIZE = 16
FINAL_LAYERS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
LATENT_NORMS = ("batch", "none")


def image_shape(data_sample, model: str, min_size: int = MIN_SIZE) -> tuple[int, int, int]:
    """(C, H, W) of a prepared sample (1, C, H, W), or a ModelError saying why the model can't take it."""
    first = data_sample[0] if isinstance(data_sample, (tuple, list)) else data_sample
    shape = tuple(getattr(first, "shape", ()))
    if len(shape) != 4:
        raise ModelError(f"{model} takes images of shape (batch, bands, height, width); the data sample has "
                         f"shape {shape}. Request an 'image' field in the data request")
    c, h, w = (int(s) for s in shape[1:])
    if h < min_size or w < min_size:
        raise ModelError(f"{model} needs images of at least {min_size}x{min_size} pixels; the data sample is "
                         f"{h}x{w}. Use a larger cutout (or a smaller data_set.crop_to)")
    return c, h, w


def halvings(h: int, w: int, n: int) -> list[tuple[int, int]]:
    """Spatial sizes after each of `n` stride-2 convolutions (padding 1, kernel 3): ceil(s / 2)."""
    sizes = [(h, w)]
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def down(cin: int, cout: int, refine: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
    return (
        nn.Sequential(*layers, nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())
        if refine
        else nn.Sequential(*layers)
    )


def up(
    cin: int, cout: int, small: tuple[int, int], big: tuple[int, int], refine: bool = True
) -> nn.Sequential:
    # a stride-2 transposed conv gives 2s - 1 + output_padding: pad by one where the input size was even
    pad = (big[0] - 2 * small[0] + 1, big[1] - 2 * small[1] + 1)
    layers = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=pad)]
    if refine:
        layers += [nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU()]
    return nn.Sequential(*layers)


class LatentNorm(nn.BatchNorm1d):
    """Each latent dimension standardised (batch statistics in training, running ones after), with no
    learned scale: without it one direction held 99.5% of the latent variance and the map was a thin
    curve ordered by reconstruction error (issue 16). A training batch of one uses the running statistics."""

    def __init__(self, dim: int):
        super().__init__(dim, affine=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training and z.shape[0] < 2:
            return F.batch_norm(z, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(z)


class Reconstructs:
    """What every autoencoder here shares, given `encoder`, `expand`, `decoder` and `bottom` (the decoder's
    input shape): encode, decode, the reconstruction loss, and the per-object reconstruction error that
    `infer` saves as a cheap anomaly signal. A mixin, so it registers no model of its own."""

    channels_last = True  # convolutions: see HyraxModel.channels_last

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.expand(z).view(-1, *self.bottom))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.criterion is not None:
            return self.criterion(recon, x)
        return F.mse_loss(recon, x)

    def train_batch(self, x: torch.Tensor) -> dict:
        return {"loss": self.loss(self(x), x)}

    def infer_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def infer_outputs(self, x: torch.Tensor) -> dict:
        z = self.encode(x)
        recon = self.decode(z)
        return {"latent": z, "recon_error": (recon.float() - x.float()).pow(2).flatten(1).mean(1)}


class HyraxAutoencoder(Reconstructs, HyraxModel):
    """Three stride-2 stages (base, 2 base, 2 base channels) to `latent_dim`, mirrored back; MSE loss.
    The reference Hyrax's default shape: 5 convolutions each way, base 32 channels, latent 64; and with
    `latent_norm = "batch"` (the default config's) the latent standardised by LatentNorm."""

    final_layer = "identity"

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, h, w = image_shape(data_sample, type(self).__name__)
        p = self.params
        base, self.latent_dim = int(p.get("base_channel_size", 32)), int(p.get("latent_dim", 64))
        final = p.get("final_layer", self.final_layer)
        if final not in FINAL_LAYERS:
            raise ModelError(
                f"model.{type(self).__name__}.final_layer = {final!r}; use one of {', '.join(FINAL_LAYERS)}"
            )
        norm = p.get("latent_norm", "none")  # a run trained before latent_norm existed has none
        if norm not in LATENT_NORMS:
            raise ModelError(
                f"model.{type(self).__name__}.latent_norm = {norm!r}; use one of {', '.join(LATENT_NORMS)}"
            )
        sizes = halvings(h, w, 3)
        self.bottom = (2 * base, *sizes[-1])
        flat = 2 * base * sizes[-1][0] * sizes[-1][1]
        # five convolutions each way; the full-resolution ones are thin (that is where the pixels are)
        self.encoder = nn.Sequential(
            down(c, base),
            down(base, 2 * base),
            down(2 * base, 2 * base, refine=False),
            nn.Flatten(),
            nn.Linear(flat, self.latent_dim),
            *([LatentNorm(self.latent_dim)] if norm == "batch" else []),
        )
        self.expand = nn.Sequential(nn.Linear(self.latent_dim, flat), nn.GELU())
        self.decoder = nn.Sequential(
            up(2 * base, 2 * base, sizes[3], sizes[2]),
            up(2 * base, base, sizes[2], sizes[1]),
            up(base, c, sizes[1], sizes[0], refine=False),
            FINAL_LAYERS[final](),
        )


class HyraxAutoencoderV2(HyraxAutoencoder):
    """The autoencoder with a choice of final activation (`final_layer`) and of how the per-band losses
    are combined (`band_loss_reduction`: "mean" or "sum")."""

    final_layer = "tanh"

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        self.band_reduction = self.params.get("band_loss_reduction", "mean")
        if self.band_reduction not in ("mean", "sum"):
            raise ModelError(
                f"model.HyraxAutoencoderV2.band_loss_reduction = {self.band_reduction!r}; use 'mean' or 'sum'"
            )

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.criterion is not None:
            return self.criterion(recon, x)
        per_band = (recon - x).pow(2).mean(dim=(0, 2, 3))
        return per_band.sum() if self.band_reduction == "sum" else per_band.mean()
