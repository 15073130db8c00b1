"""Configuration: resolution order, deep merge, validation errors, --set, plugins, dumping."""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
import tomlkit

from libhyrax.config import (
    current_version,
    deep_merge,
    default_config,
    dump_config,
    load_config,
    parse_override,
    resolve,
)
from libhyrax.errors import ConfigError


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_only_when_no_file(workdir):
    cfg = load_config()
    assert cfg["train"]["epochs"] == default_config()["train"]["epochs"]
    assert cfg["config_version"] == current_version() == 8


def test_local_file_is_used_when_no_c(workdir):
    write(workdir / "hyrax_config.toml", "[train]\nepochs = 7\n")
    assert load_config()["train"]["epochs"] == 7


def test_c_wins_over_local_file(workdir):
    write(workdir / "hyrax_config.toml", "[train]\nepochs = 7\n")
    other = write(workdir / "other.toml", "[train]\nepochs = 3\n")
    assert load_config(other)["train"]["epochs"] == 3


def test_missing_c_file_is_an_error_not_defaults(workdir):
    with pytest.raises(ConfigError, match="nope.toml does not exist"):
        load_config(workdir / "nope.toml")


def test_deep_merge_keeps_sibling_keys(workdir):
    cfg = load_config(write(workdir / "c.toml", "[model.HyraxAutoencoder]\nlatent_dim = 16\n"))
    assert cfg["model"]["HyraxAutoencoder"] == {
        "base_channel_size": 32,
        "latent_dim": 16,
        "latent_norm": "batch",
    }
    assert cfg["model"]["name"] == "HyraxAutoencoder"
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_unknown_key_names_key_file_and_closest(workdir):
    f = write(workdir / "my.toml", "[train]\nepoch = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert f"unknown key train.epoch in {f}; did you mean train.epochs?" in str(e.value)


def test_unknown_section_is_an_error(workdir):
    with pytest.raises(ConfigError, match="unknown key trian in .*did you mean train"):
        load_config(write(workdir / "c.toml", "[trian]\nepochs = 3\n"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nepochs = 'ten'\n", "train.epochs .* must be an integer"),
        ("[train]\nshuffle = 1\n", "train.shuffle .* must be a boolean"),
        ("[general]\nseed = 1.5\n", "general.seed .* must be an integer"),
        ("[general]\nresults_dir = 3\n", "general.results_dir .* must be a string"),
        ("train = 3\n", "train .* must be a table"),
    ],
)
def test_wrong_type_is_an_error(workdir, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(workdir / "c.toml", text))


def test_int_is_accepted_where_a_float_is_expected(workdir):
    assert load_config(write(workdir / "c.toml", "[onnx]\ntolerance = 1\n"))["onnx"]["tolerance"] == 1


def test_false_means_unset_and_any_value_fills_an_unset_key(workdir):
    cfg = load_config(write(workdir / "c.toml", "[data_set]\ncrop_to = 48\n[train]\nrun_name = 'x'\n"))
    assert cfg["data_set"]["crop_to"] == 48 and cfg["train"]["run_name"] == "x"


def test_free_form_tables_take_any_keys(workdir):
    cfg = load_config(
        write(
            workdir / "c.toml",
            """
        [optimizer]
        name = "torch.optim.SGD"
        [optimizer.kwargs]
        lr = 0.1
        nesterov = true
        [model.MyNet]
        width = 3
        [reduce_dimensions.umap.kwargs]
        min_dist = 0.2
    """,
        )
    )
    assert cfg["optimizer"]["kwargs"] == {"lr": 0.1, "nesterov": True}
    assert cfg["model"]["MyNet"] == {"width": 3}
    assert cfg["reduce_dimensions"]["umap"]["kwargs"]["min_dist"] == 0.2


def test_set_overrides_with_toml_values(workdir):
    cfg = load_config(
        overrides=[
            "train.epochs=5",
            "optimizer.kwargs.lr=1e-4",
            "model.name=HyraxCNN",
            "visualize.fields=['a', 'b']",
            "train.shuffle=false",
        ]
    )
    assert cfg["train"]["epochs"] == 5 and cfg["optimizer"]["kwargs"]["lr"] == 1e-4
    assert cfg["model"]["name"] == "HyraxCNN" and cfg["visualize"]["fields"] == ["a", "b"]
    assert cfg["train"]["shuffle"] is False


def test_set_wins_over_file(workdir):
    f = write(workdir / "c.toml", "[train]\nepochs = 3\n")
    assert load_config(f, ["train.epochs=9"])["train"]["epochs"] == 9


def test_set_is_validated(workdir):
    with pytest.raises(ConfigError, match="unknown key train.epoch .*did you mean train.epochs"):
        load_config(overrides=["train.epoch=5"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_invalid_toml_is_a_config_error(workdir):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(workdir / "c.toml", "[train\nepochs=\n"))


def test_all_errors_are_reported_together(workdir):
    with pytest.raises(ConfigError) as e:
        load_config(write(workdir / "c.toml", "[train]\nepoch = 3\nshuffle = 2\n"))
    assert "train.epoch" in str(e.value) and "train.shuffle" in str(e.value)


def test_user_data_request_replaces_the_default(workdir):
    cfg = load_config(
        write(
            workdir / "c.toml",
            """
        [data_request.train.cutouts]
        dataset_class = "HyraxHDF5Dataset"
        data_location = "cutouts.h5"
        fields = ["image"]
        primary_id_field = "object_id"
    """,
        )
    )
    assert list(cfg["data_request"]) == ["train"]
    assert list(cfg["data_request"]["train"]) == ["cutouts"]


def test_plugin_default_config_is_merged_and_validated(workdir, monkeypatch):
    pkg = workdir / "myplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("class MyNet: pass\n")
    write(pkg / "default_config.toml", "[model.MyNet]\nwidth = 8\ndepth = 2\n")
    monkeypatch.syspath_prepend(str(workdir))
    cfg = load_config(
        write(workdir / "c.toml", "[model]\nname = 'myplugin.models.MyNet'\n[model.MyNet]\ndepth = 5\n")
    )
    assert cfg["model"]["MyNet"] == {"width": 8, "depth": 5}
    # the plugin's keys validate like ours: a wrong type is an error
    with pytest.raises(ConfigError, match="model.MyNet.depth .* must be an integer"):
        load_config(
            write(workdir / "d.toml", "[model]\nname = 'myplugin.models.MyNet'\n[model.MyNet]\ndepth = 'x'\n")
        )
    sys.modules.pop("myplugin", None)


def test_resolve_accepts_none_path_and_dict(workdir):
    f = write(workdir / "c.toml", "[train]\nepochs = 4\n")
    assert resolve()["train"]["epochs"] == 10
    assert resolve(f)["train"]["epochs"] == 4
    assert resolve({"train": {"epochs": 2}})["train"]["epochs"] == 2
    cfg = resolve({"train": {"epochs": 2}})
    assert resolve(cfg) == cfg  # a resolved config resolves to itself


def test_dump_keeps_comments_and_round_trips(workdir):
    cfg = load_config(overrides=["train.epochs=3", "optimizer.kwargs.momentum=0.9"])
    text = dump_config(cfg)
    assert "# every stage writes results/" in text  # a comment from the defaults
    assert tomlkit.parse(text).unwrap() == cfg
    (workdir / "again.toml").write_text(text)
    assert load_config(workdir / "again.toml") == cfg


def test_config_newer_than_hyrax_is_refused(workdir):
    with pytest.raises(ConfigError, match="config_version 99.*newer Hyrax.*pip install -U"):
        load_config(write(workdir / "c.toml", "config_version = 99\n"))


def test_reference_only_keys_warn_once_and_run_goes_on(workdir, caplog):
    f = write(
        workdir / "c.toml",
        """
        config_version = 7
        [general]
        dev_mode = true
        log_destination = "stderr"
        [download]
        stats_print_interval = 60
    """,
    )
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        logging.getLogger("hyrax").propagate = True
        try:
            cfg = load_config(f)
        finally:
            logging.getLogger("hyrax").propagate = False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for key in ("general.dev_mode", "general.log_destination", "download.stats_print_interval"):
        assert key in warnings[0]
    assert "dev_mode" not in cfg["general"] and "stats_print_interval" not in cfg["download"]
    from libhyrax.config import load_config_ignoring

    caplog.clear()
    again, ignored = load_config_ignoring(f)  # for a caller that judges them itself: returned, not warned
    assert again == cfg and not caplog.records
    assert ignored == {
        "general.dev_mode": True,
        "general.log_destination": "stderr",
        "download.stats_print_interval": 60,
    }


def test_false_on_a_key_with_a_default_means_the_default(workdir):
    cfg = load_config(
        write(workdir / "c.toml", "[model.HyraxAutoencoder]\nlatent_dim = false\n[train]\nshuffle = false\n")
    )
    assert cfg["model"]["HyraxAutoencoder"]["latent_dim"] == 64  # unset: the default applies
    assert cfg["train"]["shuffle"] is False  # a boolean key: false is a real value
