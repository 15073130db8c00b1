"""Trust under faults and hostile input (docs/reliability.md): a resumed run continues with exactly what it
started with; one writer per run; SIGTERM is handled like Ctrl-C; nothing in a results directory runs as
code unless this account wrote it; no secret is written or printed; run names stay inside results_dir."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_infer import interrupted_infer, make_train_run, read_latents

from libhyrax.config import resolve
from libhyrax.errors import UsageError
from libhyrax.rundir import PROVENANCE_FILE, read_provenance, upstream_paths
from libhyrax.runs import open_run

REPO = Path(__file__).resolve().parent.parent


# --- 1. a resumed run continues with exactly what it started with ---------------------------------------

def test_resume_continues_with_its_own_model_not_the_newest(workdir, monkeypatch):
    from libhyrax.stages.infer import infer

    results = workdir / "results"
    model_a = make_train_run(results, asinh_scale=0.2)
    cfg = resolve({"general": {"results_dir": str(results)}, "data_loader": {"batch_size": 128}})
    failed = interrupted_infer(model_a, monkeypatch, cfg)
    model_b = make_train_run(results)  # newer: what `--from` would default to
    with pytest.raises(UsageError, match="continues from .*leave out --from"):
        infer(cfg, resume=failed, from_run=model_b)
    with pytest.raises(UsageError, match="data_loader.batch_size differs"):
        infer(cfg, resume=failed, overrides=["data_loader.batch_size=64"])
    with pytest.raises(UsageError, match="started with --engine auto"):
        infer(resume=failed, engine="onnx")
    done = infer(resume=failed)  # the form `hyrax infer --resume RUN.failed` takes: no --from
    assert [u.resolve() for u in upstream_paths(done.path)] == [model_a.resolve()]
    whole = infer(cfg, from_run=model_a)
    np.testing.assert_array_equal(read_latents(done.path)["latent"], read_latents(whole.path)["latent"])


def test_resume_refuses_an_input_file_that_changed(workdir):
    data = workdir / "data.h5"
    data.write_bytes(b"12345")
    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    with pytest.raises(RuntimeError), open_run("prepare", cfg) as run:
        run.add_input(data)
        raise RuntimeError("killed")
    failed = run.final_path.with_name(run.final_path.name + ".failed")
    data.write_bytes(b"123456")
    from libhyrax.start import start_run

    with pytest.raises(UsageError, match="changed since the run started"):
        start_run("prepare", resume=failed)


# --- 2. one writer per run ---------------------------------------------------------------------------------

def failed_run(cfg, stage="prepare") -> Path:
    with pytest.raises(RuntimeError), open_run(stage, cfg) as run:
        raise RuntimeError("killed")
    return run.final_path.with_name(run.final_path.name + ".failed")


def test_a_second_writer_of_a_run_is_refused_naming_the_first(workdir):
    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    failed = failed_run(cfg)
    with open_run("prepare", cfg, resume=failed) as first:
        # a requeued job and a manual rerun at once: both name the .failed directory
        with pytest.raises(UsageError, match=rf"being written by pid {os.getpid()} on "):
            with open_run("prepare", cfg, resume=failed):
                pass
        assert (first.path / PROVENANCE_FILE).is_file()  # the first writer's run is untouched
    assert read_provenance(first.path)["status"] == "complete"
    with pytest.raises(UsageError, match="already finished"):
        with open_run("prepare", cfg, resume=first.path):
            pass


def test_a_killed_writer_leaves_no_claim_behind(workdir):
    """flock dies with its process: after kill -9 the run resumes at once."""
    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    failed = failed_run(cfg)
    script = textwrap.dedent(f"""
        import time
        from libhyrax.config import resolve
        from libhyrax.runs import open_run
        cfg = resolve({{"general": {{"results_dir": {str(workdir / "results")!r}}}}})
        with open_run("prepare", cfg, resume={str(failed)!r}):
            print("holding", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(UsageError, match=f"being written by pid {proc.pid}"):
            with open_run("prepare", cfg, resume=failed):
                pass
        proc.kill()
    finally:
        proc.wait(10)
    partial = failed.with_name(failed.name.replace(".failed", ".partial"))
    with open_run("prepare", cfg, resume=partial) as run:
        pass
    assert read_provenance(run.path)["status"] == "complete"


def test_an_hdf5_file_open_in_another_process_is_not_taken_for_a_damaged_one(tmp_path):
    from libhyrax.errors import RunError
    from libhyrax.hdf5 import ArrayWriter

    path = tmp_path / "latents.h5"
    ArrayWriter(path, 10, {"latent": ((2,), "<f4")}).close(complete=False)
    script = (
        f"import h5py, time\nf = h5py.File({str(path)!r}, 'a')\n"
        "print('open', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(RunError, match="open for writing in another process"):
            ArrayWriter.reopen(path, 10)
        assert path.exists()
    finally:
        proc.kill()
        proc.wait(10)
    assert ArrayWriter.reopen(path, 10).rows_written == 0


# --- 3. SIGTERM ---------------------------------------------------------------------------------------------

SIGTERM_STAGE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from hyrax_cli.common import run_stage
    from libhyrax import hdf5
    from libhyrax.config import resolve
    from libhyrax.data import open_group
    from libhyrax.results import Result
    from libhyrax.runs import open_run
    from libhyrax.stages.infer import write_latents
    hdf5.FLUSH_BYTES = 1  # every batch is written: the signal lands between written batches

    class Slow:
        latent_dim, read_ahead, calls, runtime = 2, False, 0, "test"  # an engine (libhyrax.inference.Engine)
        def outputs(self, batch):
            self.calls += 1
            if self.calls == 4 and "--resume" not in sys.argv:
                print("ready", file=sys.stderr, flush=True)
                time.sleep(60)
            img = batch["image"]
            return {"latent": np.stack([img.mean((1, 2, 3)), img.max((1, 2, 3))], 1)}

    def body():
        cfg = resolve({"general": {"results_dir": "results"}})
        group = open_group(cfg, "infer")
        resume = sys.argv[2] if len(sys.argv) > 2 else None
        with open_run("infer", cfg, resume=resume) as run:
            write_latents(Slow(), group, 0, 200, run.output("latents"), batch_size=16)
        return Result(run.path)

    run_stage(body)
""")


def test_sigterm_marks_the_run_interrupted_and_it_resumes(workdir):
    (workdir / "stage.py").write_text(SIGTERM_STAGE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "stage.py"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stderr:
            if line.strip() == "ready":
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143 and out == ""
    assert "SIGTERM" in err and "--resume" in err
    failed = next((workdir / "results").glob("*-infer-*.failed"))
    prov = read_provenance(failed)
    assert prov["status"] == "interrupted" and "SIGTERM" in prov["error"]
    with h5py.File(failed / "latents.h5") as f:
        assert f.attrs["rows_written"] == 48 and not f.attrs["complete"]
    again = subprocess.run(
        [sys.executable, "stage.py", "--resume", str(failed)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    got = read_latents(again.stdout.strip())
    assert len(got["object_id"]) == 200 and read_provenance(again.stdout.strip())["status"] == "complete"


# --- 4. empty inputs and all-NaN bands ----------------------------------------------------------------------


def test_an_all_nan_band_is_rejected_by_prepare(workdir, caplog):
    import csv

    from astropy.io import fits

    from libhyrax.stages.prepare import prepare

    folder = workdir / "cutouts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        for band in "gr":
            data = rng.normal(size=(20, 20)).astype("f4")
            if i == 2 and band == "r":
                data[:] = np.nan
            fits.PrimaryHDU(data).writeto(folder / f"o{i}_{band}.fits")
            rows.append(f"o{i},{band},o{i}_{band}.fits")
    (folder / "catalog.csv").write_text("object_id,filter,filename\n" + "\n".join(rows) + "\n")
    result = prepare({"prepare": {"fits_dir": str(folder), "bands": ["g", "r"], "cutout_size": 16}})
    with open(result.file("rejected.csv")) as fh:
        rejected = list(csv.DictReader(fh))
    assert [(r["object_id"], r["band"], r["reason"]) for r in rejected] == [
        ("o2", "r", "every pixel is NaN or inf")
    ]
    assert result.provenance["stage_info"]["n_objects"] == 3
    assert ".partial" not in caplog.text  # messages name no directory that is renamed when the run ends


def test_infer_on_no_objects_is_an_error(workdir):
    from libhyrax.data import write_cutouts
    from libhyrax.errors import DataError
    from libhyrax.stages.infer import infer

    train = make_train_run(workdir / "results")
    write_cutouts(workdir / "empty.h5", np.array([], dtype=str), np.zeros((0, 3, 64, 64), "f4"))
    cut = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(workdir / "empty.h5"),
        "fields": ["image", "object_id"],
        "primary_id_field": "object_id",
    }
    with pytest.raises(DataError, match="holds no objects"):
        infer({"data_request": {"infer": {"c": cut}}}, from_run=train)
    assert not list((workdir / "results").glob("*-infer-*"))


def test_objects_without_data_are_named_and_never_ranked_as_ordinary(workdir, caplog):
    """All-NaN objects (and one with a band of nothing but NaN) read straight from a user's file: infer
    flags them by id, anomaly and rank leave them unscored, never the most ordinary."""
    import csv

    import libhyrax
    from libhyrax.data import write_cutouts

    train = make_train_run(workdir / "results")
    images = np.random.default_rng(0).normal(size=(60, 3, 64, 64)).astype("f4")
    images[[7, 30]] = np.nan
    images[45, 2] = np.inf
    ids = np.array([f"u{i:02d}" for i in range(60)])
    write_cutouts(workdir / "mine.h5", ids, images)
    cut = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(workdir / "mine.h5"),
        "fields": ["image", "object_id"],
        "primary_id_field": "object_id",
    }
    cfg = {
        "data_request": {"infer": {"c": cut}},
        "data_loader": {"batch_size": 16, "num_workers": 2},
        "anomaly": {"top_k": 60},
        "rank": {"top_k": 60},
    }
    latents = libhyrax.infer(cfg, from_run=train)
    assert latents.provenance["stage_info"]["no_data_objects"] == 3
    assert latents.provenance["stage_info"]["no_data_examples"] == ["u07", "u30", "u45"]
    assert "u07, u30, u45" in caplog.text
    scores = libhyrax.anomaly(cfg, from_run=latents.path)
    with h5py.File(scores.file("scores.h5")) as f:
        score = f["score"][:]
    assert np.isnan(score[[7, 30, 45]]).all() and np.isfinite(np.delete(score, [7, 30, 45])).all()
    with open(scores.file("top_anomalies.csv")) as fh:
        listed = [r["object_id"] for r in csv.DictReader(fh)]
    assert len(listed) == 57 and not {"u07", "u30", "u45"} & set(listed)
    (workdir / "labels.csv").write_text("object_id,label\nu01,5\nu02,0\nu03,5\nu04,0\n")
    ranked = libhyrax.rank(cfg, from_run=scores.path, labels=[workdir / "labels.csv"])
    with h5py.File(ranked.file("scores.h5")) as f:
        assert np.isnan(f["score"][[7, 30, 45]]).all()
    with open(ranked.file("top_candidates.csv")) as fh:
        assert not {"u07", "u30", "u45"} & {r["object_id"] for r in csv.DictReader(fh)}


def test_infer_on_data_of_another_cutout_size_says_so_and_exits_2(workdir, hyrax):
    from libhyrax.config import dump_config
    from libhyrax.data import write_cutouts

    train = make_train_run(workdir / "results")  # trained on 64 x 64 cutouts of 3 bands
    write_cutouts(workdir / "small.h5", np.array([f"s{i}" for i in range(8)]), np.zeros((8, 3, 32, 32), "f4"))
    cut = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(workdir / "small.h5"),
        "fields": ["image", "object_id"],
        "primary_id_field": "object_id",
    }
    (workdir / "small.toml").write_text(dump_config(resolve({"data_request": {"infer": {"c": cut}}})))
    proc = hyrax("infer", "--from", str(train), "-c", "small.toml", cwd=workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "takes images of shape (3, 64, 64)" in proc.stderr and "has (3, 32, 32)" in proc.stderr


def test_nan_pixels_replaced_in_worker_processes_are_counted(workdir):
    from libhyrax.data import write_cutouts
    from libhyrax.stages.infer import infer

    train = make_train_run(workdir / "results")
    images = np.random.default_rng(0).normal(size=(40, 3, 64, 64)).astype("f4")
    images[::4, 0, :2, :5] = np.nan  # 10 objects x 10 pixels
    write_cutouts(workdir / "nan.h5", np.array([f"n{i}" for i in range(40)]), images)
    cut = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(workdir / "nan.h5"),
        "fields": ["image", "object_id"],
        "primary_id_field": "object_id",
    }
    for workers in (0, 2):
        res = infer(
            {"data_request": {"infer": {"c": cut}}, "data_loader": {"num_workers": workers, "batch_size": 8}},
            from_run=train,
        )
        assert res.provenance["stage_info"]["nan_pixels_replaced"] == 100, workers


# --- 5. no code runs from data ------------------------------------------------------------------------------


class Payload:
    """Unpickling this creates a marker file: what a crafted pickle in a shared results directory does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def colleague_key(tmp_path, monkeypatch):
    """Switch to another account's signing key: what they wrote, this account didn't."""

    def use(name):
        monkeypatch.setenv("HYRAX_SIGNING_KEY", str(tmp_path / f"{name}.key"))

    return use


def test_a_run_refused_before_any_work_is_not_kept_and_does_not_suggest_resume(
    workdir, colleague_key, caplog
):
    """`hyrax umap --reducer RUN` with a reducer this account didn't write: refused, exit 2, and no
    `.failed` umap run left behind whose message suggests a --resume that can't help."""
    import libhyrax
    from libhyrax import hdf5
    from libhyrax.reducers.pca import PCAReducer

    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    latent = np.random.default_rng(0).normal(size=(40, 4)).astype("f4")
    with open_run("infer", cfg) as inferred:
        hdf5.write_arrays(inferred.file("latents.h5"), np.array([f"o{i}" for i in range(40)]), latent=latent)
    colleague_key("colleague")
    with open_run("umap", cfg) as theirs:
        PCAReducer(n_components=2).fit(latent).save(theirs.file("reducer.pkl"))
    colleague_key("me")
    before = sorted(p.name for p in (workdir / "results").iterdir())
    with pytest.raises(UsageError, match="reducer.pkl"):
        libhyrax.umap(cfg, from_run=inferred.path, reducer=theirs.path)
    assert sorted(p.name for p in (workdir / "results").iterdir()) == before
    assert "--resume" not in caplog.text and "no results directory is kept" in caplog.text


def test_a_reducer_pickle_from_someone_else_is_not_loaded(workdir, colleague_key):
    from libhyrax.reducers import Reducer
    from libhyrax.reducers.pca import PCAReducer

    marker = workdir / "pwned"
    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    with open_run("umap", cfg) as theirs:
        (theirs.path / "reducer.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UsageError, match="refusing to load .*reducer.pkl.*trusted_runs"):
        Reducer.load(theirs.path)  # what `hyrax umap --reducer RUN` does, with general.trusted_runs
    assert not marker.exists()
    # a reducer this account wrote loads; the same file from another account does not
    mine = PCAReducer(n_components=2).fit(np.random.default_rng(0).normal(size=(50, 4)).astype("f4"))
    mine.save(workdir / "mine.pkl")
    assert isinstance(Reducer.load(workdir / "mine.pkl"), PCAReducer)
    colleague_key("colleague")
    with pytest.raises(UsageError, match="not written by Hyrax on this account"):
        Reducer.load(workdir / "mine.pkl")
    # trusting the run by name is the explicit yes
    (theirs.path / "reducer.pkl").write_bytes(pickle.dumps(mine))
    assert isinstance(Reducer.load(theirs.path, trusted_runs=[str(theirs.path)]), PCAReducer)


def test_model_source_from_someone_else_is_not_run(workdir, colleague_key):
    from libhyrax.inference import TorchEngine

    marker = workdir / "pwned"
    train = make_train_run(workdir / "results")
    desc = json.loads((train / "model.json").read_text())
    desc["source_file"] = "model_source.py"
    (train / "model.json").write_text(json.dumps(desc))
    (train / "model_source.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    with pytest.raises(UsageError, match="refusing to load .*model_source.py"):
        TorchEngine(train, device="cpu")
    assert not marker.exists()
    desc["source_file"] = "../../evil.py"  # model.json can't point the loader at another file either
    (train / "model.json").write_text(json.dumps(desc))
    with pytest.raises(UsageError, match="model_source.py"):
        TorchEngine(train, device="cpu")
    desc |= {"source_file": None, "import_path": "os.system"}
    (train / "model.json").write_text(json.dumps(desc))
    from libhyrax.errors import ModelError

    with pytest.raises(ModelError, match="not a torch module class"):
        TorchEngine(train, device="cpu")


def crafted_import_path(train: Path, import_path: str, name: str = "Crafted") -> None:
    desc = json.loads((train / "model.json").read_text()) | {"import_path": import_path, "name": name}
    (train / "model.json").write_text(json.dumps(desc))  # edited: its signature no longer matches


def test_a_crafted_import_path_is_not_imported_from_the_cli(workdir, hyrax):
    train = make_train_run(workdir / "results")
    crafted_import_path(train, "this.Foo", name="HyraxAutoencoder")  # `import this` prints the Zen of Python
    proc = hyrax("infer", "--from", str(train), cwd=workdir)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "refusing to import 'this.Foo'" in proc.stderr and "trusted_runs" in proc.stderr
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr


def test_a_module_planted_beside_a_notebook_is_not_imported(workdir, monkeypatch):
    import libhyrax

    marker = workdir / "pwned"
    train = make_train_run(workdir / "results")
    (workdir / "planted.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nfrom torch import nn\nModel = nn.Linear\n"
    )
    monkeypatch.syspath_prepend(str(workdir))  # a notebook's folder is on sys.path
    crafted_import_path(train, "planted.Model")
    with pytest.raises(UsageError, match="refusing to import 'planted.Model'"):
        libhyrax.load_trained(train)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017  (the yes imports it; it is no Hyrax model, so it fails after)
        libhyrax.load_trained(train, trusted_runs=[str(train)])
    assert marker.exists()


def test_a_notebook_model_trained_here_loads_and_one_from_elsewhere_needs_a_yes(workdir, colleague_key):
    """A class written in a notebook is saved as model_source.py and signed (models.saving.save_trained):
    this account's later runs load it; another account's need the run named in general.trusted_runs."""
    from libhyrax import trust
    from libhyrax.models.saving import model_class_for

    train = make_train_run(workdir / "results")
    source = "from libhyrax.models import HyraxAutoencoder\n\n\nclass Mine(HyraxAutoencoder):\n    pass\n"
    (train / "model_source.py").write_text(source)
    desc = json.loads((train / "model.json").read_text()) | {
        "source_file": "model_source.py",
        "class": "Mine",
    }
    (train / "model.json").write_text(json.dumps(desc))
    trust.sign(train / "model_source.py")  # as save_trained does
    assert model_class_for(desc, train).__name__ == "Mine"
    colleague_key("colleague")
    with pytest.raises(UsageError, match="trusted_runs"):
        model_class_for(desc, train)
    assert model_class_for(desc, train, trusted_runs=[str(train)]).__name__ == "Mine"


def test_an_index_kept_with_pickle_is_signed_and_checked(tmp_path, colleague_key):
    from libhyrax.vector_index import VectorIndex
    from libhyrax.vector_index.exact import ExactIndex

    class PickledIndex(ExactIndex):  # stands in for qdrant's local mode, which pickles its points
        backend = "pickled-test"
        pickled_files = "pickled/*.pkl"

        def _persist(self):
            super()._persist()
            (self.path / "pickled").mkdir(exist_ok=True)
            (self.path / "pickled" / "points.pkl").write_bytes(pickle.dumps([1, 2, 3]))

    idx = VectorIndex.create(tmp_path / "run" / "index", 4, backend="pickled-test", device="cpu")
    idx.add(["a", "b"], np.eye(2, 4, dtype="f4"))
    idx.persist()
    assert len(VectorIndex.open(tmp_path / "run" / "index")) == 2
    (tmp_path / "run" / "index" / "pickled" / "points.pkl").write_bytes(
        pickle.dumps(Payload(tmp_path / "pwned"))
    )
    with pytest.raises(UsageError, match="refusing to load .*points.pkl"):
        VectorIndex.open(tmp_path / "run" / "index")
    assert not (tmp_path / "pwned").exists()


def test_a_qdrant_local_index_is_signed_and_an_edited_one_refused(tmp_path):
    pytest.importorskip("qdrant_client")
    from libhyrax.vector_index import VectorIndex

    idx = VectorIndex.create(tmp_path / "run" / "index", 4, backend="qdrant")
    idx.add(["a", "b", "c"], np.eye(3, 4, dtype="f4"))
    idx.persist()
    assert VectorIndex.open(tmp_path / "run" / "index").search(np.eye(1, 4, dtype="f4"), 1)[0][0, 0] == "a"
    [store] = (tmp_path / "run" / "index" / "qdrant").rglob("*.sqlite")  # qdrant-client pickles points in it
    with open(store, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UsageError, match="refusing to load .*storage.sqlite"):
        VectorIndex.open(tmp_path / "run" / "index")


# --- 6. secrets ---------------------------------------------------------------------------------------------


def test_credentials_in_a_url_are_never_written_or_printed(workdir, hyrax, monkeypatch, caplog):
    secret = "s3cr3t-Token-42"
    uri = f"http://alice:{secret}@127.0.0.1:9/"  # port 9 (discard): nothing answers
    proc = hyrax("config", "--set", f"general.mlflow_tracking_uri={uri}", cwd=workdir)
    assert proc.returncode == 0 and secret not in proc.stdout + proc.stderr and "alice:***@" in proc.stdout
    cfg = resolve({"general": {"results_dir": str(workdir / "results"), "mlflow_tracking_uri": uri}})
    monkeypatch.setattr(sys, "argv", ["hyrax", "index", "--set", f"general.mlflow_tracking_uri={uri}"])
    import logging

    with pytest.raises(RuntimeError), open_run("index", cfg):
        logging.getLogger("hyrax.test").error("connecting to %s", uri)
        raise RuntimeError(f"could not reach {uri}")
    for path in (workdir / "results").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"
    assert "alice:***@127.0.0.1" in next((workdir / "results").rglob("index.log")).read_text()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_with_an_unreachable_tracking_server_goes_on_at_once_and_keeps_its_secret(
    tmp_path, workdir, capfd, caplog, monkeypatch
):
    import time

    from test_train import small_config

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.stages.train import train

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    secret = "s3cr3t-Token-42"
    uri = f"http://alice:{secret}@127.0.0.1:{free_port()}/"  # nothing listens there
    survey = generate_survey(tmp_path / "survey.h5", n=64, size=16, seed=0)
    t0 = time.monotonic()
    run = train(small_config(survey, workdir / "results", mlflow_uri=uri, epochs=1))
    assert time.monotonic() - t0 < 60  # MLflow alone would retry for minutes
    out = capfd.readouterr()
    assert "tracking is off" in caplog.text and secret not in out.out + out.err + caplog.text
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == secret  # where MLflow looks for it
    for path in (workdir / "results").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"
    assert (run.path / "model.pt").is_file()


def test_a_tracking_server_that_accepts_and_never_answers_is_given_up_in_seconds(tmp_path, workdir, caplog):
    import socket
    import time

    from test_train import small_config

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.stages.train import train
    from libhyrax.training.tracking import probe

    with socket.socket() as hung:  # connections complete in the kernel's backlog; nothing ever answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="gave no answer within 1 s"):
            probe(uri, timeout=1.0)
        assert time.monotonic() - t0 < 3
        survey = generate_survey(tmp_path / "survey.h5", n=64, size=16, seed=0)
        t0 = time.monotonic()
        run = train(small_config(survey, workdir / "results", mlflow_uri=uri, epochs=1))
        assert time.monotonic() - t0 < 30  # the probe's 3 s, then training; it stalled 66 s before
    assert "tracking is off" in caplog.text and (run.path / "model.pt").is_file()


def test_mlflow_artifacts_are_not_written_outside_a_moved_tree(tmp_path, workdir):
    import shutil

    from test_train import small_config

    from libhyrax.data.synthetic import generate_survey
    from libhyrax.stages.test import test
    from libhyrax.stages.train import train

    survey = generate_survey(tmp_path / "survey.h5", n=64, size=16, seed=0)
    old = workdir / "scratch" / "results"
    trained = train(small_config(survey, old, epochs=1))
    new = workdir / "project" / "results"
    new.parent.mkdir()
    shutil.move(str(old), new)
    moved_train = new / trained.path.name
    result = test(small_config(survey, new, epochs=1), from_run=moved_train)
    assert not old.exists(), "MLflow recreated folders at the old location"
    assert (result.path / "test_metrics.json").is_file()


# --- 8. run names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "x.failed", ""])
def test_a_run_name_is_one_plain_directory_name(workdir, name):
    cfg = resolve({"general": {"results_dir": str(workdir / "results")}})
    with pytest.raises(UsageError, match="must be a plain directory name"):
        with open_run("index", cfg, name=name):
            pass
    assert not (workdir / "x").exists() and sorted(p.name for p in workdir.iterdir()) in ([], ["results"])


def test_secret_named_keys_and_url_credentials_are_masked():
    from libhyrax import redact

    cfg = {"a": {"password": "pw", "api_key": "k", "url": "https://u:p@host/x?token=t&n=1", "n": 3}}
    assert redact.config(cfg) == {
        "a": {"password": "***", "api_key": "***", "url": "https://u:***@host/x?token=***&n=1", "n": 3}
    }
    assert redact.url_credentials("https://u:p@host:5000/") == ("https://host:5000/", "u", "p")


def test_run_name_errors_reach_the_cli_as_usage_errors(workdir, hyrax):
    proc = hyrax("umap", "--run-name", "../escape", "--shard", "0/2", cwd=workdir)
    err = " ".join(proc.stderr.replace("│", " ").split())
    assert proc.returncode == 2 and "plain directory name" in err and "Traceback" not in proc.stderr
