"""hyrax rank: re-rank every object by what labels say is interesting."""

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

LabelsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--labels",
        help="A label file: CSV with object_id and "
        "label (0-5 or yes/no) columns, e.g. the map's labels.csv "
        "(repeatable; the newest label of an object wins).",
        show_default=False,
    ),
]
ShowOpt = show_option("the top candidates")


def command(
    labels: LabelsOpt = None,
    show: ShowOpt = False,
    shard: ShardOpt = None,
    run_name: RunNameOpt = None,
    resume: ResumeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    from_run: FromOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fit a model on the labelled objects' latents and rank every object by its predicted interest
    combined with its anomaly score (rank.exploration: 0 trusts the model everywhere, higher lets unusual
    objects far from every label surface); writes scores.h5, top_candidates.csv (the best objects not
    labelled yet), labels.csv and ranking.json (the model's cross-validated agreement with the labels).

    Example: hyrax anomaly | hyrax rank --labels labels.csv --show
    Sharded: sbatch --array=0-9 --wrap 'hyrax rank --from results/<anomaly-run> --labels labels.csv'
    """

    def body():
        from libhyrax.stages.rank import rank

        res = rank(
            config,
            overrides=set_ or (),
            from_run=input_run(from_run),
            labels=labels or (),
            shard=shard,
            run_name=run_name,
            resume=resume,
        )
        if show:
            print_table(res, "top_candidates.csv")
        return res

    run_stage(body, debug)
