"""A run's lineage: what each stage reads comes from the registry (`Stage.needs`) and from walking the
upstream runs recorded in provenance.json, recorded by name beside the run so a results tree can move.
The last test runs every stage, moves the whole results tree, and chains every stage from the moved runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from libhyrax import stages
from libhyrax.config import load_config
from libhyrax.errors import UsageError
from libhyrax.results import Result, find_run, input_run, newest_run
from libhyrax.rundir import PROVENANCE_FILE, upstream_paths
from libhyrax.runs import open_run


@pytest.fixture
def cfg(tmp_path):
    return load_config(data={"general": {"results_dir": str(tmp_path / "results")}})


def chain(cfg, *names_and_parents):
    """Runs made in order; each (stage, [indexes of earlier runs it read])."""
    made = []
    for stage, parents in names_and_parents:
        with open_run(stage, cfg) as run:
            for i in parents:
                run.add_upstream(made[i].path)
        made.append(Result(run.path))
    return made


def test_lineage_walks_through_any_stages_between(cfg):
    train, export, infer, index, search = chain(cfg, ("train", []), ("export", [0]), ("infer", [1]),
                                                ("index", [2]), ("search", [3]))
    assert [r.stage for r in search.lineage()] == ["index", "infer", "export", "train"]
    assert search.find("train") == train and search.find("infer") == infer
    assert search.find("search") == search  # a run counts as its own lineage
    assert index.find("umap") is None
    with pytest.raises(UsageError, match="no umap run upstream"):
        index.require("umap")
    assert [u.stage for u in infer.upstream] == ["export"]


def test_upstream_is_recorded_by_name_beside_it_and_by_path_elsewhere(cfg, tmp_path):
    (train,) = chain(cfg, ("train", []))
    elsewhere = load_config(data={"general": {"results_dir": str(tmp_path / "other")}})
    with open_run("infer", cfg) as beside, open_run("infer", elsewhere) as away:
        beside.add_upstream(train.path)
        away.add_upstream(train.path)
    assert json.loads((beside.path / PROVENANCE_FILE).read_text())["upstream_runs"] == [train.path.name]
    assert json.loads((away.path / PROVENANCE_FILE).read_text())["upstream_runs"] == [
        str(train.path.resolve())
    ]
    assert Result(away.path).find("train") == train


def test_a_deleted_upstream_run_is_skipped(cfg):
    train, infer, umap = chain(cfg, ("train", []), ("infer", [0]), ("umap", [1]))
    shutil.rmtree(train.path)
    assert umap.find("infer") == infer and umap.find("train") is None
    # a stage that needs it fails loudly, naming the run that is gone (never a map without its catalog)
    with pytest.raises(
        UsageError, match=f"no train run upstream; it read .*{train.path.name}, which is gone"
    ):
        umap.require("train")


def test_provenance_from_before_relative_lineage_still_chains_after_a_move(cfg, tmp_path):
    """Older runs named their upstream by absolute path: a moved tree finds it by name beside the run."""
    train, infer = chain(cfg, ("train", []), ("infer", [0]))
    prov_file = infer.path / PROVENANCE_FILE
    prov = json.loads(prov_file.read_text())
    prov["upstream_runs"] = [str(train.path.resolve())]
    prov_file.write_text(json.dumps(prov))
    moved = tmp_path / "moved"
    shutil.move(str(train.path.parent), moved)
    assert Result(moved / infer.path.name).find("train") == Result(moved / train.path.name)


def test_input_run_follows_the_registry(cfg):
    for stage in stages.STAGES:
        for need in stage.needs:
            assert need in stages.BY_NAME, f"{stage.name} needs an unknown stage {need}"
    train, infer, index = chain(cfg, ("train", []), ("infer", [0]), ("index", [1]))
    assert input_run("search", cfg) == index and input_run("anomaly", cfg) == infer
    assert input_run("infer", cfg) == train  # the first of ("train", "export") that has a finished run
    with pytest.raises(UsageError, match="this needs an infer run"):
        input_run("umap", cfg, train.path)


def test_newest_run_reading_a_run_looks_beside_it_first(cfg, tmp_path):
    train, infer, anomaly = chain(cfg, ("train", []), ("infer", [0]), ("anomaly", [1]))
    moved = tmp_path / "moved"
    shutil.move(str(train.path.parent), moved)
    other = load_config(data={"general": {"results_dir": str(tmp_path / "fresh")}})
    assert newest_run("anomaly", other, reading=moved / infer.path.name) == moved / anomaly.path.name
    assert find_run("anomaly", other, reading=moved / infer.path.name).path == moved / anomaly.path.name
    assert upstream_paths(moved / anomaly.path.name) == [moved / infer.path.name]


# --- every stage, then the whole tree moved --------------------------------------------------------------


def small_survey(root: Path, n: int = 160) -> Path:
    from libhyrax.data import write_cutouts

    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 1, 16, 16)).astype(np.float32)
    images[::20, :, 6:10, 6:10] += 8  # a few bright ones, so something stands out
    ids = np.array([f"g{i:04d}" for i in range(n)])
    return write_cutouts(root / "cutouts.h5", ids, images, catalog={"mag": np.linspace(18, 24, n)})


def stage_config(root: Path, data: Path, results: str) -> dict:
    cut = {
        "dataset_class": "HyraxHDF5Dataset",
        "data_location": str(data),
        "fields": ["image", "object_id", "mag"],
        "primary_id_field": "object_id",
    }
    return load_config(
        data={
            "general": {"results_dir": str(root / results), "device": "cpu"},
            "data_request": {"train": {"cut": cut}, "infer": {"cut": cut}},
            "train": {"epochs": 1},
            "data_loader": {"batch_size": 64},
            "reduce_dimensions": {"algorithm": "pca", "num_workers": 0},
            "vector_db": {"name": "exact"},
            "anomaly": {"k": 3},
            "visualize": {"max_thumbnails": 20},
        }
    )


def every_stage(cfg: dict, image: Path, runs: dict | None = None) -> dict[str, Result]:
    """Each stage once, each reading the given runs of `runs` (else what it makes here)."""
    import libhyrax

    runs = dict(runs or {})
    out: dict[str, Result] = {}
    train = runs.get("train") or libhyrax.train(cfg)
    out["test"] = libhyrax.test(cfg, from_run=train)
    export = runs.get("export") or libhyrax.export(cfg, from_run=train)
    infer = runs.get("infer") or libhyrax.infer(cfg, from_run=train)
    out["infer_onnx"] = libhyrax.infer(cfg, from_run=export, engine="onnx")
    umap = runs.get("umap") or libhyrax.umap(cfg, from_run=infer)
    out["umap_reused"] = libhyrax.umap(cfg, from_run=infer, reducer=umap)
    index = runs.get("index") or libhyrax.index(cfg, from_run=infer)
    out["anomaly"] = libhyrax.anomaly(cfg, from_run=infer, overrides=["anomaly.knn_source=index"])
    labels = image.with_name("labels.csv")
    labels.write_text("object_id,label\ng0000,5\ng0020,5\ng0001,0\ng0002,0\n")
    out["rank"] = libhyrax.rank(cfg, from_run=out["anomaly"], labels=[labels])
    out["visualize"] = libhyrax.visualize(cfg, from_run=umap)
    out["search"] = libhyrax.search(cfg, from_run=index, object_ids=["g0020"], k=3)
    out["search_image"] = libhyrax.search(cfg, from_run=index, image=image, k=3)
    return {"train": train, "export": export, "infer": infer, "umap": umap, "index": index, **out}


def test_every_stage_writes_what_the_registry_says_and_a_moved_tree_still_chains(tmp_path):
    data = small_survey(tmp_path)
    image = tmp_path / "query.npy"
    import h5py

    with h5py.File(data, "r") as f:
        np.save(image, f["images"][20])
    runs = every_stage(stage_config(tmp_path, data, "results"), image)

    for stage in stages.STAGES:  # what the README's stage table lists (test_readme checks the table)
        # download needs a cutout service: tests/test_download.py checks what it writes
        if stage.makes_run and stage.name not in ("prepare", "download"):
            for name in stage.writes:
                assert (runs[stage.name].path / name.rstrip("/")).exists(), (
                    f"{stage.name} did not write {name}"
                )
    assert runs["search"]["object_id"][0] == "g0020" and "mag" in runs["search"].columns
    assert runs["search_image"]["object_id"][0] == "g0020"
    columns = runs["visualize"].provenance["stage_info"]["columns"]
    top = (runs["anomaly"].path / "top_anomalies.csv").read_text()

    # scratch -> project space: the whole tree moves; nothing in it names the old place it needs
    moved_root = tmp_path / "project" / "results"
    moved_root.parent.mkdir()
    shutil.move(str(tmp_path / "results"), moved_root)
    moved = {k: Result(moved_root / runs[k].path.name) for k in ("train", "export", "infer", "umap", "index")}
    again = every_stage(stage_config(tmp_path, data, "fresh"), image, moved)

    assert again["search"]["object_id"][0] == "g0020" and list(again["search"]["mag"]) == list(
        runs["search"]["mag"]
    )
    assert again["search_image"]["object_id"][0] == "g0020"  # the model found through the moved lineage
    assert again["visualize"].provenance["stage_info"]["columns"] == columns and "mag" in columns
    assert again["anomaly"].find("infer") == moved["infer"]
    assert (
        again["anomaly"].path / "top_anomalies.csv"
    ).read_text() == top  # the index found beside the latents
    assert again["umap_reused"].find("infer") == moved["infer"]
