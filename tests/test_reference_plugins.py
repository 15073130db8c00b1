"""Dataset and model plugins written for the reference Hyrax, in its documented style, run here with only
their import lines changed: named by import path, checked, trained, inferred, exported, resumed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import libhyrax
from libhyrax.errors import DataError, ModelError

# A plugin package as its author wrote it for the reference; only the `from libhyrax.reference_tool` lines
# differ (they were `from hyrax.datasets import HyraxDataset` and
# `from hyrax.models.model_registry import hyrax_model`).
DATASETS = '''
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from libhyrax.reference_tool import HyraxDataset


class LabelledCutouts(HyraxDataset):
    """Two bands, a label per object, a metadata table; images come back as torch tensors."""

    def __init__(self, config, data_location=None):
        self.data_location = Path(data_location)
        arrays = np.load(self.data_location / "cutouts.npz")
        self.images, self.labels = arrays["images"], arrays["labels"]
        self.settings = config["data_set"]["LabelledCutouts"]
        super().__init__(config, metadata_table=Table({"redshift": arrays["redshift"]}))

    def __len__(self):
        return len(self.images)

    def get_image(self, index):
        return torch.from_numpy(self.images[index] * self.settings["scale"])

    def get_label(self, index):
        return int(self.labels[index])

    def get_object_id(self, index):
        return f"obj{index:04d}"


class OneBand(HyraxDataset):
    """One band: get_image gives (H, W); no object ids of its own (the index is the id)."""

    def __init__(self, config, data_location=None):
        self.images = np.load(Path(data_location) / "cutouts.npz")["images"][:, 0]
        super().__init__(config)

    def __len__(self):
        return len(self.images)

    def get_image(self, index):
        return self.images[index]
'''

MODELS = '''
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from libhyrax.reference_tool import hyrax_model


@hyrax_model
class SmallCNN(nn.Module):
    """The reference's HyraxCNN pattern: a classifier whose train_batch steps its own optimizer."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        self.config = config
        if data_sample is None:
            raise ValueError("A data_sample must be provided")
        _, channels, _, _ = data_sample[0].shape
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, self.config["model"]["SmallCNN"]["output_classes"])

    def forward(self, x):
        x, _ = x
        x = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)
        return self.fc(x)

    def train_batch(self, batch):
        _, labels = batch
        self.optimizer.zero_grad()
        loss = self.criterion(self(batch), labels)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_batch(self, batch):
        _, labels = batch
        return {"loss": self.criterion(self(batch), labels).item()}

    def infer_batch(self, batch):
        return self(batch)

    @staticmethod
    def prepare_inputs(data_dict) -> tuple:
        if "data" not in data_dict:
            raise RuntimeError("Unable to find `data` key in data_dict")
        data = data_dict["data"]
        image = np.asarray(data["image"], dtype=np.float32)
        label = np.asarray(data.get("label", []), dtype=np.int64)
        return (image, label)


@hyrax_model
class OldStyleAE(nn.Module):
    """The older names: to_tensor and train_step; no infer_batch (forward is the output); its own loss."""

    def __init__(self, config, shape):
        super().__init__()
        self.config = config
        n = int(np.prod(shape[0].shape[1:]))
        self.encode = nn.Linear(n, 4)
        self.decode = nn.Linear(4, n)

    def forward(self, x):
        image, _ = x
        return self.encode(image.flatten(1))

    def train_step(self, batch):
        image, _ = batch
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.decode(self(batch)), image.flatten(1))
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    @staticmethod
    def to_tensor(data_dict):
        return data_dict["cutouts"]["image"], np.array([])
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The `refplug` package on sys.path, and its data: 48 objects, 2 bands of 16x16, 3 classes."""
    pkg = tmp_path / "refplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "datasets.py").write_text(DATASETS)
    (pkg / "models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(1)
    labels = np.arange(48) % 3
    images = rng.normal(size=(48, 2, 16, 16)).astype(np.float32) + labels[:, None, None, None]
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "cutouts.npz", images=images, labels=labels, redshift=rng.random(48))
    for name in [m for m in sys.modules if m.startswith("refplug")]:
        monkeypatch.delitem(sys.modules, name)
    return data


def config(data, dataset: str, model: str, train_fields, **extra) -> dict:
    def group(fields):
        return {
            "cutouts": {
                "dataset_class": f"refplug.datasets.{dataset}",
                "data_location": str(data),
                "primary_id_field": "object_id",
                "fields": fields,
            }
        }

    return {
        "general": {"results_dir": "./results", "device": "cpu"},
        "train": {"epochs": 3},
        "data_request": {"train": group(train_fields), "infer": group(["image", "object_id"])},
        "data_set": {"transform": "none", "LabelledCutouts": {"scale": 1.0}},
        "model": {"name": f"refplug.models.{model}", "SmallCNN": {"output_classes": 3}},
        "data_loader": {"batch_size": 8},
        **extra,
    }


def test_a_reference_classifier_with_labels_trains_infers_exports_and_tests(workdir, plugin):
    from refplug.datasets import LabelledCutouts
    from refplug.models import SmallCNN

    cfg = config(
        plugin,
        "LabelledCutouts",
        "SmallCNN",
        ["image", "label", "object_id", "redshift"],
        optimizer={"name": "torch.optim.SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
    )
    summary = libhyrax.check_dataset(LabelledCutouts, libhyrax.load_config(data=cfg), str(plugin))
    assert "48 objects" in summary and "redshift" in summary and "label" in summary
    with pytest.raises(ModelError, match=r"config\['model'\]\['SmallCNN'\].*\[model.SmallCNN\]"):
        libhyrax.check_model(SmallCNN)  # its option output_classes isn't in the default config
    assert libhyrax.check_model(SmallCNN, cfg)["latent_dim"] == 3

    trained = libhyrax.train(cfg)
    losses = [float(line.split(",")[1]) for line in trained.file("metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0]  # its own optimizer (SGD from the config) learned
    latents = libhyrax.infer(cfg, from_run=trained)  # the infer group has no labels: the image alone
    with h5py.File(latents.file("latents.h5")) as f:
        logits, ids = f["latent"][:], f["object_id"][:].astype(str)
    assert logits.shape == (48, 3) and ids[0] == "obj0000"
    assert (logits.argmax(1) == np.arange(48) % 3).mean() > 0.6  # it classifies
    exported = libhyrax.export(cfg, from_run=trained)
    onnx = libhyrax.infer(cfg, from_run=exported, engine="onnx")
    with h5py.File(onnx.file("latents.h5")) as f:
        np.testing.assert_allclose(f["latent"][:], logits, atol=1e-4)
    tested = libhyrax.test(cfg, from_run=trained)
    assert tested.provenance["stage_info"]["test_loss"] > 0


def test_a_single_band_dataset_and_an_old_style_model(workdir, plugin):
    from refplug.datasets import OneBand

    cfg = config(plugin, "OneBand", "OldStyleAE", ["image", "object_id"])
    assert "fields image, object_id" in libhyrax.check_dataset(
        OneBand, libhyrax.load_config(data=cfg), str(plugin)
    )
    trained = libhyrax.train(
        cfg
    )  # train_step, to_tensor and friendly name "cutouts"; validated without a step
    val = [float(line.split(",")[2]) for line in trained.file("metrics.csv").read_text().splitlines()[1:]]
    assert all(np.isfinite(val))
    latents = libhyrax.infer(cfg, from_run=trained)
    with h5py.File(latents.file("latents.h5")) as f:
        assert f["latent"].shape == (48, 4) and f["object_id"][0].decode() == "00"  # the zero-padded index
    assert trained.provenance["stage_info"]["model"] == "OldStyleAE"


def test_a_resumed_run_restores_the_models_own_optimizer(workdir, plugin):
    cfg = config(
        plugin,
        "LabelledCutouts",
        "SmallCNN",
        ["image", "label", "object_id"],
        optimizer={"name": "torch.optim.SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
    )
    whole = libhyrax.train(cfg)
    with pytest.raises(Exception, match="iteration"):
        libhyrax.train(cfg, stop_at_iteration=9)  # killed in the third epoch (5 batches an epoch)
    failed = next(workdir.glob("results/*-train-*.failed"))
    resumed = libhyrax.train(resume=failed)
    read = lambda run: run.file("metrics.csv").read_text().splitlines()[-1].split(",")[1]  # noqa: E731
    assert read(resumed) == read(whole)  # momentum buffers came back: the same last loss


def test_check_says_what_a_reference_plugin_relies_on(workdir):
    import torch
    from torch import nn

    from libhyrax.reference_tool import HyraxDataset, hyrax_model

    class NeedsFilters(HyraxDataset):
        def __init__(self, config, data_location=None):
            self.filters = config["data_set"]["filters"]
            super().__init__(config)

        def __len__(self):
            return 4

    with pytest.raises(DataError, match=r"config\['data_set'\]\['filters'\].*reference Hyrax.*prepare.bands"):
        libhyrax.check_dataset(NeedsFilters)

    @hyrax_model
    class NeedsWeightsName(nn.Module):
        def __init__(self, config, data_sample=None):
            super().__init__()
            self.name = config["train"]["weights_filename"]
            self.lin = nn.Linear(1, 1)

        def forward(self, x):
            return self.lin(x[0].mean((1, 2, 3))[:, None])

        def train_batch(self, batch):
            loss = self(batch).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.item()}

    with pytest.raises(ModelError, match=r"train.weights_filename.*reference Hyrax.*model.pt"):
        libhyrax.check_model(NeedsWeightsName)

    @hyrax_model
    class ForgetsToStep(nn.Module):
        def __init__(self, config, data_sample=None):
            super().__init__()
            self.lin = nn.Linear(1, 1)

        def forward(self, x):
            return self.lin(x[0].mean((1, 2, 3))[:, None])

        def train_batch(self, batch):
            return {"loss": self(batch).pow(2).mean()}

    with pytest.raises(ModelError, match="did not step its optimizer"):
        libhyrax.check_model(ForgetsToStep)
    assert isinstance(
        ForgetsToStep(libhyrax.load_config(data={}), (np.zeros((1, 1, 2, 2)),)).criterion,
        torch.nn.CrossEntropyLoss,
    )  # the reference's default criterion


def test_a_reference_model_defined_in_a_script_is_saved_and_rebuilt(workdir):
    """A class defined in a notebook (here a script, __main__) is saved beside its weights with the cell's
    imports, and a later process rebuilds it through the adapter."""
    (workdir / "train_it.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import torch.nn as nn
        import libhyrax
        from libhyrax.reference_tool import hyrax_model

        @hyrax_model
        class Tiny(nn.Module):
            def __init__(self, config, data_sample=None):
                super().__init__()
                self.lin = nn.Linear(int(np.prod(data_sample[0].shape[1:])), 2)

            def forward(self, x):
                return self.lin(x[0].flatten(1))

            def train_batch(self, batch):
                self.optimizer.zero_grad()
                loss = self(batch).pow(2).mean()
                loss.backward()
                self.optimizer.step()
                return {"loss": loss.item()}

        cfg = {"model": {"name": "Tiny"}, "train": {"epochs": 1}, "general": {"device": "cpu"},
               "data_request": {"train": {"data": {"dataset_class": "HyraxRandomDataset",
                                                   "fields": ["image", "object_id"],
                                                   "primary_id_field": "object_id",
                                                   "dataset_config": {"size": 20, "shape": [1, 4, 4]}}}}}
        print(libhyrax.train(cfg).path)
    """)
    )
    run = subprocess.run(
        [sys.executable, "train_it.py"], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    train_run = run.stdout.strip().splitlines()[-1]
    assert (
        "from libhyrax.reference_tool import hyrax_model"
        in (workdir / train_run / "model_source.py").read_text()
    )
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f'''
        import numpy as np, torch
        from libhyrax.models import load_trained
        model, desc = load_trained("{train_run}")
        print(type(model).__name__, tuple(model.infer_batch(torch.zeros(3, 1, 4, 4)).shape))
    '''),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert load.returncode == 0, load.stderr[-2000:]
    assert load.stdout.split() == ["Tiny", "(3,", "2)"]


def test_hyrax_model_wraps_the_users_class_which_steps_its_own_optimizer(workdir, plugin):
    """The decorator leaves the class as written (`__wrapped__`) and hands back a subclass that says, in
    the model contract, that it steps itself: the training loop takes its loss and never steps for it."""
    from refplug.models import SmallCNN

    original = SmallCNN.__wrapped__
    assert SmallCNN.__name__ == original.__name__ == "SmallCNN" and issubclass(SmallCNN, original)
    assert SmallCNN.steps_itself is True and "steps_itself" not in original.__dict__
    for name in ("__init__", "forward", "train_batch", "prepare_inputs"):  # the class's own, untouched
        assert original.__dict__[name] is not SmallCNN.__dict__[name]

    cfg = libhyrax.load_config(
        data=config(
            plugin,
            "LabelledCutouts",
            "SmallCNN",
            ["image", "label", "object_id"],
            optimizer={"name": "torch.optim.SGD", "kwargs": {"lr": 0.05}},
        )
    )
    batch = {
        "image": np.ones((4, 2, 16, 16), np.float32),
        "label": np.arange(4) % 3,
        "object_id": np.array(["a", "b", "c", "d"]),
    }
    import torch

    from libhyrax.models.base import build_model, first_rows, prepare
    from libhyrax.training.engine import create_trainer

    model = build_model(SmallCNN, cfg, first_rows(prepare(SmallCNN, batch)))
    optimizer = model.configure_optimizer(cfg)
    assert optimizer is model.optimizer  # the model's own (SGD from the config), no stand-in
    steps = []
    optimizer.register_step_post_hook(lambda *a: steps.append(1))
    trainer = create_trainer(model, optimizer, torch.device("cpu"))
    trainer.run([batch, batch], max_epochs=1)
    assert len(steps) == 2  # one step per batch: the model's, not a second one by the loop
