"""Continuing training: an interrupted train run (`hyrax train --resume <run>`), or a new run from a
checkpoint file (`train.resume`, the reference Hyrax's key). The one place that decides whether training
can go on, and that reads what going on needs from a checkpoint.

    plan = start_run("train", resume="results/<run>.failed", overrides=["train.epochs=20"],
                     may_change=RESUME_MAY_CHANGE)    # its own config; only train.epochs may change
    resumed = resume_run(plan)      # checks it has a checkpoint, and reads it
    cfg = resumed.config
    ...                             # build the model, optimizer, scheduler, trainer; attach the handlers
    resumed.restore(model, optimizer, scheduler, trainer, best)
    trainer.run(batches, max_epochs=20)   # goes on after the checkpoint's epoch, as if never stopped

The run's `split.h5` is the split to train on (`resumed.path`), and `plan.open()` reopens its directory.

A new run from a checkpoint (`train.resume = "results/<run>/checkpoints/checkpoint_epoch_3.pt"`, any
run's `last.pt`/`best.pt` too, or the reference's own checkpoint file) makes its own split and directory
as any new run does, and starts where the checkpoint ends: its weights, its optimizer's state (learning
rate included), its scheduler's (when both have one), its epoch counter (`train.epochs` counts from the
start: 5 trains epochs 4 and 5 after a checkpoint of epoch 3) and its random generators (so it trains on
as the checkpoint's run would have). Its best epoch and early stopping count its own epochs only.

    start = start_checkpoint(cfg)   # None without train.resume; a ConfigError for a file that won't do
    ...
    start.restore(model, optimizer, scheduler, trainer, epoch_length=len(train_data))

The file is read with torch.load(weights_only=True): tensors and plain values only, nothing it holds can
run code, so it needs no signature (libhyrax.trust is for files that would run code when loaded).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from libhyrax.errors import ConfigError, ModelError, UsageError
from libhyrax.models import load_weights
from libhyrax.training.engine import load_checkpoint, set_rng_state
from libhyrax.training.handlers import LAST, BestEpoch, class_name

log = logging.getLogger("hyrax.train")
# more epochs is the one thing a resumed run may be asked for: anything else would mix two trainings
RESUME_MAY_CHANGE = ("train.epochs",)


@dataclass
class Resumed:
    """An interrupted train run, checked, with its last checkpoint (written by attach_checkpoints)."""

    path: Path
    config: dict
    checkpoint: dict

    @property
    def epochs_done(self) -> int:
        return epochs_done(self.checkpoint)

    @property
    def mlflow_run_id(self) -> str | None:
        return self.checkpoint.get("mlflow_run_id")

    def restore(self, model, optimizer, scheduler, trainer: Engine, best: BestEpoch) -> None:
        """Put the checkpoint's state back: weights, optimizer, scheduler, the trainer's epoch and
        iteration, the best epoch; and the random number generators as the trainer starts, so nothing done
        before the run (opening it, MLflow) can move them."""
        state = self.checkpoint
        load_weights(model, state["model"])  # names the layers when the config now builds another model
        _load_optimizer(state, optimizer, scheduler)
        trainer.load_state_dict(state["trainer"])
        best.load_state_dict(state)
        trainer.add_event_handler(Events.STARTED, lambda _: set_rng_state(state["rng"]))
        log.info("resuming after epoch %d", self.epochs_done)


def resume_run(plan) -> Resumed:
    """The resumed train run of `plan` (libhyrax.start.start_run has checked it is a train run and that
    its settings are its own), checked to have a checkpoint and `train.epochs` not below the epochs it has
    done, with its last checkpoint read. Every rank reads it here, before rank 0's open moves the
    directory."""
    path = plan.resume
    if not (path / LAST).is_file():
        raise UsageError(f"--resume {path}: it has no checkpoint (it stopped in its first epoch); "
                         "start a new run instead")
    resumed = Resumed(path, plan.config, load_checkpoint(path / LAST))
    done = resumed.epochs_done
    if done > int(resumed.config["train"]["epochs"]):
        raise UsageError(
            f"the resumed run has already trained {done} epochs; set train.epochs to {done} or more "
            f"(e.g. --set train.epochs={done + 5})"
        )
    return resumed


# --- a new run from a checkpoint file (train.resume) -----------------------------------------------


def epochs_done(checkpoint: dict) -> int:
    trainer = checkpoint["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def _load_optimizer(state: dict, optimizer, scheduler) -> None:
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])


@dataclass
class StartCheckpoint:
    """The checkpoint file a new train run starts from (`train.resume`), read and checked."""

    path: Path
    checkpoint: dict
    sha256: str

    @property
    def epochs_done(self) -> int:
        return epochs_done(self.checkpoint)

    def provenance(self) -> dict:
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "epoch": self.epochs_done}

    def restore(self, model, optimizer, scheduler, trainer: Engine, epochs: int, epoch_length: int) -> None:
        """The checkpoint's weights, optimizer (and scheduler) state, epoch and random generators; the
        trainer goes on after its epoch, up to `epochs`, with this run's epochs of `epoch_length` steps."""
        state, key = self.checkpoint, f"train.resume = {str(self.path)!r}"
        try:
            load_weights(model, state["model"], source=str(self.path))
        except ModelError as e:
            raise ConfigError(f"train.resume: {e}") from None
        for kind, ours in (("optimizer", optimizer), ("scheduler", scheduler)):
            theirs = state.get(f"{kind}_class")  # ours record it; the reference's checkpoints don't
            if ours is not None and theirs and theirs != class_name(ours):
                raise ConfigError(
                    f"{key}: its {kind} is {theirs}, but {kind}.name makes {class_name(ours)}; "
                    f"set {kind}.name to the checkpoint's, or start from its weights alone with "
                    "train.model_weights_file"
                )
        _load_optimizer(state, optimizer, scheduler)
        trainer.load_state_dict(
            {"epoch": self.epochs_done, "epoch_length": epoch_length, "max_epochs": epochs}
        )
        if "rng" in state:  # ours; the reference's checkpoints have none
            trainer.add_event_handler(Events.STARTED, lambda _: set_rng_state(state["rng"]))
        log.info(
            "starting from %s: the weights, optimizer and epoch %d of its run", self.path, self.epochs_done
        )


def start_checkpoint(cfg: dict) -> StartCheckpoint | None:
    """The checkpoint `train.resume` names, read (weights only) and checked against `train.epochs` and
    `train.model_weights_file`; None when it is unset."""
    tcfg = cfg["train"]
    if not tcfg["resume"]:
        return None
    key = f"train.resume = {str(tcfg['resume'])!r}"
    if tcfg["model_weights_file"]:
        raise ConfigError(
            "train.resume and train.model_weights_file: cannot set both (resume continues from a "
            "checkpoint: weights, optimizer and epoch; model_weights_file starts a new training "
            "from weights alone)"
        )
    path = Path(tcfg["resume"]).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{key}: no such file; give a checkpoint of a train run "
            "(results/<run>/checkpoints/checkpoint_epoch_N.pt)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        found = (
            re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if isinstance(e, pickle.UnpicklingError)
            else None
        )
        if found:
            raise ConfigError(
                f"{key}: it holds Python objects ({found[1]}) besides tensors and plain values, and "
                "loading them could run code, so it is not loaded; give a checkpoint of a train run"
            ) from None
        raise ConfigError(
            f"{key}: torch.load can't read it ({type(e).__name__}): not a PyTorch checkpoint"
        ) from None
    if not isinstance(state, dict) or not {"model", "optimizer", "trainer"} <= set(state):
        raise ConfigError(
            f"{key}: not a training checkpoint (it has no model, optimizer and trainer state); "
            "for a file of weights alone set train.model_weights_file instead"
        )
    with open(path, "rb") as f:
        start = StartCheckpoint(path, state, hashlib.file_digest(f, "sha256").hexdigest())
    done, epochs = start.epochs_done, int(tcfg["epochs"])
    if done >= epochs:
        raise ConfigError(
            f"{key}: its run had trained {done} epochs; train.epochs counts from the start, so set "
            f"it above {done} (e.g. train.epochs = {done + 5})"
        )
    return start
