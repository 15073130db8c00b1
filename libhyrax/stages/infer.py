"""hyrax infer: every object of the `infer` data group through a trained model, into `latents.h5`.

    hyrax train | hyrax infer                                  # the train run's model, the built-in sample
    hyrax infer --from results/<train-run> --set data_loader.batch_size=1024
    hyrax infer --resume results/<infer-run>.failed            # finish an interrupted run: exactly N rows
    hyrax infer --engine onnx --from results/<export-run>      # the same through onnxruntime
    sbatch --array=0-9 --wrap 'hyrax infer --from results/<train-run>'   # 10 shards into one directory
    for i in 0 1 2; do hyrax infer --shard $i/3; done                     # the same without Slurm

    import libhyrax
    latents = libhyrax.infer(from_run="results/<train-run>")

`latents.h5` holds `/object_id`, `/latent` (N, D) float32 in input order and, for autoencoders,
`/recon_error` (N,). Batches stream from the data group to the file, so memory does not grow with N. The
images get the train run's `[data_set]` transforms (never the current config's). A sharded run writes
`latents.shard-IIII-of-NNNN.h5`; read either through `libhyrax.hdf5.open_result(run, "latents")`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from libhyrax.config import resolve
from libhyrax.data.loader import read_ahead as read_in_thread
from libhyrax.errors import ConfigError, DataError, ModelError, RunError, unknown_choice
from libhyrax.hdf5 import ArrayWriter, read_ids
from libhyrax.log import Progress
from libhyrax.results import Result, find_run
from libhyrax.runs import open_run
from libhyrax.sharding import Shard

log = logging.getLogger("hyrax.infer")

STEM = "latents"
ENGINES = ("torch", "onnx")
PREFETCH = 2  # batches read ahead while the model runs on a GPU
FLUSH_BYTES, FLUSH_S = 4 << 20, 10.0  # outputs are written in blocks of about this size, or this often


def infer(config=None, *, from_run=None, overrides=(), resume=None, shard: str | Shard | None = None,
          engine: str | None = None, run_name: str | None = None) -> Result:
    """Write the latents of every object of the `infer` group; returns the infer run.

    from_run: a train run (or, with engine="onnx", an export run); default: the newest finished one.
    resume: an interrupted infer run to finish. shard: "I/N" (default: the Slurm array task's share).
    run_name: the shared directory's name for a sharded run outside Slurm.
    """
    cfg = resolve(config, overrides)
    engine = engine or cfg["infer"]["engine"]
    model = load_engine(engine, cfg, from_run)
    group = _open_group(cfg, model.data_set)
    n = len(group)
    with open_run("infer", cfg, shard=shard, resume=resume, name=run_name,
                  key=[str(model.source.resolve()), engine]) as run:
        _record_inputs(run, model, group, engine)
        start, stop = run.rows(n)
        stats = write_latents(model, group, start, stop, run.output(STEM), int(cfg["data_loader"]["batch_size"]),
                              model.read_ahead, int(cfg["data_loader"].get("num_workers") or 0))
        run.record(n_objects=n, rows=[start, stop], **({"shard": str(run.shard)} if run.shard else {}), **stats)
    return Result(run.path)


def _open_group(cfg: dict, data_set: dict):
    from libhyrax.data import open_group

    return open_group({**cfg, "data_set": {**cfg["data_set"], **data_set}}, "infer")


def _record_inputs(run, model, group, engine: str) -> None:
    run.add_upstream(model.source)
    for spec in group.specs.values():
        if spec.data_location:
            run.add_input(spec.data_location)
    run.record(engine=engine, data_set=model.data_set)


# --- the streaming loop --------------------------------------------------------------------------

class _Blocks:
    """Map-style for a torch DataLoader: item `a` (a first row) is (a, rows a..a+batch_size of the group,
    ids as bytes). Picklable: each worker opens its own h5py handles lazily."""

    def __init__(self, group, stop: int, batch_size: int):
        self.group, self.stop, self.batch_size = group, stop, batch_size

    def __getitem__(self, a: int):
        return a, self.group.read(a, min(a + self.batch_size, self.stop), id_bytes=True)


class _BlockStarts:
    """A sampler yielding the first row of each batch, lazily: memory does not grow with N."""

    def __init__(self, start: int, stop: int, batch_size: int):
        self.range = range(start, stop, batch_size)

    def __iter__(self):
        return iter(self.range)

    def __len__(self) -> int:
        return len(self.range)


def _identity(item):
    return item


def _batches(group, start: int, stop: int, batch_size: int, read_ahead: bool = False, num_workers: int = 0):
    """Contiguous batches (first row, batch) of rows start..stop, in order, object ids as UTF-8 bytes.
    With `num_workers`, read by that many DataLoader worker processes (order kept); else with
    `read_ahead`, read by one thread PREFETCH batches ahead of the model (h5py and numpy release the GIL
    for the bulk of a read; torch does while it computes); else read in this thread."""
    if num_workers > 0 and stop > start:
        from torch.utils.data import DataLoader

        loader = DataLoader(_Blocks(group, stop, batch_size), batch_size=None,
                            sampler=_BlockStarts(start, stop, batch_size), num_workers=num_workers,
                            collate_fn=_identity, prefetch_factor=PREFETCH, persistent_workers=False)
        yield from loader
        return
    if not read_ahead:
        for a in range(start, stop, batch_size):
            yield a, group.read(a, min(a + batch_size, stop), id_bytes=True)
        return
    yield from read_in_thread(((a, group.read(a, min(a + batch_size, stop), id_bytes=True))
                           for a in range(start, stop, batch_size)), depth=PREFETCH)


class _Pending:
    """Computed rows not yet written: HDF5 writes (and their flushes) cost per call, so few large ones."""

    def __init__(self):
        self.ids: list = []
        self.outs: list[dict] = []
        self.rows = self.nbytes = 0
        self.since = time.monotonic()

    def add(self, ids, out: dict) -> None:
        self.ids.append(ids)
        self.outs.append(out)
        self.rows += len(ids)
        self.nbytes += sum(v.nbytes for v in out.values())

    def full(self) -> bool:
        return self.nbytes >= FLUSH_BYTES or time.monotonic() - self.since >= FLUSH_S

    def write(self, writer: ArrayWriter) -> None:
        if self.rows:
            ids = np.concatenate(self.ids)
            writer.append(ids, **{k: np.concatenate([o[k] for o in self.outs]) for k in self.outs[0]})
        self.__init__()


def _open_writer(path: Path, n: int, outputs: dict | None, id_width: int = 64) -> ArrayWriter | None:
    """The writer of `path`: reopened after its last written row, or created from the first outputs
    with /object_id `id_width` bytes wide."""
    if outputs is None:
        if not path.exists():
            return None
        try:
            return ArrayWriter(path, n, {})
        except OSError as e:  # killed in the middle of a metadata write: start this file again
            log.warning("%s can't be reopened (%s); writing it again from the start", path.name, e)
            path.unlink()
            return None
    columns = {k: (v.shape[1:], "<f4") for k, v in outputs.items()}
    return ArrayWriter(path, n, columns, id_length=id_width)


def _is_complete(path: Path, n: int) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete")) and f["object_id"].shape[0] == n
    except (OSError, KeyError):
        return False


def _check_outputs(out: dict, n: int) -> None:
    lat = out.get("latent")
    if lat is None or lat.ndim != 2:
        raise ModelError(f"infer_outputs must return 'latent' of shape (batch, D), not "
                         f"{None if lat is None else lat.shape}")
    for k, v in out.items():
        if len(v) != n:
            raise ModelError(f"infer_outputs returned {len(v)} rows of {k!r} for a batch of {n} objects")


def write_latents(model, group, start: int, stop: int, path: str | os.PathLike, batch_size: int,
                  read_ahead: bool = False, num_workers: int = 0) -> dict:
    """Stream rows start..stop of `group` through `model.outputs` into `path`, resuming after the rows an
    earlier attempt wrote. Every batch must carry as many ids as latents, and the file ends with exactly
    stop - start rows. Outputs are written in blocks of about FLUSH_BYTES (or every FLUSH_S seconds): a
    killed run loses at most that much work. `read_ahead` reads the next batches in a thread (worth it
    when the model runs on a GPU; on a CPU the thread would take cores from torch); `num_workers` > 0
    reads in that many worker processes instead (data_loader.num_workers), in input order. The batches
    handed to the model carry object ids as UTF-8 bytes (as stored and written: no decoding)."""
    n, path = stop - start, Path(path)
    if _is_complete(path, n):
        log.info("%s is already complete", path.name)
        return {}
    writer = _open_writer(path, n, None)
    done = writer.rows_written if writer else 0
    if writer and done:
        _check_resumed_ids(writer, group, start, done)
        log.info("resuming %s after row %d of %d", path.name, done, n)
    t0, computed = time.monotonic(), 0
    pending = _Pending()
    try:
        with Progress("infer", total=n) as progress:
            progress.advance(done)
            id_width = group.id_width() if writer is None else 0
            for a, batch in _batches(group, start + done, stop, batch_size, read_ahead, num_workers):
                ids = batch["object_id"]
                out = model.outputs(batch)
                _check_outputs(out, len(ids))
                if writer is None:
                    writer = _open_writer(path, n, out, id_width)
                pending.add(ids, out)
                if pending.full():
                    pending.write(writer)
                if writer.rows_written + pending.rows != a + len(ids) - start:
                    raise RunError(f"{path.name}: rows and input drifted apart at row {a}")
                computed += len(ids)
                progress.advance(len(ids))
        if writer is None:  # an empty share: still a valid, complete file
            writer = _open_writer(path, 0, {"latent": np.zeros((0, model.latent_dim or 0), "f4")}, id_width)
        pending.write(writer)
        writer.close()
    except BaseException:
        if writer is not None:
            try:
                pending.write(writer)  # rows computed before the failure are good: keep them for --resume
            finally:
                writer.close(complete=False)  # even when that write fails: the original error is raised
        raise
    secs = time.monotonic() - t0
    log.info("wrote %d latents to %s (%.0f objects/s)", n, path.name, computed / max(secs, 1e-9))
    return {"objects_per_s": round(computed / max(secs, 1e-9), 1), "seconds": round(secs, 2),
            "resumed_at_row": done or None}


def _check_resumed_ids(writer: ArrayWriter, group, start: int, done: int) -> None:
    """The input must not have changed under a resumed run: its last written id is checked."""
    last = read_ids(writer.file["object_id"], done - 1, done)[0]
    want = group.read(start + done - 1, start + done)["object_id"][0]
    if last != want:
        writer.close(complete=False)
        raise DataError(f"{writer.path} was written from other input (row {done - 1} is {last!r}, the input "
                        f"has {want!r}); start a new run instead of --resume")


# --- engines: torch (a train run) or onnxruntime (an export run) -----------------------------------

def load_engine(engine: str, cfg: dict, from_run=None):
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("infer.engine", engine, ENGINES))
    if engine == "onnx":
        return OnnxEngine(find_run("export", cfg, from_run).path, cfg["general"]["device"])
    weights = cfg["infer"]["model_weights_file"]
    if weights and not from_run:
        return TorchEngine(train_run_of(weights), cfg["general"]["device"], weights)
    return TorchEngine(find_run("train", cfg, from_run).path, cfg["general"]["device"], weights or None)


def train_run_of(weights: str | os.PathLike) -> Path:
    """The train run a weights file belongs to (model.pt or checkpoints/*): the nearest folder above it
    with model.json, which says how to build the model and preprocess its input."""
    p = Path(weights).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(f"infer.model_weights_file = {str(weights)!r} does not exist")
    for d in p.parents:
        if (d / "model.json").is_file():
            return d
    raise ConfigError(f"infer.model_weights_file = {str(weights)!r} is not inside a train run (no model.json "
                      f"above it); point it at a train run's model.pt or checkpoint")


def train_data_set(train_run: Path, description: dict) -> dict:
    """The `[data_set]` transforms the model was trained with: model.json's record, else the train run's
    saved config."""
    ds = description.get("data_set") or description.get("transforms")
    if ds:
        return dict(ds)
    from libhyrax.config import read_toml

    return dict(read_toml(Path(train_run) / "runtime_config.toml").get("data_set") or {})


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchEngine:
    """A trained model from a train run, on `device`; `outputs(batch)` -> numpy infer_outputs."""

    def __init__(self, train_run: Path, device: str = "auto", weights: str | os.PathLike | None = None):
        import torch

        from libhyrax.models import load_trained
        from libhyrax.models.saving import load_weights

        self.source = Path(train_run)
        self.device = torch.device(pick_device(device))
        self.model, self.description = load_trained(self.source, device="cpu")
        if weights:
            load_weights(self.model, weights)  # a checkpoint of this run instead of its final weights
        self.model.to(self.device).eval()
        self.data_set = train_data_set(self.source, self.description)
        self.latent_dim = self.description.get("latent_dim")
        self.read_ahead = self.device.type != "cpu"

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        import torch

        from libhyrax.models import prepare, to_device

        x = to_device(prepare(self.model, batch), self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model.infer_outputs(x)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


class OnnxEngine:
    """An export run's model.onnx through onnxruntime, fed the image preprocessed as preprocessing.json
    says (the same `[data_set]` transforms the model was trained with)."""

    def __init__(self, export_run: Path, device: str = "cpu"):
        from libhyrax.onnx_io import PREPROCESSING_FILE, read_preprocessing, session

        self.source = Path(export_run)
        pre = read_preprocessing(self.source / PREPROCESSING_FILE)
        self.data_set, self.field = pre["data_set"], pre["input"].get("field", "image")
        self.latent_dim = pre.get("latent_dim")
        self.session = session(self.source / "model.onnx", device if device != "auto" else "cuda")
        self.read_ahead = self.session.get_providers()[0] != "CPUExecutionProvider"

    def outputs(self, batch: dict) -> dict[str, np.ndarray]:
        from libhyrax.onnx_io import run_session

        if self.field not in batch:
            raise DataError(f"the ONNX model takes the {self.field!r} field; the infer data group has "
                            f"{', '.join(batch)}")
        return run_session(self.session, batch[self.field])
