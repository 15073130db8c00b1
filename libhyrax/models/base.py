"""The model contract: one small base class, a registry by name, and import-path lookup.

A model is a ``torch.nn.Module``. Subclass :class:`HyraxModel` (registered under its class name) or
decorate any module with ``@hyrax_model``. It may be written in a notebook (running its cell again replaces
the class; a different class can't take a name already registered, see libhyrax.registry)::

    from libhyrax.models import HyraxModel
    import torch.nn.functional as F
    from torch import nn

    class TinyAE(HyraxModel):
        def __init__(self, config, data_sample):          # data_sample: prepare_inputs of one object
            super().__init__(config, data_sample)
            c, h, w = data_sample.shape[1:]
            self.latent_dim = self.params.get("latent_dim", 8)
            self.enc = nn.Linear(c * h * w, self.latent_dim)
            self.dec = nn.Linear(self.latent_dim, c * h * w)

        def forward(self, x):
            return self.dec(self.enc(x.flatten(1))).view_as(x)

        def train_batch(self, x):                          # -> {"loss": ..., other metrics}
            return {"loss": F.mse_loss(self(x), x)}

        def infer_batch(self, x):                          # -> latent (B, D)
            return self.enc(x.flatten(1))

`prepare_inputs(batch)` is a staticmethod: it turns the numpy batch dict of the data request
(``{"image": (B,C,H,W) float32, "object_id": ..., <other fields>}``) into the numpy array (or tuple of
arrays) the model takes; the default takes ``batch["image"]``. The framework makes tensors, moves them to
the device, runs the optimizer (from ``[optimizer]`` unless the model overrides ``configure_optimizer``),
and builds ``self.criterion`` from ``[criterion]`` when a config names one. A model that steps its own
optimizer inside ``train_batch`` says so with ``steps_itself = True``: the training loop then leaves
zero_grad, backward and step to it and takes its loss as a figure (it trains in one process). Check a
class with ``libhyrax.models.check_model(TinyAE)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from libhyrax import registry
from libhyrax.errors import ConfigError, ModelError
from libhyrax.registry import Registry

# a model class by name: every HyraxModel subclass, and every @hyrax_model class
MODELS: Registry[type[nn.Module]] = Registry(
    "model",
    import_paths=True,
    base=nn.Module,
    rename_hint="rename one of the classes, or register yours under another name with @hyrax_model(name=...)",
)
SOURCE_MODULE = "hyrax_model_source"  # the module name a saved model_source.py is loaded under


class HyraxModel(nn.Module):
    """Base class of Hyrax models; subclasses register themselves under their class name."""

    latent_dim: int | None = None
    # convolutional models set this: `place` then stores their weights channels-last, which mkldnn (CPU)
    # and cuDNN run faster (the default autoencoder: 1.3-2x on this kind of 2-core CPU, training too).
    # Off by default: a model that `.view()`s a feature map would fail on the permuted strides.
    channels_last: bool = False
    # True: train_batch zeroes, backpropagates and steps the optimizer configure_optimizer returns itself
    # (the framework still builds, schedules and checkpoints that optimizer)
    steps_itself: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)

    def __init__(self, config: dict | None = None, data_sample: Any = None):
        super().__init__()
        self.config = config or {}
        self.criterion = None  # set by the framework when [criterion] names a loss

    @property
    def params(self) -> dict:
        """This model's config table, ``[model.<registered name>]`` (the class name by default)."""
        tables = self.config.get("model") or {}
        name = registered_name(type(self)) or type(self).__name__
        return dict(tables.get(name) or tables.get(type(self).__name__) or {})

    @staticmethod
    def prepare_inputs(batch: dict) -> np.ndarray | tuple:
        return batch["image"]

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} must define forward(x)")

    def train_batch(self, x) -> dict:
        raise NotImplementedError(
            f"{type(self).__name__} must define train_batch(x) returning {{'loss': ...}}"
        )

    def validate_batch(self, x) -> dict:
        """Called in eval mode without gradients; the default is train_batch's figures."""
        return self.train_batch(x)

    def infer_batch(self, x) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define infer_batch(x) returning (B, D)")

    def infer_outputs(self, x) -> dict:
        """Everything `infer` writes per object: {"latent": (B, D)} (+ "recon_error": (B,))."""
        return {"latent": self.infer_batch(x)}

    def configure_optimizer(self, config: dict) -> torch.optim.Optimizer:
        opt = config.get("optimizer") or {}
        cls = import_object(opt.get("name") or "torch.optim.Adam", "optimizer.name")
        return cls(self.parameters(), **(opt.get("kwargs") or {}))

    def configure_scheduler(self, optimizer, config: dict):
        sched = config.get("scheduler") or {}
        if not sched.get("name"):
            return None
        cls = import_object(sched["name"], "scheduler.name")
        return cls(optimizer, **(sched.get("kwargs") or {}))


# the methods a decorated plain nn.Module gets when it doesn't define them
_DEFAULTS = (
    "prepare_inputs",
    "validate_batch",
    "infer_outputs",
    "configure_optimizer",
    "configure_scheduler",
    "params",
)


def hyrax_model(cls: type | None = None, *, name: str | None = None):
    """Register a model class: ``@hyrax_model`` or ``@hyrax_model(name="MyNet")``. A plain
    ``nn.Module`` gets the base class's defaults for the optional methods it lacks."""

    def wrap(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, nn.Module)):
            raise ModelError(f"@hyrax_model decorates a torch.nn.Module subclass, not {c!r}")
        for attr in _DEFAULTS:
            if not hasattr(c, attr):
                setattr(c, attr, HyraxModel.__dict__[attr])
        register(c, name)
        return c

    return wrap(cls) if cls is not None else wrap


def register(cls: type, name: str | None = None) -> None:
    """Add `cls` to MODELS under `name` (its class name by default), with the registry's clash policy."""
    if cls.__module__.startswith(SOURCE_MODULE):
        return  # a saved model_source.py being loaded: load_trained takes the class directly
    MODELS.register(name or cls.__name__, cls)


def import_object(path: str, key: str) -> Any:
    """The object at import path ``pkg.module.Name``; a ConfigError naming the config key otherwise."""
    return registry.import_object(path, key)


def model_class(name: str) -> type:
    """A model class by registered name or import path; unknown names list the known ones."""
    return MODELS.lookup(name)


def registered_name(cls: type) -> str | None:
    return MODELS.name_of(cls)


# --- what the framework does around a model ---------------------------------------------------------


def prepare(cls_or_model, batch: dict) -> np.ndarray | tuple:
    """`prepare_inputs(batch)`, checked: numeric numpy arrays (or a tuple of them) with one row per object."""
    name = cls_or_model.__name__ if isinstance(cls_or_model, type) else type(cls_or_model).__name__
    try:
        out = cls_or_model.prepare_inputs(batch)
    except KeyError as e:
        raise ModelError(
            f"{name}.prepare_inputs needs the field {e} but the data request gives "
            f"{sorted(batch)}; add it to the data request's fields"
        ) from None
    except TypeError as e:
        if "positional argument" in str(e):
            raise ModelError(
                f"{name}.prepare_inputs must be a @staticmethod taking the batch dict ({e})"
            ) from None
        raise
    parts = out if isinstance(out, tuple) else (out,)
    n = len(batch.get("object_id", parts[0] if parts else ()))
    for i, part in enumerate(parts):
        what = f"{name}.prepare_inputs returned" + (
            f" (item {i} of its tuple)" if isinstance(out, tuple) else ""
        )
        if isinstance(part, torch.Tensor):
            raise ModelError(
                f"{what} a torch tensor; return numpy arrays (the framework makes the tensors "
                "and moves them to the device)"
            )
        if not isinstance(part, np.ndarray):
            raise ModelError(f"{what} {type(part).__name__}; it must return a numpy array or a tuple of them")
        if part.dtype.kind not in "fiub":
            raise ModelError(
                f"{what} an array of {part.dtype}; the model takes numbers (leave object_id out)"
            )
        if part.ndim == 0 or len(part) != n:
            raise ModelError(
                f"{what} shape {part.shape}; its first axis must be the {n} objects of the batch"
            )
    return out


def to_device(prepared, device, non_blocking: bool = False):
    """numpy -> torch (no copy) -> device."""
    if isinstance(prepared, tuple):
        return tuple(to_device(p, device, non_blocking) for p in prepared)
    return torch.from_numpy(np.ascontiguousarray(prepared)).to(device, non_blocking=non_blocking)


def place(model: nn.Module, device) -> nn.Module:
    """Move `model` to `device`, its weights channels-last when the model says it is convolutional
    (`channels_last = True`). Only the weights' memory layout changes: inputs stay (B, C, H, W) and every
    output has the same values and shape."""
    model.to(device)
    if getattr(model, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    return model


def first_rows(prepared, n: int = 1):
    return tuple(p[:n] for p in prepared) if isinstance(prepared, tuple) else prepared[:n]


def build_model(cls: type, config: dict, data_sample) -> nn.Module:
    """Instantiate `cls(config, data_sample)`; give it `config` and the config's criterion."""
    try:
        model = cls(config, data_sample)
    except (ModelError, ConfigError):
        raise
    except TypeError as e:
        if "positional argument" in str(e) or "__init__" in str(e):
            raise ModelError(f"{cls.__name__}.__init__ must take (config, data_sample): {e}") from None
        raise ModelError(f"{cls.__name__}(config, data_sample) failed: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise ModelError(f"{cls.__name__}(config, data_sample) failed: {type(e).__name__}: {e}") from e
    if not getattr(model, "config", None):
        model.config = config
    crit = config.get("criterion") or {}
    if crit.get("name"):
        model.criterion = import_object(crit["name"], "criterion.name")(**(crit.get("kwargs") or {}))
    elif not hasattr(model, "criterion"):
        model.criterion = None
    return model
