"""hyrax train: fit a model on the train split, validating each epoch; write its weights and description.

    hyrax train                                         # the default autoencoder on the built-in sample
    hyrax train -c my.toml --set train.epochs=5 --set model.name=HyraxCNN
    hyrax train --resume results/<run>.failed           # continue an interrupted run from its last checkpoint
    hyrax train --set train.epochs=5 --set train.resume='"results/<run>/checkpoints/checkpoint_epoch_3.pt"'
                                                        # a new run going on from a checkpoint: epochs 4-5
    hyrax download -c survey.toml | hyrax train         # train on a download (or prepare) run's cutouts.h5
    torchrun --nproc_per_node 4 -m hyrax_cli train      # 4 processes: nccl on GPUs, gloo on CPU
    srun --ntasks 8 --gpus-per-task 1 hyrax train       # Slurm: Ignite reads the Slurm variables

    import libhyrax
    run = libhyrax.train({"model": {"name": "TinyAE"}}, overrides=["train.epochs=2"])

The results directory holds `model.pt` (final weights), `model.json` (what rebuilds the model;
`libhyrax.models.load_trained(run)`), `model_source.py` for a class defined in a notebook or script,
`checkpoints/last.pt`, `checkpoints/best.pt` (lowest validation loss) and the newest epoch's
`checkpoints/checkpoint_epoch_N.pt` (the reference's name), `split.h5`, `metrics.csv`, and the run is
logged to MLflow (`results/mlflow.db`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from libhyrax.data.from_run import DATA_STAGES, request_of_run, run_holding
from libhyrax.device import pick_device
from libhyrax.errors import ConfigError, DataError
from libhyrax.models import build_model, describe, load_weights, model_class, place, prepare, save_trained
from libhyrax.models.base import first_rows
from libhyrax.results import Result, find_run
from libhyrax.start import Start, start_run
from libhyrax.training import distributed as dist
from libhyrax.training.engine import (
    EpochBatches,
    create_evaluator,
    create_trainer,
    seed_everything,
)
from libhyrax.training.handlers import (
    LAST,
    attach_best_epoch,
    attach_checkpoints,
    attach_early_stopping,
    attach_epoch_metrics,
    attach_logging,
    attach_progress,
    attach_scheduler,
    attach_stop_at,
)
from libhyrax.training.resume import RESUME_MAY_CHANGE, Resumed, StartCheckpoint, resume_run, start_checkpoint
from libhyrax.training.tracking import METRICS_FILE, MLflowRun

log = logging.getLogger("hyrax.train")


def train(config=None, *, overrides=(), resume=None, from_run=None,
          stop_at_iteration: int | None = None) -> Result | None:
    """Train `model.name` on the train group's train split; returns the train run (None on ranks > 0).

    resume: an interrupted train run's directory; it continues from its last checkpoint with its own
    config (plus `overrides`, e.g. more epochs) and ends as an uninterrupted run would have.
    from_run: a download or prepare run whose cutouts.h5 to train on (instead of `[data_request]`).
    stop_at_iteration: stop with an error after that many steps (to test resuming).
    A new run that goes on from a checkpoint file is `train.resume` in the config (libhyrax.training.resume).
    """
    plan = start_run(
        "train", config, overrides, from_run=from_run, resume=resume, may_change=RESUME_MAY_CHANGE
    )
    resumed = resume_run(plan) if resume else None
    cfg = plan.config
    if plan.from_run is not None and resumed is None:
        cfg["data_request"] = request_of_run(find_run(DATA_STAGES, cfg, plan.from_run).path)
    if int(cfg["train"]["epochs"]) < 1:
        raise ConfigError(f"train.epochs must be at least 1, not {cfg['train']['epochs']}")
    start = start_checkpoint(cfg) if resumed is None else None  # a resumed run goes on from its own
    with dist.distributed(cfg["general"]["device"]):
        return _train(plan, resumed, start, stop_at_iteration)


def _train(
    plan: Start, resumed: Resumed | None, start: StartCheckpoint | None, stop_at_iteration: int | None
) -> Result | None:
    from libhyrax.data import open_group

    cfg = plan.config
    tcfg, epochs = cfg["train"], int(cfg["train"]["epochs"])
    device = pick_device(cfg["general"]["device"])
    seed_everything(int(cfg["general"]["seed"]))
    group = open_group(cfg, "train")
    splits, split_ids, rule = _splits(cfg, group, resumed)

    cls = model_class(cfg["model"]["name"])
    sample = first_rows(prepare(cls, group.read(0, 1)), 1)
    model = _build_model(cls, cfg, sample, device, fine_tune=resumed is None)
    optimizer = model.configure_optimizer(cfg)
    scheduler = model.configure_scheduler(optimizer, cfg)

    mixed = bool(tcfg["mixed_precision"])
    trainer, evaluator = (
        create_trainer(model, optimizer, device, mixed),
        create_evaluator(model, device, mixed),
    )
    train_data, val_data = _batches(cfg, group, splits, trainer)
    rank0 = dist.rank() == 0
    progress = (
        attach_progress(trainer, epochs, len(train_data.indices) * dist.world_size()) if rank0 else None
    )
    attach_epoch_metrics(trainer, optimizer, evaluator, val_data)
    attach_scheduler(trainer, scheduler)
    best = attach_best_epoch(trainer)
    attach_early_stopping(trainer, best, tcfg["early_stopping_patience"])
    if stop_at_iteration:
        attach_stop_at(trainer, stop_at_iteration)
    if resumed is not None:
        resumed.restore(model, optimizer, scheduler, trainer, best)
    if start is not None:
        start.restore(model, optimizer, scheduler, trainer, epochs, len(train_data))
    dist.barrier()  # every rank has read the resumed run's files before rank 0 moves its directory

    if not rank0:  # the other ranks train their share; only rank 0 writes
        if resumed is None or resumed.epochs_done < epochs:
            trainer.run(train_data, max_epochs=epochs)
        return None
    with plan.open() as run:
        run.resumable = lambda: (run.path / LAST).is_file()  # SIGTERM in the first epoch: nothing to resume
        _record_inputs(run, cfg, group, (splits, split_ids, rule), resumed, start, cls, device)
        with MLflowRun(
            cfg,
            "train",
            run.final_path,
            tcfg["experiment_name"],
            tcfg["run_name"] or None,
            run_id=resumed.mlflow_run_id if resumed else None,
        ) as tracker:
            if tracker.run_id:
                run.record(mlflow_run_id=tracker.run_id)
            attach_logging(trainer, run, tracker, best, epochs)
            attach_checkpoints(trainer, run.path, model, optimizer, scheduler, best, tracker.run_id)
            if resumed is not None and resumed.epochs_done >= epochs:
                # it stopped after its last epoch's checkpoint (say while saving the model): nothing is left
                # to train, and Ignite would start over on a finished state
                log.info("all %d epochs were trained before the interruption; saving the model", epochs)
            else:
                with progress:
                    trainer.run(train_data, max_epochs=epochs)

            desc = describe(model, cfg, sample)
            save_trained(run.path, model, desc)
            run.record(
                epochs_done=trainer.state.epoch,
                best_epoch=best.epoch,
                best_score=best.score,
                latent_dim=desc["latent_dim"],
                **trainer.state.metrics,
            )
            tracker.log_artifact(run.file("model.json"))
            tracker.log_artifact(run.file(METRICS_FILE))
    return Result(run.path)


def _splits(cfg: dict, group, resumed: Resumed | None) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(rows, ids, rule) per split: a reused split.h5's (looked up by id), else hashed from the ids. Both
    stream the ids in blocks: memory for the rows used, whatever N."""
    from libhyrax.data.split import hash_rule, hashed_splits, load_splits, read_rule

    source = resumed.path if resumed else cfg["split"]["from_run"]
    if source:
        splits, ids = load_splits(Path(source) / "split.h5", id_blocks=group.id_blocks(), with_ids=True)
        return splits, ids, read_rule(Path(source) / "split.h5")
    fractions = {k: v for k, v in cfg["split"].items() if k not in ("seed", "from_run")}
    seed = int(cfg["split"]["seed"] if cfg["split"]["seed"] is not False else cfg["general"]["seed"])
    splits, ids = hashed_splits(group.id_blocks(), fractions, seed)
    if len(splits.get("train", ())) < dist.world_size():
        raise DataError(
            f"the train split has {len(splits.get('train', ()))} of {len(group)} objects; give more "
            "data or a larger split.train"
        )
    return splits, ids, hash_rule(fractions, seed)


def _build_model(cls, cfg: dict, sample, device, fine_tune: bool):
    """The model on the device, the same on every rank; from `train.model_weights_file` when fine-tuning
    (a resumed run's weights come from its checkpoint instead)."""
    model = build_model(cls, cfg, sample)
    weights = cfg["train"]["model_weights_file"]
    if weights and fine_tune:
        load_weights(model, weights)
        log.info("starting from the weights in %s", weights)
    place(model, device)
    dist.broadcast_parameters(model)
    return model


def _batches(cfg: dict, group, splits: dict, trainer) -> tuple[EpochBatches, EpochBatches | None]:
    """This rank's train and validation batches; the train batches in a new order each epoch."""
    lcfg = cfg["data_loader"]
    seed, workers = int(cfg["general"]["seed"]), int(lcfg["num_workers"])
    batch = max(1, int(lcfg["batch_size"]) // dist.world_size())  # the global batch is split over ranks
    train = EpochBatches(
        group,
        dist.share(splits["train"], equal=True),
        batch,
        bool(cfg["train"]["shuffle"]),
        seed,
        workers,
        trainer,
    )
    validate = splits.get("validate", np.zeros(0, dtype=np.int64))
    if not len(validate):
        return train, None
    return train, EpochBatches(group, dist.share(validate, equal=False), batch, False, seed, workers)


def _record_inputs(run, cfg, group, split, resumed, start, cls, device) -> None:
    from libhyrax.data.split import save_used_splits

    splits, split_ids, rule = split
    for spec in group.specs.values():
        if spec.data_location:
            run.add_input(spec.data_location)
            if run_holding(spec.data_location):  # data a run made (download, prepare): part of the lineage
                run.add_upstream(run_holding(spec.data_location))
    if resumed is None:
        save_used_splits(run.file("split.h5"), splits, split_ids, rule)
    if cfg["split"]["from_run"]:
        run.add_upstream(cfg["split"]["from_run"])
    if cfg["train"]["model_weights_file"]:
        run.add_input(cfg["train"]["model_weights_file"])
    if start is not None:
        run.add_input(start.path)
        run.record(started_from_checkpoint=start.provenance())
    run.record(
        model=cls.__name__,
        device=str(device),
        world_size=dist.world_size(),
        split_sizes={k: len(v) for k, v in splits.items()},
    )
