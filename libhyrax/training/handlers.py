"""What a training run does around its steps, as small functions that attach handlers to the Ignite
trainer. Ignite runs an event's handlers in the order they were attached, so a stage attaches these in
the order an epoch's end needs them:

    progress = attach_progress(trainer, epochs, n_objects)       # rank 0: a bar over each epoch's objects
    attach_epoch_metrics(trainer, optimizer, evaluator, val_data)  # trainer.state.metrics: means, validation
    attach_scheduler(trainer, scheduler)                         # step the LR scheduler
    best = attach_best_epoch(trainer)                            # the best epoch so far
    attach_early_stopping(trainer, best, patience)
    attach_logging(trainer, run, tracker, best, epochs)          # rank 0: metrics.csv, MLflow, a log line
    attach_checkpoints(trainer, run.path, model, optimizer, scheduler, best, tracker.run_id)  # rank 0

An epoch's score is its validation loss, or its train loss when there is no validation split.
A loss that becomes NaN/inf is not a handler: the step itself stops (libhyrax.training.engine.create_trainer),
before the optimizer applies it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from libhyrax import atomic
from libhyrax.errors import RunError
from libhyrax.log import Progress
from libhyrax.training import distributed as dist
from libhyrax.training.engine import EpochMeans, rng_state, save_checkpoint
from libhyrax.training.tracking import METRICS_FILE, MetricsCSV, MLflowRun

log = logging.getLogger("hyrax.train")
LAST, BEST = "checkpoints/last.pt", "checkpoints/best.pt"
EPOCH = "checkpoints/checkpoint_epoch_{}.pt"  # the reference Hyrax's name, for its train.resume


def epoch_score(metrics: dict) -> float:
    return metrics.get("val_loss", metrics["train_loss"])


class EpochProgress:
    """A progress bar over each epoch's objects (all ranks') with the loss. Use it as a context manager
    around the run, so the bar of an epoch that fails is closed too."""

    def __init__(self, epochs: int, n_objects: int):
        self.epochs, self.n_objects = epochs, n_objects
        self.bar: Progress | None = None

    def open(self, engine: Engine) -> None:
        self.bar = Progress(f"epoch {engine.state.epoch}/{self.epochs}", total=self.n_objects).__enter__()

    def advance(self, engine: Engine) -> None:
        out = engine.state.output
        self.bar.advance(int(out["n"]) * dist.world_size())
        self.bar.set(loss=out["loss"])

    def close(self, engine: Engine | None = None) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attach_progress(trainer: Engine, epochs: int, n_objects: int) -> EpochProgress:
    """Attach it first: the bar closes before the epoch's validation and log line."""
    progress = EpochProgress(epochs, n_objects)
    trainer.add_event_handler(Events.EPOCH_STARTED, progress.open)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, progress.advance)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, progress.close)
    return progress


def attach_epoch_metrics(trainer: Engine, optimizer, evaluator: Engine, val_data=None) -> None:
    """At each epoch's end, validate (when there are `val_data`) and set `trainer.state.metrics`: the
    object-weighted means of the train figures (`train_loss`, ...) and of the validation figures
    (`val_loss`, ...), the learning rate of the epoch and its `seconds`. Every rank computes the same
    figures (the means are summed across ranks)."""
    train_means, val_means = EpochMeans(trainer), EpochMeans(evaluator)
    started = 0.0

    def start(engine: Engine) -> None:
        nonlocal started
        started = time.monotonic()

    def measure(engine: Engine) -> None:
        metrics = {f"train_{k}": v for k, v in train_means.means().items()}
        if val_data is not None:
            evaluator.run(val_data)
            metrics |= {f"val_{k}": v for k, v in val_means.means().items()}
        metrics |= {"lr": optimizer.param_groups[0]["lr"], "seconds": round(time.monotonic() - started, 3)}
        engine.state.metrics = metrics

    trainer.add_event_handler(Events.EPOCH_STARTED, start)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, measure)


def attach_scheduler(trainer: Engine, scheduler) -> None:
    """Step the LR scheduler (if any) after each epoch; ReduceLROnPlateau on the epoch's score."""
    if scheduler is None:
        return
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def step(engine: Engine) -> None:
        if plateau:
            scheduler.step(epoch_score(engine.state.metrics))
        else:
            scheduler.step()

    trainer.add_event_handler(Events.EPOCH_COMPLETED, step)


@dataclass
class BestEpoch:
    """The epoch with the lowest score so far; saved in every checkpoint (the keys of state_dict)."""

    score: float = math.inf
    epoch: int | None = None
    epochs_since: int = 0  # epochs since the best one
    improved: bool = False  # whether the epoch just completed is the new best

    def state_dict(self) -> dict:
        return {"best_score": self.score, "best_epoch": self.epoch, "bad_epochs": self.epochs_since}

    def load_state_dict(self, state: dict) -> None:
        self.score = state.get("best_score", math.inf)
        self.epoch = state.get("best_epoch")
        self.epochs_since = state.get("bad_epochs", 0)


def attach_best_epoch(trainer: Engine) -> BestEpoch:
    best = BestEpoch()

    def update(engine: Engine) -> None:
        score = epoch_score(engine.state.metrics)
        best.improved = score < best.score
        if best.improved:
            best.score, best.epoch, best.epochs_since = score, engine.state.epoch, 0
        else:
            best.epochs_since += 1

    trainer.add_event_handler(Events.EPOCH_COMPLETED, update)
    return best


def attach_early_stopping(trainer: Engine, best: BestEpoch, patience) -> None:
    """Stop after `patience` epochs without a better score (none or 0: never)."""
    if not patience:
        return

    def check(engine: Engine) -> None:
        if best.epochs_since >= int(patience):
            engine.terminate()  # the epoch's other handlers (its log line, its checkpoint) still run

    def report(engine: Engine) -> None:
        log.info(
            "stopping early: no better validation loss for %d epochs (best: epoch %d)",
            best.epochs_since,
            best.epoch,
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, check)
    trainer.add_event_handler(Events.TERMINATE, report)


def attach_stop_at(trainer: Engine, iteration: int) -> None:
    """Fail the run after that many steps, as a crash would (to test resuming)."""

    def stop(engine: Engine) -> None:
        raise RunError(f"stopped at iteration {engine.state.iteration} (stop_at_iteration)")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), stop)


def attach_logging(trainer: Engine, run, tracker: MLflowRun, best: BestEpoch, epochs: int) -> None:
    """After each epoch: its row in the run's metrics.csv, its figures in MLflow, and a log line (`*`
    marks a new best). A resumed run's metrics.csv first drops the rows after the checkpoint's epoch."""
    csv: MetricsCSV | None = None

    def open_csv(engine: Engine) -> None:
        nonlocal csv
        csv = MetricsCSV(run.file(METRICS_FILE), keep_epochs_upto=engine.state.epoch)  # 0, or the epochs done

    def record(engine: Engine) -> None:
        epoch, metrics = engine.state.epoch, engine.state.metrics
        csv.add({"epoch": epoch} | metrics)
        tracker.log_metrics(metrics, step=epoch)
        figs = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith(("train_", "val_")))
        log.info(
            "epoch %d/%d: %s (%.1f s)%s",
            epoch,
            epochs,
            figs,
            metrics["seconds"],
            " *" if best.improved else "",
        )

    trainer.add_event_handler(Events.STARTED, open_csv)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)


def attach_checkpoints(
    trainer: Engine,
    run_dir: Path,
    model,
    optimizer,
    scheduler,
    best: BestEpoch,
    mlflow_run_id: str | None = None,
) -> None:
    """After each epoch: `checkpoints/last.pt`, everything a resume needs (libhyrax.training.resume),
    copied to `checkpoints/best.pt` when the epoch is the best so far, and the same file as
    `checkpoints/checkpoint_epoch_N.pt`. Only the newest epoch's is kept, as the reference Hyrax keeps
    one (its n_saved=1): a hard link to last.pt, so it costs no disk. Written atomically, so a crash
    keeps the previous ones."""
    last, best_file = Path(run_dir) / LAST, Path(run_dir) / BEST

    def save(engine: Engine) -> None:
        save_checkpoint(
            last,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            optimizer_class=class_name(optimizer),
            scheduler_class=class_name(scheduler),
            trainer=engine.state_dict(),
            rng=rng_state(),
            mlflow_run_id=mlflow_run_id,
            **best.state_dict(),
        )
        if best.improved:
            with atomic.replacing(best_file) as tmp:
                shutil.copyfile(last, tmp)
        keep_epoch_checkpoint(last, Path(run_dir) / EPOCH.format(engine.state.epoch))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, save)


def class_name(obj) -> str | None:
    """What a checkpoint records of its optimizer and scheduler, so a new run from it (train.resume) can
    tell they are the ones it makes."""
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def keep_epoch_checkpoint(last: Path, epoch_file: Path) -> None:
    """`last` also as `epoch_file`, the previous epochs' files removed (after: one is always there)."""
    with atomic.replacing(epoch_file) as tmp:
        try:
            os.link(last, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(last, tmp)
    for old in epoch_file.parent.glob("checkpoint_epoch_*.pt"):
        if old != epoch_file:
            old.unlink(missing_ok=True)
