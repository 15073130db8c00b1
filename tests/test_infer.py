"""`infer` end to end on the built-in sample: a real (small, untrained) autoencoder saved as a train run,
latents in input order, the train run's transforms, resume, 3 Slurm-array shards as separate processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from libhyrax import hdf5
from libhyrax.config import resolve
from libhyrax.data import open_group
from libhyrax.errors import UsageError
from libhyrax.results import find_run
from libhyrax.rundir import read_provenance, upstream_paths
from libhyrax.runs import open_run

SMALL_MODEL = {
    "model": {"name": "HyraxAutoencoder", "HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 8}}
}


def make_train_run(root, **data_set):
    """A train run as `train` leaves it (model.pt, model.json, runtime_config.toml), without training."""
    import torch

    from libhyrax.models import HyraxAutoencoder, build_model, describe, prepare, save_trained

    torch.manual_seed(0)
    cfg = resolve({**SMALL_MODEL, "general": {"results_dir": str(root)}, "data_set": data_set})
    sample = prepare(HyraxAutoencoder, open_group(cfg, "train").read(0, 1))
    model = build_model(HyraxAutoencoder, cfg, sample)
    with open_run("train", cfg) as run:
        save_trained(run.path, model, describe(model, cfg, sample))
    return run.final_path


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    return make_train_run(tmp_path_factory.mktemp("train") / "results", asinh_scale=0.2)


def test_infer_imports_no_training_stack(train_run, tmp_path):
    """infer runs a trained model: it imports neither Ignite nor MLflow (seconds of every infer's start)."""
    code = textwrap.dedent(f"""
        import sys
        from libhyrax.stages.infer import infer
        infer({{"general": {{"results_dir": {str(tmp_path / "results")!r}}}}}, from_run={str(train_run)!r})
        heavy = ("ignite", "mlflow", "sklearn", "umap", "chromadb", "bokeh")
        print(",".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"infer imported {out.strip()}"


def read_latents(run_dir):
    with hdf5.open_result(run_dir, "latents") as f:
        return {k: (hdf5.read_ids(f[k]) if k == "object_id" else f[k][:]) for k in f}


@pytest.fixture(scope="module")
def full(train_run, tmp_path_factory):
    """One unsharded run over the whole sample, shared by the comparisons below."""
    from libhyrax.stages.infer import infer

    root = tmp_path_factory.mktemp("full") / "results"
    result = infer({"general": {"results_dir": str(root)}}, from_run=train_run)
    return result.path, read_latents(result.path)


def test_latents_of_every_object_in_input_order(train_run, full):
    from libhyrax.models import load_trained

    path, got = full
    assert path.name.endswith(tuple("0123456789abcdef")) and "-infer-" in path.name
    cfg = resolve({"data_set": {"asinh_scale": 0.2}})
    group = open_group(cfg, "infer")
    assert list(got["object_id"]) == list(group.object_ids())
    assert got["latent"].shape == (len(group), 8) and got["latent"].dtype == np.float32
    assert got["recon_error"].shape == (len(group),) and (got["recon_error"] > 0).all()
    # rows 500..505 by hand, through the same model and transforms
    import torch

    model, _ = load_trained(train_run)
    with torch.inference_mode():
        want = model.infer_outputs(torch.from_numpy(group.read(500, 505)["image"]))
    np.testing.assert_allclose(got["latent"][500:505], want["latent"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["recon_error"][500:505], want["recon_error"].numpy(), rtol=1e-5)
    prov = read_provenance(path)
    assert prov["status"] == "complete" and prov["stage_info"]["n_objects"] == len(group)
    assert [u.resolve() for u in upstream_paths(path)] == [train_run.resolve()]


def test_uses_the_train_runs_transforms_not_the_current_config(train_run, full, workdir):
    from libhyrax.stages.infer import infer

    result = infer({"data_set": {"asinh_scale": 5.0, "crop_to": 32}}, from_run=train_run)
    np.testing.assert_array_equal(read_latents(result.path)["latent"], full[1]["latent"])
    assert read_provenance(result.path)["stage_info"]["data_set"]["asinh_scale"] == 0.2


def interrupted_infer(train_run, monkeypatch, cfg, batch: int = 3):
    """An infer run from `train_run` that failed in its `batch`th batch; returns its .failed directory."""
    from libhyrax.inference import TorchEngine
    from libhyrax.stages.infer import infer

    real, calls = TorchEngine.outputs, []

    def failing(self, batch_):
        calls.append(1)
        if len(calls) == batch:
            raise RuntimeError("node lost")
        return real(self, batch_)

    monkeypatch.setattr(TorchEngine, "outputs", failing)
    with pytest.raises(RuntimeError, match="node lost"):
        infer(cfg, from_run=train_run)
    monkeypatch.setattr(TorchEngine, "outputs", real)
    return next(Path(cfg["general"]["results_dir"]).glob("*-infer-*.failed"))


def test_failed_run_resumes_to_the_exact_result(train_run, full, workdir, monkeypatch):
    from libhyrax.stages.infer import infer

    cfg = resolve({"data_loader": {"batch_size": 128}})
    failed = interrupted_infer(train_run, monkeypatch, cfg)
    assert read_provenance(failed)["status"] == "failed"
    with h5py.File(failed / "latents.h5") as f:
        assert f.attrs["rows_written"] == 256
    result = infer({"data_loader": {"batch_size": 128}}, from_run=train_run, resume=failed)
    assert result.path == failed.with_name(failed.name.removesuffix(".failed"))
    got = read_latents(result.path)
    assert list(got["object_id"]) == list(full[1]["object_id"])
    np.testing.assert_array_equal(got["latent"], full[1]["latent"])
    assert read_provenance(result.path)["stage_info"]["resumed_at_row"] == 256


def test_three_slurm_array_tasks_read_back_as_the_unsharded_run(train_run, full, workdir, hyrax):
    """Three separate processes with the Slurm array variables set, as `sbatch --array=4-8:2` runs them."""
    env = {
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_MIN": "4",
        "SLURM_ARRAY_TASK_STEP": "2",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "SLURM_JOB_ID": "4243",
    }
    outs = []
    for task in (8, 4):  # out of order, and one missing at first
        p = hyrax(
            "infer",
            "--from",
            str(train_run),
            cwd=workdir,
            env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
            check=True,
        )
        outs.append(p.stdout.strip())
    run_dir = workdir / "results" / "slurm-4242-infer-array"
    assert outs == ["results/slurm-4242-infer-array"] * 2
    with pytest.raises(
        UsageError, match=r"1/3 \(missing\).*--shard 1/3 --resume"
    ):  # as downstream stages read it
        find_run("infer", {}, run_dir)
    hyrax("infer", "--from", str(train_run), cwd=workdir, env={**env, "SLURM_ARRAY_TASK_ID": "6"}, check=True)
    assert sorted(x.name for x in run_dir.glob("latents.*")) == [
        f"latents.shard-000{i}-of-0003.h5" for i in range(3)
    ]
    got = read_latents(run_dir)
    assert list(got["object_id"]) == list(full[1]["object_id"])
    for key in ("latent", "recon_error"):
        np.testing.assert_array_equal(got[key], full[1][key])
    prov = read_provenance(run_dir)
    assert prov["status"] == "complete" and prov["shards"] == ["complete"] * 3


def test_plain_loop_shards_share_one_directory(train_run, full, workdir):
    from libhyrax.stages.infer import infer

    paths = {infer(from_run=train_run, shard=f"{i}/2").path for i in (1, 0)}
    assert len(paths) == 1
    np.testing.assert_array_equal(read_latents(paths.pop())["latent"], full[1]["latent"])


def test_resume_of_a_sharded_run_needs_the_shard(train_run, workdir):
    from libhyrax.stages.infer import infer

    path = infer(from_run=train_run, shard="0/2").path
    with pytest.raises(UsageError, match="--shard I/2"):
        infer(from_run=train_run, resume=path)


@pytest.mark.parametrize("workers", [0, 2])
def test_long_unicode_ids_and_worker_processes_keep_ids_and_order(train_run, full, workdir, workers):
    """Ids wider than the writer's default 64 bytes (and not ASCII) come through unchanged; reading in
    DataLoader worker processes (data_loader.num_workers) gives the same rows in the same order."""
    from libhyrax.data import write_cutouts
    from libhyrax.stages.infer import infer

    sample = open_group(resolve({"data_set": {"transform": "none"}}), "infer").read(0, 37)
    ids = np.array([f"ø-{i:03d}-" + "x" * 90 for i in range(37)])
    path = write_cutouts(workdir / "long.h5", ids, sample["image"])
    spec = {"dataset_class": "HyraxHDF5Dataset", "data_location": str(path), "fields": ["image", "object_id"]}
    cfg = {"data_request": {"infer": {"c": spec}}, "data_loader": {"batch_size": 8, "num_workers": workers}}
    got = read_latents(infer(cfg, from_run=train_run).path)
    assert list(got["object_id"]) == list(ids)
    by_id = dict(zip(full[1]["object_id"], full[1]["latent"], strict=True))
    want = np.stack([by_id[i] for i in sample["object_id"]])
    np.testing.assert_allclose(got["latent"], want, rtol=1e-5, atol=1e-6)


def test_auto_engine_runs_onnxruntime_on_a_cpu_with_torchs_outputs(train_run, full, workdir, monkeypatch):
    """The default engine ("auto") converts the model to onnxruntime for a large run on a CPU; its latents
    and reconstruction errors are torch's (within 1e-5), and provenance says which runtime ran."""
    from libhyrax import inference
    from libhyrax.stages.infer import infer

    _, torch_out = full
    monkeypatch.setattr(inference, "ONNX_MIN_ROWS", 100)  # the sample's 1,000 objects count as a large run
    result = infer({"general": {"results_dir": "results", "device": "cpu"}}, from_run=train_run)
    info = read_provenance(result.path)["stage_info"]
    assert info["runtime"] == "onnxruntime"
    got = read_latents(result.path)
    assert list(got["object_id"]) == list(torch_out["object_id"])
    np.testing.assert_allclose(got["latent"], torch_out["latent"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["recon_error"], torch_out["recon_error"], rtol=1e-4, atol=1e-7)


def test_auto_engine_stays_on_torch_for_small_runs_and_models_that_dont_convert(
    train_run, full, workdir, monkeypatch, caplog
):
    from libhyrax import inference, onnx_io
    from libhyrax.stages.infer import infer

    _, torch_out = full
    small = infer(
        {"general": {"results_dir": "results", "device": "cpu"}}, from_run=train_run
    )  # 1,000 < 5,000
    assert read_provenance(small.path)["stage_info"]["runtime"] == "torch"

    def broken(model, example, latent_only=False):
        raise RuntimeError("Unsupported: aten::something_odd")

    monkeypatch.setattr(inference, "ONNX_MIN_ROWS", 100)
    monkeypatch.setattr(onnx_io, "in_memory_session", broken)
    with caplog.at_level("INFO", logger="hyrax.infer"):
        result = infer({"general": {"results_dir": "results", "device": "cpu"}}, from_run=train_run)
    assert read_provenance(result.path)["stage_info"]["runtime"] == "torch"
    assert "did not convert to ONNX: Unsupported: aten::something_odd" in caplog.text
    np.testing.assert_array_equal(read_latents(result.path)["latent"], torch_out["latent"])


def test_auto_engine_refuses_a_conversion_whose_outputs_differ(train_run, workdir, monkeypatch, caplog):
    from libhyrax import inference, onnx_io
    from libhyrax.stages.infer import infer

    real = onnx_io.run_session
    monkeypatch.setattr(inference, "ONNX_MIN_ROWS", 100)
    monkeypatch.setattr(onnx_io, "run_session", lambda s, x: {k: v + 0.01 for k, v in real(s, x).items()})
    with caplog.at_level("WARNING", logger="hyrax.infer"):
        result = infer({"general": {"results_dir": "results", "device": "cpu"}}, from_run=train_run)
    assert read_provenance(result.path)["stage_info"]["runtime"] == "torch"
    assert "its ONNX conversion differs from torch by 0.01" in caplog.text


def test_engine_choice_lists_the_known_ones(train_run, workdir):
    from libhyrax.errors import ConfigError
    from libhyrax.stages.infer import infer

    with pytest.raises(ConfigError, match="Known: auto, onnx, torch"):
        infer({"general": {"results_dir": "results"}}, from_run=train_run, engine="tensorrt")


@pytest.mark.parametrize("convert", [False, True])
def test_latents_only_skips_the_decoder_and_keeps_the_latents(train_run, full, workdir, monkeypatch, convert):
    """infer.recon_error = false: the same latents, no /recon_error (torch, and onnxruntime on a CPU), and
    anomaly scores without it."""
    from libhyrax import inference
    from libhyrax.stages.anomaly import anomaly
    from libhyrax.stages.infer import infer

    _, torch_out = full
    if convert:
        monkeypatch.setattr(inference, "ONNX_MIN_ROWS", 100)
    cfg = {"general": {"results_dir": "results", "device": "cpu"}, "infer": {"recon_error": False}}
    result = infer(cfg, from_run=train_run)
    got = read_latents(result.path)
    assert set(got) == {"object_id", "latent", "no_data"}
    assert read_provenance(result.path)["stage_info"]["runtime"] == ("onnxruntime" if convert else "torch")
    np.testing.assert_allclose(got["latent"], torch_out["latent"], rtol=1e-5, atol=1e-5)
    scored = anomaly(cfg, from_run=result.path)
    with h5py.File(scored.file("scores.h5"), "r") as f:
        assert "recon_error" not in f and "knn" in f and len(f["score"]) == len(got["latent"])


@pytest.mark.parametrize(
    "engine, device, rows, runtime",
    [
        ("auto", "cpu", 5000, "onnxruntime"),
        ("auto", "cpu", 4999, "torch"),
        ("auto", "cuda:0", 10**6, "torch"),
        ("torch", "cpu", 10**6, "torch"),
        ("onnx", "cuda", 1, "onnxruntime"),
        ("onnx", "cpu", 0, "onnxruntime"),
    ],
)
def test_the_runtime_is_a_function_of_the_setting_the_device_and_the_rows(engine, device, rows, runtime):
    from libhyrax.inference import choose_runtime

    assert choose_runtime(engine, device, rows) == runtime


def test_a_conversion_returns_a_new_engine_and_leaves_the_torch_one(train_run, full, workdir):
    from libhyrax.inference import TorchEngine, model_input_group

    torch_engine = TorchEngine(train_run, device="cpu")
    batch = model_input_group(resolve({}), torch_engine.data_set).read(0, 64)
    onnx_engine = torch_engine.converted("onnxruntime", batch)
    assert (torch_engine.runtime, onnx_engine.runtime) == ("torch", "onnxruntime")
    assert torch_engine.converted("torch", batch) is torch_engine
    assert onnx_engine.converted("torch", batch) is onnx_engine  # an onnxruntime session stays one
    np.testing.assert_allclose(
        onnx_engine.outputs(batch)["latent"], torch_engine.outputs(batch)["latent"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        torch_engine.outputs(batch)["latent"], full[1]["latent"][:64], rtol=1e-5, atol=1e-6
    )


class CountingModel:
    """A stand-in engine: the mean of each image as a 1-d latent; stops (as Ctrl-C would) in batch
    `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.calls, self.stop_at, self.read_ahead, self.runtime = 0, stop_at, False, "test"

    def outputs(self, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return {"latent": batch["image"].reshape(len(batch["image"]), -1).mean(axis=1, keepdims=True)}


def test_resuming_over_input_whose_ids_changed_is_refused(tmp_path):
    """The file fingerprint can't see it when the data comes through another route (a catalog, a sample
    regenerated): the last written id is checked against the input (write_latents._check_resumed_ids)."""
    from libhyrax.data import write_cutouts
    from libhyrax.errors import DataError
    from libhyrax.stages.infer import write_latents

    def group(name: str, prefix: str):
        images = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype("f4")
        write_cutouts(tmp_path / name, np.array([f"{prefix}{i}" for i in range(40)]), images)
        spec = {
            "dataset_class": "HyraxHDF5Dataset",
            "data_location": str(tmp_path / name),
            "fields": ["image", "object_id"],
            "primary_id_field": "object_id",
        }
        return open_group(resolve({"data_request": {"infer": {"c": spec}}}), "infer")

    out = tmp_path / "latents.h5"
    with pytest.raises(KeyboardInterrupt):
        write_latents(CountingModel(stop_at=3), group("a.h5", "a"), 0, 40, out, batch_size=8)
    with h5py.File(out) as f:
        assert f.attrs["rows_written"] == 16 and not f.attrs["complete"]
    with pytest.raises(DataError, match=r"written from other input \(row 15 is 'a15', the input has 'b15'\)"):
        write_latents(CountingModel(), group("b.h5", "b"), 0, 40, out, batch_size=8)
    write_latents(CountingModel(), group("a2.h5", "a"), 0, 40, out, batch_size=8)  # the same ids: resumes
    with h5py.File(out) as f:
        assert f.attrs["complete"] and hdf5.read_ids(f["object_id"])[-1] == "a39"
