"""hyrax download: cutouts of a catalogue's objects from a survey's cutout service, into cutouts.h5."""

from __future__ import annotations

from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, ResumeOpt, RunNameOpt, SetOpt, ShardOpt, run_stage

KeepFitsOpt = Annotated[
    bool | None,
    typer.Option(
        "--keep-fits",
        help="Also keep every FITS file as received, under fits/ in the results directory.",
        show_default=False,
    ),
]


def command(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    shard: ShardOpt = None,
    run_name: RunNameOpt = None,
    keep_fits: KeepFitsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fetch one cutout per object and band of a catalogue (id, ra, dec) from a survey's service (hsc,
    legacysurvey, rubin, soda, url_template: [download] in the config) into cutouts.h5, with a record of
    every object and band (download.h5, download.csv). Credentials: environment variables
    (HSC_SSP_CAS_PASSWORD, ACCESS_TOKEN for rubin) or download.netrc_file; they are never written.

    Examples:

      hyrax download --set download.catalog=objects.csv --set 'download.bands=["g","r"]'

      hyrax download -c survey.toml | hyrax train | hyrax infer

      hyrax download --resume results/20250101-120000-download-ab12cd.failed
          (only what is missing or failed)

      sbatch --array=0-9 --wrap 'hyrax download -c survey.toml'   (10 shards, one directory)
    """

    def body():
        from libhyrax.stages.download import download

        return download(
            config, overrides=set_ or (), resume=resume, shard=shard, run_name=run_name, keep_fits=keep_fits
        )

    run_stage(body, debug)
