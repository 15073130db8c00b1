"""hyrax anomaly: rank every object of an infer run by how unusual it is."""

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
    print_table,
    run_stage,
    show_option,
)

MethodOpt = Annotated[str | None, typer.Option(
    "--method", help="combined (every score the latents allow), knn, recon_error, isolation_forest, or "
                     "a registered scorer's name or import path (default: anomaly.method).",
    show_default=False)]
IndexOpt = Annotated[Path | None, typer.Option("--index", help="The index run the knn score searches "
                                               "(with --set anomaly.knn_source=index).", show_default=False)]
ShowOpt = show_option("the top anomalies")


def command(
    method: MethodOpt = None,
    show: ShowOpt = False,
    index: IndexOpt = None,
    shard: ShardOpt = None,
    run_name: RunNameOpt = None,
    resume: ResumeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    from_run: FromOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score every object (k-th neighbour distance, reconstruction error, isolation forest; combined by
    rank); writes scores.h5 and top_anomalies.csv (and evaluation.json when the data has is_anomaly).

    Example: hyrax train | hyrax infer | hyrax anomaly --show
    Sharded: sbatch --array=0-9 --wrap 'hyrax anomaly --from results/<infer-run>'
    """

    def body():
        from libhyrax.stages.anomaly import anomaly

        res = anomaly(
            config,
            overrides=set_ or (),
            from_run=input_run(from_run),
            method=method,
            index_run=index,
            shard=shard,
            run_name=run_name,
            resume=resume,
        )
        if show:
            print_table(res, "top_anomalies.csv")
        return res

    run_stage(body, debug)
