"""HyraxLoopback: the identity, for tests. Its latent is the flattened input, so a pipeline's outputs can
be checked against the data itself. One scalar weight (starting at 1) gives the optimizer something."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from libhyrax.models.base import HyraxModel


class HyraxLoopback(HyraxModel):
    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        self.latent_dim = int(np.prod(np.asarray(data_sample).shape[1:]))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def train_batch(self, x: torch.Tensor) -> dict:
        return {"loss": (self(x) - x).pow(2).mean()}

    def infer_batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
