"""`index` and `search` end to end on an infer-like run (a cutout file with a catalog, latents.h5)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from libhyrax.config import load_config
from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import write_arrays
from libhyrax.runs import open_run


def make_infer_run(root, n: int = 400, dim: int = 16, seed: int = 0, shards: int = 0, catalog: bool = True):
    """A cutout file (with a `mag` catalog column), a train-like run and an infer run over it."""
    from libhyrax.data import write_cutouts

    rng = np.random.default_rng(seed)
    ids = np.array([f"obj_{i:04d}" for i in range(n)])
    images = rng.random((n, 3, 8, 8), dtype=np.float32)
    images[:, :, 3:5, 3:5] += np.arange(n, dtype=np.float32)[:, None, None, None] / n
    cat = {"mag": np.linspace(18, 24, n).astype(np.float32)} if catalog else None
    write_cutouts(root / "cutouts.h5", ids, images, catalog=cat)
    cfg = load_config(
        data={
            "general": {"results_dir": str(root / "results")},
            "data_request": {
                "infer": {
                    "cut": {
                        "dataset_class": "HyraxHDF5Dataset",
                        "data_location": str(root / "cutouts.h5"),
                        "fields": ["image", "object_id"] + (["mag"] if catalog else []),
                        "primary_id_field": "object_id",
                    }
                }
            },
        }
    )
    with open_run("train", cfg) as train:
        pass
    centres = rng.normal(size=(8, dim)) * 3
    latents = (centres[rng.integers(0, 8, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    with open_run("infer", cfg) as run:
        run.add_upstream(train.path)
        if shards:
            from libhyrax.hdf5 import shard_name
            from libhyrax.sharding import shard_range

            for i in range(shards):
                a, b = shard_range(n, i, shards)
                write_arrays(
                    run.file(shard_name("latents", i, shards)),
                    ids[a:b],
                    latent=latents[a:b],
                    recon_error=np.zeros(b - a, np.float32),
                )
        else:
            write_arrays(
                run.file("latents.h5"), ids, latent=latents, recon_error=rng.random(n).astype(np.float32)
            )
    return cfg, run.path, train.path, ids, latents


@pytest.mark.parametrize("backend", ["exact", "chromadb"])
def test_index_then_search_by_id(tmp_path, backend):
    from libhyrax.stages.index import index
    from libhyrax.stages.search import search

    cfg, infer_run, train_run, ids, x = make_infer_run(tmp_path, shards=3 if backend == "exact" else 0)
    res = index(cfg, from_run=infer_run, overrides=[f"vector_db.name={backend}", "vector_db.batch_size=64"])
    assert res.provenance["stage_info"]["n_objects"] == 400
    assert res.provenance["stage_info"]["model_run"] == str(train_run.resolve())
    hits = search(cfg, from_run=res, object_ids=["obj_0007", "obj_0300"], k=5)
    assert len(hits) == 10 and list(hits["rank"][:5]) == [1, 2, 3, 4, 5]
    assert hits["object_id"][0] == "obj_0007" and hits["distance"][0] == 0.0
    assert hits["object_id"][5] == "obj_0300" and hits["distance"][5] == 0.0
    # the true L2 distances, and the catalog column of each neighbour
    rows = [int(i[4:]) for i in hits["object_id"][:5]]
    np.testing.assert_allclose(hits["distance"][:5], np.linalg.norm(x[rows] - x[7], axis=1), atol=1e-4)
    np.testing.assert_allclose(hits["mag"][:5], np.linspace(18, 24, 400)[rows], atol=1e-5)
    with open(hits.path / "neighbors.csv") as f:
        table = list(csv.DictReader(f))
    assert table[0]["object_id"] == "obj_0007" and table[0]["query"] == "obj_0007" and "mag" in table[0]
    # search by vector: the newest index run by default
    near = search(cfg, vectors=x[42] + 0.001, k=3)
    assert near["object_id"][0] == "obj_0042" and near["query"][0] == "vector 0"


def test_search_bad_input(tmp_path):
    from libhyrax.stages.index import index
    from libhyrax.stages.search import search

    cfg, infer_run, *_ = make_infer_run(tmp_path, catalog=False)
    res = index(cfg, from_run=infer_run, overrides=["vector_db.name=exact"])
    # the user's query mistakes are usage errors (exit 2 from the CLI)
    with pytest.raises(UsageError, match="'obj_04x' is not in the index.*close ids: obj_0"):
        search(cfg, from_run=res, object_ids=["obj_04x"])
    with pytest.raises(UsageError, match="length 3; this index holds vectors of length 16"):
        search(cfg, from_run=res, vectors=[1.0, 2.0, 3.0])
    with pytest.raises(UsageError, match="NaN or infinite"):
        search(cfg, from_run=res, vectors=np.full(16, np.nan))
    with pytest.raises(UsageError, match="k must be at least 1, not 0"):
        search(cfg, from_run=res, object_ids=["obj_0001"], k=0)
    with pytest.raises(UsageError, match="exactly one query"):
        search(cfg, from_run=res, object_ids=["obj_0001"], vectors=np.zeros(16))
    with pytest.raises(UsageError, match="exactly one query"):
        search(cfg, from_run=res)
    # no failed search directories were left behind by refused queries
    assert not list((tmp_path / "results").glob("*search*"))
    # an index run asked for by the wrong stage
    with pytest.raises(UsageError, match="is an infer run; this needs an index run"):
        search(cfg, from_run=infer_run, object_ids=["obj_0001"])
    # without a catalog the table still has ids and distances
    hits = search(cfg, from_run=res, object_ids=["obj_0001"], k=2)
    assert list(hits.columns) == ["query", "rank", "object_id", "distance"]


def test_image_from_another_model_is_refused(tmp_path):
    from libhyrax.stages.index import index
    from libhyrax.stages.search import search

    cfg, infer_run, train_run, *_ = make_infer_run(tmp_path)
    res = index(cfg, from_run=infer_run, overrides=["vector_db.name=exact"])
    with open_run("train", cfg) as other:
        pass
    np.save(tmp_path / "q.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(
        UsageError, match=f"model trained in {train_run.resolve()}.*model of {other.path.resolve()}"
    ):
        search(cfg, from_run=res, image=tmp_path / "q.npy", model_run=other.path)


def test_index_refuses_empty_latents(tmp_path):
    from libhyrax.stages.index import index

    cfg = load_config(data={"general": {"results_dir": str(tmp_path / "results")}})
    with open_run("infer", cfg) as run:
        write_arrays(run.file("latents.h5"), np.array([], dtype=str), latent=np.zeros((0, 4), np.float32))
    with pytest.raises(DataError, match="holds no latents"):
        index(cfg, from_run=run.path)


def test_show_neighbors_writes_a_png(tmp_path):
    import zlib

    from libhyrax.stages.index import index
    from libhyrax.stages.search import search, show_neighbors

    cfg, infer_run, *_ = make_infer_run(tmp_path, n=100)
    res = index(cfg, from_run=infer_run, overrides=["vector_db.name=exact"])
    hits = search(cfg, from_run=res, object_ids=["obj_0001", "obj_0050"], k=4)
    mosaic = show_neighbors(hits, path=tmp_path / "grid.png")
    assert mosaic.array.shape == (2 + 2 * 10, 2 + 4 * 10, 3) and mosaic.array.dtype == np.uint8
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and mosaic._repr_png_() == png
    # the IDAT payload decompresses to one filter byte + RGB per row
    start = png.index(b"IDAT") + 4
    length = int.from_bytes(png[start - 8 : start - 4], "big")
    assert len(zlib.decompress(png[start : start + length])) == 22 * (1 + 42 * 3)


def test_cli_index_search_anomaly(workdir, hyrax):
    """hyrax index | hyrax search --id X --show, then hyrax anomaly --show, with a local config file."""
    make_infer_run(workdir)
    (workdir / "hyrax_config.toml").write_text(
        '[data_request.infer.cut]\ndataset_class = "HyraxHDF5Dataset"\n'
        f'data_location = "{workdir / "cutouts.h5"}"\nfields = ["image", "object_id", "mag"]\n'
        'primary_id_field = "object_id"\n'
    )
    built = hyrax("index", "--set", "vector_db.name=exact", cwd=workdir, check=True)
    index_run = built.stdout.strip()
    assert index_run.endswith(tuple("0123456789abcdef")) and "-index-" in index_run
    found = hyrax(
        "search", "--id", "obj_0123", "-k", "3", "--show", cwd=workdir, input=built.stdout, check=True
    )
    lines = found.stderr.strip().splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("query"))
    assert lines[header].split() == ["query", "rank", "object_id", "distance", "mag"]
    assert lines[header + 1].split()[:4] == ["obj_0123", "1", "obj_0123", "0"]
    with open(found.stdout.strip() + "/neighbors.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    bad = hyrax("search", "--id", "obj_9999", cwd=workdir)
    assert (
        bad.returncode == 2 and "'obj_9999' is not in the index" in bad.stderr and "close ids" in bad.stderr
    )
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    wrong = hyrax("search", "--vector", "1,2,3", cwd=workdir)
    assert wrong.returncode == 2 and "length 3; this index holds vectors of length 16" in wrong.stderr
    ranked = hyrax("anomaly", "--show", "--set", "anomaly.top_k=7", cwd=workdir, check=True)
    assert "-anomaly-" in ranked.stdout and ranked.stderr.count("obj_") >= 7


@pytest.mark.slow
def test_done_when_the_default_pipeline(workdir, hyrax):
    """hyrax train | hyrax infer | hyrax index, then search --id <an id> --show and anomaly --show, with no
    config: the built-in sample, ChromaDB."""
    from libhyrax.hdf5 import open_result, read_ids

    train = hyrax("train", cwd=workdir, check=True)
    infer = hyrax("infer", cwd=workdir, input=train.stdout, check=True)
    built = hyrax("index", cwd=workdir, input=infer.stdout, check=True)
    with open_result(infer.stdout.strip(), "latents") as f:
        some_id = read_ids(f["object_id"], 100, 101)[0]
    found = hyrax("search", "--id", some_id, "--show", cwd=workdir, input=built.stdout, check=True)
    first = next(ln for ln in found.stderr.splitlines() if ln.startswith(some_id)).split()
    assert first[:4] == [some_id, "1", some_id, "0"]
    ranked = hyrax("anomaly", "--show", cwd=workdir, input=infer.stdout, check=True)
    assert "-anomaly-" in ranked.stdout and "rank" in ranked.stderr


def test_table_ids_stay_text_when_read_back(tmp_path):
    from libhyrax.tables import read_table, write_table

    write_table(
        tmp_path / "t.csv",
        {
            "query": np.array(["00042"]),
            "object_id": np.array(["123456789012345678901234"]),
            "rank": np.array([1]),
            "distance": np.array([0.5]),
        },
    )
    t = read_table(tmp_path / "t.csv")
    assert t["query"][0] == "00042" and t["object_id"][0] == "123456789012345678901234"
    assert t["rank"][0] == 1 and t["distance"][0] == 0.5


def test_catalog_rows_reads_given_rows_and_falls_back_to_ids_when_they_disagree(tmp_path):
    from libhyrax.config import resolve
    from libhyrax.data import write_cutouts
    from libhyrax.results import Result
    from libhyrax.runs import open_run
    from libhyrax.tables import catalog_rows

    ids = np.array([f"g{i:03d}" for i in range(40)])
    write_cutouts(
        tmp_path / "c.h5",
        ids,
        np.zeros((40, 1, 16, 16), np.float32),
        catalog={"mag": np.arange(40, dtype=np.float32)},
        bands=["r"],
    )
    cfg = resolve(
        {
            "general": {"results_dir": str(tmp_path / "results")},
            "data_request": {
                "infer": {
                    "c": {
                        "dataset_class": "HyraxHDF5Dataset",
                        "data_location": str(tmp_path / "c.h5"),
                        "fields": ["image", "object_id"],
                        "primary_id_field": "object_id",
                    }
                }
            },
        }
    )
    with open_run("infer", cfg) as run:
        pass
    group = Result(run.path).data_group()  # the data the infer run read, from its recorded config
    assert list(catalog_rows(group, ["g007", "g003"], rows=[7, 3])["mag"]) == [7.0, 3.0]
    assert list(catalog_rows(group, ["g007", "g003"], rows=[1, 2])["mag"]) == [7.0, 3.0]  # wrong rows
    assert list(catalog_rows(group, ["g039"])["mag"]) == [39.0]
    assert catalog_rows(None, ["g039"]) == {}  # no data: the table keeps ids and scores only


def test_more_like_the_interesting_objects_of_a_label_file(tmp_path, caplog):
    """`search --labels`: one list of the objects nearest to all the positives together, by their mean
    distance to them, the positives themselves left out (exact for a set that lies together)."""
    import logging

    from libhyrax.stages.index import index
    from libhyrax.stages.search import search

    cfg, infer_run, _, ids, x = make_infer_run(tmp_path)
    res = index(cfg, from_run=infer_run, overrides=["vector_db.name=exact"])
    labels = tmp_path / "labels.csv"
    near = np.argsort(np.linalg.norm(x - x[7], axis=1))[:3]  # obj_0007 and its two nearest: one group
    positives = sorted(int(i) for i in near)
    labels.write_text(
        "object_id,label\n"
        + "".join(f"{ids[i]},{v}\n" for i, v in zip(positives, (5, 4, "yes"), strict=True))
        + "obj_0200,0\nGONE-1,5\n"
    )
    with caplog.at_level(logging.WARNING):
        hits = search(cfg, from_run=res, labels=labels, k=6)
    assert "1 labelled object is not in this run (left out): GONE-1" in caplog.text
    assert len(hits) == 6 and set(hits["query"]) == {"3 interesting in labels.csv"}
    mean = np.linalg.norm(x[:, None] - x[positives][None], axis=2).mean(1)
    mean[positives] = np.inf
    expected = np.argsort(mean, kind="stable")[:6]
    assert list(hits["object_id"]) == [ids[i] for i in expected]
    np.testing.assert_allclose(hits["distance"], mean[expected], rtol=1e-4)
    assert "mag" in hits.columns  # catalog columns as for any search
    labels.write_text("object_id,label\nobj_0007,1\n")
    with pytest.raises(UsageError, match="no object in .*labels.csv is labelled interesting"):
        search(cfg, from_run=res, labels=labels)
    with pytest.raises(UsageError, match="exactly one query.*got object ids and labels"):
        search(cfg, from_run=res, object_ids=["obj_0001"], labels=labels)
