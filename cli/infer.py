"""hyrax infer: every object of the infer data group through a trained model, into latents.h5."""

from __future__ import annotations

from typing import Annotated

import typer
from hyrax_cli.common import (
    ConfigOpt,
    DebugOpt,
    FromOpt,
    ResumeOpt,
    RunNameOpt,
    SetOpt,
    ShardOpt,
    input_run,
    run_stage,
)

EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="auto (torch on a GPU, onnxruntime on a CPU), torch, or onnx (an export run); default: "
                     "infer.engine.", show_default=False)]


def command(config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None, resume: ResumeOpt = None,
            shard: ShardOpt = None, engine: EngineOpt = None, run_name: RunNameOpt = None,
            debug: DebugOpt = False) -> None:
    """Write the latent vector of every object (latents.h5: object_id, latent, recon_error).

    Uses the model and the image transforms of a train run: --from, the path piped in, or the newest.

    Examples:

      hyrax train | hyrax infer

      hyrax infer --resume results/20250101-120000-infer-ab12cd.failed

      sbatch --array=0-9 --wrap 'hyrax infer --from results/<train-run>'   (10 shards, one directory)

      hyrax infer --engine onnx --from results/<export-run>
    """

    def body():
        from libhyrax.stages.infer import infer

        return infer(config, overrides=set_ or (), from_run=input_run(from_run), resume=resume, shard=shard,
                     engine=engine, run_name=run_name)

    run_stage(body, debug)
