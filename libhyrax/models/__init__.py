"""Models: the base class and registry, the built-in models (registered on import), check_model and
trained-model files.

    from libhyrax.models import HyraxModel, hyrax_model, check_model, load_trained, MODELS
"""

from libhyrax.models.autoencoder import HyraxAutoencoder, HyraxAutoencoderV2
from libhyrax.models.base import (
    MODELS,
    HyraxModel,
    build_model,
    hyrax_model,
    model_class,
    place,
    prepare,
    to_device,
)
from libhyrax.models.check import check_model
from libhyrax.models.cnn import HyraxCNN
from libhyrax.models.dcae import ImageDCAE
from libhyrax.models.hsc import HSCDCAE, HSCAutoencoder
from libhyrax.models.loopback import HyraxLoopback
from libhyrax.models.saving import describe, load_trained, load_weights, save_trained
from libhyrax.models.simclr import SimCLR

__all__ = [
    "MODELS",
    "HyraxModel",
    "hyrax_model",
    "check_model",
    "load_trained",
    "load_weights",
    "model_class",
    "build_model",
    "place",
    "prepare",
    "to_device",
    "describe",
    "save_trained",
    "HyraxAutoencoder",
    "HyraxAutoencoderV2",
    "HyraxCNN",
    "ImageDCAE",
    "HyraxLoopback",
    "SimCLR",
    "HSCAutoencoder",
    "HSCDCAE",
]
