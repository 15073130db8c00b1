"""What a train or test run records: `metrics.csv` in its results directory (self-contained) and an MLflow
run. The MLflow store is a SQLite file in `general.results_dir` (one per results folder, so its runs can be
compared: `mlflow ui --backend-store-uri sqlite:///results/mlflow.db`), artifacts beside it in
`mlartifacts/`; `general.mlflow_tracking_uri` points at a site server instead. Telemetry is off.

A site server's credentials go in MLflow's own environment variables (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN); credentials written into the URL are moved there for
this process, and the URL is recorded and logged without them. A server that doesn't answer within
PROBE_TIMEOUT_S turns tracking off with one warning before training starts, instead of MLflow's minutes of
retries. Artifacts are logged only where the experiment keeps them inside this results tree (a tree that
was moved still names its old place: its artifacts are in each run's directory anyway).

A new store starts as a copy of an empty one (MLflow's tables, no experiment or run) that MLflow built once
for its schema version under $HYRAX_CACHE_DIR: MLflow builds a store by running each of its schema
migrations in turn, seconds for every new results folder."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
from pathlib import Path

from libhyrax import atomic, redact
from libhyrax.rundir import results_root
from libhyrax.sharding import slurm_environment

log = logging.getLogger("hyrax.train")

METRICS_FILE = "metrics.csv"
STORE = "mlflow.db"
MAX_PARAM_LEN = 6000  # MLflow's limit on a parameter's value
PROBE_TIMEOUT_S = 3.0


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, path + ".")
        else:
            out[path] = str(value)[:MAX_PARAM_LEN]
    return out


class MetricsCSV:
    """Rows of per-epoch figures; a resumed run first drops the rows after its checkpoint's epoch."""

    def __init__(self, path: Path, keep_epochs_upto: int | None = None):
        self.path = path
        self.rows: list[dict] = []
        if keep_epochs_upto is not None and path.is_file():
            with path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs_upto]
            self._write()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        if not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic.replacing(self.path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)


def tracking_uri(cfg: dict) -> str:
    """The store's URI, without credentials (those go to MLflow's environment variables)."""
    uri = cfg["general"].get("mlflow_tracking_uri")
    if uri:
        return _credentials_to_environment(str(uri))
    root = results_root(cfg).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / STORE}"


def _credentials_to_environment(uri: str) -> str:
    """MLflow reads a server's credentials from MLFLOW_TRACKING_USERNAME/PASSWORD (or _TOKEN); a URL
    that carries them has them moved there (unless already set), so no URL with a secret reaches MLflow,
    its store, or our logs."""
    from libhyrax.redact import url_credentials

    bare, user, password = url_credentials(uri)
    if user is not None and password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    elif user is not None:  # https://<token>@host/
        os.environ.setdefault("MLFLOW_TRACKING_TOKEN", user)
    return bare


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise OSError when an http(s) tracking server doesn't answer an HTTP request within `timeout`: a
    server that accepts connections and never answers (hung) is as good as none. Any answer will do (a 404,
    a 401: MLflow's own calls report those)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme == "https":  # whether it answers, not whom: MLflow's own calls check the certificate
        import ssl

        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        conn.request("GET", (parts.path.rstrip("/") or "") + "/health")
        if conn.sock is not None:  # the whole answer within `timeout`, however slowly its bytes come
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.01))
        conn.getresponse().read(1024)
    except TimeoutError:
        raise TimeoutError(f"{redact.text(uri)} accepted a connection but gave no answer within "
                           f"{timeout:g} s") from None
    except (http.client.HTTPException, ValueError) as e:
        raise OSError(f"{redact.text(uri)} answered something that is not HTTP ({e})") from None
    finally:
        conn.close()


def seed_store(path: Path) -> None:
    """Where `path` (a SQLite store) doesn't exist yet, make it a copy of an empty store: MLflow's own steps
    for an empty database (its SqlAlchemyStore's), run once per schema version into the cache. MLflow then
    opens it as it would one it had just built itself, adding its Default experiment as it does there.
    Any failure leaves MLflow to build the store itself, as without the copy."""
    if path.exists():
        return
    try:
        from mlflow.store.db import utils as db_utils

        from libhyrax.data.sample import cache_dir

        template = cache_dir() / f"mlflow-store-{db_utils._get_latest_schema_revision()}.db"
        if not template.is_file():
            _build_empty_store(template, db_utils)
        # only if no other process made the store meanwhile (a Slurm array's tasks)
        with atomic.replacing(path, exclusive=True) as tmp:
            shutil.copyfile(template, tmp)
    except Exception as e:
        log.debug("MLflow builds %s itself (%s: %s)", path, type(e).__name__, e)


def _build_empty_store(template: Path, db_utils) -> None:
    template.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: processes racing to build it each rename their own
    with atomic.replacing(template) as tmp:
        engine = db_utils.create_sqlalchemy_engine_with_retry(f"sqlite:///{tmp}")
        try:
            db_utils._initialize_tables(engine)
        finally:
            engine.dispose()


class MLflowRun:
    """One MLflow run through the client API (no global state): params, per-epoch metrics, tags.
    A failure to reach the store is a warning, never a failed training run. As a context manager it
    ends the run at exit: FINISHED, or FAILED when the body raised."""

    def __init__(self, cfg: dict, stage: str, run_dir: Path, experiment: str, run_name: str | None,
                 run_id: str | None = None):
        self.client = self.run_id = None
        try:
            self._start(cfg, stage, run_dir, experiment, run_name, run_id)
        except Exception as e:  # a site server that is down must not stop training
            log.warning("MLflow tracking is off for this run: %s: %s", type(e).__name__, e)
            self.client = None

    def _start(self, cfg, stage, run_dir, experiment, run_name, run_id) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        for name in ("mlflow", "alembic", "sqlalchemy"):  # mlflow sets its logger's level when imported
            logging.getLogger(name).setLevel(logging.WARNING)

        uri = tracking_uri(cfg)
        if not cfg["general"].get("mlflow_tracking_uri"):  # our own SQLite store in the results folder
            seed_store(results_root(cfg).resolve() / STORE)
        # MLflow retries an unreachable server for minutes; one quick look first, and shorter retries after
        probe(uri)
        # a server that answered the probe and hangs later costs one call at most about 2 x 10 s: the first
        # failure turns tracking off (_call)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.results_root = results_root(cfg).resolve()
        self.client = MlflowClient(tracking_uri=uri)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = (results_root(cfg).resolve() / "mlartifacts").as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
        tags = {"hyrax.stage": stage, "hyrax.results_dir": str(run_dir.resolve())}
        tags |= {f"slurm.{k.lower().removeprefix('slurm_')}": v for k, v in slurm_environment().items()}
        run = self.client.create_run(exp_id, run_name=run_name or run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(redact.config(cfg)).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        """Every store call: a failure (a site server down, SQLite locked by a concurrent job) turns
        tracking off with one warning; training goes on, and metrics.csv still has everything."""
        if self.client is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            log.warning("MLflow %s failed, tracking is off for the rest of this run: %s: %s", what,
                        type(e).__name__, e)
            self.client = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        self._call("logging metrics", self.client.log_batch, self.run_id, metrics=batch)

    def log_artifact(self, path: Path) -> None:
        if self.client is not None and path.is_file() and self._artifacts_stay_in_the_tree():
            self._call("logging an artifact", self.client.log_artifact, self.run_id, str(path))

    def _artifacts_stay_in_the_tree(self) -> bool:
        """False (with a warning) when this run's artifacts would be written to a local folder outside the
        current results tree: an experiment made before the tree moved names the old place."""
        from urllib.parse import unquote, urlsplit

        try:
            where = self.client.get_run(self.run_id).info.artifact_uri
        except Exception:
            return True  # the store can't say: log_artifact itself reports the failure
        parts = urlsplit(where)
        if parts.scheme not in ("", "file"):
            return True  # a server's artifact store
        folder = Path(unquote(parts.path)).resolve()
        if folder == self.results_root or self.results_root in folder.parents:
            return True
        log.warning(
            "MLflow keeps this experiment's artifacts in %s, outside the results tree %s (moved?); "
            "not logging artifacts there (they are in the run's directory)",
            folder,
            self.results_root,
        )
        return False

    def set_tag(self, key: str, value: str) -> None:
        if self.client is not None:
            self._call("setting a tag", self.client.set_tag, self.run_id, key, value)

    def end(self, ok: bool) -> None:
        if self.client is not None:
            self._call(
                "ending the run", self.client.set_terminated, self.run_id, "FINISHED" if ok else "FAILED"
            )

    def __enter__(self) -> MLflowRun:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.end(ok=exc_type is None)
