"""hyrax infer: every object of the `infer` data group through a trained model, into `latents.h5`.

    hyrax train | hyrax infer                                  # the train run's model, the built-in sample
    hyrax infer --from results/<train-run> --set data_loader.batch_size=1024
    hyrax infer --resume results/<infer-run>.failed            # finish an interrupted run: exactly N rows
    hyrax infer --engine onnx --from results/<export-run>      # an exported model through onnxruntime
    sbatch --array=0-9 --wrap 'hyrax infer --from results/<train-run>'   # 10 shards into one directory
    for i in 0 1 2; do hyrax infer --shard $i/3; done                     # the same without Slurm

    import libhyrax
    latents = libhyrax.infer(from_run="results/<train-run>")   # a Latents: len, [rows], ids(), vector(id)

`latents.h5` holds `/object_id`, `/latent` (N, D) float32 in input order and, for autoencoders,
`/recon_error` (N,) (`infer.recon_error = false` leaves it and the decoder pass out), and `/no_data` (N,)
bool: the objects with a band that has no finite pixel (logged by id; anomaly and rank don't score them:
their latent is that of a blank image, which would rank as the most ordinary of all). Batches stream from
the data group to the file, so memory does not grow with N. The images get the train run's `[data_set]`
transforms (never the current config's). A sharded run writes
`latents.shard-IIII-of-NNNN.h5`; read either through `libhyrax.hdf5.open_result(run, "latents")`.

The parts: the model from `libhyrax.inference` (its runtime chosen once, before the loop), batches
from `libhyrax.data.loader.contiguous_batches`, the file written by `libhyrax.hdf5.BufferedWriter`; this
module is the loop between them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from libhyrax.data.from_run import with_trained_data
from libhyrax.data.group import NO_DATA
from libhyrax.data.loader import contiguous_batches
from libhyrax.errors import DataError, ModelError, RunError
from libhyrax.hdf5 import BufferedWriter, is_complete_file, read_ids
from libhyrax.inference import (
    CHECK_ROWS,
    Engine,
    check_input_shape,
    choose_runtime,
    load_engine,
    model_input_group,
)
from libhyrax.latents import Latents
from libhyrax.log import Progress
from libhyrax.sharding import Shard
from libhyrax.start import Given, start_run

log = logging.getLogger("hyrax.infer")

STEM = "latents"
NAMED = 10  # ids of objects without data named in the log and provenance


def infer(config=None, *, from_run=None, overrides=(), resume=None, shard: str | Shard | None = None,
          engine: str | None = None, run_name: str | None = None) -> Latents:
    """Write the latents of every object of the `infer` group; returns the infer run.

    from_run: a train run (or, with engine "onnx" or "auto", an export run); default: the newest finished one.
    resume: an interrupted infer run to finish. shard: "I/N" (default: the Slurm array task's share).
    run_name: the shared directory's name for a sharded run outside Slurm.
    """
    plan = start_run(
        "infer",
        config,
        overrides,
        from_run=from_run,
        resume=resume,
        shard=shard,
        run_name=run_name,
        given=[Given("--engine", "infer.engine", engine)],
    )
    cfg, engine = plan.config, plan.config["infer"]["engine"]
    model = load_engine(engine, cfg, plan.from_run)
    if resume is None:  # no data of its own in the config: what the model was trained on
        cfg = with_trained_data(cfg, model.source)
    group = model_input_group(cfg, model.data_set)
    n = len(group)
    if n == 0:
        raise DataError(
            "the infer data group holds no objects; check data_request.infer (or .train) in the "
            "config: its data_location may be empty or filtered to nothing"
        )
    plan.config = cfg
    with plan.open(key=[model.source.resolve(), engine]) as run:
        _record_inputs(run, model, group, engine)
        start, stop = run.rows(n)
        model = _on_chosen_runtime(model, engine, group, start, stop)
        stats = write_latents(
            model,
            group,
            start,
            stop,
            run.output(STEM),
            int(cfg["data_loader"]["batch_size"]),
            model.read_ahead,
            int(cfg["data_loader"].get("num_workers") or 0),
        )
        replaced = group.transform.replaced_pixels  # over every reader, worker processes included
        if replaced:
            log.warning(
                "replaced %d NaN/inf pixels in all (data_set.nan_mode=%s)", replaced, group.transform.nan_mode
            )
        run.record(
            n_objects=n,
            rows=[start, stop],
            nan_pixels_replaced=replaced,
            **({"shard": str(run.shard)} if run.shard else {}),
            **stats,
        )
    return Latents(run.path)


def _record_inputs(run, model, group, engine: str) -> None:
    run.add_upstream(model.source)
    for spec in group.specs.values():
        if spec.data_location:
            run.add_input(spec.data_location)
    run.record(engine=engine, data_set=model.data_set)


def _on_chosen_runtime(model: Engine, engine: str, group, start: int, stop: int) -> Engine:
    """The model on the runtime `engine` chooses for rows start..stop: decided on the whole share, so a
    resumed run makes the same choice as its first attempt; a conversion is checked on the share's first
    rows."""
    runtime = choose_runtime(engine, model.device, stop - start)
    if runtime == model.runtime or start == stop:
        return model
    counted = group.transform.replaced_pixels
    sample = group.read(start, min(stop, start + CHECK_ROWS))
    group.transform.replaced_pixels = counted  # the loop counts these rows' NaN pixels when it reads them
    if "image" in sample:
        check_input_shape(model, sample["image"])  # before a conversion traces the model with them
    return model.converted(runtime, sample)


def write_latents(
    model: Engine,
    group,
    start: int,
    stop: int,
    path: str | os.PathLike,
    batch_size: int,
    read_ahead: bool = False,
    num_workers: int = 0,
) -> dict:
    """Stream rows start..stop of `group` through `model.outputs` into `path`, resuming after the rows an
    earlier attempt wrote. Every batch must carry as many ids as latents, and the file ends with exactly
    stop - start rows. Outputs are written in blocks (libhyrax.hdf5.BufferedWriter): a killed run loses
    at most one block. `read_ahead` reads the next batches in a thread, `num_workers` > 0 in that many
    worker processes (data_loader.num_workers), in input order (libhyrax.data.loader.contiguous_batches).
    The batches handed to the model carry object ids as UTF-8 bytes (as stored and written: no decoding)."""
    n, path = stop - start, Path(path)
    if is_complete_file(path, n):
        log.info("%s is already complete", path.name)
        return {}
    out = BufferedWriter(path, n)
    done = out.rows_written
    if done:
        _check_resumed_ids(out, group, start)
        log.info("resuming %s after row %d of %d", path.name, done, n)
    id_width = 0 if out.started else group.id_width()
    t0, computed, blank, examples = time.monotonic(), 0, 0, []
    group.flag_no_data = True
    try:
        with Progress("infer", total=n) as progress:
            progress.advance(done)
            for a, batch in contiguous_batches(
                group, start + done, stop, batch_size, read_ahead, num_workers
            ):
                ids = batch["object_id"]
                no_data = batch.pop(NO_DATA)
                if a == start + done and "image" in batch:
                    check_input_shape(model, batch["image"])
                outputs = model.outputs(batch)
                _check_outputs(outputs, len(ids))
                outputs["no_data"] = no_data
                blank += int(no_data.sum())
                examples += [_id(i) for i in ids[no_data][: NAMED - len(examples)]]
                if not out.started:
                    out.create(outputs, id_length=id_width)
                out.append(ids, **outputs)
                if out.rows != a + len(ids) - start:
                    raise RunError(f"{path.name}: rows and input drifted apart at row {a}")
                computed += len(ids)
                progress.advance(len(ids))
        if not out.started:  # an empty share: still a valid, complete file
            out.create(
                {"latent": np.zeros((0, model.latent_dim or 0), "f4"), "no_data": np.zeros(0, bool)},
                id_length=id_width,
            )
        out.close()
    except BaseException:
        out.close(complete=False)  # rows computed before the failure are good: keep them for --resume
        raise
    secs = time.monotonic() - t0
    log.info("wrote %d latents to %s (%.0f objects/s)", n, path.name, computed / max(secs, 1e-9))
    if blank:
        log.warning(
            "%d object(s) have a band with no finite pixel, e.g. %s: flagged in /no_data (anomaly "
            "and rank leave them out); check the data they came from",
            blank,
            ", ".join(examples),
        )
    return {
        "objects_per_s": round(computed / max(secs, 1e-9), 1),
        "seconds": round(secs, 2),
        "resumed_at_row": done or None,
        "runtime": model.runtime,
        "no_data_objects": blank,
        "no_data_examples": examples,
    }


def _id(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _check_outputs(out: dict, n: int) -> None:
    lat = out.get("latent")
    if lat is None or lat.ndim != 2:
        raise ModelError(
            f"infer_outputs must return 'latent' of shape (batch, D), not "
            f"{None if lat is None else lat.shape}"
        )
    for k, v in out.items():
        if len(v) != n:
            raise ModelError(f"infer_outputs returned {len(v)} rows of {k!r} for a batch of {n} objects")


def _check_resumed_ids(out: BufferedWriter, group, start: int) -> None:
    """The input must not have changed under a resumed run: its last written id is checked."""
    done = out.rows_written
    last = read_ids(out.writer.file["object_id"], done - 1, done)[0]
    want = group.read(start + done - 1, start + done)["object_id"][0]
    if last != want:
        out.close(complete=False)
        raise DataError(
            f"{out.path} was written from other input (row {done - 1} is {_id(last)!r}, the "
            f"input has {_id(want)!r}); start a new run instead of --resume"
        )
