"""HyraxCNN: a small supervised classifier. It trains on the data request's label field: the field named
"label", else the one requested field besides "image" and "object_id" (integer classes 0..K-1)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.errors import ModelError
from libhyrax.models.autoencoder import image_shape
from libhyrax.models.base import HyraxModel

NOT_LABELS = ("image", "object_id")


def label_field(batch: dict) -> str | None:
    if "label" in batch:
        return "label"
    extra = [k for k in batch if k not in NOT_LABELS]
    if len(extra) > 1:
        raise ModelError(f"HyraxCNN found several possible label fields {extra}; request only one besides "
                         "image and object_id, or name it 'label'")
    return extra[0] if extra else None


class HyraxCNN(HyraxModel):
    """Three conv blocks, global average pooling, a 64-d feature vector (the latent) and a linear
    classifier over `output_classes`. Loss: cross-entropy; metric: accuracy."""

    channels_last = True  # see HyraxModel.channels_last

    @staticmethod
    def prepare_inputs(batch: dict):
        field = label_field(batch)
        if field is None:
            return batch["image"], np.zeros(len(batch["image"]), dtype=np.int64) - 1  # -1: no label
        labels = np.asarray(batch[field])
        if labels.dtype.kind not in "iub":
            raise ModelError(
                f"HyraxCNN needs integer class labels; field {field!r} holds {labels.dtype} values"
            )
        return batch["image"], labels.astype(np.int64)

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        c, _, _ = image_shape(data_sample, "HyraxCNN", min_size=8)
        self.output_classes = int(self.params.get("output_classes", 10))
        self.latent_dim = 64
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, self.latent_dim),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(self.latent_dim, self.output_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))

    def _labels(self, label: torch.Tensor) -> torch.Tensor:
        if (label < 0).any():
            raise ModelError(
                "HyraxCNN trains on labels: add a label field to the data request's fields "
                "(e.g. fields = ['image', 'object_id', 'label'])"
            )
        if (label >= self.output_classes).any():
            raise ModelError(
                f"a label is {int(label.max())} but model.HyraxCNN.output_classes = "
                f"{self.output_classes}; raise output_classes"
            )
        return label

    def train_batch(self, x) -> dict:
        image, label = x
        logits = self(image)
        label = self._labels(label)
        loss = self.criterion(logits, label) if self.criterion is not None else F.cross_entropy(logits, label)
        return {"loss": loss, "accuracy": (logits.argmax(1) == label).float().mean()}

    def predict_batch(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted class, true class) per object: what `test` builds its confusion matrix from."""
        image, label = x
        return self(image).argmax(1), label

    def infer_batch(self, x) -> torch.Tensor:
        image = x[0] if isinstance(x, (tuple, list)) else x
        return self.features(image)
