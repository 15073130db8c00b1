"""The notebooks run top to bottom in a real Jupyter kernel (nbclient), so they can't rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, workdir):
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(path, workdir / path.name)
    nb = nbformat.read(workdir / path.name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    if path.name == "quickstart.ipynb":
        assert "HDF-0001" in outputs  # the search table: the query object comes back
        assert "(1000, 64)" in outputs  # latents of every object in the sample
        assert list((workdir / "results").glob("*-train-*"))
