"""Results directories: naming, atomic completion, failure marking, provenance, finding input runs."""

from __future__ import annotations

import json
import re

import pytest

from libhyrax.config import load_config, read_toml
from libhyrax.errors import UsageError
from libhyrax.results import Result, check_run, find_run
from libhyrax.rundir import read_provenance, run_name, upstream_paths
from libhyrax.runs import open_run

NAME = re.compile(r"^\d{8}-\d{6}-train-[0-9a-f]{8}$")


@pytest.fixture
def cfg(workdir):
    return load_config(overrides=[f"general.results_dir='{workdir / 'results'}'"])


def test_run_names_are_dated_and_random():
    names = {run_name("train") for _ in range(200)}
    assert all(NAME.match(n) for n in names) and len(names) >= 199  # 32 random bits: a clash is rare


def test_a_uid_clash_draws_a_new_name(cfg, monkeypatch):
    """Two jobs starting in the same second with the same uid (forced here) still get two directories."""
    import libhyrax.runs as results

    names = iter(["20260101-000000-train-aaaaaaaa", "20260101-000000-train-aaaaaaaa",
                  "20260101-000000-train-bbbbbbbb"])
    monkeypatch.setattr(results, "run_name", lambda stage, when=None: next(names))
    with open_run("train", cfg) as first:
        pass
    with open_run("train", cfg) as second:
        pass
    assert first.path.name.endswith("aaaaaaaa") and second.path.name.endswith("bbbbbbbb")


def test_successful_run_is_renamed_and_complete(cfg, workdir):
    with open_run("train", cfg) as run:
        assert run.path.name.endswith(".partial") and run.path.is_dir()
        # not visible as a finished input while it runs
        with pytest.raises(UsageError, match="no finished `train` run"):
            find_run("train", cfg)
        (run.path / "out.txt").write_text("x")
    assert NAME.match(run.path.name) and run.path == run.final_path
    assert (run.path / "out.txt").read_text() == "x"
    prov = read_provenance(run.path)
    assert prov["status"] == "complete" and prov["finished"] >= prov["started"]
    assert read_toml(run.path / "runtime_config.toml")["config_version"] == 8
    assert read_toml(run.path / "runtime_config.toml")["general"] == cfg["general"]
    assert (run.path / "train.log").exists()
    assert find_run("train", cfg).path == run.path


def test_failed_run_is_kept_marked_and_never_an_input(cfg, workdir):
    with pytest.raises(ValueError), open_run("train", cfg) as run:
        raise ValueError("boom")
    failed = run.final_path.with_name(run.final_path.name + ".failed")
    assert failed.is_dir() and not run.final_path.exists()
    prov = json.loads((failed / "provenance.json").read_text())
    assert prov["status"] == "failed" and prov["error"] == "ValueError: boom"
    with pytest.raises(UsageError, match="no finished `train` run"):
        find_run("train", cfg)
    with pytest.raises(UsageError, match="is not a directory|did not finish"):
        check_run(failed, "train")


def test_interrupted_run_is_marked_interrupted(cfg):
    with pytest.raises(KeyboardInterrupt), open_run("infer", cfg) as run:
        raise KeyboardInterrupt
    prov = read_provenance(run.final_path.with_name(run.final_path.name + ".failed"))
    assert prov["status"] == "interrupted"


def test_resume_reopens_a_failed_run(cfg):
    with pytest.raises(RuntimeError), open_run("train", cfg) as run:
        (run.path / "checkpoint").write_text("epoch 3")
        raise RuntimeError("killed")
    failed = run.final_path.with_name(run.final_path.name + ".failed")
    with open_run("train", cfg, resume=failed) as again:
        assert (again.path / "checkpoint").read_text() == "epoch 3"
    assert again.path == run.final_path and read_provenance(again.path)["status"] == "complete"
    assert len(read_provenance(again.path)["resumed"]) == 1
    with pytest.raises(UsageError, match="already finished"), open_run("train", cfg, resume=again.path):
        pass
    with (
        pytest.raises(UsageError, match="is a train run, not an infer run"),
        open_run("infer", cfg, resume=again.path),
    ):
        pass


def test_provenance_fields(cfg, workdir, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    data = workdir / "input.h5"
    data.write_bytes(b"12345")
    with open_run("train", cfg) as upstream:
        pass
    with open_run("search", cfg) as run:  # a stage that doesn't shard: one run in any Slurm job
        run.add_input(data)
        run.add_upstream(upstream.path)
        run.record(n_objects=5)
    prov = read_provenance(run.path)
    for key in ("command_line", "host", "python", "versions", "started", "finished", "seed", "cwd"):
        assert prov[key], key
    assert prov["seed"] == 42
    assert prov["versions"]["hyrax-toolkit"] and prov["versions"]["numpy"]
    assert prov["slurm"] == {"SLURM_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "2"}
    assert prov["inputs"][0]["path"] == str(data.resolve()) and prov["inputs"][0]["size"] == 5
    assert prov["upstream_runs"] == [upstream.path.name]  # beside it: by name, so the tree can move
    assert upstream_paths(run.path) == [upstream.path]
    assert prov["stage_info"] == {"n_objects": 5}
    # run from this git checkout: the commit is recorded
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])


def test_newest_run_is_by_finish_time_not_name(cfg):
    with open_run("train", cfg, name="20990101-000000-train-aaaaaa") as late_name:
        pass
    with open_run("train", cfg, name="20000101-000000-train-bbbbbb") as finished_last:
        pass
    assert late_name.path.exists()
    assert find_run("train", cfg).path == finished_last.path


def test_from_run_must_be_the_right_stage(cfg):
    with open_run("umap", cfg) as run:
        pass
    with pytest.raises(UsageError, match="is a umap run; this needs a train run"):
        find_run("train", cfg, run.path)
    with pytest.raises(UsageError, match="not a directory"):
        find_run("train", cfg, "/nonexistent/run")


def test_result_object(cfg):
    with open_run("train", cfg) as run:
        (run.path / "model.pt").write_bytes(b"")
    r = Result(run.path)
    assert r.stage == "train" and "model.pt" in r.files() and str(r) == str(run.path)
    assert r.config["train"]["epochs"] == cfg["train"]["epochs"]
