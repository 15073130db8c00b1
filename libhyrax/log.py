"""Logging and progress: everything human-readable goes to stderr (stdout carries only results paths).

On a terminal: rich log lines and progress bars. Elsewhere (Slurm logs, pipes): plain lines, and a
progress line every `PLAIN_EVERY_S` seconds.
"""

from __future__ import annotations

import logging
import sys
import time

from libhyrax import redact

PLAIN_EVERY_S = 30.0
_configured = False
_pinned = False  # --debug: the level stays, whatever a config's general.log_level says


def setup_logging(level: str = "info", pin: bool = False) -> None:
    """Idempotent: route the `hyrax` logger to stderr (rich on a terminal) at `level`."""
    global _configured, _pinned
    logger = logging.getLogger("hyrax")
    logger.setLevel(level.upper())
    _pinned = _pinned or pin
    if _configured:
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(redact.Filter())  # no password or token reaches the terminal
    logger.addHandler(handler)
    logger.propagate = False
    _configured = True


def apply_config_level(level: str) -> None:
    """A resolved config's `general.log_level`, unless --debug pinned the level."""
    if not _pinned:
        logging.getLogger("hyrax").setLevel(str(level).upper())


def add_file_log(path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact.Filter())  # nor a stage's log file
    logging.getLogger("hyrax").addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger("hyrax").removeHandler(handler)
    handler.close()


class Progress:
    """A progress bar over a loop a user waits on: `with Progress("infer", total=n) as p: p.advance(k)`.

    `p.set(**fields)` shows extra figures (loss, objects/s). Rich on a terminal, periodic lines otherwise.
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "objects"):
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self.fields: dict[str, str] = {}
        self._rich = None
        self._start = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
                                      transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total, extra="")
        return self

    def set(self, **fields) -> None:
        self.fields.update({k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()})

    def advance(self, n: int = 1) -> None:
        self.done += n
        rate = self.done / max(time.monotonic() - self._start, 1e-9)
        self.fields[f"{self.unit}/s"] = f"{rate:,.0f}"
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        if self._rich is not None:
            self._rich.update(self._task, advance=n, extra=extra)
        elif time.monotonic() - self._last >= PLAIN_EVERY_S:
            self._last = time.monotonic()
            of = f"/{self.total}" if self.total else ""
            print(f"{self.description}: {self.done}{of} {self.unit} {extra}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
        elif exc[0] is None:
            secs = time.monotonic() - self._start
            print(f"{self.description}: {self.done} {self.unit} in {secs:.1f} s", file=sys.stderr, flush=True)

