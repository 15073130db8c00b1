"""The split from a seeded hash of each object's id: the same in any order and any id width, streamed in
blocks, recorded in split.h5 with its rule and reused by `test`."""

from __future__ import annotations

import h5py
import numpy as np
from test_train import small_config, survey  # noqa: F401  (fixture)

from libhyrax.data.split import hashed_splits, id_hash_unit, load_splits, save_splits
from libhyrax.hdf5 import as_id_bytes


def blocks(ids, step=1000):
    return ((a, ids[a:a + step]) for a in range(0, len(ids), step))


def test_hashed_split_depends_on_the_ids_and_seed_only():
    ids = as_id_bytes(np.array([f"obj_{i}" for i in range(20_000)]))
    u = id_hash_unit(ids, 7)
    assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.01
    # the same id hashes alike however wide the array, and differently with another seed
    np.testing.assert_array_equal(id_hash_unit(ids.astype("S40"), 7), u)
    assert not np.array_equal(id_hash_unit(ids, 8), u)
    rows, got = hashed_splits(blocks(ids), {"train": 0.8, "validate": 0.1, "test": 0.1}, 7)
    assert sum(len(r) for r in rows.values()) == 20_000  # fractions summing to 1: every object
    assert abs(len(rows["train"]) - 16_000) < 300 and abs(len(rows["test"]) - 2_000) < 150
    assert not set(rows["train"]) & set(rows["test"])
    np.testing.assert_array_equal(got["test"], ids[rows["test"]])
    # another order, other block sizes: the same objects in each split
    perm = np.random.default_rng(0).permutation(20_000)
    rows2, got2 = hashed_splits(blocks(ids[perm], 777), {"train": 0.8, "validate": 0.1, "test": 0.1}, 7)
    assert set(got2["test"]) == set(got["test"]) and set(got2["train"]) == set(got["train"])
    # fractions summing to less than 1 keep only what they use
    few, _ = hashed_splits(blocks(ids), {"train": 0.01, "test": 0.0}, 7)
    assert set(few) == {"train"} and 150 < len(few["train"]) < 250


def test_old_split_files_still_load_and_by_streamed_ids(tmp_path):
    ids = np.array([f"o{i}" for i in range(100)])
    save_splits(tmp_path / "split.h5", {"train": np.arange(0, 80), "test": np.arange(90, 100)}, ids)
    old = load_splits(tmp_path)
    assert list(old["train"]) == list(range(80)) and list(old["test"]) == list(range(90, 100))
    shuffled = ids[::-1]
    streamed = load_splits(tmp_path, id_blocks=blocks(as_id_bytes(shuffled), 7))
    assert list(streamed["test"]) == list(range(0, 10))


def test_train_records_the_rule_and_rows_and_test_reuses_them(survey, workdir):  # noqa: F811
    from libhyrax.stages.test import test as run_test
    from libhyrax.stages.train import train

    cfg = small_config(survey, workdir / "results", epochs=1)
    cfg["split"] = {"train": 0.5, "validate": 0.1, "test": 0.25, "seed": 3}
    trained = train(cfg)
    with h5py.File(trained.path / "split.h5") as f:
        assert f.attrs["rule"] == "id-hash" and int(f.attrs["seed"]) == 3
        assert list(f.attrs["fractions"]) == [0.5, 0.1, 0.25]
        saved, labels, rows = f["object_id"][:], f["split"][:], f["row"][:]
    with h5py.File(survey) as f:
        all_ids = f["object_id"][:]
    assert len(saved) < 160 and (np.diff(rows) > 0).all()  # only the rows used (0.85 of them), in order
    np.testing.assert_array_equal(all_ids[rows], saved)
    expect, _ = hashed_splits(
        blocks(as_id_bytes(all_ids), 50), {"train": 0.5, "validate": 0.1, "test": 0.25}, 3
    )
    np.testing.assert_array_equal(rows[labels == b"test"], expect["test"])
    tested = run_test(cfg, from_run=trained.path)
    assert tested.provenance["stage_info"]["n_objects"] == len(expect["test"])
    # reproducible: a second run with the same seed picks the same objects
    again = train(cfg)
    with h5py.File(again.path / "split.h5") as f:
        np.testing.assert_array_equal(f["object_id"][:], saved)
