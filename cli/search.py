"""hyrax search: the nearest objects of an object id, a vector or an image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage, show_option

IdOpt = Annotated[list[str] | None, typer.Option("--id", help="An object id to search around (repeatable).",
                                                 show_default=False)]
VectorOpt = Annotated[
    str | None,
    typer.Option(
        "--vector",
        help="A query vector: comma-separated numbers or a .npy file of one or more vectors.",
        show_default=False,
    ),
]
ImageOpt = Annotated[
    Path | None,
    typer.Option(
        "--image",
        help="A cutout (.npy or FITS, bands x H x W) run through the model that made the index's latents.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="The train run the --image must go through (refused unless it made the index's latents).",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--labels",
        help="More like these: a label file (CSV "
        "object_id,label) whose interesting objects are searched "
        "around together (repeatable).",
        show_default=False,
    ),
]
KOpt = Annotated[
    int | None, typer.Option("-k", help="Neighbours per query (default: search.k).", show_default=False)
]
ShowOpt = show_option("the table")


def command(
    id_: IdOpt = None,
    vector: VectorOpt = None,
    image: ImageOpt = None,
    labels: LabelsOpt = None,
    k: KOpt = None,
    show: ShowOpt = False,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    from_run: FromOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Find the k nearest objects (with distances and catalog columns) in an index run; writes
    neighbors.csv and prints the search run's directory.

    Examples:
      hyrax search --id HDF-0001 --show
      hyrax search --labels labels.csv -k 50     # nearest to all the objects labelled interesting
    """

    def body():
        from libhyrax.stages.search import search

        hits = search(
            config,
            overrides=set_ or (),
            from_run=input_run(from_run),
            object_ids=id_ or None,
            vectors=_vectors(vector),
            image=image,
            labels=labels or None,
            k=k,
            model_run=model,
        )
        if show:
            print(hits.format(), file=sys.stderr)
        return hits

    run_stage(body, debug)


def _vectors(text: str | None):
    if text is None:
        return None
    import numpy as np

    from libhyrax.errors import UsageError

    if text.endswith(".npy"):
        if not Path(text).is_file():
            raise UsageError(f"--vector {text}: no such file")
        return np.load(text)
    try:
        return np.array([float(x) for x in text.replace(" ", ",").split(",") if x], dtype=np.float32)
    except ValueError:
        raise UsageError(f"--vector {text[:40]!r}: give comma-separated numbers or a .npy file") from None
