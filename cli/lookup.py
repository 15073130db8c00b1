"""hyrax lookup: print an object's latent vector (a tool, like the reference's `hyrax lookup`: it makes no
results directory)."""

from __future__ import annotations

from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage

IdOpt = Annotated[str, typer.Option("--id", "-i", help="The object's id.", show_default=False)]


def command(id_: IdOpt, config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None,
            debug: DebugOpt = False) -> None:
    """Print the latent vector of one object of an infer run (default: the newest) on stdout, its numbers
    comma-separated; exit 2 naming the closest ids when no object has that id.

    Example: hyrax lookup --id HDF-0001        # then: hyrax search --vector "$(hyrax lookup --id HDF-0001)"
    """

    def body() -> str:
        import numpy as np

        from libhyrax.latents import lookup

        vector = lookup(id_, config, from_run=input_run(from_run), overrides=set_ or ())
        return ",".join(np.format_float_positional(v, trim="-") for v in np.ravel(vector))

    run_stage(body, debug)
