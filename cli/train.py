"""hyrax train: fit a model on the train split (see libhyrax.stages.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, SetOpt, run_stage

ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="An interrupted train run to continue from its "
                                                "last checkpoint (with its own config).", show_default=False)]


def command(config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = None, debug: DebugOpt = False) -> None:
    """Train a model on the train split, validating each epoch; prints the results directory.

    Example: hyrax train --set model.name=HyraxCNN --set train.epochs=5
    """

    def body():
        from libhyrax.stages.train import train

        if resume is not None:
            return train(overrides=set_ or (), resume=resume)
        return train(config, overrides=set_ or ())

    run_stage(body, debug)
