"""Ignite engines and the pieces around them: seeds and RNG state, batches read ahead of the
model, the training step, evaluation, and checkpoints.

A step: numpy batch -> model.prepare_inputs -> tensors on the device -> model.train_batch (bf16 autocast
on CUDA when asked) -> backward -> (all-reduce across ranks) -> NaN check -> optimizer step.

Ignite loads only where an engine is made (create_trainer, create_evaluator, EpochMeans): importing it
costs a second (it imports all of torch.distributed). The device comes from libhyrax.device.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from libhyrax import atomic
from libhyrax.data.loader import read_ahead
from libhyrax.errors import ModelError, RunError
from libhyrax.models import prepare, to_device
from libhyrax.training import distributed as dist

if TYPE_CHECKING:
    from ignite.engine import Engine

log = logging.getLogger("hyrax.train")
PREFETCH = 2  # batches read ahead of the model by a thread when data_loader.num_workers = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    # only tensors and plain Python values, so a checkpoint loads with torch.load(weights_only=True) and
    # also serves as a weights file (test.model_weights_file = ".../checkpoints/best.pt")
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def quiet(engine: Engine) -> Engine:
    """Ignite logs every epoch and every exception itself; Hyrax reports both once, its own way."""
    engine.logger = logging.getLogger("hyrax.ignite")
    engine.logger.setLevel(logging.CRITICAL + 1)
    return engine


# --- data ------------------------------------------------------------------------------------------

class EpochBatches:
    """The batches of one rank's rows, in a new seeded order each epoch (the engine's current epoch), so
    a resumed run sees exactly the order an uninterrupted one would have."""

    def __init__(self, group, indices, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                 engine: Engine | None = None):
        self.group, self.indices, self.batch_size = group, indices, batch_size
        self.shuffle, self.seed, self.num_workers, self.engine = shuffle, seed, num_workers, engine

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        from libhyrax.data import make_loader

        epoch = self.engine.state.epoch if self.engine is not None else 0
        loader = make_loader(self.group, self.indices, self.batch_size, self.shuffle, self.seed,
                             self.num_workers, epoch=epoch)
        return read_ahead(loader) if self.num_workers == 0 else iter(loader)


# --- the engines -----------------------------------------------------------------------------------

def autocast(device: torch.device, mixed_precision: bool):
    if mixed_precision and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def loss_of(out, model) -> torch.Tensor:
    name = type(model).__name__
    if not isinstance(out, dict) or "loss" not in out:
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ModelError(f"{name}.train_batch must return a dict with 'loss'; it returned {got}")
    loss = out["loss"]
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ModelError(
            f"{name}.train_batch's 'loss' must be a one-element tensor, not {type(loss).__name__}"
        )
    return loss


def figures(out: dict, n: int) -> dict[str, float]:
    """The batch's figures as floats, with its object count `n`."""
    return {"n": n} | {
        k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items()
    }


def create_trainer(model, optimizer, device: torch.device, mixed_precision: bool = False) -> Engine:
    from ignite.engine import Engine

    params = [p for p in model.parameters() if p.requires_grad]
    steps_itself = getattr(model, "steps_itself", False)  # the model contract: train_batch runs the step
    if steps_itself and dist.world_size() > 1:
        raise ModelError(
            f"{type(model).__name__} steps its own optimizer (steps_itself), so it trains in one "
            "process: its gradients can't be averaged across ranks; run it without torchrun/srun"
        )

    def step(engine: Engine, batch: dict) -> dict:
        x = to_device(prepare(model, batch), device, non_blocking=True)
        model.train()
        if not steps_itself:
            optimizer.zero_grad(set_to_none=True)
        with autocast(device, mixed_precision):
            out = model.train_batch(x)
        loss = loss_of(out, model)
        if not steps_itself:
            loss.backward()
        value = dist.average_gradients(params, loss) if dist.world_size() > 1 else float(loss.detach())
        if not math.isfinite(value):
            n_batch = (engine.state.iteration - 1) % engine.state.epoch_length + 1
            raise RunError(
                f"the loss became {value} in epoch {engine.state.epoch}, batch {n_batch}; training "
                "stopped and the last good checkpoint is kept (checkpoints/last.pt). Lower "
                "optimizer.kwargs.lr, or check the data for NaN/inf values (data_set.nan_mode)"
            )
        if not steps_itself:
            optimizer.step()
        return figures(out, len(batch["object_id"])) | {"loss": value}

    return quiet(Engine(step))


def create_evaluator(
    model, device: torch.device, mixed_precision: bool = False, predictions: list | None = None
) -> Engine:
    """Runs validate_batch without gradients; with `predictions`, also collects the model's
    predict_batch (predicted, true) pairs, for a classifier's confusion matrix."""
    from ignite.engine import Engine

    def step(engine: Engine, batch: dict) -> dict:
        x = to_device(prepare(model, batch), device, non_blocking=True)
        model.eval()
        with torch.no_grad(), autocast(device, mixed_precision):
            out = model.validate_batch(x)
            if predictions is not None and hasattr(model, "predict_batch"):
                pred, true = model.predict_batch(x)
                predictions.append((pred.cpu().numpy(), true.cpu().numpy()))
        loss_of(out, model)
        return figures(out, len(batch["object_id"]))

    return quiet(Engine(step))


class EpochMeans:
    """Object-weighted means of an engine's per-batch figures over an epoch (summed across ranks)."""

    def __init__(self, engine: Engine):
        from ignite.engine import Events

        self.sums: dict[str, float] = {}
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def reset(self, engine=None) -> None:
        self.sums = {}

    def update(self, engine: Engine) -> None:
        out = engine.state.output
        n = out["n"]
        self.sums["n"] = self.sums.get("n", 0.0) + n
        for k, v in out.items():
            if k != "n":
                self.sums[k] = self.sums.get(k, 0.0) + v * n

    def means(self) -> dict[str, float]:
        sums = dist.sum_over_ranks(self.sums)
        n = sums.pop("n", 0.0)
        return {k: v / n for k, v in sums.items()} if n else {}


# --- checkpoints -----------------------------------------------------------------------------------


def save_checkpoint(path: Path, **state) -> None:
    """Atomically: a crash while writing leaves the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"checkpoint {path} can't be read ({type(e).__name__}: {e})") from None
