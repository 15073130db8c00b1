"""`Hyrax`: a config plus the stages as methods, with the reference Hyrax's notebook API.

    h = Hyrax("my.toml")             # or Hyrax(config_file="my.toml"), Hyrax() for the defaults, Hyrax({...})
    h.config["train"]["epochs"] = 3  # a plain dict: the next call uses (and checks) it
    h.set_config("model.name", "HyraxCNN")
    h.set_config("'torch.optim.SGD'", {"lr": 0.05})   # a class-named table, merged (optimizer.name picks it)
    prepared = h.prepare()           # the request's data: prepared["train"][0], len, collate
    trained = h.train()              # trained.final_training_metrics; weights also as train.weights_filename
    results = h.infer()              # Latents: len, [i], get_data(i), get_object_id(i), .table
    h.reduce_dimensions(algorithm="tsne"); h.visualize()
    h.save_to_database()             # a vector index of the latents (`index`)
    db = h.database_connection()
    db.search_by_id("HDF-0001", k=5)          # {"HDF-0001": [ids]}, db.search_by_id(...).distances: L2
    db.search_by_vector(vectors, k=5)         # {0: [ids], 1: [ids], ...}
    h.lookup(id="HDF-0001")                   # that object's latent vector (numpy), None if absent
    h.to_onnx(); h.engine()                   # export to ONNX; infer through onnxruntime

Each method is the libhyrax stage of that name and returns what that stage's function returns (the
reference's verb names and arguments work too: `input_dir`, `input_model_directory`, `model_directory`,
`database_dir`, `results_dir`). A stage reads the run this
object made last of the stage it needs, unless `from_run=` (or the reference's argument, or its config key
such as `vector_db.vector_db_dir`) names one; then the newest finished run. Names of the reference that
this Hyrax has no use for raise an AttributeError saying what to use instead, and its settings that would
run differently here are a ConfigError saying the same (settings.py), never a warning.
"""

from __future__ import annotations

import logging
import os
from copy import deepcopy
from pathlib import Path

import numpy as np

from libhyrax import stages
from libhyrax.config import (
    deep_merge,
    dump_config,
    find_config_file,
    parse_override,
    read_toml,
    resolve_ignoring,
    set_key,
)
from libhyrax.errors import ConfigError, UsageError
from libhyrax.latents import Latents
from libhyrax.reference_tool.settings import (
    HONOURED,
    RUN_ARGS,
    RUN_KEYS,
    UNSUPPORTED,
    reference_forms,
    refused,
    split_key,
)
from libhyrax.results import Result, find_run
from libhyrax.rundir import INDEX_DIR

log = logging.getLogger("hyrax.reference_tool")

# what the facade's own verbs (not stages) read
READS = {"engine": ("export",), "database_connection": ("index",)}


class Hyrax:
    def __init__(self, config: dict | str | os.PathLike | None = None, overrides: list[str] | tuple = (), *,
                 config_file: str | os.PathLike | None = None, setup_logging: bool = True):
        """`config`: a dict, a TOML file (the reference's `config_file=`), or None for ./hyrax_config.toml
        or the defaults. `setup_logging` is accepted for the reference's sake (logging is set up by the
        config's general.log_level)."""
        config = config if config is not None else config_file
        self.run_dirs: dict[str, str] = {}  # the reference's run-naming settings (RUN_KEYS)
        self.settings: dict[str, object] = dict(HONOURED)  # the reference's settings the facade acts on
        self.config: dict = {}
        if not isinstance(config, dict):  # a file is read here, so its reference forms are taken as a dict's
            path = find_config_file(config)
            config = read_toml(path) if path else {}
        self._resolve(config, overrides)
        self.results: dict[str, Result] = {}
        self._latents: dict[Path, Latents] = {}

    # --- configuration ---------------------------------------------------------------------------

    def set(self, key: str, value, over_write: bool = False) -> Hyrax:
        """Change one key (a dotted path; a part with dots in quotes: "'torch.optim.SGD'.lr"); the config is
        validated again (a bad value changes nothing). A table given for a table is merged into it, as the
        reference does; `over_write=True` replaces it."""
        cfg = deepcopy(self.config)
        *parents, leaf = split_key(key)
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"set_config({key!r}): {part} is a value, not a table")
        value = value if not isinstance(value, str) else parse_override(f"k={value}")[1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict) and not over_write:
            node[leaf] = deep_merge(node[leaf], value)
        else:
            node[leaf] = value
        self._resolve(cfg)
        return self

    def set_config(self, key: str, value, over_write: bool = False) -> None:
        """The reference's `set_config("train.epochs", 3)`: set one key, checked now."""
        self.set(key, value, over_write)

    def show_config(self) -> str:
        return dump_config(self._resolve(self.config))

    def _resolve(self, cfg: dict, overrides=()) -> dict:
        """`cfg` (h.config, edited or not) checked and resolved; the result, without the reference's settings,
        is what a stage gets. self.config (the same dict object: edits to h.config apply) shows it with
        those settings. A reference setting this Hyrax doesn't honour is an error naming what to use."""
        cfg = deepcopy(cfg)
        reference_forms(cfg)
        resolved, ignored = resolve_ignoring(cfg, overrides)
        run_dirs = {k: ignored.pop(k) for k in set(RUN_KEYS.values()) & set(ignored)}
        settings = {k: ignored.pop(k) for k in set(HONOURED) & set(ignored)}
        refuse = refused(ignored)
        if refuse:
            raise ConfigError("settings of the reference Hyrax that this Hyrax doesn't have:\n  "
                              + "\n  ".join(refuse))
        for key, value in run_dirs.items():
            if value in (False, "", None):
                self.run_dirs.pop(key, None)  # the reference's "unset"
            else:
                self.run_dirs[key] = value
        self.settings |= {k: v if v not in (False, "", None) else HONOURED[k] for k, v in settings.items()}
        shown = deepcopy(resolved)
        for key, value in self.settings.items():
            set_key(shown, key, value)
        self.config.clear()
        self.config.update(shown)
        return resolved

    # --- the stages ------------------------------------------------------------------------------

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            stage = stages.get(name)
        except KeyError:
            if name in UNSUPPORTED:
                raise AttributeError(f"Hyrax.{name} is a verb of the reference Hyrax that this Hyrax doesn't "
                                     f"have: {UNSUPPORTED[name]}") from None
            raise AttributeError(f"Hyrax has no stage {name!r}; stages: "
                                 f"{', '.join(s.name for s in stages.STAGES if s.makes_run)}") from None
        if not stage.makes_run:
            raise AttributeError(f"`{name}` is a command-line tool; use Hyrax.show_config()")
        return self._stage_method(stage)

    def _stage_method(self, stage: stages.Stage):
        def run_stage(*args, **kwargs) -> Result:
            import libhyrax

            cfg = self._resolve(self.config)
            if stage.name == "index" and kwargs.pop("output_dir", None) is not None:
                raise UsageError(
                    "save_to_database(output_dir=...) adds to an existing database in the reference; "
                    "here each index is a new run: leave output_dir out (database_connection() "
                    "connects to the newest)"
                )
            given = kwargs.pop(RUN_ARGS[stage.name], None) if stage.name in RUN_ARGS else None
            chosen = kwargs.pop("from_run", None) or self._input_run(stage.name, given)
            if chosen is not None:
                kwargs["from_run"] = chosen
            if stage.name == "umap":  # the reference's reduce_dimensions(algorithm=, model_path=)
                if kwargs.get("algorithm") is not None:
                    cfg["reduce_dimensions"]["algorithm"] = kwargs.pop("algorithm")
                kwargs.setdefault("reducer", kwargs.pop("model_path", None))
            result = getattr(libhyrax, stage.name)(cfg, *args, **kwargs)
            if stage.name == "train" and result is not None:
                result = self._as_reference_train(result)
            self.results[stage.name] = result
            return result

        run_stage.__name__ = stage.name
        run_stage.__doc__ = stage.help
        return run_stage

    def prepare(self) -> dict:
        """The reference's `prepare`: the data the request describes, a provider per data_request group
        (`prepared["train"][0]`, `len`, `ids()`, `collate`). Our FITS->HDF5 stage is libhyrax.prepare()."""
        from libhyrax.reference_tool.prepared import prepare

        return prepare(self._resolve(self.config))

    def _as_reference_train(self, run: Result) -> Result:
        """A train run as the reference's train leaves it: its weights also under train.weights_filename,
        and the last epoch's figures as `final_training_metrics` / `final_validation_metrics`."""
        name = str(self.settings["train.weights_filename"])
        if Path(name).name != name:
            raise UsageError(f"train.weights_filename must be a file name, not a path: {name!r}")
        if name != "model.pt" and not run.file(name).exists():
            os.link(run.file("model.pt"), run.file(name))  # the same bytes, under the reference's name
        rows = run.file("metrics.csv").read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        figures = dict(zip(header, last, strict=True))
        run.final_training_metrics = {
            k[6:]: float(v) for k, v in figures.items() if k.startswith("train_") and v
        }
        run.final_validation_metrics = {
            k[4:]: float(v) for k, v in figures.items() if k.startswith("val_") and v
        }
        return run

    def _input_run(self, verb: str, given: str | os.PathLike | None = None) -> str | os.PathLike | None:
        """The run `verb` reads: `given` (the reference's argument), else the reference's config key for it,
        else this object's last run of a stage it reads; None: the stage takes the newest finished run."""
        chosen = given or self.run_dirs.get(RUN_KEYS.get(verb, ""))
        if chosen:
            return chosen
        reads = READS.get(verb) or stages.get(verb).needs
        made = [self.results[n] for n in reads if n in self.results]
        return made[0].path if made else None

    def engine(self, model_directory: str | os.PathLike | None = None, **kwargs) -> Latents:
        """The reference's `engine`: infer through an exported ONNX model (an export run; default: this
        object's last `to_onnx()`, else `engine.model_directory`, else the newest export run)."""
        import libhyrax

        cfg = self._resolve(self.config)
        export_run = find_run("export", cfg, self._input_run("engine", model_directory))
        result = libhyrax.infer(cfg, from_run=export_run.path, engine="onnx", **kwargs)
        self.results["infer"] = result
        return result

    def database_connection(self, database_dir: str | os.PathLike | None = None) -> Database:
        """The reference's vector database object over an index run (`database_dir`, or
        vector_db.vector_db_dir, or this object's last `save_to_database()`, or the newest index run)."""
        cfg = self._resolve(self.config)
        chosen = self._input_run("database_connection", database_dir)
        if chosen and Path(chosen).name == INDEX_DIR and not (Path(chosen) / "provenance.json").exists():
            chosen = Path(chosen).parent  # the index folder inside the run
        return Database(find_run("index", cfg, chosen), cfg["general"]["trusted_runs"])

    def lookup(
        self,
        id: str | None = None,
        results_dir: str | os.PathLike | None = None,
        *,
        object_id: str | None = None,
    ) -> np.ndarray:
        """The reference's `lookup`: the latent vector of object `id` from an infer run (`results_dir`, or
        results.inference_dir, or this object's last infer, or the newest); a UsageError naming the closest
        ids when no object has that id (as `hyrax lookup` exits 2)."""
        wanted = id if id is not None else object_id
        if wanted is None:
            raise UsageError("lookup needs the object's id: h.lookup(id='...')")
        cfg = self._resolve(self.config)
        run = find_run("infer", cfg, self._input_run("lookup", results_dir))
        latents = self._latents.setdefault(run.path.resolve(), Latents(run.path))
        return latents.vector(str(wanted))

    def model(self) -> type:
        """The reference's `model`: the class `model.name` names (not an instance)."""
        from libhyrax.models import model_class

        return model_class(self._resolve(self.config)["model"]["name"])

    def list_models(self) -> None:
        from libhyrax.models import MODELS

        print("\n".join(sorted(MODELS)))

    def list_dataset_classes(self) -> None:
        from libhyrax.data import REGISTRY

        print("\n".join(sorted(REGISTRY)))

    def __dir__(self):
        names = {s.name for s in stages.STAGES if s.makes_run} | set(stages.ALIASES)
        return sorted(set(super().__dir__()) | names)

    def __repr__(self) -> str:
        return (
            f"<Hyrax model={self.config['model']['name']} "
            f"results_dir={self.config['general']['results_dir']}>"
        )


# --- the vector database object --------------------------------------------------------------------


class UnknownObjectId(UsageError, KeyError):
    """An id that is not in the index (a KeyError too, as reference code may catch)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


class Hits(dict):
    """The reference's search result, `{query: [object ids, nearest first]}`, with `distances` (L2) in the
    same shape."""

    def __init__(self, ids: dict, distances: dict):
        super().__init__(ids)
        self.distances = distances


class Database:
    """What `database_connection()` returns: the reference's search calls over an index run's index."""

    def __init__(self, run: Result, trusted_runs=()):
        from libhyrax.vector_index import VectorIndex

        self.run = run
        self.index = VectorIndex.open(run.file(INDEX_DIR), trusted_runs)

    def search_by_id(self, id, k: int = 1) -> Hits:
        """The k nearest objects of object `id` (itself first): {id: [ids]}, .distances {id: [L2]}."""
        key = str(id)
        vector = self.get_by_id([key])[key]
        found = self.search_by_vector([vector], k)
        return Hits({key: found[0]}, {key: found.distances[0]})

    def search_by_vector(self, vectors, k: int = 1) -> Hits:
        """The k nearest objects of each vector: {0: [ids], 1: [ids], ...}, .distances likewise."""
        if int(k) < 1:
            raise UsageError(f"k must be at least 1, not {k}")
        v = np.asarray(vectors, dtype=np.float32)
        v = v[None] if v.ndim == 1 else v
        ids, dist = self.index.search(v, int(k))
        return Hits({i: ids[i].tolist() for i in range(len(v))}, {i: dist[i].tolist() for i in range(len(v))})

    def get_by_id(self, ids) -> dict[str, list[float]]:
        """{id: vector} for ids in the index; an unknown id is an UnknownObjectId naming close ids."""
        from libhyrax.errors import DataError

        keys = [str(i) for i in np.atleast_1d(np.asarray(ids, dtype=object))]
        try:
            vectors = self.index.vectors(keys)
        except DataError as e:
            raise UnknownObjectId(str(e)) from None
        return {key: vectors[i].tolist() for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"<hyrax database: {len(self)} vectors ({self.index.backend}) in {self.run.path}>"
