"""Sharding: the Slurm array arithmetic, the shared results directory and its completion logic."""

from __future__ import annotations

import numpy as np
import pytest

from libhyrax import hdf5, sharding
from libhyrax.errors import DataError, UsageError
from libhyrax.results import check_run, find_run, is_complete
from libhyrax.rundir import read_provenance
from libhyrax.runs import open_run
from libhyrax.sharding import Shard, choose_shard, parse_shard, shard_from_env, shared_run_name


def slurm(task, lo=0, step=1, count=3, job="777"):
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(lo),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_JOB_ID": job,
    }


def test_parse_shard():
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3", "1/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_shard_from_slurm_array_variables():
    assert shard_from_env({}) is None
    assert shard_from_env(slurm(0)) == Shard(0, 3, "777")
    assert shard_from_env(slurm(2)) == Shard(2, 3, "777")
    # --array=10-30:10 -> tasks 10, 20, 30 are shards 0, 1, 2
    assert [shard_from_env(slurm(t, lo=10, step=10)).index for t in (10, 20, 30)] == [0, 1, 2]
    # --array=1,4,5 is not an even range
    with pytest.raises(UsageError, match="--shard"):
        shard_from_env(slurm(4, lo=1, step=1, count=3))


def test_explicit_shard_overrides_slurm():
    assert choose_shard("1/4", slurm(0)) == Shard(1, 4)
    assert choose_shard(None, slurm(1)) == Shard(1, 3, "777")
    assert choose_shard(None, {}) is None


def test_shared_run_name_is_the_same_for_every_task():
    names = {shared_run_name("infer", shard_from_env(slurm(t))) for t in range(3)}
    assert names == {"slurm-777-infer-array"}
    assert shared_run_name("infer", Shard(0, 3), "k") == shared_run_name("infer", Shard(2, 3), "k")
    assert shared_run_name("infer", Shard(0, 3), "k") != shared_run_name("infer", Shard(0, 3), "other")


def write_shard(cfg, shard, n_total, fail=False):
    start, stop = sharding.shard_range(n_total, shard.index, shard.count)
    with open_run("infer", cfg, shard=shard) as run:
        run.add_upstream(run.path.parent / "train-run")
        if fail:
            raise RuntimeError("boom")
        out = run.file(hdf5.shard_name("latents", shard.index, shard.count))
        with hdf5.ArrayWriter(out, stop - start, {"latent": ((2,), "<f4")}) as w:
            ids = np.array([f"obj{i:03d}" for i in range(start, stop)])
            lat = np.stack([np.arange(start, stop), -np.arange(start, stop)], 1).astype("f4")
            w.append(ids, latent=lat)
    return run.path


def test_sharded_run_completes_when_all_shards_do(workdir):
    cfg = {"general": {"results_dir": str(workdir / "results")}}
    env = slurm(0, count=3)
    path = write_shard(cfg, shard_from_env(env), 10)
    assert path.name == "slurm-777-infer-array"
    assert not is_complete(path)
    with pytest.raises(UsageError, match=r"1/3 \(missing\).*--shard 1/3 --resume"):
        check_run(path, "infer")
    with pytest.raises(RuntimeError):
        write_shard(cfg, shard_from_env(slurm(1, count=3)), 10, fail=True)
    assert read_provenance(path)["shards"] == ["complete", "failed", "missing"]
    with pytest.raises(DataError, match="latents.shard-0001-of-0003.h5, latents.shard-0002"):
        hdf5.open_result(path, "latents")
    for t in (1, 2):  # the failed task is rerun, the last one runs
        write_shard(cfg, shard_from_env(slurm(t, count=3)), 10)
    assert check_run(path, "infer") == path
    assert find_run("infer", cfg).path == path
    prov = read_provenance(path)
    assert prov["status"] == "complete" and len(prov["upstream_runs"]) == 1
    with hdf5.open_result(path, "latents") as f:
        assert list(hdf5.read_ids(f["object_id"])) == [f"obj{i:03d}" for i in range(10)]
        np.testing.assert_array_equal(f["latent"][:, 0], np.arange(10))


def test_sharded_directory_refuses_another_shard_count(workdir):
    cfg = {"general": {"results_dir": str(workdir / "results")}}
    write_shard(cfg, Shard(0, 2, "5"), 4)
    with pytest.raises(UsageError, match="2 shards"):
        write_shard(cfg, Shard(0, 3, "5"), 4)
