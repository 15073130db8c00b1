"""The one registry of stages. The `hyrax` umbrella app, the `hyrax-<stage>` executables and the
Apptainer apps are all generated from this list; nothing else lists the stages.

This module imports nothing heavy: setup.py and `hyrax --help` read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    needs: str | None = None  # the stage whose results directory this one reads by default
    makes_run: bool = True  # False for tools (e.g. `config`) that write no results directory
    aliases: tuple[str, ...] = ()  # the reference Hyrax's verb names


STAGES: tuple[Stage, ...] = (
    Stage("config", "Print the resolved, migrated config as TOML.", makes_run=False),
    Stage("prepare", "Build an HDF5 cutout file from FITS cutouts (or the built-in sample)."),
    Stage("train", "Train a model on the train split."),
    Stage("test", "Evaluate a trained model on the test split.", needs="train"),
    Stage("infer", "Turn every object into a latent vector (latents.h5).", needs="train"),
    Stage("export", "Export a trained model to ONNX with its preprocessing.", needs="train",
          aliases=("to_onnx",)),
    Stage("umap", "Map latents to 2-D (UMAP or PCA).", needs="infer", aliases=("reduce_dimensions",)),
    Stage("visualize", "Write an interactive HTML map of an embedding.", needs="umap"),
    Stage("index", "Build a vector index of latents for similarity search.", needs="infer",
          aliases=("save_to_database",)),
    Stage("search", "Find the objects nearest to an object, a vector or an image.", needs="index",
          aliases=("lookup",)),
    Stage("anomaly", "Rank every object by how unusual it is.", needs="infer"),
)

BY_NAME = {s.name: s for s in STAGES}
ALIASES = {a: s.name for s in STAGES for a in s.aliases}


def get(name: str) -> Stage:
    return BY_NAME[ALIASES.get(name, name)]
