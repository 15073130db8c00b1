"""The data spine: cutout files, the built-in sample, groups, transforms, loaders, splits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from libhyrax.config import load_config
from libhyrax.data import CutoutWriter, HyraxHDF5Dataset, make_loader, open_group, write_cutouts
from libhyrax.data.loader import BatchPlan
from libhyrax.data.split import load_splits, make_splits, save_splits
from libhyrax.data.transforms import Transform, center_crop, replace_nonfinite
from libhyrax.errors import ConfigError, DataError


def h5_request(path, **extra):
    return {
        "data_request": {
            "train": {
                "cutouts": {
                    "dataset_class": "HyraxHDF5Dataset",
                    "data_location": str(path),
                    "primary_id_field": "object_id",
                    **extra,
                }
            }
        },
        "data_set": {"transform": "none"},
    }


@pytest.fixture
def cutout_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(50, 2, 8, 8)).astype(np.float32)
    ids = np.array([f"obj-{i:03d}" for i in range(50)])
    cat = {
        "ra": np.linspace(10, 11, 50),
        "mag": rng.uniform(18, 24, 50).astype(np.float32),
        "kind": np.array(["a", "bb"] * 25),
    }
    path = write_cutouts(tmp_path / "c.h5", ids, images, cat, bands=["g", "r"], pixel_scale=0.2)
    return path, ids, images, cat


def test_cutout_round_trip(cutout_file):
    path, ids, images, cat = cutout_file
    with h5py.File(path, "r") as f:  # plain h5py understands it
        assert f.attrs["format"] == "hyrax-cutouts" and list(f.attrs["bands"]) == ["g", "r"]
        assert f.attrs["pixel_scale"] == pytest.approx(0.2)
        assert f["images"].shape == (50, 2, 8, 8) and f["images"].dtype == np.float32
        assert f["images"].chunks[1:] == (2, 8, 8)
        assert sorted(f["catalog"]) == ["kind", "mag", "ra"]
    ds = HyraxHDF5Dataset({}, str(path))
    assert len(ds) == 50 and ds.bands == ["g", "r"] and ds.sample_shape == (2, 8, 8)
    got = ds.read(["image", "object_id", "ra", "kind"], 10, 20)
    np.testing.assert_array_equal(got["image"], images[10:20])
    assert got["object_id"].tolist() == ids[10:20].tolist()
    assert got["kind"].tolist() == cat["kind"][10:20].tolist()
    np.testing.assert_allclose(got["ra"], cat["ra"][10:20])
    rows = ds.read_rows(["image", "object_id"], [40, 3, 3, 4, 17])
    assert rows["object_id"].tolist() == ["obj-040", "obj-003", "obj-003", "obj-004", "obj-017"]
    np.testing.assert_array_equal(rows["image"][0], images[40])
    assert ds.rows_of(["obj-017", "nope", "obj-000"]).tolist() == [17, -1, 0]
    assert ds.get_object_id(5) == "obj-005"


def test_streaming_write_is_flat_in_memory_and_resumes(tmp_path):
    import tracemalloc

    path = tmp_path / "s.h5"
    batch = np.ones((64, 3, 32, 32), np.float32)  # 786 kB per batch; 40 batches = 31 MB
    tracemalloc.start()
    with CutoutWriter(path, (3, 32, 32), "gri") as w:
        for b in range(40):
            w.append([f"id{b}-{i}" for i in range(64)], batch * b, catalog={"b": np.full(64, b)})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * batch.nbytes  # a few batches, not all 40
    ds = HyraxHDF5Dataset({}, path)
    assert len(ds) == 2560 and ds.read(["image"], 2559, 2560)["image"].max() == 39

    # an interrupted write resumes after its last complete batch
    path2 = tmp_path / "r.h5"
    w = CutoutWriter(path2, (3, 32, 32), "gri", n_rows=192)
    w.append([f"a{i}" for i in range(64)], batch)
    w.close(complete=False)
    with pytest.raises(DataError, match="not finished"):
        HyraxHDF5Dataset({}, path2)
    with CutoutWriter(path2, (3, 32, 32), "gri", n_rows=192) as w:
        assert w.rows_written == 64
        w.append([f"a{i}" for i in range(64, 192)], np.zeros((128, 3, 32, 32)))
    assert HyraxHDF5Dataset({}, path2).column("object_id")[63:65].tolist() == ["a63", "a64"]


def test_writer_refuses_duplicates_and_misaligned_batches(tmp_path):
    with pytest.raises(DataError, match="3 object ids but 2 rows of images"):
        with CutoutWriter(tmp_path / "x.h5", (1, 4, 4), ["g"]) as w:
            w.append(["a", "b", "c"], np.zeros((2, 1, 4, 4)))
    with pytest.raises(DataError, match="duplicate object ids, e.g. a"):
        write_cutouts(tmp_path / "d.h5", ["a", "b", "a"], np.zeros((3, 1, 4, 4)))


def test_builtin_sample_group():
    g = open_group(load_config(data={}), "train")
    assert len(g) == 1000 and g.sample_shape == (3, 64, 64)
    ids = g.object_ids()
    assert ids[0] == "HDF-0001" and len(set(ids)) == 1000
    b = g.read(0, 8)
    assert b["image"].dtype == np.float32 and b["image"].shape == (8, 3, 64, 64)
    assert np.isfinite(b["image"]).all() and b["image"].max() > 0.5  # asinh-stretched real sources
    assert {"x", "y", "flux", "size"} <= set(g.catalog_columns())
    assert (g.catalog("flux") > 0).all()
    # infer falls back to its own default group; an unknown group falls back to train
    assert len(open_group(load_config(data={}), "validate")) == 1000


def test_group_reads_and_transforms(cutout_file):
    path, ids, images, cat = cutout_file
    cfg = load_config(
        data=h5_request(path, fields=["image", "mag"])
        | {"data_set": {"transform": "asinh", "asinh_scale": 0.5, "crop_to": 4}}
    )
    g = open_group(cfg, "infer")
    assert g.fields == ["object_id", "image", "mag"] and g.sample_shape == (2, 4, 4)
    b = g.read_rows([7, 2])
    np.testing.assert_allclose(b["image"][0], np.arcsinh(images[7, :, 2:6, 2:6] / 0.5), rtol=1e-6)
    assert b["object_id"].tolist() == ["obj-007", "obj-002"]
    np.testing.assert_allclose(b["mag"], cat["mag"][[7, 2]])


def test_transforms():
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    assert center_crop(x, 2).tolist() == x[..., 2:4, 2:4].tolist()
    assert center_crop(x, 10).shape == x.shape
    y = x.copy()
    y[0, 1, 0, 0], y[1, 2, 3, 3] = np.nan, np.inf
    z, n = replace_nonfinite(y, "zero")
    assert n == 2 and z[0, 1, 0, 0] == 0 and z[1, 2, 3, 3] == 0 and np.isnan(y[0, 1, 0, 0])
    q, _ = replace_nonfinite(y, "quantile", 0.0)
    assert q[0, 1, 0, 0] == x[0, 1].ravel()[1]  # the band's minimum finite pixel
    t = Transform("tanh")
    np.testing.assert_allclose(t(y)[1, 0], np.tanh(x[1, 0]))
    assert t.replaced_pixels == 2
    assert Transform("none")(x).tolist() == x.tolist()
    with pytest.raises(ConfigError, match="did you mean asinh"):
        Transform("asin")
    with pytest.raises(ConfigError, match="crop_to"):
        Transform(crop_to=-3)


def batch_plan(indices, batch_size: int, shuffle: bool, seed: int, epoch: int = 0, block: int = 64) -> list:
    plan = BatchPlan(indices, batch_size, shuffle, seed, epoch, block)
    return [np.asarray(plan[i], dtype=np.int64) for i in range(len(plan))]


def test_loader_shuffles_blocks_and_sees_everything_once(cutout_file):
    path, ids, *_ = cutout_file
    g = open_group(load_config(data=h5_request(path)), "train")
    plan = batch_plan(np.arange(50), 16, True, seed=3, epoch=0, block=5)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(50)) and flat.tolist() != list(range(50))
    assert [len(p) for p in plan] == [16, 16, 16, 2]
    assert np.concatenate(batch_plan(np.arange(50), 16, True, 3, 1, 5)).tolist() != flat.tolist()
    assert np.concatenate(batch_plan(np.arange(50), 16, True, 3, 0, 5)).tolist() == flat.tolist()
    seen = [oid for b in make_loader(g, np.arange(10, 50), 8, True, seed=1) for oid in b["object_id"]]
    assert sorted(seen) == ids[10:].tolist()
    batches = list(make_loader(g, None, 20, False, 0))
    assert [len(b["object_id"]) for b in batches] == [20, 20, 10]
    assert batches[0]["image"].dtype == np.float32


def test_loader_with_workers(cutout_file):
    path, ids, images, _ = cutout_file
    g = open_group(load_config(data=h5_request(path)), "train")
    batches = list(make_loader(g, None, 16, shuffle=False, seed=0, num_workers=2))
    assert np.concatenate([b["object_id"] for b in batches]).tolist() == ids.tolist()
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), images)


def test_splits_deterministic_disjoint_and_reusable(tmp_path):
    s1 = make_splits(1000, {"train": 0.8, "validate": 0.1, "test": 0.1}, seed=7)
    s2 = make_splits(1000, {"train": 0.8, "validate": 0.1, "test": 0.1}, seed=7)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert [len(s1[k]) for k in ("train", "validate", "test")] == [800, 100, 100]
    union = np.concatenate(list(s1.values()))
    assert len(np.unique(union)) == 1000
    assert not np.array_equal(make_splits(1000, {"train": 0.8}, seed=8)["train"], s1["train"])
    ids = np.array([f"o{i}" for i in range(1000)])
    save_splits(tmp_path / "split.h5", s1, ids)
    back = load_splits(tmp_path)
    assert all(np.array_equal(back[k], s1[k]) for k in s1)
    shuffled = ids[::-1]  # same objects, other order: rows follow the ids
    again = load_splits(tmp_path / "split.h5", shuffled)
    assert sorted(shuffled[again["test"]].tolist()) == sorted(ids[s1["test"]].tolist())
    with pytest.raises(DataError, match="not in the data"):
        load_splits(tmp_path / "split.h5", ids[:500])
    with pytest.raises(ConfigError, match="sum to at most 1"):
        make_splits(10, {"train": 0.9, "test": 0.2}, 0)


def _build(path):
    from libhyrax.data.sample import build_sample

    build_sample(path, n=50)


def test_sample_build_is_safe_when_processes_race(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "sample.h5"
    procs = [mp.get_context("fork").Process(target=_build, args=(path,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    ds = HyraxHDF5Dataset({}, path)
    assert len(ds) == 50 and ds.get_object_id(0) == "HDF-0001"
    assert [p.name for p in tmp_path.iterdir()] == ["sample.h5"]  # no temporary files left


def test_group_pickles_without_its_id_cache(cutout_file):
    import pickle

    g = open_group(load_config(data=h5_request(cutout_file[0])), "train")
    g.object_ids()
    copy = pickle.loads(pickle.dumps(g))
    assert "_ids" not in copy.__dict__ and copy.read(3, 4)["object_id"].tolist() == ["obj-003"]


def test_group_reads_ids_as_bytes_and_knows_their_width(cutout_file):
    path, ids, images, _ = cutout_file
    g = open_group(load_config(data=h5_request(path)), "train")
    raw = g.read(3, 9, id_bytes=True)
    assert raw["object_id"].dtype.kind == "S" and list(raw["object_id"]) == [i.encode() for i in ids[3:9]]
    np.testing.assert_array_equal(raw["image"], g.read(3, 9)["image"])
    assert g.id_width() == 7


def test_in_place_transforms_never_touch_a_datasets_own_arrays():
    from libhyrax.data import Dataset
    from libhyrax.data.group import DataGroup
    from libhyrax.data.request import DatasetSpec

    images = np.random.default_rng(0).normal(size=(20, 1, 4, 4)).astype(np.float32)
    images[3, 0, 1, 1] = np.nan
    keep = images.copy()

    class InMemory(Dataset):
        def __len__(self):
            return len(images)

        def get_image(self, i):
            return images[i]

        def get_image_batch(self, start, stop):
            return images[start:stop]  # a view of the dataset's own array

        def get_object_id(self, i):
            return f"m{i}"

    g = DataGroup(
        "train", {"m": DatasetSpec(dataset_class="InMemory")}, {"m": InMemory({}, None)}, Transform("asinh")
    )
    out = g.read(0, 20)
    np.testing.assert_array_equal(images, keep)  # unchanged (NaN included)
    want = np.arcsinh(np.nan_to_num(keep, nan=0.0) / np.float32(0.1))
    np.testing.assert_allclose(out["image"], want, rtol=1e-6)
    np.testing.assert_allclose(g.read_rows([5, 3])["image"], want[[5, 3]], rtol=1e-6)
    # a fresh buffer may be transformed in place: same values
    buf = keep.copy()
    np.testing.assert_allclose(Transform("asinh")(buf, inplace=True), want, rtol=1e-6)
    t = Transform("none", nan_mode="quantile")
    fixed = t(keep.copy(), inplace=True)
    assert np.isfinite(fixed).all() and t.replaced_pixels == 1


def test_loader_plan_is_lazy_and_matches_whole_epoch(cutout_file):
    from libhyrax.data.loader import BatchPlan

    path, ids, _, _ = cutout_file
    g = open_group(load_config(data=h5_request(path)), "train")
    loader = make_loader(g, None, 16, shuffle=False)
    assert isinstance(loader.batches.plan, BatchPlan) and loader.batches.plan.idx is None
    assert [len(b["object_id"]) for b in loader] == [16, 16, 16, 2]
    plan = BatchPlan(None, 7, True, seed=2, epoch=1, block=5, n=50)
    flat = np.concatenate([np.asarray(b) for b in plan])
    assert sorted(flat.tolist()) == list(range(50)) and flat.tolist() != list(range(50))


def test_read_ahead_keeps_order_raises_reader_errors_and_stops_early():
    import threading

    from libhyrax.data.loader import read_ahead

    assert list(read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    it = read_ahead(failing())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = read_ahead(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the consumer stops: the reader thread ends too
    assert not any(t.name == "hyrax-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10
