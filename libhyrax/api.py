"""`Hyrax`: a config plus the stages as methods, with the reference Hyrax's notebook API.

    h = Hyrax("my.toml")             # or Hyrax(config_file="my.toml"), Hyrax() for the defaults, Hyrax({...})
    h.config["train"]["epochs"] = 3  # a plain dict: the next call uses (and checks) it
    h.set_config("model.name", "HyraxCNN")
    h.train(); h.infer(); h.umap(); h.visualize()
    h.save_to_database()             # a vector index of the latents (`index`)
    db = h.database_connection()
    db.search_by_id("HDF-0001", k=5)          # {"HDF-0001": [ids]}, db.search_by_id(...).distances: L2
    db.search_by_vector(vectors, k=5)         # {0: [ids], 1: [ids], ...}
    h.lookup(id="HDF-0001")                   # that object's latent vector (numpy), None if absent
    h.to_onnx(); h.engine()                   # export to ONNX; infer through onnxruntime

Each method is the libhyrax stage of that name (the reference's verb names and arguments work too: `input_dir`,
`input_model_directory`, `model_directory`, `database_dir`, `results_dir`). A stage reads the run this
object made last of the stage it needs, unless `from_run=` (or the reference's argument, or its config key
such as `vector_db.vector_db_dir`) names one; then the newest finished run. Names of the reference that
this Hyrax has no use for raise an AttributeError saying what to use instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from copy import deepcopy
from pathlib import Path

import numpy as np

from libhyrax import stages
from libhyrax.config import dump_config, find_config_file, parse_override, read_toml, resolve, set_key
from libhyrax.errors import UsageError
from libhyrax.results import Result, find_run
from libhyrax.rundir import INDEX_DIR

log = logging.getLogger("hyrax.api")

# the reference's settings that name a run to read: honoured by this object (the config itself has no
# such keys here), by the verb that reads them
RUN_KEYS = {
    "umap": "results.inference_dir", "lookup": "results.inference_dir", "index": "vector_db.infer_results_dir",
    "export": "onnx.input_model_directory", "engine": "engine.model_directory",
    "database_connection": "vector_db.vector_db_dir",
}
# the reference's verb arguments that name a run to read
RUN_ARGS = {"umap": "input_dir", "visualize": "input_dir", "index": "input_dir", "export": "input_model_directory",
            "engine": "model_directory", "database_connection": "database_dir", "lookup": "results_dir"}
UNSUPPORTED = {
    "rebuild_manifest": "h.prepare() reads a download folder's manifest.fits as it is and lists failed downloads "
                        "in rejected.csv",
    "infer_stream": "streams are not supported: write the objects to files and use h.prepare() and h.infer()",
    "train_stream": "streams are not supported: write the objects to files and use h.prepare() and h.train()",
    "visualize_v2": "use h.visualize(): an interactive map with cutouts, inline and as visualize.html",
    "create_splits": "h.train() makes the splits from [split] and keeps them in the train run (split.h5); reuse "
                     "them with split.from_run",
    "raw_data_dimensions": "the cutouts are prepare.cutout_size square; libhyrax.open_group(h.config, "
                           "'train').sample_shape is the model's input shape",
    "vdb_index": "use h.save_to_database() and h.database_connection()",
}


class Hyrax:
    def __init__(self, config: dict | str | os.PathLike | None = None, overrides: list[str] | tuple = (), *,
                 config_file: str | os.PathLike | None = None, setup_logging: bool = True):
        """`config`: a dict, a TOML file (the reference's `config_file=`), or None for ./hyrax_config.toml
        or the defaults. `setup_logging` is accepted for the reference's sake (logging is set up by the
        config's general.log_level)."""
        config = config if config is not None else config_file
        raw = deepcopy(config) if isinstance(config, dict) else _raw_file(config)
        self.run_dirs: dict[str, str] = {}  # the reference's run-naming settings (RUN_KEYS)
        _take_run_keys(raw, self.run_dirs)
        with _honoured_keys_not_warned():
            self.config = resolve(config, overrides)
        self.results: dict[str, Result] = {}
        self._latents: dict[Path, _Latents] = {}

    # --- configuration ---------------------------------------------------------------------------

    def set(self, key: str, value) -> Hyrax:
        """Change one key (dotted path); the config is validated again (a bad value changes nothing)."""
        if key in RUN_KEYS.values():
            self.run_dirs[key] = value
            return self
        cfg = deepcopy(self.config)
        set_key(cfg, key, value if not isinstance(value, str) else parse_override(f"k={value}")[1])
        self._resolve(cfg)
        return self

    def set_config(self, key: str, value) -> None:
        """The reference's `set_config("train.epochs", 3)`: set one key, checked now."""
        self.set(key, value)

    def show_config(self) -> str:
        return dump_config(self._resolve(self.config))

    def _resolve(self, cfg: dict) -> dict:
        """`cfg` checked and resolved into self.config (the same dict object: edits to h.config apply)."""
        cfg = deepcopy(cfg)
        _take_run_keys(cfg, self.run_dirs)
        with _honoured_keys_not_warned():
            resolved = resolve(cfg)
        self.config.clear()
        self.config.update(resolved)
        return self.config

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
                raise UsageError("save_to_database(output_dir=...) adds to an existing database in the reference; "
                                 "here each index is a new run: leave output_dir out (database_connection() "
                                 "connects to the newest)")
            kwargs = self._with_input(stage.name, stage.needs, kwargs)
            result = getattr(libhyrax, stage.name)(cfg, *args, **kwargs)
            self.results[stage.name] = result
            return _InferResult(result.path) if stage.name == "infer" else result

        run_stage.__name__ = stage.name
        run_stage.__doc__ = stage.help
        return run_stage

    def _with_input(self, verb: str, needs: tuple[str, ...], kwargs: dict) -> dict:
        """`from_run` for a verb: the reference's argument, its config key, this object's last run of a stage
        the verb needs (else nothing: the stage takes the newest)."""
        arg = RUN_ARGS.get(verb)
        given = kwargs.pop(arg, None) if arg else None
        if kwargs.get("from_run") is None:
            chosen = given or self.run_dirs.get(RUN_KEYS.get(verb, ""))
            made = [self.results[n] for n in needs if n in self.results]
            if chosen:
                kwargs["from_run"] = chosen
            elif made:
                kwargs["from_run"] = made[0].path
        return {k: v for k, v in kwargs.items() if v is not None or k != "from_run"}

    def engine(self, model_directory: str | os.PathLike | None = None, **kwargs) -> Result:
        """The reference's `engine`: infer through an exported ONNX model (an export run; default: this
        object's last `to_onnx()`, else `engine.model_directory`, else the newest export run)."""
        import libhyrax

        cfg = self._resolve(self.config)
        chosen = model_directory or self.run_dirs.get(RUN_KEYS["engine"])
        made = self.results.get("export")
        from_run = chosen or (made.path if made else None)
        export_run = find_run("export", cfg, from_run)
        result = libhyrax.infer(cfg, from_run=export_run.path, engine="onnx", **kwargs)
        self.results["infer"] = result
        return _InferResult(result.path)

    def database_connection(self, database_dir: str | os.PathLike | None = None) -> Database:
        """The reference's vector database object over an index run (`database_dir`, or
        vector_db.vector_db_dir, or this object's last `save_to_database()`, or the newest index run)."""
        cfg = self._resolve(self.config)
        chosen = database_dir or self.run_dirs.get(RUN_KEYS["database_connection"])
        if chosen and Path(chosen).name == INDEX_DIR and not (Path(chosen) / "provenance.json").exists():
            chosen = Path(chosen).parent  # the index folder inside the run
        made = self.results.get("index")
        run = find_run("index", cfg, chosen or (made.path if made else None))
        return Database(run, cfg["general"]["trusted_runs"])

    def lookup(self, id: str | None = None, results_dir: str | os.PathLike | None = None, *,
               object_id: str | None = None) -> np.ndarray | None:
        """The reference's `lookup`: the latent vector of object `id` from an infer run (`results_dir`, or
        results.inference_dir, or this object's last infer, or the newest); None when no object has that id
        (a warning names the closest ids)."""
        wanted = id if id is not None else object_id
        if wanted is None:
            raise UsageError("lookup needs the object's id: h.lookup(id='...')")
        cfg = self._resolve(self.config)
        chosen = results_dir or self.run_dirs.get(RUN_KEYS["lookup"])
        made = self.results.get("infer")
        run = find_run("infer", cfg, chosen or (made.path if made else None))
        latents = self._latents.setdefault(run.path.resolve(), _Latents(run.path))
        try:
            return latents.vector(str(wanted))
        except UsageError as e:
            log.warning("%s", e)
            return None

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
        return f"<Hyrax model={self.config['model']['name']} results_dir={self.config['general']['results_dir']}>"


# --- the reference's run-naming settings -------------------------------------------------------------

def _raw_file(config) -> dict:
    try:
        path = find_config_file(config)
    except Exception:  # resolve() reports it
        return {}
    return read_toml(path) if path else {}


def _take_run_keys(cfg: dict, into: dict) -> None:
    """Move the RUN_KEYS settings out of `cfg` (a user config) into `into` (set values only)."""
    for key in set(RUN_KEYS.values()):
        section, name = key.split(".")
        table = cfg.get(section)
        if isinstance(table, dict) and name in table:
            value = table.pop(name)
            if value not in (False, "", None):
                into[key] = value
    for section in ("engine", "results"):  # tables the reference has and we don't, now empty
        if cfg.get(section) == {}:
            cfg.pop(section)


class _NotHonoured(logging.Filter):
    """Leave the settings this object honours out of the 'reference keys not used' warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "reference Hyrax's keys" in str(record.msg) and len(record.args or ()) == 2:
            keys = [k for k in str(record.args[1]).split(", ") if k not in RUN_KEYS.values()]
            if not keys:
                return False
            record.args = (record.args[0], ", ".join(keys))
        return True


@contextlib.contextmanager
def _honoured_keys_not_warned():
    logger, f = logging.getLogger("hyrax.config"), _NotHonoured()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


# --- lookup ----------------------------------------------------------------------------------------

class _Latents:
    """An infer run's latents by object id: O(log N) per lookup once the id table is built."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._index = None

    def vector(self, object_id: str) -> np.ndarray:
        from libhyrax.hdf5 import IdIndex, open_result, read_ids

        with open_result(self.run_dir, "latents") as f:
            if self._index is None:
                self._index = IdIndex(read_ids(f["object_id"]))
            row = int(self._index.rows([object_id])[0])
            if row < 0:
                near = self._index.close_matches(object_id)
                raise UsageError(f"object id {object_id!r} is not in {self.run_dir}"
                                 + (f"; close ids: {', '.join(near)}" if near else ""))
            return np.asarray(f["latent"][row])


def lookup(object_id: str, config=None, *, from_run: str | os.PathLike | None = None, overrides=()) -> np.ndarray:
    """The latent vector of one object from an infer run (`from_run`, else the newest); a UsageError naming
    the closest ids when no object has that id.

        hyrax lookup --id HDF-0001                       # prints the vector, comma-separated
        libhyrax.lookup("HDF-0001", from_run=latents)
    """
    from libhyrax.hdf5 import as_id_bytes, open_result

    cfg = resolve(config, overrides)
    run = find_run("infer", cfg, from_run)
    wanted = as_id_bytes([str(object_id)])[0]
    with open_result(run.path, "latents") as f:
        ids, step = f["object_id"], 1 << 20
        for start in range(0, len(ids), step):  # a vectorised scan: no id table for one lookup
            hit = np.flatnonzero(as_id_bytes(ids[start:start + step]) == wanted)
            if len(hit):
                return np.asarray(f["latent"][start + int(hit[0])])
    return _Latents(run.path).vector(str(object_id))  # raises, naming the closest ids


class _InferResult(Result):
    """An infer run, also as the reference's inference results: `len(r)`, `r[i]` (latent vectors of rows),
    `r.ids()`."""

    def __len__(self) -> int:
        from libhyrax.hdf5 import open_result

        with open_result(self.path, "latents") as f:
            return len(f["latent"])

    def __getitem__(self, rows) -> np.ndarray:
        from libhyrax.hdf5 import open_result

        with open_result(self.path, "latents") as f:
            if isinstance(rows, (int, np.integer, slice)):
                return np.asarray(f["latent"][rows])
            rows = np.asarray(rows)
            order = np.argsort(rows)
            out = np.empty((len(rows), f["latent"].shape[1]), f["latent"].dtype)
            out[order] = f["latent"][rows[order]]
            return out

    def ids(self) -> np.ndarray:
        from libhyrax.hdf5 import open_result, read_ids

        with open_result(self.path, "latents") as f:
            return read_ids(f["object_id"])


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
