"""ONNX: export a trained model's inference outputs, check onnxruntime against torch, run it, and the
preprocessing file that travels beside `model.onnx`.

The exported graph takes the model's input (`image`: float32, N x C x H x W, after the `[data_set]`
transforms) and returns its inference outputs by name: `latent` (N, D) and, for autoencoders,
`recon_error` (N,). The batch size is dynamic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from libhyrax import atomic
from libhyrax.errors import ModelError

log = logging.getLogger("hyrax.onnx")

INPUT_NAME = "image"
PREPROCESSING_FILE = "preprocessing.json"


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs warnings about optional torchvision ops and may print; keep stdout clean (it
    carries only results paths) and its chatter out of the user's log."""
    loggers = [
        logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    ]
    levels = [lg.level for lg in loggers]
    import warnings

    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _outputs_module(model, names: list[str]):
    import torch

    class Outputs(torch.nn.Module):
        """The model's infer_outputs as a tuple, in a fixed order, for the exporter (["latent"] alone:
        infer_batch, so an autoencoder's decoder is left out of the graph)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            if names == ["latent"]:
                return (self.model.infer_batch(x),)
            out = self.model.infer_outputs(x)
            return tuple(out[n] for n in names)

    return Outputs().eval()


def output_names(model, example: np.ndarray) -> list[str]:
    """The names of the model's inference outputs ("latent" first)."""
    import torch

    with torch.inference_mode():
        out = model.infer_outputs(torch.from_numpy(example))
    return ["latent"] + sorted(k for k in out if k != "latent")


def export_model(model, example: np.ndarray, path: str | os.PathLike, opset: int = 20) -> list[str]:
    """Write `model`'s inference outputs as an ONNX graph with a dynamic batch dimension; returns the
    output names. Uses torch's dynamo exporter, and the TorchScript one when dynamo can't trace it."""
    import torch

    model = model.eval().cpu()
    names = output_names(model, example)
    module = _outputs_module(model, names)
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    with atomic.replacing(path) as tmp:
        _export(module, x, tmp, names, opset)
    return names


def _export(module, x, tmp: Path, names: list[str], opset: int) -> None:
    import torch

    try:
        with _quiet_exporter():
            torch.onnx.export(
                module,
                (x,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=names,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,  # its "[torch.onnx] Run decompositions... ✅" progress lines
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            )
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the legacy path is the fallback
        log.warning(
            "the dynamo ONNX exporter could not trace the model (%s: %s); using the TorchScript exporter",
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
        axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]}
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (x,),
                    str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=names,
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes=axes,
                )
        except Exception as e2:  # noqa: BLE001
            raise ModelError(f"the model can't be exported to ONNX: {type(e2).__name__}: {e2}") from None


def in_memory_session(model, example: np.ndarray, latent_only: bool = False):
    """`model`'s inference outputs (`latent_only`: its latent alone) as an onnxruntime CPU session, without
    a file: the TorchScript exporter (about 0.5 s, against several for dynamo); `example`: a small batch of
    the model's input."""
    import io

    import torch

    names = ["latent"] if latent_only else output_names(model, example)
    buf = io.BytesIO()
    with _quiet_exporter():
        torch.onnx.export(
            _outputs_module(model, names),
            (torch.from_numpy(np.ascontiguousarray(example)),),
            buf,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]},
        )
    # as many threads as torch would use (OMP_NUM_THREADS, the CPU set)
    return session(buf.getvalue(), "cpu", threads=torch.get_num_threads())


def session(model: str | os.PathLike | bytes, device: str = "cpu", threads: int | None = None):
    """An onnxruntime session of a model file (or its bytes) on the CPU (or CUDA, when asked for and
    available); `threads`: its intra-op threads (default: onnxruntime's choice)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), sess_options=opts, providers=providers
    )


def run_session(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    out = sess.run(names, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    return dict(zip(names, out, strict=True))


def compare(model, sess, x: np.ndarray) -> dict[str, float]:
    """The largest absolute difference per output between torch and onnxruntime on batch `x`."""
    import torch

    with torch.inference_mode():
        ref = model.eval().cpu().infer_outputs(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return differences(run_session(sess, x), {k: v.float().numpy() for k, v in ref.items()})


def differences(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """The largest absolute difference per output of `want` (inf where `got` lacks it or has another
    shape)."""
    return {
        k: float(np.max(np.abs(got[k].astype("f8") - v), initial=0.0))
        if k in got and got[k].shape == v.shape
        else float("inf")
        for k, v in want.items()
    }


def preprocessing_steps(data_set: dict, raw_shape: tuple[int, ...]) -> list[str]:
    """The `[data_set]` transforms in words, in the order they are applied (libhyrax.data.transforms)."""
    steps = [f"stack the bands in the order of 'bands' into float32 (N, {raw_shape[0]}, H, W)"]
    crop = data_set.get("crop_to")
    if crop:
        steps.append(f"centre-crop to {crop}x{crop}: rows (H-{crop})//2 .. +{crop}, same for columns")
    if data_set.get("nan_mode") == "quantile":
        steps.append(
            f"replace NaN/inf pixels with the {data_set.get('nan_quantile')} quantile of the finite "
            f"pixels of the same band of the same image (0 when none is finite)"
        )
    else:
        steps.append("replace NaN/inf pixels with 0")
    if data_set.get("transform") == "asinh":
        steps.append(f"x = arcsinh(x / {data_set.get('asinh_scale')})")
    elif data_set.get("transform") == "tanh":
        steps.append("x = tanh(x)")
    return steps


def write_preprocessing(
    path: str | os.PathLike,
    *,
    data_set: dict,
    input_shape: tuple[int, ...],
    raw_shape: tuple[int, ...],
    bands: list[str] | None,
    outputs: list[str],
    extra: dict | None = None,
) -> Path:
    """`preprocessing.json`: all a user needs besides model.onnx to feed it an image."""
    doc = {
        "format": "hyrax-onnx-preprocessing",
        "format_version": 1,
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "shape": ["batch", *input_shape]},
        "raw_shape": list(raw_shape),
        "bands": bands,
        "data_set": data_set,
        "steps": preprocessing_steps(data_set, raw_shape),
        "outputs": outputs,
        **(extra or {}),
    }
    path = Path(path)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_preprocessing(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
