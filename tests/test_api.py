"""The public API: exactly the curated names, importable, and `import libhyrax` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import libhyrax

EXPECTED = {
    "load_config", "dump_config", "Result", "Hyrax",
    "prepare", "train", "test", "infer", "export", "umap", "visualize", "index", "search", "anomaly",
    "Dataset", "check_dataset", "open_group", "generate_survey",
    "HyraxModel", "hyrax_model", "check_model", "load_trained",
    "Reducer", "VectorIndex", "show_neighbors",
    "HyraxError", "ConfigError", "UsageError", "DataError", "ModelError", "RunError",
}


def test_public_names_are_exactly_the_curated_ones():
    assert set(libhyrax.__all__) == EXPECTED | {"__version__"}


def test_every_stage_in_the_registry_has_a_library_function():
    from libhyrax.stages import STAGES

    assert {s.name for s in STAGES if s.makes_run} <= set(libhyrax.__all__)


def test_import_libhyrax_is_light():
    code = "import sys, libhyrax; print([m for m in ('torch', 'mlflow', 'chromadb', 'umap', 'bokeh') if m in sys.modules])"
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
