"""Inference engines: a trained model run on numpy batches, by torch (a train run) or onnxruntime (an export
run, or a train run's model converted in memory).

    engine = load_engine("auto", cfg, from_run="results/<train-run>")   # or "torch", or "onnx" + export run
    group = model_input_group(cfg, engine.data_set)
    runtime = choose_runtime("auto", engine.device, rows=len(group))      # decided once, before the loop
    engine = engine.converted(runtime, group.read(0, CHECK_ROWS))         # a new engine, or this one
    engine.outputs(group.read(0, 256))           # {"latent": (256, D) float32, "recon_error": (256,)}

Every engine is an `Engine` (below): what the infer loop uses, and nothing else. "auto" (the default
`infer.engine`) runs a train run's model with torch on a GPU; on a CPU, for a run of at least ONNX_MIN_ROWS
objects, on onnxruntime, whose convolutions run 1.5-2x faster there (the default autoencoder, latent and
reconstruction error). The conversion is checked against torch on a sample batch; a model that doesn't
convert, or whose outputs differ, stays on torch (logged). An export run runs on onnxruntime whatever the
setting. Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from libhyrax.device import allows_gpu
from libhyrax.errors import ConfigError, DataError, UsageError, unknown_choice
from libhyrax.results import find_run

ENGINES = ("auto", "torch", "onnx")
ONNX_MIN_ROWS = 5000  # below this the conversion (about 0.5 s) costs more than it saves
CHECK_ROWS = 64  # the sample batch a conversion is checked on
# onnxruntime's outputs must match torch's to this, relative to the largest output value of the sample
ONNX_TOLERANCE = 1e-4
log = logging.getLogger("hyrax.infer")


class Engine:
    """What the infer loop needs of a model. `source`: the run it was loaded from; `data_set`: the
    `[data_set]` transforms the model was trained with (its input must get them, never the current
    config's); `latent_dim`; `device` ("cpu", "cuda:0"); `runtime` ("torch" or "onnxruntime");
    `read_ahead`: whether reading the next batches in a thread pays (the model runs on a GPU);
    `input_shape`: one image's shape as the model was trained on it (None when unknown)."""

    input_shape: list | None = None
    source: Path
    data_set: dict
    latent_dim: int | None
    device: str
    runtime: str
    read_ahead: bool

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        """The model's outputs of a batch, numpy in and out: "latent" (B, D) and, for autoencoders,
        "recon_error" (B,)."""
        raise NotImplementedError

    def converted(self, runtime: str, sample: dict) -> Engine:
        """This model on `runtime` (a new engine, checked on the batch `sample`), or this engine when it
        is already there or can't be converted."""
        return self


def choose_runtime(engine: str, device: str, rows: int) -> str:
    """The runtime a model runs on: `engine` (infer.engine), `device` (the engine's, "cpu" or "cuda:N"),
    `rows` (the objects this run computes: a small run isn't worth converting). "onnx" is onnxruntime;
    "auto" is onnxruntime on a CPU for at least ONNX_MIN_ROWS rows, else torch."""
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("infer.engine", engine, ENGINES))
    on_cpu = str(device).split(":")[0] == "cpu"
    if engine == "onnx" or (engine == "auto" and on_cpu and rows >= ONNX_MIN_ROWS):
        return "onnxruntime"
    return "torch"


def load_engine(engine: str, cfg: dict, from_run=None) -> Engine:
    """The model of `from_run` (a train run for "torch", an export run for "onnx", either for "auto";
    default: the newest finished train run), or the weights file `infer.model_weights_file` within its
    train run."""
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("infer.engine", engine, ENGINES))
    device, trusted = cfg["general"]["device"], cfg["general"]["trusted_runs"]
    latent_only = not cfg["infer"]["recon_error"]
    if engine == "onnx":
        return OnnxEngine.from_export_run(find_run("export", cfg, from_run).path, device, latent_only)
    weights = cfg["infer"]["model_weights_file"]
    if weights and not from_run:
        return TorchEngine(train_run_of(weights), device, weights, trusted, latent_only=latent_only)
    if engine == "auto" and from_run:
        run = find_run(("train", "export"), cfg, from_run)
        if run.stage == "export":
            return OnnxEngine.from_export_run(run.path, device, latent_only)
    return TorchEngine(find_run("train", cfg, from_run).path, device, weights or None, trusted,
                       latent_only=latent_only)


def model_input_group(cfg: dict, data_set: dict):
    """The config's `infer` data group, opened with the `[data_set]` transforms the model was trained with."""
    from libhyrax.data import open_group

    return open_group({**cfg, "data_set": {**cfg["data_set"], **data_set}}, "infer")


def check_input_shape(engine: Engine, images, what: str = "the infer data") -> None:
    """A usage error, before the model sees them, when `images` (a batch) aren't shaped like the images
    the model was trained on (model.json records the shape): a raw torch error said nothing useful."""
    want = getattr(engine, "input_shape", None)  # a stand-in engine may not know it
    got = tuple(np.shape(images)[1:])
    if want and got != tuple(want):
        raise UsageError(f"the model of {engine.source} takes images of shape {tuple(want)} (bands, height, "
                         f"width), but {what} has {got} after its transforms; use data of the cutout size "
                         "and bands it was trained on")


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



class TorchEngine(Engine):
    """A trained model from a train run, run by torch on `device` (general.device)."""

    runtime = "torch"

    def __init__(self, train_run: Path, device: str = "auto", weights: str | os.PathLike | None = None,
                 trusted_runs=(), latent_only: bool = False):
        from libhyrax.device import pick_device
        from libhyrax.models import load_trained, place
        from libhyrax.models.saving import load_weights

        self.source = Path(train_run)
        self.torch_device = pick_device(device)
        self.device = str(self.torch_device)
        # trusted_runs: runs whose notebook model source may run though this account didn't write it
        self.model, self.description = load_trained(self.source, device="cpu", trusted_runs=trusted_runs)
        if weights:
            load_weights(self.model, weights)  # a checkpoint of this run instead of its final weights
        place(self.model, self.torch_device).eval()
        self.data_set = train_data_set(self.source, self.description)
        self.latent_dim = self.description.get("latent_dim")
        self.input_shape = self.description.get("input_shape")  # check_input_shape
        self.read_ahead = self.torch_device.type != "cpu"
        self.latent_only = latent_only  # infer.recon_error = false: infer_batch alone (no decoder pass)

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.models import prepare

        return self._torch_outputs(prepare(self.model, batch))

    def _torch_outputs(self, x) -> dict[str, np.ndarray]:
        import torch

        from libhyrax.models import to_device

        with torch.inference_mode():
            x = to_device(x, self.torch_device, non_blocking=True)
            out = {"latent": self.model.infer_batch(x)} if self.latent_only else self.model.infer_outputs(x)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

    def converted(self, runtime: str, sample: dict) -> Engine:
        """An onnxruntime engine of this model (converted in memory) when `runtime` is "onnxruntime" and
        it gives torch's outputs on `sample`; else this engine."""
        if runtime != "onnxruntime":
            return self
        from libhyrax.models import prepare

        x = prepare(self.model, sample)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not len(x):
            return self  # several inputs, or not float32 images: torch it is
        from libhyrax.onnx_io import differences, in_memory_session, run_session

        want = self._torch_outputs(x)
        try:
            session = in_memory_session(self.model, x[:2], self.latent_only)
            got = run_session(session, x)
        except Exception as e:  # noqa: BLE001 - any failure to convert only means staying on torch
            log.info("running the model with torch (it did not convert to ONNX: %s)",
                     str(e).splitlines()[0][:200])
            return self
        scale = max((float(np.max(np.abs(v), initial=0.0)) for v in want.values()), default=0.0) + 1e-12
        diff = max(differences(got, want).values(), default=np.inf)
        if set(got) != set(want) or diff > ONNX_TOLERANCE * scale:
            log.warning("running the model with torch: its ONNX conversion differs from torch by %.3g", diff)
            return self
        log.info("running the model with onnxruntime (converted from torch, within %.1g of it)", diff)
        model = self.model
        onnx = OnnxEngine(self.source, self.data_set, self.latent_dim, session,
                          lambda batch: prepare(model, batch), latent_only=False)
        onnx.input_shape = self.input_shape
        return onnx


class OnnxEngine(Engine):
    """An onnxruntime session of a model: an export run's model.onnx, or a train run's model converted in
    memory. `inputs(batch)` gives the session's input array."""

    runtime = "onnxruntime"

    def __init__(self, source: Path, data_set: dict, latent_dim: int | None, session,
                 inputs: Callable[[dict], np.ndarray], latent_only: bool = False):
        self.source, self.data_set, self.latent_dim = Path(source), data_set, latent_dim
        self.session, self.inputs = session, inputs
        on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
        self.device, self.read_ahead = ("cuda" if on_gpu else "cpu"), on_gpu
        self.latent_only = latent_only  # the graph computes every output; the others are dropped

    @classmethod
    def from_export_run(cls, export_run: Path, device: str = "cpu", latent_only: bool = False) -> OnnxEngine:
        """An export run's model.onnx, fed the image preprocessed as preprocessing.json says (the same
        `[data_set]` transforms the model was trained with); on a GPU when `device` allows one."""
        from libhyrax.onnx_io import PREPROCESSING_FILE, read_preprocessing, session

        source = Path(export_run)
        pre = read_preprocessing(source / PREPROCESSING_FILE)
        field = pre["input"].get("field", "image")

        def inputs(batch: dict) -> np.ndarray:
            if field not in batch:
                raise DataError(f"the ONNX model takes the {field!r} field; the infer data group has "
                                f"{', '.join(batch)}")
            return batch[field]

        sess = session(source / "model.onnx", "cuda" if allows_gpu(device) else "cpu")
        engine = cls(source, pre["data_set"], pre.get("latent_dim"), sess, inputs, latent_only)
        engine.input_shape = pre["input"].get("shape", [None])[1:] or None  # after "batch"
        return engine

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.onnx_io import run_session

        out = run_session(self.session, self.inputs(batch))
        return {"latent": out["latent"]} if self.latent_only else out
