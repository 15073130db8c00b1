"""SimCLR: contrastive learning. Two random views of each object (flips, 90-degree rotations, small
shifts, noise, blur; all in torch, on the model's device) are encoded and projected; the NT-Xent loss pulls
the two views of an object together and pushes other objects away. The latent is the encoder's output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.models.autoencoder import image_shape
from libhyrax.models.base import HyraxModel

MAX_SHIFT = 0.06  # of the image size: about 4 pixels on a 64-pixel cutout


def random_view(x: torch.Tensor, noise_std: float, blur_probability: float) -> torch.Tensor:
    """One random view per image: a flip, a 90-degree rotation (square images; 180 otherwise) and a shift
    in one resampling, then Gaussian noise, then a Gaussian blur on a random subset."""
    b, _, h, w = x.shape
    dev = x.device
    quarter = torch.randint(0, 4, (b,), device=dev) if h == w else 2 * torch.randint(0, 2, (b,), device=dev)
    angle = quarter.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()  # exact 0/+-1
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, device=dev) * 2 - 1) * MAX_SHIFT * 2  # grid units span 2
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if noise_std > 0:
        out = out + noise_std * torch.randn_like(out)
    if blur_probability > 0:
        blurred = gaussian_blur(out, sigma=float(torch.empty(1).uniform_(0.5, 1.5)))
        pick = (torch.rand(b, 1, 1, 1, device=dev) < blur_probability).to(out.dtype)
        out = pick * blurred + (1 - pick) * out
    return out


def gaussian_blur(x: torch.Tensor, sigma: float, size: int = 5) -> torch.Tensor:
    r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    k = torch.exp(-r.pow(2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (size // 2,) * 4, mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along width
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along height


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalised-temperature cross-entropy over 2B views: each view's positive is its twin."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class SimCLR(HyraxModel):
    """Encoder: four conv blocks to `latent_dim`; projection head: an MLP to `projection_dimension`."""

    channels_last = True  # see HyraxModel.channels_last

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, _, _ = image_shape(data_sample, "SimCLR")
        p = self.params
        self.latent_dim = int(p.get("latent_dim", 128))
        self.temperature = float(p.get("temperature", 0.5))
        self.noise_std = float(p.get("noise_std", 0.05))
        self.blur_probability = float(p.get("blur_probability", 0.5))
        blocks, cin = [], c
        for cout in (32, 64, 128, 128):
            blocks += [nn.Conv2d(cin, cout, 3, stride=2 if cin != c else 1, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            cin = cout
        self.encoder = nn.Sequential(
            *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, self.latent_dim)
        )
        proj = int(p.get("projection_dimension", 128))
        self.projection = nn.Sequential(
            nn.Linear(self.latent_dim, self.latent_dim), nn.ReLU(), nn.Linear(self.latent_dim, proj)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))

    def train_batch(self, x: torch.Tensor) -> dict:
        v1 = random_view(x, self.noise_std, self.blur_probability)
        v2 = random_view(x, self.noise_std, self.blur_probability)
        return {"loss": nt_xent(self(v1), self(v2), self.temperature)}

    def infer_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
