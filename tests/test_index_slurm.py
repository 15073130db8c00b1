"""A real Slurm array: `sbatch --array=0-1 hyrax index` fills a FAISS index in two shards of one index run,
which `search` opens as one index."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from slurm_cluster import slurm_cluster_fixture, slurm_fixture  # noqa: F401  (fixtures)
from test_search import make_infer_run

from libhyrax.results import read_provenance


@pytest.mark.slow
@pytest.mark.slurm
def test_sbatch_array_of_two_index_tasks_searched_as_one(slurm, workdir):
    pytest.importorskip("faiss")
    from libhyrax.stages.search import search

    cfg, infer_run, _, ids, x = make_infer_run(workdir, n=3000, dim=16, shards=2)
    cmd = f"{sys.executable} -m hyrax_cli index --from {infer_run} --set vector_db.name=auto"
    job = slurm.sbatch("--array=0-1", "-o", "index-%A_%a.log", "--wrap", cmd, cwd=workdir)
    tasks = slurm.wait(job, timeout=300)
    assert [t.state for t in tasks] == ["COMPLETED"] * 2, [
        (workdir / f"index-{job}_{i}.log").read_text()[-2000:] for i in range(2)
    ]
    run_dir = workdir / "results" / f"slurm-{job}-index-array"
    assert read_provenance(run_dir)["status"] == "complete"
    assert len(list((run_dir / "index").glob("ivfpq.shard-*-of-0002.faiss"))) == 2
    hits = search(cfg, from_run=run_dir, object_ids=["obj_0010", "obj_2990"], k=4)
    for q, row in ((0, 10), (4, 2990)):
        d = np.linalg.norm(x - x[row], axis=1)
        assert list(hits["object_id"][q : q + 4]) == [
            f"obj_{r:04d}" for r in np.argsort(d, kind="stable")[:4]
        ]
        np.testing.assert_allclose(hits["distance"][q : q + 4], np.sort(d)[:4], rtol=1e-5)
