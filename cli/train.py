"""hyrax train: fit a model on the train split (see libhyrax.stages.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, SetOpt, input_run, run_stage

ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="An interrupted train run to continue from its "
        "last checkpoint (with its own config). A new run from a "
        "checkpoint file: --set train.resume='\"FILE\"'.",
        show_default=False,
    ),
]


DataRunOpt = Annotated[
    Path | None,
    typer.Option(
        "--from",
        help="A download or prepare run whose cutouts.h5 to "
        "train on (default: the path piped in, else [data_request]).",
        show_default=False,
    ),
]


def command(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    from_run: DataRunOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train a model on the train split, validating each epoch; prints the results directory.

    Example: hyrax train --set model.name=HyraxCNN --set train.epochs=5

    Example: hyrax download -c survey.toml | hyrax train
    """

    def body():
        from libhyrax.stages.train import train

        if resume is not None:
            return train(overrides=set_ or (), resume=resume)
        return train(config, overrides=set_ or (), from_run=input_run(from_run))

    run_stage(body, debug)
