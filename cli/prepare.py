"""hyrax prepare: build an HDF5 cutout file from FITS cutouts, or the built-in sample."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, ResumeOpt, SetOpt, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = None, debug: DebugOpt = False) -> None:
    """Stack a folder of FITS cutouts (one file per object and band, plus a catalog) into one HDF5
    cutout file, cutouts.h5, in a new results directory; bad objects are listed in rejected.csv.
    With no config, build the built-in sample (Hubble eXtreme Deep Field galaxies).

    Example: hyrax prepare --set prepare.fits_dir=cutouts/ --set prepare.cutout_size=48
    """

    def body():
        from libhyrax.stages.prepare import prepare

        return prepare(config, overrides=set_ or (), resume=resume)

    run_stage(body, debug)
