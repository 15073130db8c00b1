"""hyrax download: cutouts of a catalogue's objects from a survey's cutout service, straight into one HDF5
cutout file (docs/hdf5-format.md), in catalogue order.

    hyrax download --set download.catalog=objects.csv                   # the Legacy Surveys viewer, g r z
    hyrax download -c survey.toml | hyrax train | hyrax infer           # HSC: HSC_SSP_CAS_PASSWORD=... first
    hyrax download --resume results/<download-run>.failed               # fetch only what is missing or failed
    sbatch --array=0-9 --wrap 'hyrax download -c survey.toml'           # 10 shards into one directory
    for i in 0 1 2; do hyrax download -c survey.toml --shard $i/3; done  # the same without Slurm

    import libhyrax
    run = libhyrax.download({"download": {"catalog": "objects.csv", "bands": ["g", "r"], "size": 48}})
    run.file("cutouts.h5"), run.file("download.csv")

`[download]` names the provider (`hsc`, `legacysurvey`, `rubin`, `soda`, `url_template`, or a
`libhyrax.surveys.Provider` subclass by import path), the catalogue and its id/ra/dec columns, the size
in pixels and the bands; `[download.<provider>]` the service's own settings, always with its `url`.
Credentials come from environment variables or `download.netrc_file` and are never written anywhere.

The run writes `cutouts.h5` (/object_id, /images, /catalog/<column> incl. ra and dec), `download.h5`
(per object and band: ok, missing, rejected or failed, with the reason, the time, the request and its
tries) and `download.csv` (the same as text); `--keep-fits` also keeps every FITS file under `fits/`.
Objects outside the footprint (missing) or with an unusable answer (rejected) are left out and listed;
the run completes without them. Objects whose requests kept failing (5xx, timeouts, dropped
connections, after the retries) are listed too, and the run ends failed: `--resume` fetches just those
(and whatever an interruption left), and Ctrl-C, SIGTERM or kill -9 leave files it resumes exactly.

The parts: the service from `libhyrax.surveys` (a Provider), the connections from its Fetcher, the files
from its Store; this module is the loop between them.
"""

from __future__ import annotations

import logging
import time

from libhyrax.errors import DataError, RunError
from libhyrax.hdf5 import assemble_shards
from libhyrax.log import Progress
from libhyrax.results import Result
from libhyrax.sharding import Shard
from libhyrax.start import Given, start_run
from libhyrax.surveys.base import make_provider
from libhyrax.surveys.catalog import read_catalog
from libhyrax.surveys.fetch import Fetcher
from libhyrax.surveys.store import Store

log = logging.getLogger("hyrax.download")

STEM, RECORD = "cutouts", "download"


def download(
    config=None,
    *,
    overrides=(),
    resume=None,
    shard: str | Shard | None = None,
    run_name: str | None = None,
    keep_fits: bool | None = None,
) -> Result:
    """Fetch every object of `download.catalog` (or this shard's share) into cutouts.h5; returns the run.

    resume: an interrupted or failed download run (a sharded run's shared directory) to finish, with its
    own config. shard: "I/N" (default: the Slurm array task's share). keep_fits: also keep the FITS files.
    """
    plan = start_run(
        "download",
        config,
        overrides,
        resume=resume,
        shard=shard,
        run_name=run_name,
        given=[Given("--keep-fits", "download.keep_fits", keep_fits)],
    )
    cfg = plan.config
    d = cfg["download"]
    provider = make_provider(cfg)  # config and credential mistakes stop here, before a run is opened
    fetcher = Fetcher.for_provider(provider, d)
    catalog = read_catalog(d)

    with plan.open(key=[catalog.path.resolve()]) as run:
        run.add_input(catalog.path)
        start, stop = run.rows(len(catalog))
        store = Store(
            run.output(STEM),
            run.output(RECORD),
            catalog.rows(start, stop),
            d["bands"],
            d["size"],
            provider=d["provider"],
            pixel_scale=provider.pixel_scale,
            keep_fits=run.file("fits") if d["keep_fits"] else None,
        )
        fetcher.number = store.next_request
        run.resumable = lambda: sum(store.counts.values()) > 0  # refused at once (401): nothing to go on from
        t0, interrupted = time.monotonic(), False
        try:
            with Progress("download", total=store.todo_objects()) as progress:
                for answer in fetcher.answers(provider.requests(store.targets())):
                    progress.advance(store.add(answer, provider.outcomes(answer)))
                    progress.set(**{k: store.counts[k] for k in ("failed", "missing", "rejected")})
            summary = store.finish()
        except (
            KeyboardInterrupt
        ):  # Ctrl-C, SIGTERM: stop quickly; download.h5 holds the record, the CSV waits
            interrupted = True
            raise
        finally:
            store.close()  # what is complete is written; the rest is fetched by --resume
            if not interrupted:
                store.write_csv(run.output(RECORD).with_suffix(".csv"))
        seconds = time.monotonic() - t0
        run.record(
            provider=d["provider"],
            rows=[start, stop],
            seconds=round(seconds, 1),
            requests=fetcher.number,
            retries=fetcher.retried,
            **{k: v for k, v in summary.items() if k != "pending"},
        )
        report(summary, seconds, fetcher.retried)
        if summary["failed"]:
            raise RunError(
                f"{summary['failed']} of {summary['objects']} objects could not be fetched yet "
                f"({_reasons(summary)}); the others are kept, and `hyrax download --resume` with this "
                "run fetches just those"
            )
        if summary["objects"] and not summary["ok"]:
            raise DataError(
                f"no object of {catalog.path} could be fetched ({_reasons(summary)}); see "
                f"{RECORD}.csv in the results directory"
            )
        if run.shard is not None and run.shards_complete(STEM):
            assemble_shards(run.path, STEM)  # cutouts.h5: every shard, read as one
    return Result(run.path)


def report(summary: dict, seconds: float, retried: int) -> None:
    """The summary at the end: how many objects ended each way, and why the others did."""
    log.info(
        "download: %d of %d objects fetched in %.0f s (%.1f objects/s; %d requests retried); %d missing, "
        "%d rejected, %d failed",
        summary["ok"],
        summary["objects"],
        seconds,
        summary["ok"] / max(seconds, 1e-9),
        retried,
        summary["missing"],
        summary["rejected"],
        summary["failed"],
    )
    if summary["reasons"]:
        log.warning(
            "cutouts not fetched, commonest reasons: %s (every object and band is in %s.csv)",
            _reasons(summary),
            RECORD,
        )


def _reasons(summary: dict) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in summary["reasons"].items()) or "no reason recorded"
