"""The notebook gallery runs top to bottom in a real Jupyter kernel (nbclient), so it can't rot; and each
notebook shows what it says it shows (the values checked below come from its outputs)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def number(text: str, pattern: str) -> float:
    """The number after `pattern` in the notebook's outputs."""
    found = re.search(pattern + r"\s*([-+0-9.e]+)", text)
    assert found, f"no {pattern!r} in the notebook's outputs"
    return float(found.group(1))


# name -> checks on (the text of every output, the number of pictures, the working directory)
def _quickstart(text, pictures, workdir):
    assert "(1000, 64)" in text  # latents of every object in the sample
    assert re.search(r"HDF-0001\s+1\s+HDF-0001\s+0", text)  # the search table: the query object comes first
    assert pictures >= 2 and list((workdir / "results").glob("*-train-*"))  # neighbours, top anomalies


def _cutouts(text, pictures, workdir):
    assert "'n_objects': 238, 'n_rejected': 2" in text
    assert "HDF-0008,B,,missing band" in text and "HDF-0012,G,HDF-0012_G.fits,\"unreadable FITS" in text
    assert "latents: (238, 16) of 238 objects" in text and pictures >= 2


def _own_classes(text, pictures, workdir):
    assert "Shapes: 300 objects, fields image, label, object_id: ok" in text
    assert "define infer_batch(x)" in text  # check_model said what the first try lacked
    assert number(text, "kinds told apart by the latents:") >= 0.8
    assert "ModuleRingFinder trained, recorded as my_survey_plugins.ModuleRingFinder" in text


def _map(text, pictures, workdir):
    assert "nothing selected on the map: selecting its right edge" in text  # through the map's API
    selected = re.search(r"(\d+) objects selected, e.g. \['SYN-", text)
    assert selected and int(selected.group(1)) > 0  # ids back in Python
    assert re.search(r"kinds: \{'[a-z_]+': \d+", text)  # their cutouts were read
    assert "map coloured by mag" in text and pictures >= 2


def _finding(text, pictures, workdir):
    assert "nearest to the image of SYN-042: SYN-042" in text
    random = number(text, r"\(random:")
    assert number(text, "precision@50 =") >= 4 * random  # the ranking finds the injected anomalies
    assert pictures >= 3


def _comparing(text, pictures, workdir):
    assert re.search(r"\{4: \[[0-9., ]+\],\s+32: \[", text) or re.search(
        r"\{32: \[[0-9., ]+\],\s+4: \[", text
    )
    assert "better: latent_dim=" in text and pictures >= 1


def _without_hyrax(text, pictures, workdir):
    assert number(text, "onnxruntime vs Hyrax's latents: largest difference") < 1e-3
    assert "x = arcsinh(x / 0.1)" in text and pictures >= 1


def _reference(text, pictures, workdir):
    assert "Spirals: 400 objects, fields image, label, object_id, twist: ok" in text
    assert "['example_model.pth', 'model.pt']" in text and "final metrics: {'loss':" in text
    assert "'kwargs': {'lr': 0.02, 'momentum': 0.9}" in text  # the class-named table, merged
    assert "prepared: 30 objects; item 0: rand-00 (2, 16, 16)" in text  # nested dataset_config: 30, not 100
    assert "most recent infer run is this one: True" in text and "t-SNE map: (400, 2)" in text
    assert "general.dev_mode = True: there is no dev mode" in text
    assert "'checkpoint_epoch_8.pt'" in text and "the new run trained epochs [9, 10] from epoch 8" in text
    assert 'optimizer.name is torch.optim.SGD: set optimizer.name = "torch.optim.Adam"' in text
    assert number(text, "spirals told from smooth disks, all 400 objects: accuracy") >= 0.9
    assert (
        "{'spiral-0007': ['spiral-0007'," in text and "{0: ['spiral-0007'," in text
    )  # the reference's shapes
    assert number(text, "engine vs infer: largest difference") < 1e-3
    assert "visualize_v2: Hyrax.visualize_v2 is a verb of the reference Hyrax" in text


CHECKS = {
    "01_quickstart": _quickstart,
    "02_your_own_cutouts": _cutouts,
    "03_your_own_dataset_and_model": _own_classes,
    "04_exploring_the_map": _map,
    "05_finding_things": _finding,
    "06_comparing_runs": _comparing,
    "07_results_without_hyrax": _without_hyrax,
    "08_coming_from_reference_hyrax": _reference,
}


def outputs(nb) -> tuple[str, int]:
    """Every text a notebook's cells printed or showed, and how many pictures (PNG) they showed."""
    texts, pictures = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(out.get("text", ""))
            data = out.get("data", {})
            texts.append(data.get("text/plain", ""))
            pictures += "image/png" in data
    return "\n".join(texts), pictures


def assert_maps_keep_a_static_copy(nb) -> None:
    """Every live map (a widget) in an executed notebook has the page beside it as text/html, which shows
    when the notebook is reopened or rendered without a kernel; BokehJS is never fetched from a CDN."""
    for cell in nb.cells:
        data = [o.get("data", {}) for o in cell.get("outputs", [])]
        if any("application/vnd.jupyter.widget-view+json" in d for d in data):
            static = [d.get("text/html", "") for d in data if "hyrax-static-map" in d.get("text/html", "")]
            assert static and "<iframe srcdoc=" in static[0]
        assert not any("cdn.bokeh.org" in str(d) for d in data)


def test_the_gallery_is_numbered_and_complete():
    names = [p.stem for p in NOTEBOOKS]
    assert set(CHECKS) <= set(names), f"missing: {set(CHECKS) - set(names)}"
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", n) for n in names), names


def test_notebooks_are_saved_without_outputs():
    import nbformat

    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        dirty = [
            i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)
        ]
        assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, workdir):
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(path, workdir / path.name)
    nb = nbformat.read(workdir / path.name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    text, pictures = outputs(nb)
    assert_maps_keep_a_static_copy(nb)
    check = CHECKS.get(path.stem)
    if check is not None:
        check(text, pictures, workdir)
