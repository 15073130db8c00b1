"""A trained model on disk, and back: `model.pt` (state_dict), `model.json` (what rebuilds it) and, for a
class defined in a notebook or script (`__main__`), `model_source.py` beside them.

    model, desc = load_trained("results/20250101-120000-train-ab12cd")   # eval mode, on "cpu"
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import linecache
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from libhyrax import trust
from libhyrax.errors import ModelError, UsageError
from libhyrax.models.base import MODELS, SOURCE_MODULE, build_model, import_object, registered_name

WEIGHTS, DESCRIPTION, SOURCE = "model.pt", "model.json", "model_source.py"
FORMAT, FORMAT_VERSION = "hyrax-model", 1
# what a saved model source starts with, for notebooks whose imports live in another cell
SOURCE_HEADER = """\
# Saved by Hyrax: the model class as it was defined when it was trained.
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import libhyrax  # a class written as `libhyrax.HyraxModel`, its import in another cell
from libhyrax.models import HyraxModel, hyrax_model
"""


def _shapes(sample) -> list[dict]:
    parts = sample if isinstance(sample, tuple) else (sample,)
    return [{"shape": list(p.shape[1:]), "dtype": str(p.dtype)} for p in parts]


def describe(model: nn.Module, config: dict, data_sample) -> dict:
    """The contents of model.json."""
    cls = type(model)
    inputs = _shapes(data_sample)
    latent_dim = getattr(model, "latent_dim", None)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "class": cls.__name__,
        "name": registered_name(cls) or cls.__name__,
        "import_path": f"{cls.__module__}.{cls.__qualname__}",
        "source_file": SOURCE if needs_source(cls) else None,
        "hyperparameters": dict(getattr(model, "params", {}) or {}),
        "input_shape": inputs[0]["shape"],
        "inputs": inputs, "inputs_are_tuple": isinstance(data_sample, tuple),
        "latent_dim": int(latent_dim) if latent_dim else None,
        "data_set": dict(config.get("data_set") or {}),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def needs_source(cls: type) -> bool:
    """A class that can't be imported by its path again: defined in a notebook or run script."""
    return cls.__module__ == "__main__" or cls.__module__.startswith(SOURCE_MODULE)


def save_trained(run_dir: str | os.PathLike, model: nn.Module, description: dict) -> None:
    run_dir = Path(run_dir)
    if description.get("source_file"):
        (run_dir / SOURCE).write_text(class_source(type(model)), encoding="utf-8")
        trust.sign(run_dir / SOURCE)  # this account wrote it: its own later runs may load it
    torch.save(model.state_dict(), run_dir / WEIGHTS)
    (run_dir / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    trust.sign(run_dir / DESCRIPTION)  # its import path is this account's own: importing it needs no yes


# --- the source of a notebook class ----------------------------------------------------------------

def _defining_text(cls: type) -> str:
    """The text of the file or notebook cell that defines `cls` (IPython keeps cells in linecache); for a
    class made by a decorator (`__wrapped__`), the class as the user wrote it."""
    cls = cls.__dict__.get("__wrapped__") or cls
    files = [f.__code__.co_filename for f in vars(cls).values() if inspect.isfunction(f)]
    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    for filename in files + ([module_file] if module_file else []):
        lines = linecache.getlines(filename)
        if lines:
            return "".join(lines)
    raise ModelError(f"can't find the source of {cls.__name__} to save beside its weights; define it in a "
                     "file or notebook cell (not exec'd from a string)")


def class_source(cls: type) -> str:
    """A module that rebuilds `cls`: a standard header, the imports of its cell/file, and the class."""
    text = _defining_text(cls)
    tree = ast.parse(text)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    if not classes:
        raise ModelError(f"the source that defines {cls.__name__} has no top-level class of that name")
    node = classes[-1]
    lines = text.splitlines()
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    imports = [
        ast.get_source_segment(text, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
    ]
    body = "\n".join(lines[start : node.end_lineno])
    return SOURCE_HEADER + "\n".join(i for i in imports if i) + "\n\n\n" + body + "\n"


def _load_source(path: Path, class_name: str) -> type:
    name = f"{SOURCE_MODULE}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ModelError(f"{path} (the saved model source) fails to run: {type(e).__name__}: {e}") from e
    if not hasattr(module, class_name):
        raise ModelError(f"{path} does not define {class_name}")
    return getattr(module, class_name)


# --- loading ---------------------------------------------------------------------------------------


def model_class_for(desc: dict, run_dir: Path, trusted_runs=()) -> type:
    """The class of a train run's model. A class from a notebook is rebuilt from the run's
    model_source.py, which runs it as Python: only when this account's Hyrax wrote it (signed) or the user
    trusts the run (general.trusted_runs). An import path is checked before it is imported (importing runs
    the module's code: see check_importable) and must name a torch module class."""
    if desc.get("source_file"):
        source = run_dir / SOURCE  # always this name: model.json can't point the loader at another file
        trust.check_loadable(source, "the Python source of a model class defined in a notebook", trusted_runs)
        return _load_source(source, desc["class"])
    cls = MODELS.get(desc["name"])
    if cls is not None and f"{cls.__module__}.{cls.__qualname__}" == desc["import_path"]:
        return cls
    check_importable(desc["import_path"], run_dir, trusted_runs)
    try:
        found = import_object(desc["import_path"], "the model's import path")
    except Exception:
        if cls is not None:
            return cls
        raise ModelError(
            f"the model class {desc['import_path']} of {run_dir} can't be imported; install the "
            "package that defines it"
        ) from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ModelError(
            f"{run_dir / DESCRIPTION} names {desc['import_path']!r} as its model class, which is not "
            "a torch module class; the file is damaged or was edited"
        )
    return found


def check_importable(path: str, run_dir: Path, trusted_runs=()) -> None:
    """Refuse to import a model.json's import path that could run code nobody chose: importing a module runs
    it, and a copied results directory's model.json may name any module, `this` (which prints) or one planted
    beside a notebook (the notebook's folder is on sys.path). Allowed: a model.json this account's Hyrax
    wrote (signed), a run the user trusts (general.trusted_runs), or a module of an installed package or one
    already imported."""
    if trust.is_signed(run_dir / DESCRIPTION) or trust.is_trusted_run(run_dir, trusted_runs):
        return
    top = path.replace(":", ".").split(".")[0]
    if top in sys.modules or top in _installed_packages():
        return
    raise UsageError(
        f"refusing to import {path!r}, the model class {run_dir / DESCRIPTION} names: importing runs code, "
        f"{top!r} is neither an installed package nor imported yet, and the file was not written by Hyrax on "
        f"this account. If you trust whoever made {run_dir}, say so: "
        f"--set 'general.trusted_runs=[\"{run_dir}\"]'"
    )


def _installed_packages() -> set[str]:
    """Top-level modules of the installed distributions (site-packages), not loose files on sys.path."""
    from importlib.metadata import packages_distributions

    return set(packages_distributions())


def sample_from(desc: dict):
    parts = tuple(np.zeros([1, *i["shape"]], dtype=i["dtype"]) for i in desc["inputs"])
    return parts if desc.get("inputs_are_tuple") else parts[0]


def read_description(run_dir: str | os.PathLike) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / DESCRIPTION
    if not path.is_file() or not (run_dir / WEIGHTS).is_file():
        raise UsageError(
            f"{run_dir} holds no trained model ({DESCRIPTION} and {WEIGHTS}); give the results "
            "directory of a finished `hyrax train` run"
        )
    desc = json.loads(path.read_text(encoding="utf-8"))
    if desc.get("format") != FORMAT or desc.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(
            f"{path} is not a model description this Hyrax can read "
            f"(format {desc.get('format')!r} version {desc.get('format_version')})"
        )
    return desc


def load_trained(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", trusted_runs=()
) -> tuple[nn.Module, dict]:
    """The model of a train run, with its final weights, in eval mode on `device`; and its model.json.
    `trusted_runs` (general.trusted_runs): runs whose notebook model source may run though this account's
    Hyrax didn't write it (libhyrax.trust)."""
    from libhyrax.config import read_toml

    run_dir = Path(run_dir)
    desc = read_description(run_dir)
    config = read_toml(run_dir / "runtime_config.toml")
    model = build_model(model_class_for(desc, run_dir, trusted_runs), config, sample_from(desc))
    load_weights(model, run_dir / WEIGHTS)
    return model.to(device).eval(), desc


def load_weights(
    model: nn.Module, weights: str | os.PathLike | dict, source: str = "the given weights"
) -> None:
    """Load a state_dict (or a file of one, or a training checkpoint) into `model`; a ModelError that
    names the layers that don't fit (and `source`, a dict's origin)."""
    if not isinstance(weights, dict):
        source = str(weights)
        if not Path(weights).is_file():
            raise UsageError(f"weights file {weights} does not exist")
        try:
            weights = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"{source} is not a PyTorch weights file: {e}") from None
    if isinstance(weights.get("model"), dict):
        weights = weights["model"]  # a training checkpoint
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [
        f"{k} is {tuple(weights[k].shape)} in the file but {tuple(own[k].shape)} in the model"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        parts = (
            [f"missing from the file: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"]
            * bool(missing)
            + [f"not in the model: {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}"] * bool(extra)
            + shapes[:8]
        )
        raise ModelError(
            f"the weights in {source} don't fit {type(model).__name__}:\n  "
            + "\n  ".join(parts)
            + "\n(was it trained with another model or other model settings?)"
        )
    model.load_state_dict(weights)
