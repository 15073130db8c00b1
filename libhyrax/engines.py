"""Run a trained model on numpy batches: torch from a train run, onnxruntime from an export run.

    engine = load_engine("torch", cfg, from_run="results/<train-run>")   # or "onnx" and an export run
    group = model_input_group(cfg, engine.data_set)
    engine.outputs(group.read(0, 256))           # {"latent": (256, D) float32, "recon_error": (256,)}

An engine has `source` (the run it was loaded from), `data_set` (the `[data_set]` transforms the model was
trained with, which its input must get, never the current config's), `latent_dim`, `read_ahead` (whether
reading the next batches in a thread pays: the model runs on a GPU) and `outputs(batch)`, numpy in and out.
Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from libhyrax.errors import ConfigError, DataError, unknown_choice
from libhyrax.results import find_run

ENGINES = ("torch", "onnx")


def load_engine(engine: str, cfg: dict, from_run=None):
    """The model of `from_run` (a train run for "torch", an export run for "onnx"; default: the newest
    finished one), or for "torch" the weights file `infer.model_weights_file` within its train run."""
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("infer.engine", engine, ENGINES))
    if engine == "onnx":
        return OnnxEngine(find_run("export", cfg, from_run).path, cfg["general"]["device"])
    weights = cfg["infer"]["model_weights_file"]
    if weights and not from_run:
        return TorchEngine(train_run_of(weights), cfg["general"]["device"], weights, cfg["general"]["trusted_runs"])
    return TorchEngine(find_run("train", cfg, from_run).path, cfg["general"]["device"], weights or None,
                       cfg["general"]["trusted_runs"])


def model_input_group(cfg: dict, data_set: dict):
    """The config's `infer` data group, opened with the `[data_set]` transforms the model was trained with."""
    from libhyrax.data import open_group

    return open_group({**cfg, "data_set": {**cfg["data_set"], **data_set}}, "infer")


def train_run_of(weights: str | os.PathLike) -> Path:
    """The train run a weights file belongs to (model.pt or checkpoints/*): the nearest folder above it
    with model.json, which says how to build the model and preprocess its input."""
    p = Path(weights).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(f"infer.model_weights_file = {str(weights)!r} does not exist")
    for d in p.parents:
        if (d / "model.json").is_file():
            return d
    raise ConfigError(f"infer.model_weights_file = {str(weights)!r} is not inside a train run (no model.json "
                      f"above it); point it at a train run's model.pt or checkpoint")


def train_data_set(train_run: Path, description: dict) -> dict:
    """The `[data_set]` transforms the model was trained with: model.json's record, else the train run's
    saved config."""
    ds = description.get("data_set") or description.get("transforms")
    if ds:
        return dict(ds)
    from libhyrax.config import read_toml

    return dict(read_toml(Path(train_run) / "runtime_config.toml").get("data_set") or {})


class TorchEngine:
    """A trained model from a train run, on `device`; `outputs(batch)` -> numpy infer_outputs."""

    def __init__(self, train_run: Path, device: str = "auto", weights: str | os.PathLike | None = None,
                 trusted_runs=()):
        from libhyrax.models import load_trained
        from libhyrax.models.saving import load_weights
        from libhyrax.training.engine import pick_device

        self.source = Path(train_run)
        self.device = pick_device(device)
        # trusted_runs: runs whose notebook model source may run though this account didn't write it
        self.model, self.description = load_trained(self.source, device="cpu", trusted_runs=trusted_runs)
        if weights:
            load_weights(self.model, weights)  # a checkpoint of this run instead of its final weights
        self.model.to(self.device).eval()
        self.data_set = train_data_set(self.source, self.description)
        self.latent_dim = self.description.get("latent_dim")
        self.read_ahead = self.device.type != "cpu"

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        import torch

        from libhyrax.models import prepare, to_device

        x = to_device(prepare(self.model, batch), self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model.infer_outputs(x)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


class OnnxEngine:
    """An export run's model.onnx through onnxruntime, fed the image preprocessed as preprocessing.json
    says (the same `[data_set]` transforms the model was trained with)."""

    def __init__(self, export_run: Path, device: str = "cpu"):
        from libhyrax.onnx_io import PREPROCESSING_FILE, read_preprocessing, session

        self.source = Path(export_run)
        pre = read_preprocessing(self.source / PREPROCESSING_FILE)
        self.data_set, self.field = pre["data_set"], pre["input"].get("field", "image")
        self.latent_dim = pre.get("latent_dim")
        self.session = session(self.source / "model.onnx", device if device != "auto" else "cuda")
        self.read_ahead = self.session.get_providers()[0] != "CPUExecutionProvider"

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.onnx_io import run_session

        if self.field not in batch:
            raise DataError(f"the ONNX model takes the {self.field!r} field; the infer data group has "
                            f"{', '.join(batch)}")
        return run_session(self.session, batch[self.field])
