"""The public API: exactly the curated names, importable, and `import libhyrax` stays light; and the
`Hyrax` object taking the reference Hyrax's notebook calls as its notebooks make them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import libhyrax
from libhyrax.errors import UsageError

EXPECTED = {
    "load_config", "dump_config", "Result", "Hyrax", "lookup",
    "Dataset", "check_dataset", "open_group", "generate_survey",
    "HyraxModel", "hyrax_model", "check_model", "load_trained",
    "Reducer", "check_reducer", "VectorIndex", "check_index", "Scorer", "check_scorer", "Provider",
    "check_provider", "show_neighbors",
    "HyraxError", "ConfigError", "UsageError", "DataError", "ModelError", "RunError",
}


def test_public_names_are_exactly_the_curated_ones():
    from libhyrax.stages import STAGES

    stage_functions = {s.name for s in STAGES if s.makes_run}  # one per stage of the registry
    assert {"prepare", "train", "infer", "umap", "visualize", "index", "search", "anomaly"} <= stage_functions
    assert set(libhyrax.__all__) == EXPECTED | stage_functions | {"__version__"}


def test_every_stage_in_the_registry_has_a_library_function():
    from libhyrax.stages import STAGES

    assert {s.name for s in STAGES if s.makes_run} <= set(libhyrax.__all__)


def test_import_libhyrax_is_light():
    code = (
        "import sys, libhyrax; "
        "print([m for m in ('torch', 'mlflow', 'chromadb', 'umap', 'bokeh') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_form_one_tree():
    for name in ("ConfigError", "UsageError", "DataError", "ModelError", "RunError"):
        assert issubclass(getattr(libhyrax, name), libhyrax.HyraxError)
    assert libhyrax.ConfigError.exit_code == libhyrax.UsageError.exit_code == 2
    assert libhyrax.DataError.exit_code == libhyrax.RunError.exit_code == 1


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        libhyrax.nonexistent  # noqa: B018


def test_hyrax_object_wraps_a_config(workdir):
    h = libhyrax.Hyrax({"train": {"epochs": 2}})
    assert h.config["train"]["epochs"] == 2
    h.set("train.epochs", 4).set("model.name", "HyraxCNN")
    assert h.config["train"]["epochs"] == 4 and h.config["model"]["name"] == "HyraxCNN"
    with pytest.raises(libhyrax.ConfigError, match="did you mean train.epochs"):
        h.set("train.epoch", 4)
    assert callable(h.train) and h.reduce_dimensions.__name__ == "umap"  # the reference's verb names
    with pytest.raises(AttributeError, match="no stage 'trian'"):
        h.trian  # noqa: B018
    assert "epochs = 4" in h.show_config()


# --- the reference Hyrax's notebook API --------------------------------------------------------------

SMALL = {  # seconds, not minutes: random 2-band 16x16 images and a small autoencoder
    "general": {"results_dir": "./results", "device": "cpu"},
    "data_request": {
        "train": {
            "data": {
                "dataset_class": "HyraxRandomDataset",
                "primary_id_field": "object_id",
                "fields": ["image", "object_id"],
                "dataset_config": {"size": 80, "shape": [2, 16, 16]},
            }
        }
    },
    "model": {"name": "HyraxAutoencoder", "HyraxAutoencoder": {"base_channel_size": 8, "latent_dim": 8}},
    "data_loader": {"batch_size": 32},
}


def test_a_reference_notebook_runs_unchanged(workdir, hyrax):
    """The calls of a reference notebook, in its order: config edits, set_config, every verb, searches
    through database_connection, lookup returning the latent vector; `hyrax lookup --id` prints it."""
    import numpy as np

    h = libhyrax.Hyrax(SMALL)
    h.config["train"]["epochs"] = 1  # a plain dict, honoured by the next call
    h.set_config("vector_db.name", "exact")
    h.set_config("reduce_dimensions.algorithm", "pca")
    trained = h.train()
    assert trained.provenance["stage_info"]["epochs_done"] == 1
    inference = h.infer()
    assert type(inference) is type(libhyrax.infer(h.config, from_run=trained))  # one kind of result, Latents
    assert len(inference) == 80 and inference[0].shape == (8,)  # the reference's results dataset shape
    h.umap()
    page = h.visualize()
    assert page.html.is_file()
    h.save_to_database()
    db = h.database_connection()
    ids = inference.ids()
    hits = db.search_by_id(ids[5], k=3)
    assert list(hits) == [ids[5]] and hits[ids[5]][0] == ids[5] and len(hits[ids[5]]) == 3
    assert hits.distances[ids[5]][0] == 0 and sorted(hits.distances[ids[5]]) == hits.distances[ids[5]]
    vector = h.lookup(id=ids[5])
    np.testing.assert_array_equal(vector, inference[5])
    by_vector = db.search_by_vector(np.stack([vector, inference[7]]), k=2)
    assert by_vector[0][0] == ids[5] and by_vector[1][0] == ids[7] and set(by_vector) == {0, 1}
    assert db.get_by_id([ids[7]])[ids[7]] == inference[7].tolist()
    with pytest.raises(UsageError, match="no-such-object"):  # as `hyrax lookup` exits 2, never a silent None
        h.lookup(id="no-such-object")
    with pytest.raises(KeyError, match="no-such-object"):  # named, with close ids: not a bare KeyError: 0
        db.search_by_id("no-such-object")
    exported = h.to_onnx()
    assert exported.file("model.onnx").is_file()
    through_onnx = h.engine()
    np.testing.assert_allclose(through_onnx[:], inference[:], atol=1e-4)
    proc = hyrax("lookup", "--id", str(ids[5]), "--from", str(inference.path), cwd=workdir, check=True)
    np.testing.assert_allclose([float(x) for x in proc.stdout.strip().split(",")], vector, rtol=1e-6)
    bad = hyrax("lookup", "--id", "no-such-object", "--from", str(inference.path), cwd=workdir)
    assert bad.returncode == 2 and "not in" in bad.stderr and bad.stdout == ""


def test_reference_run_settings_and_verb_arguments_are_honoured(workdir, caplog):
    """A reference config file's settings that name runs (vector_db.vector_db_dir, ...) choose the run a
    verb reads, and aren't reported; the verbs' own arguments (input_dir, ...) do the same."""
    import logging

    (workdir / "ref.toml").write_text(
        'config_version = 7\n[vector_db]\nvector_db_dir = "results/somewhere"\n'
        '[results]\ninference_dir = "results/an-infer-run"\n[general]\ndev_mode = false\n'
        '["torch.optim.SGD"]\nlr = 0.05\n[optimizer]\nname = "torch.optim.SGD"\n'
    )
    with caplog.at_level(logging.WARNING, logger="hyrax.config"):
        h = libhyrax.Hyrax(config_file="ref.toml")
    assert h.run_dirs == {
        "vector_db.vector_db_dir": "results/somewhere",
        "results.inference_dir": "results/an-infer-run",
    }
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "vector_db_dir" not in warned and "inference_dir" not in warned  # honoured; dev_mode: its default
    assert h.config["optimizer"] == {"name": "torch.optim.SGD", "kwargs": {"lr": 0.05}}
    with pytest.raises(libhyrax.UsageError, match="results/somewhere"):
        h.database_connection()  # the setting is the run it looks in
    with pytest.raises(libhyrax.UsageError, match="elsewhere"):
        h.umap(input_dir="elsewhere")  # the argument wins over the setting
    h.config["engine"] = {"model_directory": "results/an-export-run"}  # set the reference way, mid-session
    with pytest.raises(libhyrax.UsageError, match="an-export-run"):
        h.engine()
    with pytest.raises(libhyrax.UsageError, match="output_dir"):
        h.save_to_database(output_dir="db")


def test_reference_names_we_dont_have_say_what_to_use():
    h = libhyrax.Hyrax()
    for name, hint in (
        ("visualize_v2", "h.visualize()"),
        ("create_splits", "split.from_run"),
        ("infer_stream", "h.infer()"),
        ("rebuild_manifest", "manifest.fits"),
    ):
        with pytest.raises(AttributeError, match="reference Hyrax") as err:
            getattr(h, name)()
        assert hint in str(err.value)
    from libhyrax.models import HyraxAutoencoder

    assert h.model() is HyraxAutoencoder
    assert callable(h.save_to_database) and callable(h.to_onnx) and callable(h.reduce_dimensions)
