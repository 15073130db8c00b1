"""Continuing an interrupted train run (`hyrax train --resume <run>`): the one place that decides whether
a run can be resumed, and that reads what continuing it needs from its last checkpoint.

    plan = start_run("train", resume="results/<run>.failed", overrides=["train.epochs=20"],
                     may_change=RESUME_MAY_CHANGE)    # its own config; only train.epochs may change
    resumed = resume_run(plan)      # checks it has a checkpoint, and reads it
    cfg = resumed.config
    ...                             # build the model, optimizer, scheduler, trainer; attach the handlers
    resumed.restore(model, optimizer, scheduler, trainer, best)
    trainer.run(batches, max_epochs=20)   # goes on after the checkpoint's epoch, as if never stopped

The run's `split.h5` is the split to train on (`resumed.path`), and `plan.open()` reopens its directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ignite.engine import Engine, Events

from libhyrax.errors import UsageError
from libhyrax.models import load_weights
from libhyrax.training.engine import load_checkpoint, set_rng_state
from libhyrax.training.handlers import LAST, BestEpoch

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
        trainer = self.checkpoint["trainer"]
        return trainer["iteration"] // trainer["epoch_length"]

    @property
    def mlflow_run_id(self) -> str | None:
        return self.checkpoint.get("mlflow_run_id")

    def restore(self, model, optimizer, scheduler, trainer: Engine, best: BestEpoch) -> None:
        """Put the checkpoint's state back: weights, optimizer, scheduler, the trainer's epoch and
        iteration, the best epoch; and the random number generators as the trainer starts, so nothing done
        before the run (opening it, MLflow) can move them."""
        state = self.checkpoint
        load_weights(model, state["model"])  # names the layers when the config now builds another model
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
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
        raise UsageError(f"the resumed run has already trained {done} epochs; set train.epochs to {done} or more "
                         f"(e.g. --set train.epochs={done + 5})")
    return resumed
