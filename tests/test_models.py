"""Models: every built-in model on small inputs, the registry, check_model, weights and load_trained."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.config import dump_config, load_config
from libhyrax.errors import ConfigError, HyraxError, ModelError, UsageError
from libhyrax.models import (
    MODELS,
    HyraxModel,
    build_model,
    check_model,
    describe,
    hyrax_model,
    load_trained,
    load_weights,
    model_class,
    save_trained,
)
from libhyrax.models.check import tiny_batch

BUILT_IN = ["HyraxAutoencoder", "HyraxAutoencoderV2", "ImageDCAE", "HyraxCNN", "SimCLR", "HyraxLoopback",
            "HSCAutoencoder", "HSCDCAE"]
SMALL = {
    "model": {
        "HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 8},
        "HyraxAutoencoderV2": {"base_channel_size": 4, "latent_dim": 8},
        "ImageDCAE": {"base_channel_size": 4, "latent_dim": 8},
        "HSCAutoencoder": {"base_channel_size": 2},
        "HSCDCAE": {"base_channel_size": 1},
    }
}  # latent 8


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 17, 23), (2, 33, 20)])
def test_every_built_in_model_meets_the_contract(name, shape):
    summary = check_model(MODELS[name], config=SMALL, batch=tiny_batch(4, shape))
    assert summary["input_shape"] == list(shape)
    assert np.isfinite(summary["loss"]) and summary["loss"] > 0 or name == "HyraxLoopback"
    expected = {"HyraxCNN": 64, "SimCLR": 128, "HyraxLoopback": int(np.prod(shape))}.get(name, 8)
    assert summary["latent_dim"] == expected


@pytest.mark.parametrize(
    "name", ["HyraxAutoencoder", "HyraxAutoencoderV2", "ImageDCAE", "HSCAutoencoder", "HSCDCAE"]
)
def test_autoencoders_reconstruct_the_input_shape_and_give_recon_error(name):
    x = tiny_batch(3, (2, 19, 16))["image"]
    model = build_model(MODELS[name], load_config(data=SMALL), x[:1]).eval()
    with torch.no_grad():
        out = model.infer_outputs(torch.from_numpy(x))
        recon = model(torch.from_numpy(x))
    assert recon.shape == x.shape
    assert out["latent"].shape == (3, 8) and out["recon_error"].shape == (3,)
    expected = ((recon - torch.from_numpy(x)) ** 2).flatten(1).mean(1)
    assert torch.allclose(out["recon_error"], expected, atol=1e-6)


def test_autoencoder_v2_band_loss_reduction_sum_is_bands_times_mean():
    x = torch.from_numpy(tiny_batch(2, (3, 16, 16))["image"])
    losses = {}
    for reduction in ("mean", "sum"):
        cfg = load_config(data=SMALL, overrides=[f"model.HyraxAutoencoderV2.band_loss_reduction={reduction}"])
        torch.manual_seed(0)
        model = build_model(MODELS["HyraxAutoencoderV2"], cfg, x[:1].numpy())
        losses[reduction] = float(model.train_batch(x)["loss"].detach())
    assert losses["sum"] == pytest.approx(3 * losses["mean"], rel=1e-5)


def test_simclr_views_are_exact_flips_and_rotations_without_shift_noise_or_blur(monkeypatch):
    from libhyrax.models import simclr

    monkeypatch.setattr(simclr, "MAX_SHIFT", 0.0)
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    torch.manual_seed(0)
    views = simclr.random_view(x, noise_std=0.0, blur_probability=0.0)
    allowed = [torch.rot90(f, k, (-2, -1)) for f in (x[0], x[0].flip(-1)) for k in range(4)]
    for v in views:
        assert any(torch.allclose(v, a, atol=1e-4) for a in allowed)
    assert len({tuple(v.flatten().round().tolist()) for v in views}) > 2  # not all the same view


def test_a_model_too_small_for_the_data_sample_is_explained():
    with pytest.raises(ModelError, match="at least 16x16 pixels; the data sample is 8x8"):
        check_model(MODELS["HyraxAutoencoder"], batch=tiny_batch(2, (3, 8, 8)))


def test_cnn_without_labels_says_to_request_a_label_field():
    batch = {k: v for k, v in tiny_batch(2).items() if k != "label"}
    with pytest.raises(ModelError, match="add a label field"):
        check_model(MODELS["HyraxCNN"], batch=batch)


# --- registry --------------------------------------------------------------------------------------


def test_unknown_model_name_lists_the_known_ones_with_did_you_mean():
    with pytest.raises(ConfigError) as e:
        model_class("HyraxAutoencodr")
    assert "did you mean HyraxAutoencoder" in str(e.value) and "SimCLR" in str(e.value)


def test_model_by_import_path_and_bad_import_paths():
    assert model_class("libhyrax.models.cnn.HyraxCNN") is MODELS["HyraxCNN"]
    with pytest.raises(ConfigError, match="can't be imported"):
        model_class("no_such_pkg.Net")
    with pytest.raises(ConfigError, match="not a subclass of torch.nn.Module"):
        model_class("numpy.zeros")


def test_registry_refuses_a_silent_clash_but_allows_a_decorated_plain_module():
    with pytest.raises(HyraxError, match="'HyraxCNN' is already registered as libhyrax.models.cnn.HyraxCNN"):
        type("HyraxCNN", (HyraxModel,), {"__module__": "some_pkg.models"})

    @hyrax_model(name="PlainNet")
    class PlainNet(nn.Module):
        def __init__(self, config, data_sample):
            super().__init__()
            self.lin = nn.Linear(int(np.prod(data_sample.shape[1:])), 4)

        def forward(self, x):
            return self.lin(x.flatten(1))

        def train_batch(self, x):
            return {"loss": self(x).pow(2).mean()}

        def infer_batch(self, x):
            return self(x)

    assert MODELS["PlainNet"] is PlainNet and check_model(PlainNet)["latent_dim"] == 4


# --- check_model explains what is missing ----------------------------------------------------------


class Base(HyraxModel):
    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        self.lin = nn.Linear(int(np.prod(data_sample.shape[1:])), 3)

    def forward(self, x):
        return self.lin(x.flatten(1))

    def train_batch(self, x):
        return {"loss": self(x).pow(2).mean()}

    def infer_batch(self, x):
        return self(x)


def test_check_model_passes_a_good_class_and_names_every_missing_method():
    assert check_model(Base)["latent_dim"] == 3

    class Empty(HyraxModel):
        pass

    with pytest.raises(ModelError) as e:
        check_model(Empty)
    msg = str(e.value)
    assert "1. define forward" in msg and "2. define train_batch" in msg and "3. define infer_batch" in msg


@pytest.mark.parametrize(
    "method, body, message",
    [
        ("train_batch", "return {'total': self(x).sum()}", "no 'loss'"),
        ("train_batch", "return self(x).sum()", "return a dict like"),
        ("train_batch", "return {'loss': self(x).pow(2).mean().item()}", "one-element tensor"),
        ("train_batch", "return {'loss': self(x).pow(2).mean().detach()}", "has no gradient"),
        ("infer_batch", "return self(x).sum(1)", "(batch, latent_dim) tensor"),
        ("prepare_inputs", "return torch.zeros(4, 3)", "a torch tensor; return numpy arrays"),
        ("prepare_inputs", "return [batch['image']]", "list; it must return a numpy array"),
        ("prepare_inputs", "return batch['object_id']", "leave object_id out"),
        ("prepare_inputs", "return batch['image'][:1]", "first axis must be the 4 objects"),
        ("prepare_inputs", "return batch['flux']", "needs the field 'flux'"),
    ],
)
def test_check_model_explains_a_broken_method(method, body, message):
    ns = {"torch": torch, "Base": Base, "np": np}
    deco = "@staticmethod\n    " if method == "prepare_inputs" else ""
    arg = "batch" if method == "prepare_inputs" else "self, x"
    exec(f"class Broken(Base):\n    {deco}def {method}({arg}):\n        {body}\n", ns)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_model(ns["Broken"])


def test_prepare_inputs_as_a_plain_method_is_explained():
    class NotStatic(Base):
        def prepare_inputs(self, batch):
            return batch["image"]

    with pytest.raises(ModelError, match="must be a @staticmethod"):
        check_model(NotStatic)


# --- weights and trained-model files ---------------------------------------------------------------


def _fake_run(tmp_path, name="HyraxAutoencoder", shape=(3, 16, 16), cfg_over=None):
    cfg = load_config(data={**SMALL, **(cfg_over or {}), "model": {**SMALL["model"], "name": name}})
    sample = tiny_batch(1, shape)
    from libhyrax.models import prepare

    prepared = prepare(MODELS[name], sample)
    model = build_model(MODELS[name], cfg, prepared)
    (tmp_path / "runtime_config.toml").write_text(dump_config(cfg))
    save_trained(tmp_path, model, describe(model, cfg, prepared))
    return model


@pytest.mark.parametrize("name", BUILT_IN)
def test_load_trained_rebuilds_every_model_with_its_weights(tmp_path, name):
    model = _fake_run(tmp_path, name)
    loaded, desc = load_trained(tmp_path)
    assert desc["class"] == name and desc["input_shape"] == [3, 16, 16] and not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.from_numpy(tiny_batch(2, (3, 16, 16))["image"])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.infer_outputs(x)["latent"], model.infer_outputs(x)["latent"])
    assert json.loads((tmp_path / "model.json").read_text())["import_path"].startswith("libhyrax.models.")


def test_weights_that_dont_fit_name_the_mismatched_layers(tmp_path):
    _fake_run(tmp_path, "HyraxAutoencoder")
    cfg = load_config(data={"model": {"HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 16}}})
    other = build_model(MODELS["HyraxAutoencoder"], cfg, tiny_batch(1, (3, 16, 16))["image"])
    with pytest.raises(ModelError) as e:
        load_weights(other, tmp_path / "model.pt")
    assert "encoder.4.weight is (8, 32) in the file but (16, 32) in the model" in str(e.value)
    cnn = build_model(MODELS["HyraxCNN"], cfg, tiny_batch(1, (3, 16, 16))["image"])
    with pytest.raises(ModelError, match="missing from the file: features.0.weight"):
        load_weights(cnn, tmp_path / "model.pt")
    (tmp_path / "junk.pt").write_text("not weights")
    with pytest.raises(ModelError, match="not a PyTorch weights file"):
        load_weights(cnn, tmp_path / "junk.pt")


def test_load_trained_on_a_directory_without_a_model(tmp_path):
    with pytest.raises(UsageError, match="holds no trained model"):
        load_trained(tmp_path)


NOTEBOOK_MODEL = textwrap.dedent("""
    import sys
    import torch.nn.functional as F
    from torch import nn
    from libhyrax.models import HyraxModel, build_model, describe, save_trained, prepare
    from libhyrax.models.check import tiny_batch
    from libhyrax.config import load_config, dump_config

    class NotebookAE(HyraxModel):
        def __init__(self, config, data_sample):
            super().__init__(config, data_sample)
            c, h, w = data_sample.shape[1:]
            self.latent_dim = self.params.get("latent_dim", 5)
            self.enc = nn.Linear(c * h * w, self.latent_dim)
            self.dec = nn.Linear(self.latent_dim, c * h * w)

        def forward(self, x):
            return self.dec(self.enc(x.flatten(1))).view_as(x)

        def train_batch(self, x):
            return {"loss": F.mse_loss(self(x), x)}

        def infer_batch(self, x):
            return self.enc(x.flatten(1))

    cfg = load_config(data={"model": {"name": "NotebookAE", "NotebookAE": {"latent_dim": 6}}})
    sample = prepare(NotebookAE, tiny_batch(1, (2, 16, 16)))
    model = build_model(NotebookAE, cfg, sample)
    open(sys.argv[1] + "/runtime_config.toml", "w").write(dump_config(cfg))
    save_trained(sys.argv[1], model, describe(model, cfg, sample))
""")


def test_a_class_defined_in_a_script_is_saved_as_source_and_rebuilt(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK_MODEL)
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run([sys.executable, str(script), str(run)], check=True, timeout=120)
    source = (run / "model_source.py").read_text()
    assert "class NotebookAE(HyraxModel)" in source and "cfg = load_config" not in source
    model, desc = load_trained(run)
    assert desc["source_file"] == "model_source.py" and desc["hyperparameters"] == {"latent_dim": 6}
    assert model.infer_batch(torch.zeros(2, 2, 16, 16)).shape == (2, 6)
    assert "NotebookAE" not in MODELS  # loading a saved source doesn't claim the name


def test_criterion_from_config_replaces_the_models_own_loss():
    cfg = load_config(data={**SMALL, "criterion": {"name": "torch.nn.L1Loss"}})
    x = torch.from_numpy(tiny_batch(2, (3, 16, 16))["image"])
    model = build_model(MODELS["HyraxAutoencoder"], cfg, x[:1].numpy())
    assert isinstance(model.criterion, nn.L1Loss)
    with torch.no_grad():
        assert float(model.train_batch(x)["loss"]) == pytest.approx(float(F.l1_loss(model(x), x)), rel=1e-6)


@pytest.mark.parametrize(
    "name", ["HyraxAutoencoder", "HyraxAutoencoderV2", "ImageDCAE", "SimCLR", "HSCAutoencoder", "HSCDCAE"]
)
def test_channels_last_changes_speed_not_values(name):
    """`place` stores a convolutional model's weights channels-last: outputs and a training step's
    gradients are the same numbers as in the default layout."""
    import torch

    from libhyrax.models import build_model, model_class, place

    torch.manual_seed(0)
    x = torch.rand(6, 3, 32, 32)
    cls = model_class(name)
    assert cls.channels_last
    plain = build_model(cls, {"model": {}}, x[:1].numpy()).eval()
    fast = build_model(cls, {"model": {}}, x[:1].numpy()).eval()
    fast.load_state_dict(plain.state_dict())
    place(fast, "cpu")
    assert any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in fast.parameters()
    )
    with torch.inference_mode():
        want, got = plain.infer_outputs(x), fast.infer_outputs(x)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
