"""HSCAutoencoder and HSCDCAE: the reference Hyrax's two autoencoders for HSC cutouts, by those names.

The reference's layers, sized here from the data sample instead of fixed for one cutout size (its
HSCAutoencoder was built for 3 x 258 x 258, its HSCDCAE for 3 x 150 x 150): any C x H x W from 16 x 16 up,
odd sizes restored exactly. Neither has a dense bottleneck (the decoder starts from the whole feature map),
so the latent vector `infer` writes is that map averaged over space: one value per bottom channel
(4 x base_channel_size for HSCAutoencoder, 8 x base_channel_size for HSCDCAE). Loss: MSE on the pixels
(or `[criterion]`); `recon_error` per object as for every autoencoder here.

    [model.HSCAutoencoder]  base_channel_size = 64, final_layer = "sigmoid"   (the reference's)
    [model.HSCDCAE]         base_channel_size = 32, final_layer = "identity"
                            (reference: model.HSCDCAE_final_layer)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.errors import ModelError
from libhyrax.models.autoencoder import FINAL_LAYERS, halvings, image_shape
from libhyrax.models.base import HyraxModel


class Arcsinh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x)


FINALS = {**FINAL_LAYERS, "arcsinh": Arcsinh}


def final_layer(model: HyraxModel, default: str) -> nn.Module:
    name = model.params.get("final_layer", default)
    if name not in FINALS:
        raise ModelError(
            f"model.{type(model).__name__}.final_layer = {name!r}; use one of {', '.join(FINALS)}"
        )
    return FINALS[name]()


def up(cin: int, cout: int, small: tuple[int, int], big: tuple[int, int]) -> nn.ConvTranspose2d:
    """A stride-2 transposed convolution from `small` to exactly `big` (= 2 small - 1 + output padding)."""
    return nn.ConvTranspose2d(
        cin,
        cout,
        3,
        stride=2,
        padding=1,
        output_padding=(big[0] - 2 * small[0] + 1, big[1] - 2 * small[1] + 1),
    )


class _HSCBase(HyraxModel):
    """What both share: MSE loss (or [criterion]), the spatial-mean latent, the per-object recon_error."""

    channels_last = True  # convolutions: see HyraxModel.channels_last

    def encode_map(self, x: torch.Tensor):
        raise NotImplementedError

    def decode_map(self, features) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_map(self.encode_map(x))

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.criterion(recon, x) if self.criterion is not None else F.mse_loss(recon, x)

    def train_batch(self, x: torch.Tensor) -> dict:
        return {"loss": self.loss(self(x), x)}

    @staticmethod
    def latent(features) -> torch.Tensor:
        bottom = features[-1] if isinstance(features, tuple) else features
        return bottom.mean(dim=(2, 3))

    def infer_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(self.encode_map(x))

    def infer_outputs(self, x: torch.Tensor) -> dict:
        features = self.encode_map(x)
        recon = self.decode_map(features)
        return {
            "latent": self.latent(features),
            "recon_error": (recon.float() - x.float()).pow(2).flatten(1).mean(1),
        }


class HSCAutoencoder(_HSCBase):
    """Three stride-2 convolutions (base, 2 base, 4 base channels, ReLU) and three transposed ones back,
    ending in `final_layer` (the reference's sigmoid by default)."""

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, h, w = image_shape(data_sample, "HSCAutoencoder")
        base = int(self.params.get("base_channel_size", 64))
        chans, sizes = [c, base, 2 * base, 4 * base], halvings(h, w, 3)
        self.latent_dim = chans[-1]
        self.encoder = nn.Sequential(
            *[
                layer
                for i in range(3)
                for layer in (nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.ReLU())
            ]
        )
        dec = []
        for i in reversed(range(3)):
            dec += [
                up(chans[i + 1], chans[i], sizes[i + 1], sizes[i]),
                nn.ReLU() if i else final_layer(self, "sigmoid"),
            ]
        self.decoder = nn.Sequential(*dec)

    def encode_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_map(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)


class HSCDCAE(_HSCBase):
    """Four 3x3 convolutions (base, 2, 4, 8 x base channels) with a 2x2 max-pool before each but the first,
    and a decoder of transposed convolutions with skip connections from the encoder at each resolution
    (a small U-Net), ending in `final_layer` ("identity", "sigmoid", "tanh" or "arcsinh")."""

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, h, w = image_shape(data_sample, "HSCDCAE")
        base = int(self.params.get("base_channel_size", 32))
        chans, sizes = [c, base, 2 * base, 4 * base, 8 * base], halvings(h, w, 3)
        self.latent_dim = chans[-1]
        self.encoders = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(4))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # ceil: the sizes of `halvings`, restored exactly by `up`
        self.decoders = nn.ModuleList(up(chans[k + 1], chans[k], sizes[k], sizes[k - 1]) for k in (3, 2, 1))
        self.out = nn.Conv2d(base, c, 3, padding=1)
        self.final = final_layer(self, "identity")

    def encode_map(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = [F.relu(self.encoders[0](x))]
        for conv in self.encoders[1:]:
            feats.append(F.relu(conv(self.pool(feats[-1]))))
        return tuple(feats)

    def decode_map(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = features[-1]
        for deconv, skip in zip(self.decoders, reversed(features[:-1]), strict=True):
            x = F.relu(deconv(x) + skip)
        return self.final(self.out(x))
