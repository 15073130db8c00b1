"""hyrax umap: map latents to 2-D (UMAP or PCA)."""

from __future__ import annotations

from pathlib import Path
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

ReducerOpt = Annotated[
    Path | None,
    typer.Option(
        "--reducer",
        help="A umap results directory whose fitted reducer maps these latents (no new fit).",
        show_default=False,
    ),
]


def command(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    from_run: FromOpt = None,
    reducer: ReducerOpt = None,
    shard: ShardOpt = None,
    resume: ResumeOpt = None,
    run_name: RunNameOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Map the latents of an infer run to 2-D and write embedding.h5 (object_id, embedding).

    Fits UMAP (or PCA: --set reduce_dimensions.algorithm=pca) on a seeded sample, then maps every object
    in batches across worker processes.

    Examples:
      hyrax infer | hyrax umap
      hyrax umap --from results/<infer-run> --reducer results/<umap-run>
      sbatch --array=0-9 --wrap 'hyrax umap --from results/<infer-run>'
    """

    def body():
        from libhyrax.stages.umap import umap

        return umap(
            config,
            overrides=set_ or (),
            from_run=input_run(from_run),
            reducer=reducer,
            shard=shard,
            resume=resume,
            run_name=run_name,
        )

    run_stage(body, debug)
