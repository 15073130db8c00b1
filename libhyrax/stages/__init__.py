"""The stages: one registry, and one module per stage (`libhyrax/stages/<stage>.py`).

The `hyrax` umbrella app, the `hyrax-<stage>` executables, the Apptainer apps, the README's stage table
(checked by a test) and every stage's default input run all come from the list below; nothing else lists
the stages. A stage module never imports another stage module: what a stage needs from the runs before it,
it asks of its input run's lineage (`libhyrax.results.Result.find`).

This module imports nothing (setup.py runs it on its own, and `hyrax --help` reads it): keep it that way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    # the stage(s) whose results directory this one reads (`--from`, a pipe, else the newest run of the
    # first); empty for stages that start from data
    needs: tuple[str, ...] = ()
    makes_run: bool = True  # False for tools (e.g. `config`) that write no results directory
    shards: bool = False  # splits its rows over Slurm array tasks / --shard I/N (libhyrax.start.start_run)
    aliases: tuple[str, ...] = ()  # the reference Hyrax's verb names
    reads: str = ""  # for people: what the stage reads (the README's stage table)
    writes: tuple[str, ...] = ()  # the files and folders a run with the defaults writes (checked by a test)


STAGES: tuple[Stage, ...] = (
    Stage("config", "Print the resolved, migrated config as TOML.", makes_run=False),
    Stage(
        "download",
        "Fetch cutouts of a catalogue's objects from a survey's service (HSC, Legacy Surveys, ...).",
        shards=True,
        reads="a catalogue (id, ra, dec) + a survey's cutout service",
        writes=("cutouts.h5", "download.h5", "download.csv"),
    ),
    Stage(
        "prepare",
        "Build an HDF5 cutout file from FITS cutouts (or the built-in sample).",
        shards=True,
        reads="a folder of FITS cutouts + a catalog (or nothing: the built-in sample)",
        writes=("cutouts.h5", "rejected.csv"),
    ),
    Stage(
        "train",
        "Train a model on the train split.",
        reads="the `train` data group",
        writes=("model.pt", "model.json", "checkpoints/", "split.h5", "metrics.csv"),
    ),
    Stage(
        "test",
        "Evaluate a trained model on the test split.",
        needs=("train",),
        reads="a train run + the test split",
        writes=("test_metrics.json", "metrics.csv"),
    ),
    Stage(
        "infer",
        "Turn every object into a latent vector (latents.h5).",
        needs=("train", "export"),
        shards=True,
        reads="a train run (or an export run, `--engine onnx`) + the `infer` data group",
        writes=("latents.h5",),
    ),
    Stage(
        "export",
        "Export a trained model to ONNX with its preprocessing.",
        needs=("train",),
        aliases=("to_onnx",),
        reads="a train run",
        writes=("model.onnx", "preprocessing.json"),
    ),
    Stage(
        "umap",
        "Map latents to 2-D (UMAP or PCA).",
        needs=("infer",),
        aliases=("reduce_dimensions",),
        shards=True,
        reads="an infer run",
        writes=("embedding.h5", "reducer.pkl"),
    ),
    Stage(
        "visualize",
        "Write an interactive HTML map of an embedding.",
        needs=("umap",),
        reads="a umap run (and its infer run's catalog)",
        writes=("visualize.html",),
    ),
    Stage(
        "index",
        "Build a vector index of latents for similarity search.",
        needs=("infer",),
        shards=True,
        aliases=("save_to_database",),
        reads="an infer run",
        writes=("index/",),
    ),
    Stage(
        "search",
        "Find the objects nearest to an object, a vector or an image.",
        needs=("index",),
        reads="an index run",
        writes=("neighbors.csv",),
    ),
    Stage(
        "lookup", "Print an object's latent vector (from an infer run).", needs=("infer",), makes_run=False
    ),
    Stage(
        "anomaly",
        "Rank every object by how unusual it is.",
        needs=("infer",),
        shards=True,
        reads="an infer run",
        writes=("scores.h5", "top_anomalies.csv"),
    ),
    Stage(
        "rank",
        "Re-rank every object by what labels say is interesting.",
        needs=("anomaly", "infer"),
        shards=True,
        reads="an anomaly run (or an infer run) + label files (object_id,label)",
        writes=("scores.h5", "top_candidates.csv", "labels.csv", "ranking.json"),
    ),
)

BY_NAME = {s.name: s for s in STAGES}
ALIASES = {a: s.name for s in STAGES for a in s.aliases}


def get(name: str) -> Stage:
    return BY_NAME[ALIASES.get(name, name)]
