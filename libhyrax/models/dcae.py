"""ImageDCAE: a deeper convolutional autoencoder; each resolution has a residual block (skip connection
around two convolutions), so gradients reach the early layers. The latent vector stays the only path
from encoder to decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.models.autoencoder import Reconstructs, halvings, image_shape, up
from libhyrax.models.base import HyraxModel


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.GELU(),
                                  nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.body(x))


class ImageDCAE(Reconstructs, HyraxModel):
    """Four stride-2 stages (base, 2, 4, 4 x base channels), each followed by a residual block."""

    STAGES = 4

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, h, w = image_shape(data_sample, "ImageDCAE")
        p = self.params
        base, self.latent_dim = int(p.get("base_channel_size", 32)), int(p.get("latent_dim", 128))
        chans, sizes = [c, base, 2 * base, 4 * base, 4 * base], halvings(h, w, self.STAGES)
        self.bottom = (chans[-1], *sizes[-1])
        flat = chans[-1] * sizes[-1][0] * sizes[-1][1]
        enc = []
        for i in range(self.STAGES):
            enc += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                nn.GELU(),
                ResBlock(chans[i + 1]),
            ]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, self.latent_dim))
        self.expand = nn.Linear(self.latent_dim, flat)
        dec = []
        for i in reversed(range(self.STAGES)):
            cout = chans[i] if i else base
            dec += [up(chans[i + 1], cout, sizes[i + 1], sizes[i]), ResBlock(cout)]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(base, c, 3, padding=1))
