"""The reference Hyrax's `@hyrax_model`, here: a model written for lincc-frameworks/hyrax trains, infers
and exports with its import line changed (`libhyrax.reference_tool` re-exports it).

    # was: from hyrax.models.model_registry import hyrax_model
    from libhyrax.reference_tool import hyrax_model

    @hyrax_model
    class MyCNN(nn.Module):
        def __init__(self, config, data_sample=None):
            super().__init__()
            self.config = config
            _, channels, height, width = data_sample[0].shape      # prepare_inputs of a batch
            ...

        def forward(self, batch):
            x, _ = batch
            ...

        def train_batch(self, batch):                              # or the older train_step
            _, labels = batch
            self.optimizer.zero_grad()
            loss = self.criterion(self(batch), labels)
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.item()}

        @staticmethod
        def prepare_inputs(data_dict):                             # or the older to_tensor
            data = data_dict["data"]
            return np.asarray(data["image"], np.float32), np.asarray(data.get("label", []), np.int64)

The decorator returns a subclass of the class (same name and module; `MyCNN.__wrapped__` is the class as
written, left unchanged) and registers it under its name. How the two contracts meet:

- `prepare_inputs` gets the batch shaped as the reference shapes it, `{"<friendly name>": {field: array},
  "object_id": ids}`; any friendly name (`data_dict["data"]`, `data_dict["cutouts"]`) finds the request's
  fields. An empty part of its tuple (no labels at inference) travels as an (N, 0) array and reaches the
  model as an empty tensor again; a tuple whose only non-empty part is the image travels as the image, so
  `hyrax export` writes an ONNX graph that takes the image;
- `train_batch` steps its own optimizer, as in the reference: `self.optimizer` (from `[optimizer]` unless
  `__init__` made one), `self.criterion` (`[criterion]`, else the reference's default
  `torch.nn.CrossEntropyLoss`) and `self.scheduler` (`[scheduler]`, stepped each epoch). The class says
  so with the model contract's `steps_itself = True`: the training loop then runs train_batch and takes
  its loss, leaving backward and step to it; `configure_optimizer` hands the framework the model's own
  optimizer, so checkpoints keep its state and `--resume` restores it;
- `validate_batch` is the model's, else its `test_batch`, else `train_batch`'s loss without a step;
- `infer_batch` is the model's, else `forward`; the output, flattened per object, is the latent vector;
- such a model trains in one process (it steps itself, so gradients can't be averaged across ranks).

In a notebook, import `hyrax_model` from `libhyrax.reference_tool` in the cell that defines the class: that
cell's imports are saved with the class (model_source.py), and a later run rebuilds it with them.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from torch import nn

from libhyrax.errors import ModelError
from libhyrax.models.base import HyraxModel, import_object, register
from libhyrax.reference_tool.datasets import MissingSetting, reference_config, to_numpy

DEFAULT_CRITERION = "torch.nn.CrossEntropyLoss"  # the reference's default criterion.name
CONVENTIONAL_NAME = "data"  # the friendly name the reference's examples use


# --- the batch as the reference hands it to prepare_inputs ----------------------------------------


class ReferenceBatch(dict):
    """`{"object_id": ids, "data": {field: array}}`; any other friendly name finds the fields as well (a
    field of a second dataset named `<friendly>.<field>` here is `batch[friendly][field]` there)."""

    def __init__(self, batch: dict):
        self._fields = {k: v for k, v in batch.items() if "." not in k}
        self._prefixed = {k: v for k, v in batch.items() if "." in k}
        super().__init__(object_id=batch.get("object_id"))
        self[CONVENTIONAL_NAME] = self.__missing__(CONVENTIONAL_NAME)
        for friendly in {k.split(".", 1)[0] for k in self._prefixed}:
            self[friendly] = self.__missing__(friendly)

    def __missing__(self, friendly):
        if not isinstance(friendly, str):
            raise KeyError(friendly)
        own = {k.split(".", 1)[1]: v for k, v in self._prefixed.items() if k.startswith(f"{friendly}.")}
        return {**self._fields, **own}

    def get(self, key, default=None):
        return self[key] if isinstance(key, str) else default


# --- our inputs <-> the reference's tuple ---------------------------------------------------------


def from_reference(out, n: int | None = None):
    """prepare_inputs' output as the framework takes it: numpy; empty parts as (N, 0) placeholders; the
    image alone when it is the only non-empty part."""
    if not isinstance(out, (tuple, list)):
        return np.asarray(to_numpy(out))
    parts = [np.asarray(to_numpy(p)) for p in out]
    filled = [i for i, p in enumerate(parts) if p.ndim and len(p)]
    n = n if n is not None else (len(parts[filled[0]]) if filled else 0)
    if len(filled) == 1:
        return parts[filled[0]]
    return tuple(p if p.ndim and len(p) else np.zeros((n, 0), dtype=p.dtype) for p in parts)


def _is_placeholder(part) -> bool:
    return getattr(part, "ndim", 0) == 2 and part.shape[1] == 0 and part.shape[0] > 0


class Form:
    """Where our input goes in the reference's tuple: `slots` = [(dtype, shape) per position] and the
    position of the input when it travels alone (`main`); None slots for a model that takes one array."""

    def __init__(self, slots: list[tuple[np.dtype, tuple]] | None = None, main: int = 0):
        self.slots, self.main = slots, main

    @classmethod
    def of(cls, reference_prepare, sample) -> Form:
        """Learned from a data sample in our form (a tuple, or one array whose reference tuple is found by
        running the model's prepare_inputs on a batch holding just that array as the image)."""
        if isinstance(sample, tuple):
            return cls([(p.dtype, p.shape[1:]) for p in sample])
        sample = np.asarray(sample)
        try:
            out = reference_prepare(
                ReferenceBatch({"image": sample, "object_id": np.array([str(i) for i in range(len(sample))])})
            )
        except Exception:  # it needs other fields: the model takes the array as it is
            return cls()
        if not isinstance(out, (tuple, list)):
            return cls()
        parts = [np.asarray(to_numpy(p)) for p in out]
        main = next((i for i, p in enumerate(parts) if p.shape == sample.shape), 0)
        return cls([(p.dtype, p.shape[1:]) for p in parts], main)

    def to_reference(self, x, empty):
        """`x` (our form, numpy or torch) as the model's own prepare_inputs would have given it."""
        if isinstance(x, (tuple, list)):
            return tuple(empty(p.dtype, p) if _is_placeholder(p) else p for p in x)
        if self.slots is None or len(self.slots) == 1:
            return x if self.slots is None else (x,)
        return tuple(x if i == self.main else empty(dtype, x) for i, (dtype, _) in enumerate(self.slots))


def _empty_numpy(dtype, like):
    return np.zeros(0, dtype=dtype)


def _empty_torch(dtype, like):
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    return torch.empty(0, dtype=dtype, device=like.device)


# --- the decorator ---------------------------------------------------------------------------------


def hyrax_model(cls: type | None = None, *, name: str | None = None):
    """`@hyrax_model` of the reference: a subclass of the user's class that meets the model contract,
    registered under the class's name (the class itself is left as it is)."""

    def wrap(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, nn.Module)):
            raise ModelError(f"@hyrax_model decorates a torch.nn.Module subclass, not {c!r}")
        adapted = c if c.__dict__.get("__wrapped__") is not None else _adapted(c)
        register(adapted, name)
        return adapted

    return wrap(cls) if cls is not None else wrap


def _static(c: type, *names: str):
    """The first of `names` the class has, as a plain function (a staticmethod unwrapped)."""
    for n in names:
        for klass in c.__mro__:
            if n in klass.__dict__:
                obj = klass.__dict__[n]
                return obj.__func__ if isinstance(obj, staticmethod) else obj
    return None


def _method(c: type, *names: str):
    for n in names:
        fn = getattr(c, n, None)
        if fn is not None and fn is not getattr(nn.Module, n, None):
            return fn
    return None


def _default_prepare(data_dict):
    """The reference's default: the image and the label of the first dataset."""
    data = data_dict[CONVENTIONAL_NAME]
    return data.get("image", np.array([])), data.get("label", np.array([]))


def _adapted(c: type) -> type:
    """A subclass of `c` (same name, module and qualified name; `__wrapped__` is `c`) whose methods take
    the framework's inputs and call `c`'s with the reference's; it steps its own optimizer."""
    name = c.__name__
    orig = {
        "__init__": c.__init__,
        "forward": _method(c, "forward"),
        "train_batch": _method(c, "train_batch", "train_step"),
        "validate_batch": _method(c, "validate_batch"),
        "test_batch": _method(c, "test_batch"),
        "infer_batch": _method(c, "infer_batch"),
    }
    prepare = _static(c, "prepare_inputs", "to_tensor") or _default_prepare

    def __init__(self, config=None, data_sample=None, *args, **kwargs):
        form = Form.of(prepare, data_sample) if data_sample is not None else Form()
        sample = form.to_reference(data_sample, _empty_numpy) if data_sample is not None else None
        with _plain_errors(name):
            orig["__init__"](self, reference_config(config), sample, *args, **kwargs)
        self._hyrax_form = form
        _give_training_parts(self, config or {})

    def prepare_inputs(batch: dict):
        with _plain_errors(name):
            out = prepare(ReferenceBatch(batch))
        ids = batch.get("object_id")
        return from_reference(out, len(ids) if ids is not None else None)

    def to_ref(self, x):
        return self._hyrax_form.to_reference(x, _empty_torch)

    def forward(self, x, *args, **kwargs):
        return orig["forward"](self, to_ref(self, x), *args, **kwargs)

    def train_batch(self, x):
        steps = self._hyrax_steps
        with _plain_errors(name):
            out = orig["train_batch"](self, to_ref(self, x))
        if self._hyrax_steps == steps and self.optimizer is not None:
            raise ModelError(
                f"{name}.train_batch did not step its optimizer; in the reference's contract "
                "train_batch runs self.optimizer.zero_grad(), loss.backward() and "
                "self.optimizer.step() itself"
            )
        return _figures(out, name, "train_batch")

    def validate_batch(self, x):
        xr = to_ref(self, x)
        with _plain_errors(name):
            if orig["validate_batch"] is not None:
                out = orig["validate_batch"](self, xr)
            elif orig["test_batch"] is not None:
                out = orig["test_batch"](self, xr)
            else:  # its training loss on these objects, without a step
                with torch.enable_grad(), _without_step(self):
                    out = orig["train_batch"](self, xr)
        return _figures(out, name, "validate_batch")

    def infer_batch(self, x):
        xr = to_ref(self, x)
        with _plain_errors(name):
            out = (
                orig["infer_batch"](self, xr)
                if orig["infer_batch"] is not None
                else orig["forward"](self, xr)
            )
        out = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(to_numpy(out)))
        if out.ndim == 0:
            raise ModelError(
                f"{name}.infer_batch returned a single number; it must return one row per object"
            )
        return out.reshape(out.shape[0], -1)

    def configure_optimizer(self, config):
        if self.optimizer is None:
            raise ModelError(
                f"{name} has no optimizer: set optimizer.name (e.g. torch.optim.Adam) or make "
                "self.optimizer in its __init__"
            )
        return self.optimizer  # its own: train_batch steps it, the framework checkpoints and schedules it

    def configure_scheduler(self, optimizer, config):
        return self.scheduler

    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        from libhyrax.models.saving import load_weights

        load_weights(self, path)

    new = {
        "__init__": __init__,
        "prepare_inputs": staticmethod(prepare_inputs),
        "infer_batch": infer_batch,
        "configure_optimizer": configure_optimizer,
        "configure_scheduler": configure_scheduler,
        "infer_outputs": HyraxModel.__dict__["infer_outputs"],
        "params": HyraxModel.__dict__["params"],
    }
    if orig["forward"] is not None:
        new["forward"] = forward
    if orig["train_batch"] is not None:
        new |= {"train_batch": train_batch, "validate_batch": validate_batch}
    for method, fn in (("save", save), ("load", load)):
        if not hasattr(c, method):
            new[method] = fn
    for key, fn in new.items():
        if callable(fn) and not isinstance(fn, staticmethod):
            functools.update_wrapper(fn, orig.get(key) or fn, updated=())
    # the model contract's "this model steps its own optimizer in train_batch" (the training loop then
    # leaves backward and step to it); it trains in one process (gradients can't be averaged across ranks)
    new["steps_itself"] = True
    identity = {
        "__module__": c.__module__,
        "__qualname__": c.__qualname__,
        "__doc__": c.__doc__,
        "__wrapped__": c,
    }
    return type(name, (c,), {**new, **identity})


@contextlib.contextmanager
def _plain_errors(name: str):
    """A config key the model reads and this Hyrax doesn't have: a ModelError that names it."""
    try:
        yield
    except MissingSetting as e:
        raise ModelError(e.explain(name, "model")) from None


# --- what the framework gives such a model --------------------------------------------------------


def _give_training_parts(model: nn.Module, config: dict) -> None:
    """`self.optimizer`, `self.criterion`, `self.scheduler` from the config, unless __init__ made them; a
    step counter on the optimizer (train_batch must step it)."""
    model._hyrax_steps = 0
    if getattr(model, "optimizer", None) is None and any(p.requires_grad for p in model.parameters()):
        model.optimizer = HyraxModel.configure_optimizer(model, config)
    elif not hasattr(model, "optimizer"):
        model.optimizer = None
    if not hasattr(model, "criterion") or model.criterion is None:
        crit = config.get("criterion") or {}
        cls = import_object(crit.get("name") or DEFAULT_CRITERION, "criterion.name")
        model.criterion = cls(**(crit.get("kwargs") or {}))
    if not hasattr(model, "scheduler"):
        model.scheduler = (
            HyraxModel.configure_scheduler(model, model.optimizer, config)
            if model.optimizer is not None
            else None
        )
    if model.optimizer is not None:

        def counted(optimizer, args, kwargs):
            model._hyrax_steps += 1

        model.optimizer.register_step_post_hook(counted)


@contextlib.contextmanager
def _without_step(model: nn.Module):
    """The model's train_batch runs, its optimizer doesn't step (the gradients are cleared by the next
    real step, which zeroes them first)."""
    real = model.optimizer
    model.optimizer = _NoStep(real) if real is not None else None
    try:
        yield
    finally:
        model.optimizer = real


class _NoStep:
    def __init__(self, inner):
        self.inner = inner

    def zero_grad(self, set_to_none: bool = True):
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        return None

    def __getattr__(self, item):
        return getattr(self.inner, item)


def _figures(out, name: str, what: str) -> dict:
    """A reference loss dict ({"loss": float, ...}) as the framework's: the loss a one-element tensor."""
    if not isinstance(out, dict) or "loss" not in out:
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ModelError(f"{name}.{what} must return a dict with 'loss'; it returned {got}")
    try:
        figures = {k: float(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    except (TypeError, ValueError) as e:
        raise ModelError(f"{name}.{what} must return numbers (a loss and metrics): {e}") from None
    loss = torch.tensor(figures.pop("loss"))
    return {"loss": loss, **figures}
