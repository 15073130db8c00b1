"""train and test: the real loop on a small synthetic survey (HDF5), checkpoints, resume, fine-tuning,
early stopping, MLflow read back with its client, and every bad input."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libhyrax.errors import ConfigError, ModelError, RunError, UsageError
from libhyrax.models import HyraxModel, load_trained
from libhyrax.stages.train import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    from libhyrax.data.synthetic import generate_survey

    return generate_survey(tmp_path_factory.mktemp("survey") / "survey.h5", n=160, size=16, seed=0)


@pytest.fixture(scope="module")
def shared_mlflow(tmp_path_factory) -> str:
    """One MLflow store for the tests that don't look at MLflow (a new SQLite store takes ~2 s)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def small_config(survey: Path, results: Path, model: str = "HyraxAutoencoder", mlflow_uri: str | bool = False,
                 epochs: int = 2) -> dict:
    return {
        "general": {"results_dir": str(results), "mlflow_tracking_uri": mlflow_uri},
        "data_request": {"train": {"survey": {
            "dataset_class": "HyraxHDF5Dataset", "data_location": str(survey),
            "fields": ["image", "object_id", "label"], "primary_id_field": "object_id"}}},
        "model": {"name": model, "HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 8},
                  "HyraxCNN": {"output_classes": 3}, "SimCLR": {"latent_dim": 16, "projection_dimension": 8}},
        "data_loader": {"batch_size": 32},
        "train": {"epochs": epochs},
    }


def weights(run) -> dict:
    return torch.load(Path(run) / "model.pt", weights_only=True)


def same_weights(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(
        torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a
    )


def metrics(run) -> list[dict]:
    with open(Path(run) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def failed_runs(results: Path) -> list[Path]:
    return sorted(results.glob("*-train-*.failed"))


# --- a run end to end ------------------------------------------------------------------------------


def test_hyrax_train_with_no_config_trains_the_default_autoencoder_on_the_sample(workdir, hyrax):
    proc = hyrax("train", "--set", "train.epochs=1", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(proc.stdout.strip().splitlines()[-1])
    assert run.is_dir() and run.parent == Path("results")
    for name in (
        "model.pt",
        "model.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "split.h5",
        "metrics.csv",
        "runtime_config.toml",
        "provenance.json",
        "train.log",
    ):
        assert (workdir / run / name).is_file(), name
    assert not (workdir / run / "model_source.py").exists()
    desc = json.loads((workdir / run / "model.json").read_text())
    assert (
        desc["class"] == "HyraxAutoencoder"
        and desc["input_shape"] == [3, 64, 64]
        and desc["latent_dim"] == 64
    )
    assert desc["data_set"]["transform"] == "asinh"
    rows = metrics(workdir / run)
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0 and float(rows[0]["val_loss"]) > 0
    prov = json.loads((workdir / run / "provenance.json").read_text())
    sizes = prov["stage_info"]["split_sizes"]  # hashed from the ids: the fractions up to sampling noise
    assert prov["status"] == "complete" and sum(sizes.values()) == 1000
    assert (
        abs(sizes["train"] - 800) < 40 and abs(sizes["validate"] - 100) < 30 and abs(sizes["test"] - 100) < 30
    )
    model, _ = load_trained(workdir / run)
    out = model.infer_outputs(torch.zeros(2, 3, 64, 64))
    assert out["latent"].shape == (2, 64) and out["recon_error"].shape == (2,)


def test_training_lowers_the_loss_and_two_runs_with_one_seed_give_the_same_weights(
    survey, workdir, shared_mlflow
):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=3)
    a, b = train(cfg), train(cfg)
    assert a.path != b.path
    assert same_weights(weights(a), weights(b))
    losses = [float(r["train_loss"]) for r in metrics(a)]
    assert losses[-1] < losses[0]
    c = train(cfg, overrides=["general.seed=7"])
    assert not same_weights(weights(a), weights(c))


def test_resume_after_a_crash_in_epoch_3_of_5_ends_with_the_uninterrupted_weights(
    survey, workdir, shared_mlflow
):
    # SimCLR draws random augmentations each step, so this also checks the RNG state is restored
    cfg = small_config(survey, workdir / "results", model="SimCLR", mlflow_uri=shared_mlflow, epochs=5)
    whole = train(cfg)
    with pytest.raises(RunError, match="stopped at iteration 10"):
        train(cfg, stop_at_iteration=10)  # 4 steps per epoch: in epoch 3
    [crashed] = failed_runs(workdir / "results")
    assert json.loads((crashed / "provenance.json").read_text())["status"] == "failed"
    assert len(metrics(crashed)) == 2 and not (crashed / "model.pt").exists()
    with pytest.raises(UsageError, match="already trained 2 epochs"):
        train(resume=crashed, overrides=["train.epochs=1"])
    with pytest.raises(UsageError, match="only train.epochs may change, not optimizer.kwargs.lr"):
        train(resume=crashed, overrides=["optimizer.kwargs.lr=0.5"])  # half one training, half another
    resumed = train(resume=crashed)
    assert resumed.path.name == crashed.name.removesuffix(".failed") and not crashed.exists()
    assert same_weights(weights(resumed), weights(whole), atol=1e-6)
    assert [r["epoch"] for r in metrics(resumed)] == ["1", "2", "3", "4", "5"]
    np.testing.assert_allclose(
        [float(r["train_loss"]) for r in metrics(resumed)],
        [float(r["train_loss"]) for r in metrics(whole)],
        rtol=1e-5,
    )
    assert len(json.loads((resumed.path / "provenance.json").read_text())["resumed"]) == 1


def test_fine_tuning_starts_from_the_given_weights(survey, workdir, shared_mlflow):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=1)
    first = train(cfg)
    # with a zero learning rate the weights stay exactly the starting ones (the running statistics of the
    # latent's BatchNorm still follow the data: they are no weights)
    tuned = train(
        cfg, overrides=[f"train.model_weights_file='{first.path / 'model.pt'}'", "optimizer.kwargs.lr=0.0"]
    )
    stats = ("running_mean", "running_var", "num_batches_tracked")
    tuned_w, first_w = (
        {k: v for k, v in weights(r).items() if not k.endswith(stats)} for r in (tuned, first)
    )
    assert same_weights(tuned_w, first_w)
    prov = json.loads((tuned.path / "provenance.json").read_text())
    assert any(i["path"].endswith("model.pt") for i in prov["inputs"])


def test_early_stopping_by_patience_on_validation_loss(survey, workdir, shared_mlflow):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=10)
    run = train(cfg, overrides=["train.early_stopping_patience=2", "optimizer.kwargs.lr=0.0"])
    assert len(metrics(run)) == 3  # epoch 1 is best; 2 and 3 don't improve
    assert (
        run.provenance["stage_info"]["epochs_done"] == 3 and run.provenance["stage_info"]["best_epoch"] == 1
    )


def test_a_scheduler_named_by_import_path_with_its_kwargs(survey, workdir, shared_mlflow):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=3)
    cfg["scheduler"] = {"name": "torch.optim.lr_scheduler.StepLR", "kwargs": {"step_size": 1, "gamma": 0.5}}
    cfg["optimizer"] = {"name": "torch.optim.SGD", "kwargs": {"lr": 0.1, "momentum": 0.9}}
    run = train(cfg)
    assert [float(r["lr"]) for r in metrics(run)] == pytest.approx([0.1, 0.05, 0.025])


# --- classifiers and the test stage ----------------------------------------------------------------


def test_train_piped_into_test_for_hyrax_cnn_on_a_labelled_survey(survey, workdir):
    from libhyrax.config import dump_config, load_config

    cfg = small_config(survey, workdir / "results", model="HyraxCNN", epochs=2)
    (workdir / "cnn.toml").write_text(dump_config(load_config(data=cfg)))
    proc = subprocess.run(
        f"{sys.executable} -m hyrax_cli train -c cnn.toml | {sys.executable} -m hyrax_cli test -c cnn.toml",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    test_run = workdir / proc.stdout.strip().splitlines()[-1]
    assert "-test-" in test_run.name
    result = json.loads((test_run / "test_metrics.json").read_text())
    assert 0 <= result["test_accuracy"] <= 1 and result["test_loss"] > 0
    import h5py

    lines = (test_run / "confusion_matrix.csv").read_text().splitlines()
    counts = np.array([[int(c) for c in ln.split(",")[1:]] for ln in lines[1:]])
    with h5py.File(next(workdir.glob("results/*-train-*")) / "split.h5") as f:
        n_test = int((f["split"][:] == b"test").sum())  # 10% of 160, up to the hash's sampling noise
    assert counts.shape == (3, 3) and counts.sum() == n_test and 8 <= n_test <= 24
    assert np.trace(counts) / counts.sum() == pytest.approx(result["test_accuracy"])
    with h5py.File(test_run / "predictions.h5") as f:
        assert len(f["object_id"]) == n_test and set(f["label"][:]) <= {0, 1, 2}
    prov = json.loads((test_run / "provenance.json").read_text())
    assert prov["upstream_runs"][0].endswith(next((workdir / "results").glob("*-train-*")).name)


def test_mlflow_holds_params_metrics_and_tags_read_back_with_its_client(survey, workdir):
    from mlflow import MlflowClient

    from libhyrax.stages.test import test as run_test

    cfg = small_config(survey, workdir / "results", model="HyraxCNN", epochs=2)
    trained = train(cfg)
    tested = run_test(cfg, from_run=trained.path)
    store = workdir / "results" / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name("hyrax")
    assert exp.artifact_location.endswith("results/mlartifacts")
    runs = {r.data.tags["hyrax.stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"train", "test"}
    tr = runs["train"]
    assert tr.info.status == "FINISHED" and tr.data.tags["hyrax.results_dir"] == str(trained.path.resolve())
    assert tr.data.params["train.epochs"] == "2" and tr.data.params["model.name"] == "HyraxCNN"
    assert tr.data.params["model.HyraxCNN.output_classes"] == "3"
    history = client.get_metric_history(tr.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(float(metrics(trained)[-1]["val_loss"]))
    assert {"model.json", "metrics.csv"} <= {a.path for a in client.list_artifacts(tr.info.run_id)}
    te = runs["test"]
    assert (
        te.data.metrics["test_accuracy"]
        == json.loads((tested.path / "test_metrics.json").read_text())["test_accuracy"]
    )
    assert te.data.tags["hyrax.train_run"] == str(trained.path.resolve())


def _tables(db: Path) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db)) as con:
        return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_a_new_mlflow_store_starts_as_a_copy_of_an_empty_one_mlflow_built(tmp_path):
    """MLflow builds a store by running each schema migration (seconds for every new results folder); a new
    store is a copy of an empty one it built once per schema version, which it opens as its own."""
    from mlflow import MlflowClient
    from mlflow.store.db.utils import _get_latest_schema_revision

    from libhyrax.data.sample import cache_dir
    from libhyrax.training.tracking import seed_store

    store = tmp_path / "mlflow.db"
    seed_store(store)
    template = cache_dir() / f"mlflow-store-{_get_latest_schema_revision()}.db"
    assert template.is_file() and _tables(store) == _tables(template) and "experiments" in _tables(store)
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]  # no temporary file left
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    assert [e.name for e in client.search_experiments()] == ["Default"]  # added by MLflow on opening, as ever
    client.create_experiment("hyrax")
    seed_store(store)  # a store that exists is left as it is
    assert {e.name for e in client.search_experiments()} == {"Default", "hyrax"}


def test_without_a_copy_mlflow_builds_the_store_itself(tmp_path, monkeypatch):
    from mlflow.store.db import utils as db_utils

    from libhyrax.training.tracking import seed_store

    monkeypatch.setenv("HYRAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda engine: 1 / 0)
    seed_store(tmp_path / "mlflow.db")  # no error: MLflow builds it when it opens it
    assert not (tmp_path / "mlflow.db").exists() and list((tmp_path / "cache").iterdir()) == []


def test_test_stage_needs_a_test_split(survey, workdir, shared_mlflow):
    from libhyrax.stages.test import test as run_test

    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=1)
    cfg["split"] = {"train": 0.9, "validate": 0.1, "test": 0.0}
    trained = train(cfg)
    with pytest.raises(UsageError, match="has no test split"):
        run_test(cfg, from_run=trained.path)


# --- bad input -------------------------------------------------------------------------------------


class NaNAfterFive(HyraxModel):
    """Its loss turns NaN at the 6th step: epoch 2, batch 2 with 4 steps per epoch."""

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        self.lin = nn.Linear(int(np.prod(data_sample.shape[1:])), 2)
        self.steps = 0

    def forward(self, x):
        return self.lin(x.flatten(1))

    def train_batch(self, x):
        self.steps += self.training  # validate_batch calls this too, in eval mode
        loss = self(x).pow(2).mean()
        return {"loss": loss * float("nan") if self.steps == 6 else loss}

    def infer_batch(self, x):
        return self(x)


class NoLoss(NaNAfterFive):
    def train_batch(self, x):
        return {"total": self(x).sum()}


class TensorInputs(NaNAfterFive):
    @staticmethod
    def prepare_inputs(batch):
        return torch.from_numpy(batch["image"])


def test_a_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_last_good_checkpoint(
    survey, workdir, shared_mlflow
):
    cfg = small_config(survey, workdir / "results", model="NaNAfterFive", mlflow_uri=shared_mlflow, epochs=3)
    with pytest.raises(RunError, match="the loss became nan in epoch 2, batch 2"):
        train(cfg)
    [run] = failed_runs(workdir / "results")
    assert not (run / "model.pt").exists() and not (run / "model.json").exists()
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["trainer"]["iteration"] == 4  # the end of epoch 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert "the loss became nan" in json.loads((run / "provenance.json").read_text())["error"]


@pytest.mark.parametrize(
    "model, message",
    [
        ("NoLoss", "train_batch must return a dict with 'loss'; it returned \\['total'\\]"),
        ("TensorInputs", "prepare_inputs returned a torch tensor; return numpy arrays"),
    ],
)
def test_a_model_breaking_the_contract_fails_the_run_clearly(survey, workdir, shared_mlflow, model, message):
    cfg = small_config(survey, workdir / "results", model=model, mlflow_uri=shared_mlflow)
    with pytest.raises(ModelError, match=message):
        train(cfg)
    assert all(not (r / "model.pt").exists() for r in (workdir / "results").glob("*-train-*"))


def test_a_data_sample_too_small_for_the_model(tmp_path, workdir, shared_mlflow):
    from libhyrax.data import write_cutouts

    tiny = write_cutouts(
        tmp_path / "tiny.h5",
        [f"o{i}" for i in range(20)],
        np.random.default_rng(0).normal(size=(20, 3, 8, 8)),
    )
    cfg = small_config(tiny, workdir / "results", mlflow_uri=shared_mlflow)
    cfg["data_request"]["train"]["survey"]["fields"] = ["image", "object_id"]
    with pytest.raises(ModelError, match="at least 16x16 pixels; the data sample is 8x8"):
        train(cfg)


def test_fine_tuning_weights_that_dont_fit_name_the_layers(survey, workdir, shared_mlflow):
    cnn = train(
        small_config(survey, workdir / "results", model="HyraxCNN", mlflow_uri=shared_mlflow, epochs=1)
    )
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow)
    with pytest.raises(ModelError, match="missing from the file: encoder.0.0.weight"):
        train(cfg, overrides=[f"train.model_weights_file='{cnn.path / 'model.pt'}'"])


def test_resume_refuses_what_is_not_an_interrupted_train_run(survey, workdir, shared_mlflow):
    from libhyrax.stages.test import test as run_test

    cfg = small_config(survey, workdir / "results", model="HyraxCNN", mlflow_uri=shared_mlflow, epochs=1)
    done = train(cfg)
    with pytest.raises(UsageError, match="already finished"):
        train(resume=done.path)
    tested = run_test(cfg, from_run=done.path)
    with pytest.raises(UsageError, match="is a test run, not a train run"):
        train(resume=tested.path)
    with pytest.raises(UsageError, match="not a Hyrax results directory"):
        train(resume=workdir)
    with pytest.raises(RunError):
        train(cfg, stop_at_iteration=2)  # dies in its first epoch: no checkpoint yet
    [early] = failed_runs(workdir / "results")
    with pytest.raises(UsageError, match="it has no checkpoint"):
        train(resume=early)


def test_sigterm_in_the_first_epoch_does_not_suggest_a_resume_that_finds_no_checkpoint(
    survey, workdir, shared_mlflow, monkeypatch, caplog
):
    import signal

    from ignite.engine import Events

    from libhyrax.stages import train as train_stage

    def sigterm_at(trainer, iteration):  # Slurm's time limit, in the middle of epoch 1
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=iteration), lambda _: os.kill(os.getpid(), signal.SIGTERM)
        )

    monkeypatch.setattr(train_stage, "attach_stop_at", sigterm_at)
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, stop_at_iteration=2)  # 4 steps per epoch: before the first checkpoint
    ended = [r.getMessage() for r in caplog.records if r.name == "hyrax.runs" and r.levelname == "ERROR"]
    assert len(ended) == 1 and "start a new run" in ended[0] and "--resume" not in ended[0], ended
    [early] = failed_runs(workdir / "results")
    with pytest.raises(UsageError, match="it has no checkpoint"):
        train(resume=early)  # what --resume would have said


def test_resume_on_the_command_line_exits_2_for_a_wrong_directory(workdir, hyrax):
    proc = hyrax("train", "--resume", str(workdir), cwd=workdir)
    assert proc.returncode == 2 and "not a Hyrax results directory" in proc.stderr


# --- a model class written in a notebook or script -------------------------------------------------

SCRIPT = textwrap.dedent("""
    import sys
    import torch.nn.functional as F
    from torch import nn
    import libhyrax
    from libhyrax.models import HyraxModel, check_model

    class ScriptAE(HyraxModel):
        def __init__(self, config, data_sample):
            super().__init__(config, data_sample)
            c, h, w = data_sample.shape[1:]
            self.latent_dim = self.params.get("latent_dim", 4)
            self.enc = nn.Linear(c * h * w, self.latent_dim)
            self.dec = nn.Linear(self.latent_dim, c * h * w)

        def forward(self, x):
            return self.dec(self.enc(x.flatten(1))).view_as(x)

        def train_batch(self, x):
            return {"loss": F.mse_loss(self(x), x)}

        def infer_batch(self, x):
            return self.enc(x.flatten(1))

    check_model(ScriptAE)
    print(libhyrax.train(sys.argv[1]).path)
""")


def test_a_model_class_from_a_script_trains_and_its_run_rebuilds_it(survey, workdir, shared_mlflow):
    from libhyrax.config import dump_config, load_config

    cfg = small_config(survey, workdir / "results", model="ScriptAE", mlflow_uri=shared_mlflow)
    cfg["model"]["ScriptAE"] = {"latent_dim": 6}
    (workdir / "c.toml").write_text(dump_config(load_config(data=cfg)))
    (workdir / "nb.py").write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "nb.py", "c.toml"], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = workdir / proc.stdout.strip().splitlines()[-1]
    assert (run / "model_source.py").is_file()
    model, desc = load_trained(run)
    assert type(model).__name__ == "ScriptAE" and desc["latent_dim"] == 6
    x = torch.zeros(3, 3, 16, 16)
    assert model.infer_batch(x).shape == (3, 6)
    assert F.mse_loss(model(x), x) >= 0


# --- two processes (gloo) --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_gloo_match_one_process(survey, workdir, shared_mlflow):
    from libhyrax.config import dump_config, load_config

    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=3)
    (workdir / "c.toml").write_text(dump_config(load_config(data=cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "hyrax_cli",
            "train",
            "-c",
            "c.toml",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [printed] = [ln for ln in proc.stdout.splitlines() if ln.strip()]  # only rank 0 prints
    two = workdir / printed
    assert json.loads((two / "provenance.json").read_text())["stage_info"]["world_size"] == 2
    one = train(cfg)
    l2, l1 = (np.array([float(r["train_loss"]) for r in metrics(r)]) for r in (two, one.path))
    assert len(l2) == 3 and np.all(np.isfinite(l2))
    np.testing.assert_allclose(l2, l1, rtol=0.1)
    assert len(list((workdir / "results").glob("*-train-*"))) == 2  # rank 1 wrote nothing


def test_a_checkpoint_serves_as_a_weights_file(survey, workdir, shared_mlflow):
    """`test.model_weights_file = .../checkpoints/best.pt` (or infer's, or fine-tuning from one)."""
    from libhyrax.models import load_weights

    run = train(small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=1))
    model, _ = load_trained(run.path)
    best = torch.load(run.path / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    load_weights(model, run.path / "checkpoints" / "best.pt")
    assert all(torch.equal(model.state_dict()[k], best["model"][k]) for k in best["model"])


def test_the_handlers_attach_to_any_ignite_engine():
    """Best epoch and early stopping read only the trainer's state.metrics (one epoch = one batch here)."""
    from ignite.engine import Engine, Events

    from libhyrax.training.handlers import attach_best_epoch, attach_early_stopping

    losses = iter([3.0, 2.0, 2.5, 2.4, 2.6, 1.0])
    trainer = Engine(lambda engine, batch: None)
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda engine: setattr(engine.state, "metrics", {"train_loss": next(losses)})
    )
    best = attach_best_epoch(trainer)
    attach_early_stopping(trainer, best, patience=3)
    trainer.run([0], max_epochs=10)
    assert trainer.state.epoch == 5  # epochs 3, 4 and 5 don't beat epoch 2
    assert best.state_dict() == {"best_score": 2.0, "best_epoch": 2, "bad_epochs": 3}


def test_an_mlflow_store_failure_mid_run_is_a_warning_not_a_failed_run(caplog):
    from libhyrax.training.tracking import MLflowRun

    class BrokenClient:
        def log_batch(self, *args, **kwargs):
            raise RuntimeError("database is locked")

    run = MLflowRun.__new__(MLflowRun)
    run.client, run.run_id = BrokenClient(), "r1"
    run.log_metrics({"loss": 1.0}, step=1)  # must not raise
    assert run.client is None  # tracking is off for the rest of the run
    run.log_metrics({"loss": 0.5}, step=2)
    run.end(ok=True)


RANK_WITHOUT_VALUES = textwrap.dedent("""
    import os, sys, torch
    rank = int(sys.argv[1])
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=rank,
                                         world_size=2)
    from libhyrax.training.distributed import sum_over_ranks
    out = sum_over_ranks({"loss": 2.0, "n": 3.0} if rank == 0 else {})
    assert out == {"loss": 2.0, "n": 3.0}, out
    torch.distributed.barrier()
    os._exit(0)  # gloo's teardown can abort when two ranks exit at once; the check above is what counts
""")


def test_a_rank_with_no_validation_batches_does_not_hang_the_others(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_WITHOUT_VALUES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port]) for r in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]


def test_train_epochs_below_one_is_a_config_error(survey, workdir, shared_mlflow):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=-1)
    with pytest.raises(ConfigError, match="train.epochs must be at least 1, not -1"):
        train(cfg)


def test_a_run_that_died_after_its_last_checkpoint_is_not_trained_again(
    survey, workdir, shared_mlflow, monkeypatch
):
    import libhyrax.stages.train as stage

    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=2)
    whole = train(cfg)

    def lost(*args, **kwargs):
        raise RuntimeError("node lost while saving the model")

    monkeypatch.setattr(stage, "save_trained", lost)
    with pytest.raises(RuntimeError, match="node lost"):
        train(cfg)
    monkeypatch.undo()
    [crashed] = failed_runs(workdir / "results")
    resumed = train(resume=crashed)
    assert same_weights(weights(resumed), weights(whole))
    assert [r["epoch"] for r in metrics(resumed)] == ["1", "2"]


# --- a new run from a checkpoint file (train.resume, the reference's key) -------------------------


def test_a_new_run_from_checkpoint_epoch_1_goes_on_as_the_uninterrupted_run(survey, workdir, shared_mlflow):
    import hashlib

    # SimCLR draws random augmentations each step: going on exactly needs the checkpoint's RNG state too
    cfg = small_config(survey, workdir / "results", model="SimCLR", mlflow_uri=shared_mlflow, epochs=2)
    whole = train(cfg)
    kept = sorted(p.name for p in (whole.path / "checkpoints").iterdir())
    assert kept == [
        "best.pt",
        "checkpoint_epoch_2.pt",
        "last.pt",
    ]  # the newest epoch's only, as the reference
    assert (whole.path / "checkpoints" / "checkpoint_epoch_2.pt").samefile(
        whole.path / "checkpoints" / "last.pt"
    )
    first = train(cfg, overrides=["train.epochs=1"])
    ckpt = first.path / "checkpoints" / "checkpoint_epoch_1.pt"
    resumed = train(cfg, overrides=[f"train.resume='{ckpt}'"])  # epochs = 2: trains epoch 2 only
    assert resumed.path not in (first.path, whole.path) and ckpt.is_file()
    assert same_weights(weights(resumed), weights(whole), atol=1e-6)
    assert [r["epoch"] for r in metrics(resumed)] == ["2"]
    np.testing.assert_allclose(
        float(metrics(resumed)[0]["train_loss"]), float(metrics(whole)[1]["train_loss"]), rtol=1e-5
    )
    prov = json.loads((resumed.path / "provenance.json").read_text())
    assert prov["stage_info"]["started_from_checkpoint"] == {
        "path": str(ckpt.resolve()),
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "epoch": 1,
    }
    assert prov["stage_info"]["epochs_done"] == 2 and str(ckpt.resolve()) in [
        i["path"] for i in prov["inputs"]
    ]
    assert (resumed.path / "checkpoints" / "checkpoint_epoch_2.pt").is_file()


def test_train_resume_refuses_a_checkpoint_that_wont_do_before_any_run(survey, workdir, shared_mlflow):
    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=1)
    run = train(cfg)
    ckpt = run.path / "checkpoints" / "checkpoint_epoch_1.pt"
    torch.save({"model": {}, "optimizer": {}, "trainer": nn.Linear(2, 2)}, workdir / "pickled.pt")
    (workdir / "text.pt").write_text("not a checkpoint\n")
    cases = [
        ([f"train.resume='{workdir / 'nope.pt'}'"], "nope.pt': no such file"),
        ([f"train.resume='{ckpt}'"], "its run had trained 1 epochs; train.epochs counts from the start"),
        (
            [
                f"train.resume='{ckpt}'",
                "train.epochs=2",
                f"train.model_weights_file='{run.path / 'model.pt'}'",
            ],
            "cannot set both",
        ),
        ([f"train.resume='{run.path / 'model.pt'}'", "train.epochs=2"], "not a training checkpoint"),
        ([f"train.resume='{workdir / 'pickled.pt'}'", "train.epochs=2"], "loading them could run code"),
        ([f"train.resume='{workdir / 'text.pt'}'", "train.epochs=2"], "not a PyTorch checkpoint"),
        (
            [f"train.resume='{ckpt}'", "train.epochs=2", "model.HyraxAutoencoder.latent_dim=16"],
            r"train.resume: the weights in \S+checkpoint_epoch_1.pt don't fit HyraxAutoencoder",
        ),
        (
            [f"train.resume='{ckpt}'", "train.epochs=2", "optimizer.name=torch.optim.SGD"],
            "its optimizer is torch.optim.adam.Adam, but optimizer.name makes torch.optim.sgd.SGD",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            train(cfg, overrides=overrides)
    assert len(list((workdir / "results").glob("*-train-*"))) == 1  # none of them left a run


def test_train_resume_on_the_command_line(survey, workdir, shared_mlflow, hyrax):
    import tomlkit

    cfg = small_config(survey, workdir / "results", mlflow_uri=shared_mlflow, epochs=1)
    (workdir / "c.toml").write_text(tomlkit.dumps(cfg))
    ckpt = train(cfg).path / "checkpoints" / "checkpoint_epoch_1.pt"
    proc = hyrax(
        "train", "-c", "c.toml", "--set", "train.epochs=2", "--set", f"train.resume='{ckpt}'", cwd=workdir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in metrics(workdir / proc.stdout.strip())] == ["2"]
    proc = hyrax(
        "train", "-c", "c.toml", "--set", "train.epochs=2", "--set", "train.resume='gone.pt'", cwd=workdir
    )
    assert proc.returncode == 2 and "train.resume = 'gone.pt': no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
