"""hyrax train: fit a model on the train split, validating each epoch; write its weights and description.

    hyrax train                                         # the default autoencoder on the built-in sample
    hyrax train -c my.toml --set train.epochs=5 --set model.name=HyraxCNN
    hyrax train --resume results/<run>.failed           # continue an interrupted run from its last checkpoint
    torchrun --nproc_per_node 4 -m hyrax_cli train      # 4 processes: nccl on GPUs, gloo on CPU
    srun --ntasks 8 --gpus-per-task 1 hyrax train       # Slurm: Ignite reads the Slurm variables

    import libhyrax
    run = libhyrax.train({"model": {"name": "TinyAE"}}, overrides=["train.epochs=2"])

The results directory holds `model.pt` (final weights), `model.json` (what rebuilds the model;
`libhyrax.models.load_trained(run)`), `model_source.py` for a class defined in a notebook or script,
`checkpoints/last.pt` and `checkpoints/best.pt` (lowest validation loss), `split.h5`, `metrics.csv`, and
the run is logged to MLflow (`results/mlflow.db`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

from libhyrax.config import read_toml, resolve
from libhyrax.errors import DataError, RunError, UsageError
from libhyrax.log import Progress
from libhyrax.models import build_model, describe, load_weights, model_class, prepare, save_trained
from libhyrax.models.base import first_rows
from libhyrax.results import CONFIG_FILE, Result, read_provenance
from libhyrax.runs import open_run
from libhyrax.training import distributed as dist
from libhyrax.training.engine import (
    EpochBatches,
    EpochMeans,
    create_evaluator,
    create_trainer,
    load_checkpoint,
    pick_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from libhyrax.training.tracking import METRICS_FILE, MetricsCSV, MLflowRun

log = logging.getLogger("hyrax.train")
LAST, BEST = "checkpoints/last.pt", "checkpoints/best.pt"


def train(config=None, *, overrides=(), resume=None, stop_at_iteration: int | None = None) -> Result | None:
    """Train `model.name` on the train group's train split; returns the train run (None on ranks > 0).

    resume: an interrupted train run's directory; it continues from its last checkpoint with its own
    config (plus `overrides`, e.g. more epochs) and ends as an uninterrupted run would have.
    stop_at_iteration: stop with an error after that many steps (to test resuming).
    """
    resume = Path(resume) if resume else None
    cfg = _resume_config(resume, overrides) if resume else resolve(config, overrides)
    with dist.distributed(cfg["general"]["device"]):
        return _train(cfg, resume, stop_at_iteration)


def _resume_config(resume: Path, overrides) -> dict:
    prov = read_provenance(resume)
    if prov.get("stage") != "train":
        raise UsageError(f"--resume {resume} is a {prov.get('stage')!r} run, not a train run")
    if not (resume / LAST).is_file():
        raise UsageError(f"--resume {resume}: it has no checkpoint (it stopped in its first epoch); "
                         "start a new run instead")
    return resolve(read_toml(resume / CONFIG_FILE), overrides)


def _splits(cfg: dict, group, resume: Path | None) -> dict[str, np.ndarray]:
    from libhyrax.data.split import load_splits, make_splits

    source = resume or cfg["split"]["from_run"]
    if source:
        return load_splits(Path(source) / "split.h5", group.object_ids())
    fractions = {k: v for k, v in cfg["split"].items() if k not in ("seed", "from_run")}
    seed = cfg["split"]["seed"] if cfg["split"]["seed"] is not False else cfg["general"]["seed"]
    splits = make_splits(len(group), fractions, int(seed))
    if len(splits.get("train", ())) < dist.world_size():
        raise DataError(f"the train split has {len(splits.get('train', ()))} of {len(group)} objects; give more "
                        "data or a larger split.train")
    return splits


def _train(cfg: dict, resume: Path | None, stop_at_iteration: int | None) -> Result | None:
    from libhyrax.data import open_group

    rank0 = dist.rank() == 0
    device = pick_device(cfg["general"]["device"])
    seed = int(cfg["general"]["seed"])
    seed_everything(seed)
    state = load_checkpoint(resume / LAST) if resume else None  # every rank reads it before rank 0 moves it
    done = state["trainer"]["iteration"] // state["trainer"]["epoch_length"] if state else 0
    if done > int(cfg["train"]["epochs"]):
        raise UsageError(f"the resumed run has already trained {done} epochs; set train.epochs to {done} or more "
                         f"(e.g. --set train.epochs={done + 5})")
    group = open_group(cfg, "train")
    splits = _splits(cfg, group, resume)
    cls = model_class(cfg["model"]["name"])
    sample = first_rows(prepare(cls, group.read(0, 1)), 1)
    model = build_model(cls, cfg, sample)
    weights = cfg["train"]["model_weights_file"]
    if weights and state is None:
        load_weights(model, weights)
        log.info("starting from the weights in %s", weights)
    model.to(device)
    dist.broadcast_parameters(model)
    optimizer = model.configure_optimizer(cfg)
    scheduler = model.configure_scheduler(optimizer, cfg)
    if state is not None:
        load_weights(model, state["model"])  # names the layers when the config now builds another model
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
    dist.barrier()
    with (open_run("train", cfg, resume=resume) if rank0 else nullcontext()) as run:
        if run is not None:
            _record_inputs(run, cfg, group, splits, resume, cls, device)
        fit = Fit(cfg, model, optimizer, scheduler, group, splits, device, run, state)
        fit.run(stop_at_iteration)
        if run is not None:
            desc = describe(model, cfg, sample)
            save_trained(run.path, model, desc)
            run.record(epochs_done=fit.trainer.state.epoch, best_epoch=fit.best_epoch,
                       best_score=fit.best_score, latent_dim=desc["latent_dim"], **fit.last_row)
            fit.tracker.log_artifact(run.file("model.json"))
            fit.tracker.log_artifact(run.file(METRICS_FILE))
            fit.tracker.end(ok=True)
    return Result(run.path) if run is not None else None


def _record_inputs(run, cfg, group, splits, resume, cls, device) -> None:
    from libhyrax.data.split import save_splits

    for spec in group.specs.values():
        if spec.data_location:
            run.add_input(spec.data_location)
    if resume is None:
        save_splits(run.file("split.h5"), splits, group.object_ids())
    if cfg["split"]["from_run"]:
        run.add_upstream(cfg["split"]["from_run"])
    if cfg["train"]["model_weights_file"]:
        run.add_input(cfg["train"]["model_weights_file"])
    run.record(model=cls.__name__, device=str(device), world_size=dist.world_size(),
               split_sizes={k: len(v) for k, v in splits.items()})


class Fit:
    """The training loop as Ignite engines plus epoch-end handlers: validate, record, checkpoint, step
    the scheduler, stop early."""

    def __init__(self, cfg, model, optimizer, scheduler, group, splits, device, run, state):
        self.cfg, self.model, self.optimizer, self.scheduler, self.run_ = cfg, model, optimizer, scheduler, run
        self.state = state
        tcfg, lcfg = cfg["train"], cfg["data_loader"]
        self.epochs, self.patience = int(tcfg["epochs"]), tcfg["early_stopping_patience"]
        mixed, workers, seed = bool(tcfg["mixed_precision"]), int(lcfg["num_workers"]), int(cfg["general"]["seed"])
        batch = max(1, int(lcfg["batch_size"]) // dist.world_size())  # the global batch is split over ranks
        self.trainer = create_trainer(model, optimizer, device, mixed)
        self.train_data = EpochBatches(group, dist.share(splits["train"], equal=True), batch, bool(tcfg["shuffle"]),
                                       seed, workers, self.trainer)
        self.n_train = len(self.train_data.indices) * dist.world_size()
        validate = splits.get("validate", np.zeros(0, dtype=np.int64))
        self.val_data = (EpochBatches(group, dist.share(validate, equal=False), batch, False, seed, workers)
                         if len(validate) else None)
        self.evaluator = create_evaluator(model, device, mixed)
        self.train_means, self.val_means = EpochMeans(self.trainer), EpochMeans(self.evaluator)
        state = state or {}
        self.best_score, self.best_epoch = state.get("best_score", math.inf), state.get("best_epoch")
        self.bad_epochs = state.get("bad_epochs", 0)
        self.last_row: dict = {}
        self.progress: Progress | None = None
        if run is not None:
            upto = state["trainer"]["iteration"] // state["trainer"]["epoch_length"] if state else None
            self.csv = MetricsCSV(run.file(METRICS_FILE), keep_epochs_upto=upto)
            self.tracker = MLflowRun(cfg, "train", run.final_path, tcfg["experiment_name"],
                                     tcfg["run_name"] or None, run_id=state.get("mlflow_run_id"))
            if self.tracker.run_id:
                run.record(mlflow_run_id=self.tracker.run_id)
        self._attach()

    def _attach(self) -> None:
        t = self.trainer
        t.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.run_ is not None:
            t.add_event_handler(Events.ITERATION_COMPLETED, self._advance)
        t.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def run(self, stop_at_iteration: int | None) -> None:
        if stop_at_iteration:
            def stop(engine):
                raise RunError(f"stopped at iteration {engine.state.iteration} (stop_at_iteration)")
            self.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at_iteration), stop)
        if self.state:
            self.trainer.load_state_dict(self.state["trainer"])
            set_rng_state(self.state["rng"])
            log.info("resuming after epoch %d", self.trainer.state.epoch)
        try:
            self.trainer.run(self.train_data, max_epochs=self.epochs)
        except BaseException:
            if self.run_ is not None:
                self.tracker.end(ok=False)
            raise
        finally:
            self._close_progress()

    def _epoch_started(self, engine) -> None:
        self.started = time.monotonic()
        if self.run_ is not None:
            self.progress = Progress(f"epoch {engine.state.epoch}/{self.epochs}", total=self.n_train).__enter__()

    def _advance(self, engine) -> None:
        out = engine.state.output
        self.progress.advance(int(out["n"]) * dist.world_size())
        self.progress.set(loss=out["loss"])

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None

    def _epoch_completed(self, engine) -> None:
        self._close_progress()
        epoch = engine.state.epoch
        row = {"epoch": epoch} | {f"train_{k}": v for k, v in self.train_means.means().items()}
        if self.val_data is not None:
            self.evaluator.run(self.val_data)
            row |= {f"val_{k}": v for k, v in self.val_means.means().items()}
        row |= {"lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.monotonic() - self.started, 3)}
        self._step_scheduler(row)
        score = row.get("val_loss", row["train_loss"])
        improved = score < self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        self.last_row = {k: v for k, v in row.items() if k != "epoch"}
        if self.run_ is not None:
            self._record(epoch, row, improved)
        if self.patience and self.bad_epochs >= int(self.patience):
            log.info("stopping early: no better validation loss for %d epochs (best: epoch %d)",
                     self.bad_epochs, self.best_epoch)
            engine.terminate()

    def _step_scheduler(self, row: dict) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(row.get("val_loss", row["train_loss"]))
        else:
            self.scheduler.step()

    def _record(self, epoch: int, row: dict, improved: bool) -> None:
        self.csv.add(row)
        self.tracker.log_metrics(self.last_row, step=epoch)
        last = self.run_.file(LAST)
        save_checkpoint(last, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
                        trainer=self.trainer.state_dict(), rng=rng_state(), best_score=self.best_score,
                        best_epoch=self.best_epoch, bad_epochs=self.bad_epochs, mlflow_run_id=self.tracker.run_id)
        if improved:
            shutil.copyfile(last, self.run_.file(BEST + ".tmp"))
            Path(self.run_.file(BEST + ".tmp")).replace(self.run_.file(BEST))
        figs = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_")))
        log.info("epoch %d/%d: %s (%.1f s)%s", epoch, self.epochs, figs, row["seconds"], " *" if improved else "")
