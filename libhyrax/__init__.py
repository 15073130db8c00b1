"""Hyrax: low-code, model-agnostic machine learning on large astronomical imaging surveys.

Each stage is a plain function returning a :class:`Result` (its results directory, outputs loaded
lazily); the `hyrax` CLI is a thin wrapper over the same functions.

    import libhyrax
    run = libhyrax.train()                 # defaults: the built-in sample, the default autoencoder
    latents = libhyrax.infer(from_run=run)

Names load lazily so `import libhyrax` stays fast (torch is imported by the stages that need it).
"""

from __future__ import annotations

import importlib

from libhyrax import stages as _stages

__version__ = "0.1.0"

# name -> "module:attribute". This is the public API; tests check it is exactly this.
_API = {
    # configuration and results
    "load_config": "libhyrax.config:load_config",
    "dump_config": "libhyrax.config:dump_config",
    "Result": "libhyrax.results:Result",
    "Hyrax": "libhyrax.reference_tool.facade:Hyrax",
    "lookup": "libhyrax.latents:lookup",
    # extension points (one small base class each) and their checkers
    "Dataset": "libhyrax.data:Dataset",
    "check_dataset": "libhyrax.data:check_dataset",
    "open_group": "libhyrax.data:open_group",
    "generate_survey": "libhyrax.data.synthetic:generate_survey",
    "HyraxModel": "libhyrax.models:HyraxModel",
    "hyrax_model": "libhyrax.models:hyrax_model",
    "check_model": "libhyrax.models:check_model",
    "load_trained": "libhyrax.models:load_trained",
    "Reducer": "libhyrax.reducers:Reducer",
    "check_reducer": "libhyrax.reducers.check:check_reducer",
    "VectorIndex": "libhyrax.vector_index:VectorIndex",
    "check_index": "libhyrax.vector_index.check:check_index",
    "Scorer": "libhyrax.scorers:Scorer",
    "check_scorer": "libhyrax.scorers:check_scorer",
    "Provider": "libhyrax.surveys.base:Provider",
    "check_provider": "libhyrax.surveys.check:check_provider",
    "show_neighbors": "libhyrax.stages.search:show_neighbors",
    # errors
    "HyraxError": "libhyrax.errors:HyraxError",
    "ConfigError": "libhyrax.errors:ConfigError",
    "UsageError": "libhyrax.errors:UsageError",
    "DataError": "libhyrax.errors:DataError",
    "ModelError": "libhyrax.errors:ModelError",
    "RunError": "libhyrax.errors:RunError",
}

# stages: each a plain function returning a Result, one per stage of the registry
_API |= {s.name: f"libhyrax.stages.{s.name}:{s.name}" for s in _stages.STAGES if s.makes_run}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'libhyrax' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
