"""Run a trained model on numpy batches: torch from a train run, onnxruntime from an export run.

"auto" (the default `infer.engine`) runs a train run's model with torch on a GPU; on a CPU, for a run of
at least ONNX_MIN_ROWS objects, it converts the model to ONNX in memory and runs it with onnxruntime, whose
convolutions run 1.5-2x faster there (the default autoencoder, latent and reconstruction error). The
conversion is checked against torch on the first batch; a model that doesn't convert, or whose outputs
differ, stays on torch (logged).

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

ENGINES = ("auto", "torch", "onnx")
ONNX_MIN_ROWS = 5000  # below this the conversion (about 0.5 s) costs more than it saves
# onnxruntime's outputs must match torch's to this, relative to the largest output value of the batch
ONNX_TOLERANCE = 1e-4


def load_engine(engine: str, cfg: dict, from_run=None):
    """The model of `from_run` (a train run for "torch", an export run for "onnx", either for "auto";
    default: the newest finished train run), or the weights file `infer.model_weights_file` within its
    train run."""
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("infer.engine", engine, ENGINES))
    device, trusted = cfg["general"]["device"], cfg["general"]["trusted_runs"]
    latent_only = not cfg["infer"]["recon_error"]
    if engine == "onnx":
        return OnnxEngine(find_run("export", cfg, from_run).path, device, latent_only)
    weights = cfg["infer"]["model_weights_file"]
    if weights and not from_run:
        return TorchEngine(train_run_of(weights), device, weights, trusted, convert=engine == "auto",
                           latent_only=latent_only)
    if engine == "auto" and from_run:
        run = find_run(("train", "export"), cfg, from_run)
        if run.stage == "export":
            return OnnxEngine(run.path, device, latent_only)
    return TorchEngine(find_run("train", cfg, from_run).path, device, weights or None, trusted,
                       convert=engine == "auto", latent_only=latent_only)


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
                 trusted_runs=(), convert: bool = False, latent_only: bool = False):
        from libhyrax.models import load_trained, place
        from libhyrax.models.saving import load_weights
        from libhyrax.training.engine import pick_device

        self.source = Path(train_run)
        self.device = pick_device(device)
        # trusted_runs: runs whose notebook model source may run though this account didn't write it
        self.model, self.description = load_trained(self.source, device="cpu", trusted_runs=trusted_runs)
        if weights:
            load_weights(self.model, weights)  # a checkpoint of this run instead of its final weights
        place(self.model, self.device).eval()
        self.data_set = train_data_set(self.source, self.description)
        self.latent_dim = self.description.get("latent_dim")
        self.read_ahead = self.device.type != "cpu"
        # "auto" on a CPU: onnxruntime for a large enough run (see `expect`), decided at the first batch
        self.convert = convert and self.device.type == "cpu"
        self.session = None
        self.runtime = "torch"
        self.latent_only = latent_only  # infer.recon_error = false: infer_batch alone (no decoder pass)

    def expect(self, rows: int) -> None:
        """How many objects this run will compute: a small run isn't worth converting."""
        self.convert = self.convert and rows >= ONNX_MIN_ROWS

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.models import prepare

        x = prepare(self.model, batch)
        if self.convert:
            self.convert = False
            return self._to_onnxruntime(x)
        if self.session is not None:
            from libhyrax.onnx_io import run_session

            return run_session(self.session, x)
        return self._torch_outputs(x)

    def _torch_outputs(self, x) -> dict[str, np.ndarray]:
        import torch

        from libhyrax.models import to_device

        with torch.inference_mode():
            x = to_device(x, self.device, non_blocking=True)
            out = {"latent": self.model.infer_batch(x)} if self.latent_only else self.model.infer_outputs(x)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

    def _to_onnxruntime(self, x) -> dict[str, np.ndarray]:
        """Convert the model to an onnxruntime session, kept when it gives torch's outputs on this batch
        `x`; returns torch's outputs of `x`."""
        want = self._torch_outputs(x)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            return want  # several inputs, or not float32 images: torch it is
        import logging

        from libhyrax.onnx_io import differences, in_memory_session, run_session

        log = logging.getLogger("hyrax.infer")
        try:
            session = in_memory_session(self.model, x[:2], self.latent_only)
            got = run_session(session, x)
        except Exception as e:  # noqa: BLE001 - any failure to convert only means staying on torch
            log.info("running the model with torch (it did not convert to ONNX: %s)", str(e).splitlines()[0][:200])
            return want
        scale = max((float(np.max(np.abs(v), initial=0.0)) for v in want.values()), default=0.0) + 1e-12
        diff = max(differences(got, want).values(), default=np.inf)
        if set(got) != set(want) or diff > ONNX_TOLERANCE * scale:
            log.warning("running the model with torch: its ONNX conversion differs from torch by %.3g", diff)
            return want
        self.session, self.runtime = session, "onnxruntime"
        log.info("running the model with onnxruntime (converted from torch, within %.1g of it)", diff)
        return want


class OnnxEngine:
    """An export run's model.onnx through onnxruntime, fed the image preprocessed as preprocessing.json
    says (the same `[data_set]` transforms the model was trained with)."""

    def __init__(self, export_run: Path, device: str = "cpu", latent_only: bool = False):
        from libhyrax.onnx_io import PREPROCESSING_FILE, read_preprocessing, session

        self.source = Path(export_run)
        pre = read_preprocessing(self.source / PREPROCESSING_FILE)
        self.data_set, self.field = pre["data_set"], pre["input"].get("field", "image")
        self.latent_dim = pre.get("latent_dim")
        self.session = session(self.source / "model.onnx", device if device != "auto" else "cuda")
        self.read_ahead = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.latent_only = latent_only  # the exported graph computes every output; the others are dropped

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.onnx_io import run_session

        if self.field not in batch:
            raise DataError(f"the ONNX model takes the {self.field!r} field; the infer data group has "
                            f"{', '.join(batch)}")
        out = run_session(self.session, batch[self.field])
        return {"latent": out["latent"]} if self.latent_only else out
