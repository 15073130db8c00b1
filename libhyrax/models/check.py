"""check_model: run a model class through the contract on a tiny batch and say, in plain words, what is
missing. Use it on a class written in a notebook before training with it::

    from libhyrax.models import check_model
    check_model(TinyAE)                       # raises ModelError listing what is wrong
    check_model(TinyAE, batch=group.read(0, 4))   # on real data
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from libhyrax.errors import HyraxError, ModelError
from libhyrax.models.base import HyraxModel, build_model, first_rows, prepare, to_device

REQUIRED = {"forward": "forward(x) -> the model's output",
            "train_batch": "train_batch(x) -> {'loss': scalar tensor, other metrics}",
            "infer_batch": "infer_batch(x) -> latent tensor of shape (batch, latent_dim)"}


def tiny_batch(n: int = 4, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(n, *shape)).astype(np.float32),
            "object_id": np.array([str(i) for i in range(n)]),
            "label": (np.arange(n) % 2).astype(np.int64)}


def _missing_methods(cls: type) -> list[str]:
    out = []
    for name, what in REQUIRED.items():
        fn = getattr(cls, name, None)
        if (
            fn is None
            or (issubclass(cls, HyraxModel) and fn is HyraxModel.__dict__[name])
            or fn is nn.Module.forward
        ):
            out.append(f"define {what}")
    return out


def _fail(cls: type, problems: list[str]) -> ModelError:
    return ModelError(
        f"{cls.__name__} does not meet the Hyrax model contract:\n"
        + "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
    )


def _train_step(cls, model, config, x, problems) -> float | None:
    out = model.train_batch(x)
    if not isinstance(out, dict):
        problems.append(f"train_batch returned {type(out).__name__}; return a dict like {{'loss': loss}}")
        return None
    loss = out.get("loss")
    if loss is None:
        problems.append(
            f"train_batch's dict has no 'loss' (it has {sorted(out)}); the framework "
            "backpropagates out['loss']"
        )
        return None
    if getattr(model, "steps_itself", False):  # its train_batch stepped its optimizer: the loss is a figure
        return float(loss)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        problems.append(
            "train_batch's 'loss' must be a one-element tensor (e.g. F.mse_loss(...)), not "
            f"{type(loss).__name__}{tuple(getattr(loss, 'shape', ()))}"
        )
        return None
    if not loss.requires_grad:
        problems.append(
            "train_batch's 'loss' has no gradient: compute it from the model's parameters, "
            "without torch.no_grad() or .detach()/.item()"
        )
        return None
    for key, value in out.items():
        if key != "loss" and not (
            isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
        ):
            problems.append(f"train_batch's metric {key!r} must be a number or one-element tensor")
    optimizer = model.configure_optimizer(config)
    optimizer.zero_grad()
    loss.backward()
    if not any(p.grad is not None for p in model.parameters()):
        problems.append("backpropagating 'loss' reached none of the model's parameters")
    optimizer.step()
    return float(loss.detach())


def check_model(cls: type, config: dict | str | None = None, batch: dict | None = None) -> dict:
    """Check `cls` against the model contract on `batch` (default: 4 random 3x32x32 images with labels).
    Returns a summary (input shape, latent_dim, first loss, parameter count); raises ModelError listing
    every problem found."""
    from libhyrax.config import resolve

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelError(f"check_model takes a model class (a torch.nn.Module subclass), not {cls!r}")
    problems = _missing_methods(cls)
    if problems:
        raise _fail(cls, problems)
    config = resolve(config if config is not None else {})
    batch = tiny_batch() if batch is None else batch
    try:
        prepared = prepare(cls, batch)
        model = build_model(cls, config, first_rows(prepared, 1))
    except HyraxError as e:
        raise _fail(cls, [str(e)]) from None
    x = to_device(prepared, "cpu")
    model.train()
    loss = _train_step(cls, model, config, x, problems)
    if loss is None:
        raise _fail(cls, problems)
    model.eval()
    with torch.no_grad():
        val = model.validate_batch(x)
        if not (isinstance(val, dict) and "loss" in val):
            problems.append(
                "validate_batch must return a dict with 'loss' (or leave it out to reuse train_batch)"
            )
        latent = model.infer_batch(x)
        first = prepared[0] if isinstance(prepared, tuple) else prepared
        n = len(first)
        if not (isinstance(latent, torch.Tensor) and latent.ndim == 2 and latent.shape[0] == n):
            problems.append(
                f"infer_batch must return a (batch, latent_dim) tensor; it returned "
                f"{type(latent).__name__} {tuple(getattr(latent, 'shape', ()))} for {n} objects"
            )
        elif getattr(model, "latent_dim", None) and latent.shape[1] != model.latent_dim:
            problems.append(
                f"infer_batch gave {latent.shape[1]} values per object but latent_dim is {model.latent_dim}"
            )
        outputs = model.infer_outputs(x)
        if not (isinstance(outputs, dict) and "latent" in outputs):
            problems.append("infer_outputs must return a dict with 'latent' (the base class's default does)")
    if problems:
        raise _fail(cls, problems)
    return {
        "class": cls.__name__,
        "input_shape": list(first.shape[1:]),
        "latent_dim": int(latent.shape[1]),
        "loss": loss,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
