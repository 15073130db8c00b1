"""hyrax export: a trained model as `model.onnx` plus `preprocessing.json`, checked against torch.

    hyrax train | hyrax export                          # the newest train run
    hyrax export --from results/<train-run> --set onnx.opset_version=18
    hyrax infer --engine onnx --from results/<export-run>

    import libhyrax
    exported = libhyrax.export(from_run="results/<train-run>")

The ONNX graph takes `image` (float32, batch x C x H x W, any batch size) after the train run's
`[data_set]` transforms and returns `latent` (and `recon_error` for autoencoders). `preprocessing.json`
says how to turn a raw cutout into that input (band order, crop, NaN policy, normalisation), so the two
files are all a user needs. Before it finishes, export runs onnxruntime and torch on a real batch of the
`infer` data and fails when they differ by more than `onnx.tolerance`, naming the largest difference.
"""

from __future__ import annotations

import logging

import numpy as np

from libhyrax.errors import ModelError
from libhyrax.inference import model_input_group, train_data_set
from libhyrax.results import Result
from libhyrax.start import start_run

log = logging.getLogger("hyrax.export")

CHECK_ROWS = 64  # objects of the infer group that onnxruntime and torch are compared on


def export(config=None, *, from_run=None, overrides=(), opset: int | None = None) -> Result:
    """Export the model of a train run (default: the newest finished one) to ONNX; returns the export run."""
    from libhyrax import onnx_io
    from libhyrax.models import load_trained

    plan = start_run("export", config, overrides, from_run=from_run)
    cfg = plan.config
    opset = int(opset or cfg["onnx"]["opset_version"])
    tolerance = float(cfg["onnx"]["tolerance"])
    src = plan.input.path
    model, desc = load_trained(src, device="cpu", trusted_runs=cfg["general"]["trusted_runs"])
    data_set = train_data_set(src, desc)
    group = model_input_group(cfg, data_set)
    batch = group.read(0, min(len(group), CHECK_ROWS))
    x = _image_input(model, batch)
    primary = group.datasets[group.primary]
    with plan.open() as run:
        run.add_upstream(src)
        onnx_path = run.file("model.onnx")
        names = onnx_io.export_model(model, x[:2], onnx_path, opset)
        diffs = onnx_io.compare(model, onnx_io.session(onnx_path), x)
        worst = max(diffs, key=diffs.get)
        run.record(
            opset=opset, outputs=names, max_abs_diff=diffs, tolerance=tolerance, checked_objects=len(x)
        )
        log.info(
            "onnxruntime vs torch on %d objects: largest difference %.3g (%s)", len(x), diffs[worst], worst
        )
        if diffs[worst] > tolerance:
            raise ModelError(
                f"onnxruntime and torch differ by up to {diffs[worst]:.3g} in {worst!r} on {len(x)} "
                f"objects (onnx.tolerance = {tolerance:g}); the exported graph is not faithful. "
                f"Try another onnx.opset_version, or raise onnx.tolerance if that is acceptable"
            )
        onnx_io.write_preprocessing(
            run.file(onnx_io.PREPROCESSING_FILE),
            data_set=data_set,
            input_shape=tuple(x.shape[1:]),
            raw_shape=tuple(getattr(primary, "sample_shape", x.shape[1:])),
            bands=list(getattr(primary, "bands", []) or []) or None,
            outputs=names,
            extra={
                "latent_dim": desc.get("latent_dim"),
                "model": desc.get("name"),
                "train_run": str(src),
                "opset": opset,
                "max_abs_diff": diffs,
            },
        )
    return Result(run.path)


def _image_input(model, batch: dict) -> np.ndarray:
    """The model's input for `batch`, which ONNX export needs to be the (transformed) image itself."""
    x = model.prepare_inputs(batch)
    if (
        isinstance(x, (tuple, list))
        or not isinstance(x, np.ndarray)
        or x.shape != batch["image"].shape
        or not np.array_equal(x, batch["image"])
    ):
        raise ModelError(
            f"{type(model).__name__}.prepare_inputs does more than pass the image through; ONNX "
            "export supports models whose input is the (transformed) image only"
        )
    return np.ascontiguousarray(x, dtype=np.float32)
