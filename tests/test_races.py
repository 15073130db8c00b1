"""Slurm array tasks start together: shared files must be claimed and assembled without races."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

from libhyrax import hdf5, sharding
from libhyrax.atomic import write_json

TASKS = 12


def _claim(args):
    path, i = args
    return write_json(path, {"task": i}, exclusive=True)


def _assemble(run_dir):
    f = hdf5.open_result(run_dir, "latents")
    try:
        return f["latent"].shape[0]
    finally:
        f.close()


def test_exactly_one_of_many_racing_tasks_claims_a_file(tmp_path):
    target = tmp_path / "provenance.json"
    with mp.get_context("spawn").Pool(4) as pool:
        won = pool.map(_claim, [(target, i) for i in range(TASKS)])
    assert sum(won) == 1
    assert list(tmp_path.iterdir()) == [target]  # no temporary files left behind


def test_many_tasks_open_a_sharded_result_at_once(tmp_path):
    ids = np.array([f"o{i}" for i in range(30)])
    for i in range(3):
        a, b = sharding.shard_range(30, i, 3)
        with hdf5.ArrayWriter(tmp_path / hdf5.shard_name("latents", i, 3), b - a, {"latent": ((2,), "<f4")},
                              id_length=4) as w:
            w.append(ids[a:b], latent=np.full((b - a, 2), i, np.float32))
    with mp.get_context("spawn").Pool(4) as pool:
        sizes = pool.map(_assemble, [tmp_path] * TASKS)
    assert sizes == [30] * TASKS
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
