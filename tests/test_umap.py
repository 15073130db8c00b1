"""The umap stage: seeded fits, reducer reuse, sharded input and output, PCA, NaN rows, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from libhyrax import hdf5, sharding
from libhyrax.errors import ConfigError, DataError, UsageError
from libhyrax.reducers import REGISTRY, Reducer, make_reducer
from libhyrax.rundir import read_provenance, upstream_paths
from libhyrax.runs import open_run
from libhyrax.sharding import Shard
from libhyrax.stages.umap import umap


class FirstColumns(Reducer):
    """The test double: keeps the first n_components columns, minus the fitted mean."""

    name = "first-columns"

    def fit(self, x):
        self.mean_ = x.mean(axis=0)
        return self

    def transform(self, x):
        return (x - self.mean_)[:, : self.n_components].astype(np.float32)


def blobs(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Three well-separated clusters, so a 2-D map keeps them apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(3, d))
    return (centres[np.arange(n) % 3] + rng.normal(size=(n, d))).astype(np.float32)


def cfg_for(workdir, **reduce) -> dict:
    return {"general": {"results_dir": str(workdir / "results")},
            "reduce_dimensions": {"num_workers": 0, "batch_size": 256, **reduce}}


def make_infer_run(cfg, latent: np.ndarray, shards: int = 0) -> str:
    """An infer-like run holding latents.h5 (or `shards` latents shards)."""
    from libhyrax.config import resolve

    full = resolve(cfg)
    ids = np.array([f"obj{i:05d}" for i in range(len(latent))])
    recon = np.linalg.norm(latent, axis=1).astype(np.float32)
    if not shards:
        with open_run("infer", full) as run:
            hdf5.write_arrays(run.file("latents.h5"), ids, latent=latent, recon_error=recon)
        return str(run.path)
    for i in range(shards):
        s, e = sharding.shard_range(len(latent), i, shards)
        with open_run("infer", full, shard=Shard(i, shards), name="sharded-infer") as run:
            hdf5.write_arrays(run.file(hdf5.shard_name("latents", i, shards)), ids[s:e], latent=latent[s:e],
                              recon_error=recon[s:e])
    return str(run.path)


def embedding(run) -> tuple[np.ndarray, np.ndarray]:
    with hdf5.open_result(run.path, "embedding") as f:
        return hdf5.read_ids(f["object_id"]), f["embedding"][:]


def test_pca_embedding_in_input_order_and_exact(workdir):
    cfg = cfg_for(workdir, algorithm="pca", fit_sample_size=10_000)
    x = blobs(1000)
    src = make_infer_run(cfg, x)
    res = umap(cfg, from_run=src)
    ids, emb = embedding(res)
    assert list(ids[:3]) == ["obj00000", "obj00001", "obj00002"] and emb.shape == (1000, 2)
    from sklearn.decomposition import PCA

    ref = PCA(n_components=2, random_state=42).fit(x).transform(x)
    np.testing.assert_allclose(np.abs(emb), np.abs(ref), rtol=1e-3, atol=1e-3)  # PCA signs are arbitrary
    prov = read_provenance(res.path)
    assert prov["stage_info"]["algorithm"] == "pca" and prov["stage_info"]["n_objects"] == 1000
    # how much of the latents' 10-NN neighbourhoods the map keeps, on a seeded sample (issue 25)
    fidelity = prov["stage_info"]["fidelity"]
    assert fidelity["n"] == 1000 and fidelity["k"] == 10, fidelity
    assert 0.05 < fidelity["knn_overlap"] < 0.9 and 0.7 < fidelity["trustworthiness"] < 1, fidelity
    assert Path(src).resolve() in [u.resolve() for u in upstream_paths(res.path)]


def test_fit_on_a_seeded_sample_and_reuse_the_reducer(workdir):
    cfg = cfg_for(workdir, algorithm="pca", fit_sample_size=200)
    src = make_infer_run(cfg, blobs(900))
    a, b = umap(cfg, from_run=src), umap(cfg, from_run=src)
    np.testing.assert_array_equal(embedding(a)[1], embedding(b)[1])  # seeded sample: same map
    other = umap({**cfg, "general": {**cfg["general"], "seed": 7}}, from_run=src)
    assert not np.allclose(embedding(a)[1], embedding(other)[1])
    # new objects mapped through the fitted reducer: the same as transforming them with it
    new_x = blobs(300, seed=5)
    new_src = make_infer_run(cfg, new_x)
    reused = umap(cfg, from_run=new_src, reducer=a.path)
    np.testing.assert_allclose(embedding(reused)[1], Reducer.load(a.path).transform(new_x), atol=1e-6)
    assert a.path.resolve() in [u.resolve() for u in upstream_paths(reused.path)]
    with pytest.raises(UsageError, match="infer"):
        umap(cfg, from_run=new_src, reducer=src)  # an infer run is not a umap run


def umap_cfg(workdir, workers: int = 0) -> dict:
    kwargs = {"n_components": 2, "n_neighbors": 10, "n_epochs": 30}
    return cfg_for(
        workdir, algorithm="umap", fit_sample_size=400, umap={"kwargs": kwargs}, num_workers=workers
    )


def test_umap_is_seeded_and_keeps_clusters_apart(workdir):
    x = blobs(1200)
    src = make_infer_run(cfg_for(workdir), x)
    a, b = umap(umap_cfg(workdir), from_run=src), umap(umap_cfg(workdir), from_run=src)
    ids, emb = embedding(a)
    np.testing.assert_array_equal(emb, embedding(b)[1])
    assert np.isfinite(emb).all() and emb.shape == (1200, 2)
    # every point is nearer its own cluster's centre than another's
    labels = np.arange(1200) % 3
    centres = np.stack([emb[labels == k].mean(0) for k in range(3)])
    nearest = np.argmin(((emb[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.98
    assert (a.path / "reducer.pkl").is_file()


def test_spawned_workers_give_the_serial_result(workdir):
    cfg = cfg_for(workdir, algorithm="pca", batch_size=100)
    src = make_infer_run(cfg, blobs(1000))
    serial = umap(cfg, from_run=src)
    spawned = umap({**cfg, "reduce_dimensions": {**cfg["reduce_dimensions"], "num_workers": 2}}, from_run=src)
    assert list(embedding(spawned)[0]) == list(embedding(serial)[0])
    np.testing.assert_array_equal(embedding(spawned)[1], embedding(serial)[1])


@pytest.mark.slow
def test_umap_in_spawned_workers_equals_serial(workdir):
    src = make_infer_run(cfg_for(workdir), blobs(1200))
    serial = umap(umap_cfg(workdir), from_run=src)
    spawned = umap(umap_cfg(workdir, workers=2), from_run=src, reducer=serial.path)
    np.testing.assert_array_equal(embedding(spawned)[1], embedding(serial)[1])


def test_sharded_latents_in_and_sharded_embedding_out(workdir):
    cfg = cfg_for(workdir, algorithm="pca", fit_sample_size=10_000)
    x = blobs(500)
    sharded_src = make_infer_run(cfg, x, shards=3)
    whole = umap(cfg, from_run=make_infer_run(cfg, x))
    from_shards = umap(cfg, from_run=sharded_src)
    np.testing.assert_allclose(embedding(from_shards)[1], embedding(whole)[1], atol=1e-5)
    # a Slurm-array-like run: each task maps its share into one shared directory
    for i in range(2):
        out = umap(cfg, from_run=sharded_src, shard=f"{i}/2", run_name="umap-shards")
    assert out.path.name == "umap-shards"
    ids, emb = embedding(out)
    assert list(ids) == list(embedding(whole)[0])
    np.testing.assert_allclose(emb, embedding(whole)[1], atol=1e-5)
    assert read_provenance(out.path)["status"] == "complete"


def test_nan_rows_are_dropped_and_counted(workdir, caplog):
    cfg = cfg_for(workdir, algorithm="pca")
    x = blobs(600)
    x[[3, 400]] = np.nan
    x[17, 2] = np.inf
    res = umap(cfg, from_run=make_infer_run(cfg, x))
    ids, emb = embedding(res)
    assert len(ids) == 597 and np.isfinite(emb).all()
    assert not {"obj00003", "obj00017", "obj00400"} & set(ids)
    assert read_provenance(res.path)["stage_info"]["n_dropped_nonfinite"] == 3
    assert "dropped 3 of 600" in caplog.text and "obj00003" in caplog.text
    x[:] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        umap(cfg, from_run=make_infer_run(cfg, x))


def test_reducer_registry_and_fake(workdir):
    assert {"umap", "pca", "first-columns"} <= set(make_reducer("pca", {}) and REGISTRY)
    cfg = cfg_for(workdir, algorithm="first-columns")
    x = blobs(300)
    res = umap(cfg, from_run=make_infer_run(cfg, x))
    np.testing.assert_allclose(embedding(res)[1], (x - x.mean(0))[:, :2], atol=1e-5)
    with pytest.raises(ConfigError, match="did you mean umap"):
        make_reducer("uamp", {})
    with pytest.raises(DataError, match="no fitted reducer"):
        Reducer.load(workdir)


def test_cli_umap_reads_the_piped_infer_run(workdir, hyrax):
    cfg = cfg_for(workdir, algorithm="pca")
    src = make_infer_run(cfg, blobs(200))
    proc = hyrax(
        "umap", "--set", "reduce_dimensions.algorithm=pca", input=src + "\n", cwd=workdir, check=True
    )
    out = proc.stdout.strip()
    assert out.endswith(tuple("0123456789abcdef")) and "-umap-" in out
    with hdf5.open_result(out, "embedding") as f:
        assert f["embedding"].shape == (200, 2)
    bad = hyrax("umap", "--from", src, "--set", "reduce_dimensions.algorithm=isomap", cwd=workdir)
    assert bad.returncode == 2 and "unknown reduce_dimensions.algorithm 'isomap'" in bad.stderr


def test_umap_compiles_once_per_machine_not_once_per_process():
    """umap-learn's numba functions are kept in NUMBA_CACHE_DIR: a second process fitting and mapping
    compiles none of them (issue 16: compiling them was most of a small `hyrax umap`)."""
    code = textwrap.dedent("""
        import numpy as np
        from libhyrax.reducers import import_heavy_for_unpickle
        import_heavy_for_unpickle()
        import umap  # noqa: F401  (its functions with a signature compile on import, before any cache)
        from numba.core import event
        compiled = []
        class Listener(event.Listener):
            def on_start(self, e):
                compiled.append(e.data["dispatcher"].py_func.__module__)
            def on_end(self, e):
                pass
        event.register("numba:compile", Listener())
        from libhyrax.reducers.umap import UMAPReducer
        x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
        UMAPReducer(n_neighbors=5, random_state=0).fit(x[:30]).transform(x[30:])
        print(sorted({m for m in compiled if m.startswith("umap")}))
    """)
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs[1] == "[]", f"the second process compiled {runs[1]}"
