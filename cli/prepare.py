"""hyrax prepare: build an HDF5 cutout file from FITS cutouts, or the built-in sample."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, ResumeOpt, RunNameOpt, SetOpt, ShardOpt, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = None, shard: ShardOpt = None,
            run_name: RunNameOpt = None, debug: DebugOpt = False) -> None:
    """Stack a folder of FITS cutouts (one file per object and band, plus a catalog) into one HDF5
    cutout file, cutouts.h5, in a new results directory; bad objects are listed in rejected.csv.
    With no config, build the built-in sample (Hubble eXtreme Deep Field galaxies).

    Examples:

      hyrax prepare --set prepare.fits_dir=cutouts/ --set prepare.cutout_size=48

      sbatch --array=0-9 --wrap 'hyrax prepare --set prepare.fits_dir=cutouts/'   (10 shards, one run)
    """

    def body():
        from libhyrax.stages.prepare import prepare

        return prepare(config, overrides=set_ or (), resume=resume, shard=shard, run_name=run_name)

    run_stage(body, debug)
