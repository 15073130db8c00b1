"""Continuing an interrupted train run (`hyrax train --resume <run>`): the one place that decides whether
a run can be resumed, and that reads what continuing it needs from its last checkpoint.

    resumed = resume_run("results/<run>.failed", overrides=["train.epochs=20"])   # checks it
    cfg = resumed.config            # the run's own config, plus the overrides
    ...                             # build the model, optimizer, scheduler, trainer; attach the handlers
    resumed.restore(model, optimizer, scheduler, trainer, best)
    trainer.run(batches, max_epochs=20)   # goes on after the checkpoint's epoch, as if never stopped

The run's `split.h5` is the split to train on (`resumed.path`), and `open_run(..., resume=resumed.path)`
reopens its directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ignite.engine import Engine, Events

from libhyrax.config import read_toml, resolve
from libhyrax.errors import UsageError
from libhyrax.models import load_weights
from libhyrax.results import CONFIG_FILE, read_provenance
from libhyrax.runs import differences
from libhyrax.training.engine import load_checkpoint, set_rng_state
from libhyrax.training.handlers import LAST, BestEpoch

log = logging.getLogger("hyrax.train")


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


def resume_run(path, overrides=()) -> Resumed:
    """Check that `path` is a train run that can go on (it has a checkpoint, and `train.epochs` is not
    below the epochs it has done), and read its config and last checkpoint. Every rank reads them here,
    before rank 0's open_run moves the directory."""
    path = Path(path)
    prov = read_provenance(path)
    if prov.get("stage") != "train":
        raise UsageError(f"--resume {path} is a {prov.get('stage')!r} run, not a train run")
    if not (path / LAST).is_file():
        raise UsageError(f"--resume {path}: it has no checkpoint (it stopped in its first epoch); "
                         "start a new run instead")
    own = resolve(read_toml(path / CONFIG_FILE))
    resumed = Resumed(path, resolve(own, overrides), load_checkpoint(path / LAST))
    # more epochs is the one thing a resumed run may be asked for: anything else would mix two trainings
    changed = [k for k in differences(own, resumed.config) if k != "train.epochs"]
    if changed:
        raise UsageError(f"--resume {path}: a resumed run continues with its own settings; only train.epochs may "
                         f"change, not {', '.join(changed[:5])} (start a new run for other settings)")
    done = resumed.epochs_done
    if done > int(resumed.config["train"]["epochs"]):
        raise UsageError(f"the resumed run has already trained {done} epochs; set train.epochs to {done} or more "
                         f"(e.g. --set train.epochs={done + 5})")
    return resumed
