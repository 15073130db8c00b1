"""hyrax prepare: one HDF5 cutout file (docs/hdf5-format.md) from a folder of FITS cutouts, or, with no
config, the built-in sample.

    hyrax prepare                                            # the built-in Hubble Deep Field sample
    hyrax prepare --set prepare.fits_dir=cutouts/ --set prepare.catalog=cutouts/catalog.csv

    import libhyrax
    run = libhyrax.prepare({"prepare": {"fits_dir": "cutouts/", "cutout_size": 48}})
    run.file("cutouts.h5"), run.file("rejected.csv")

The catalog has one row per object and band (object_id, filter, filename; ra, dec and other columns
are carried into /catalog). A folder the reference Hyrax downloaded needs nothing more: with no catalog.*
its `manifest.fits` is the catalog, and objects whose download failed are rejected (libhyrax.data.fits):

    hyrax prepare --set prepare.fits_dir=~/hsc_download --set prepare.cutout_size=128

A large folder prepares in shards like `infer`: each Slurm array task (or `--shard I/N`) stacks its
contiguous share of the catalog's objects into `cutouts.shard-IIII-of-NNNN.h5` (and its rejections into
`rejected.shard-IIII-of-NNNN.csv`) in one shared results directory; the last shard to finish writes
`cutouts.h5` over all of them (a virtual dataset, read as one file):

    sbatch --array=0-9 --wrap 'hyrax prepare --set prepare.fits_dir=cutouts/'   # 10 shards, one run
    for i in 0 1; do hyrax prepare --set prepare.fits_dir=cutouts/ --shard $i/2; done

Each object's bands are stacked and centre-cropped to `cutout_size` (with `pad_smaller = true`, a side
shorter than that is zero-padded, so cutouts of mixed sizes just work). An object with a missing band, an
unreadable or corrupt file, or a cutout smaller than `cutout_size` is skipped and listed, with the reason,
in rejected.csv: one bad file never stops the run; when every object is rejected, the error says why.
docs/prepare.md has the catalogue's columns and every setting. Use the result with
`dataset_class = "HyraxHDF5Dataset"`, `data_location = "<run>/cutouts.h5"`.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from libhyrax.data.fits import (
    BadCutout,
    find_catalog,
    group_catalog,
    is_manifest,
    manifest_columns,
    read_table,
    stack_bands,
)
from libhyrax.data.hdf5_dataset import CutoutWriter
from libhyrax.data.sample import build_sample
from libhyrax.errors import DataError, UsageError
from libhyrax.hdf5 import assemble_shards
from libhyrax.log import Progress
from libhyrax.results import Result
from libhyrax.sharding import Shard
from libhyrax.start import start_run

log = logging.getLogger("hyrax.prepare")
OUTPUT, REJECTED = "cutouts.h5", "rejected.csv"
STEM = "cutouts"
BATCH = 256
NEXT_OBJECT, N_REJECTED = "prepare_next_object", "prepare_rejected"  # attributes that make resume exact


def prepare(config=None, *, overrides=(), resume=None, shard: str | Shard | None = None,
            run_name: str | None = None) -> Result:
    """`resume`: an interrupted prepare run's directory (a sharded run's shared directory, with `shard`);
    it goes on after the last batch it wrote. `shard`: "I/N" (default: the Slurm array task's share).
    `run_name`: the shared directory's name for a plain loop of shards."""
    # resumed: the run's own settings, the same FITS folder, catalog and cut-outs as before
    plan = start_run("prepare", config, overrides, resume=resume, shard=shard, run_name=run_name)
    cfg = plan.config
    p = cfg["prepare"]
    if not p["fits_dir"]:
        if plan.shard is not None:
            raise UsageError("the built-in sample is built in one job; give prepare.fits_dir to prepare "
                             "in shards")
        with plan.open() as run:
            log.info("no prepare.fits_dir: building the built-in sample (Hubble eXtreme Deep Field)")
            build_sample(run.path / OUTPUT)
            run.record(source="built-in sample", n_objects=1000, n_rejected=0)
        return Result(run.path)
    folder = Path(p["fits_dir"]).expanduser()
    if not folder.is_dir():  # a mistake in the config: said before any run is made
        raise UsageError(f"prepare.fits_dir {folder} is not a folder; give the folder of FITS cutouts")
    catalog = find_catalog(folder, p["catalog"])
    with plan.open(key=[folder.resolve(), catalog.resolve()]) as run:
        run.add_input(catalog)
        rejected_csv = run.file(REJECTED if run.shard is None else f"rejected.{run.shard.tag}.csv")
        n, rejected, rows = prepare_fits(folder, catalog, run.output(STEM), rejected_csv, p, run.rows)
        run.record(source=str(folder), n_objects=n, n_rejected=rejected, rows=list(rows),
                   **({"shard": str(run.shard)} if run.shard else {}))
    if run.shard is not None and run.shards_complete(STEM):
        assemble_shards(run.path, STEM)  # cutouts.h5: every shard, read as one
    return Result(run.path)


def prepare_fits(folder: Path, catalog: Path, out: Path, rejected_csv: Path, p: dict,
                 share=lambda n: (0, n)) -> tuple[int, int, tuple[int, int]]:
    """Stream the objects of `catalog` (those `share(number of objects)` picks: all, or a shard's
    contiguous rows) into `out`; returns (objects written, objects rejected, the catalog rows handled)."""
    columns = read_table(catalog)
    if is_manifest(catalog):
        columns = manifest_columns(columns, p["filename_column"])
    ids, bands, files, extra = group_catalog(columns, p["object_id_column"], p["filter_column"],
                                             p["filename_column"], p["bands"] or None, where=str(catalog))
    size = int(p["cutout_size"])
    lo, hi = share(len(ids))
    # the width of every object's id, not just this shard's: the shards' files must agree to read as one
    id_length = max((len(i.encode("utf-8")) for i in ids), default=1)
    with (
        CutoutWriter(
            out,
            (len(bands), size, size),
            bands,
            id_length=id_length,
            attrs={"source": str(folder)},
            dtype=p["dtype"],
        ) as writer,
        open(
            rejected_csv, "a" if _resumed(writer, rejected_csv) else "w", newline="", encoding="utf-8"
        ) as fh,
        Progress("prepare", total=hi - lo) as progress,
    ):
        # catalog objects handled so far (written or rejected): stored with each batch, so a resumed run
        # goes on after the last batch that reached the file
        resuming = _resumed(writer, rejected_csv)
        first = int(writer.file.attrs.get(NEXT_OBJECT, lo)) if resuming else lo
        written, n_rejected = (
            writer.rows_written,
            int(writer.file.attrs.get(N_REJECTED, 0)) if resuming else 0,
        )
        if first > lo:
            log.info("resuming after %d of %d catalog objects", first - lo, hi - lo)
            progress.advance(first - lo)
        rejects, reasons = csv.writer(fh), Counter()
        if not resuming:
            rejects.writerow(["object_id", "band", "filename", "reason"])
        for start in range(first, hi, BATCH):
            stop = min(start + BATCH, hi)
            images, keep = [], []
            for i in range(start, stop):  # one object's files at a time: FITS I/O is per file anyway
                try:
                    images.append(stack_bands(files[i], bands, folder, size, bool(p["pad_smaller"])))
                    keep.append(i)
                except BadCutout as e:
                    rejects.writerow([ids[i], e.band, e.filename, e.reason])
                    reasons[e.reason] += 1
                    n_rejected += 1
            fh.flush()  # the batch's rejections reach the disk before the batch is marked done
            # set before append, which flushes: the batch and the mark reach the file together
            writer.file.attrs.update({NEXT_OBJECT: stop, N_REJECTED: n_rejected})
            if keep:
                writer.append(ids[keep], np.stack(images), catalog={k: v[keep] for k, v in extra.items()})
                written += len(keep)
            else:
                writer.file.flush()
            progress.advance(stop - start)
    # named without its directory: the run's directory is renamed when it ends (to its final or .failed name)
    if n_rejected:
        log.warning(
            "%d of %d objects rejected; their reasons are in %s in the results directory",
            n_rejected,
            hi - lo,
            rejected_csv.name,
        )
    if not written and hi > lo:
        reason, count = reasons.most_common(1)[0] if reasons else ("see rejected.csv", n_rejected)
        raise DataError(
            f"no object of {catalog} could be used: {n_rejected} of {hi - lo} rejected, {count} "
            f"because {reason} (every reason is in {rejected_csv.name} in the results directory)"
        )
    return written, n_rejected, (lo, hi)


def _resumed(writer: CutoutWriter, rejected_csv: Path) -> bool:
    """Whether the writer reopened an interrupted file of this stage (else everything starts afresh)."""
    return NEXT_OBJECT in writer.file.attrs and rejected_csv.exists()
