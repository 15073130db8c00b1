"""The extension point of `hyrax download`: a `Provider` says which HTTP requests fetch a catalogue's
cutouts from one service, and how to read its answers. The engine (libhyrax.surveys.fetch) sends them
(connections, retries, timeouts); the stage writes what comes back (libhyrax.surveys.store).

    from libhyrax.surveys import Fetched, Provider, Request, read_images

    class MyArchive(Provider):
        name = "myarchive"               # download.provider = "myarchive" once imported, or the import path
        pixel_scale = 0.2                # arcsec per pixel, when the service has one

        def requests(self, targets):     # Targets (index, object_id, ra, dec, bands) in catalogue order
            for t in targets:            # -> Requests, each for some (object index, band index) cells
                for b in t.bands:
                    yield Request([(t.index, b)], "GET", self.url,
                                  params={"ra": t.ra, "dec": t.dec, "size": self.size, "band": self.bands[b]})

        def read(self, request, body):   # a 200 answer -> {cell: Fetched | Missing | Rejected | Failed}
            image = read_images(body, first_only=True)[0]
            return {cell: Fetched(image, body) for cell in request.cells}

`self.settings` is the provider's config table (`[download.<name>]` for the built-ins, `[download.kwargs]`
for a class named by import path); `self.url` its `url`; `self.bands` the short band names asked for;
`self.size` the cutout size in pixels. Images may be larger than `size` (they are centre-cropped) but not
smaller. Answers that are not 200 never reach `read`: 404 makes every cell of the request Missing,
other 4xx Rejected, and 5xx, timeouts and dropped connections are retried, then Failed; 401/403 stop the
run (`credentials_hint()` says what to check). Return Missing for "the service has no such cutout"
(outside its footprint: not fetched again), Rejected for an answer that can't be used (not fetched
again), Failed for one that may work next time (`--resume` fetches it again).
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

from libhyrax.errors import ConfigError, UsageError
from libhyrax.registry import Registry

Cell = tuple[int, int]  # (object index in the catalogue, band index)


@dataclass(frozen=True)
class Target:
    """An object to fetch: its catalogue index, id and position (degrees), and the bands it still needs."""

    index: int
    object_id: str
    ra: float
    dec: float
    bands: tuple[int, ...]


@dataclass
class Request:
    """One HTTP request, fetching `cells`. `info` is the provider's own (HSC: which line is which cell)."""

    cells: list[Cell]
    method: str
    url: str
    params: dict | None = None
    files: dict | None = None
    info: Any = None
    settled: Any = None  # an Outcome the provider already knows (a lookup found no image): nothing is sent


@dataclass
class Fetched:
    image: np.ndarray  # (height, width), any size >= the cutout size
    fits: bytes | None = None  # the FITS file it came from (written with --keep-fits)


@dataclass
class Missing:
    reason: str  # the service has no such cutout (outside its footprint, 404)


@dataclass
class Rejected:
    reason: str  # the answer can't be used (not a FITS image, too small, ...)


@dataclass
class Failed:
    reason: str  # may work next time: --resume fetches it again (5xx, timeouts, a dropped connection)


Outcome = Fetched | Missing | Rejected | Failed


class Provider:
    """A cutout service (see the module docstring for a complete example)."""

    name: ClassVar[str] = ""
    pixel_scale: ClassVar[float | None] = None  # arcsec per pixel
    band_names: ClassVar[dict[str, str]] = {}  # short band name -> the service's name (default: itself)
    default_timeout: ClassVar[float] = 60.0  # seconds an attempt may take in all
    default_stall: ClassVar[float] = 20.0  # seconds without a byte (connecting, or waiting for the next ones)
    # the download's connections, retries and retry_wait (make_provider sets them), for a provider that
    # sends requests of its own before its cutouts' (soda's image lookups)
    fetch_options: dict = {}

    def __init__(self, settings: dict, bands: Iterable[str], size: int, netrc_file=None):
        self.settings, self.bands, self.size = dict(settings), [str(b) for b in bands], int(size)
        self.netrc_file = netrc_file or None
        self.url = str(self.settings.get("url") or "")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"download.{self.name or 'kwargs'}.url must be an http(s) URL, not "
                              f"{self.settings.get('url')!r}")
        self.timeout = float(self.settings.get("timeout") or self.default_timeout)
        self.stall = float(self.settings.get("stall_timeout") or self.default_stall)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            PROVIDERS.register(cls.name, cls)

    def service_band(self, band: str) -> str:
        """The service's name of a short band name (e.g. "g" -> "HSC-G")."""
        return self.band_names.get(band, band)

    # --- what a provider defines -----------------------------------------------------------------

    def requests(self, targets: Iterable[Target]) -> Iterator[Request]:
        raise NotImplementedError

    def read(self, request: Request, body: bytes) -> dict[Cell, Outcome]:
        raise NotImplementedError

    # --- optional -------------------------------------------------------------------------------

    def auth(self) -> tuple[str, str] | None:
        """(user, password) for HTTP basic auth, or None. Default: the credentials file's entry for the
        URL's host, when `download.netrc_file` names one."""
        if self.netrc_file:
            return file_credentials(self.netrc_file, urlsplit(self.url).hostname or "")
        return None

    def headers(self) -> dict[str, str]:
        return {}

    def credentials_hint(self) -> str:
        return "check the credentials (download.netrc_file)"

    # --- what the engine calls --------------------------------------------------------------------

    def outcomes(self, answer) -> dict[Cell, Outcome]:
        """Every cell of an answered request (libhyrax.surveys.fetch.Answer): `read` for a 200 answer,
        else what its error means; images checked and centre-cropped to `size`."""
        cells = answer.request.cells
        if answer.request.settled is not None:
            return dict.fromkeys(cells, answer.request.settled)
        if answer.body is None:
            kind = Missing if answer.status == 404 else Failed if answer.retryable else Rejected
            return {c: kind(answer.error) for c in cells}
        got = self.read(answer.request, answer.body)
        out: dict[Cell, Outcome] = {}
        for c in cells:
            o = got.get(c) or Rejected("the service's answer has no cutout for it")
            out[c] = checked(o, self.size) if isinstance(o, Fetched) else o
        return out


PROVIDERS: Registry[type[Provider]] = Registry(
    "download.provider", import_paths=True, base=Provider,
    rename_hint="give one of them another `name`",
    lazy={"hsc": "libhyrax.surveys.hsc", "legacysurvey": "libhyrax.surveys.legacysurvey",
          "url_template": "libhyrax.surveys.url_template", "soda": "libhyrax.surveys.soda",
          "rubin": "libhyrax.surveys.soda"})


class BearerToken:
    """For a Provider whose service takes a bearer token (url_template, soda and rubin): the token is read
    from the environment variable its `bearer_env` setting names, sent as a header and never written."""

    def headers(self) -> dict[str, str]:
        env = self.settings.get("bearer_env")
        if not env:
            return {}
        token = os.environ.get(str(env))
        if not token:
            raise UsageError(
                f"download.{self.name}.bearer_env names {env}, which is not set; export your access "
                "token there (it is sent as a bearer token and never written anywhere)"
            )
        return {"Authorization": f"Bearer {token}"}

    def credentials_hint(self) -> str:
        env = self.settings.get("bearer_env")
        return f"check the token in {env}" if env else "check download.netrc_file (or set bearer_env)"


def one_image(request: Request, body: bytes) -> dict[Cell, Outcome]:
    """The answer of a service that returns one FITS image for a request of one cell (url_template, soda):
    its first image (a single-plane cube flattened), or Rejected saying why it can't be read."""
    from libhyrax.surveys.fits_bytes import BadFits, read_images

    (cell,) = request.cells
    try:
        image = read_images(body, first_only=True)[0]
    except BadFits as e:
        return {cell: Rejected(str(e))}
    if image.ndim == 3 and len(image) == 1:
        image = image[0]
    return {cell: Fetched(image, body)}


def make_provider(cfg: dict) -> Provider:
    """The provider `download.provider` names, built from its config table."""
    d = cfg["download"]
    cls = PROVIDERS.lookup(d["provider"])
    settings = d.get(cls.name) if cls.name in d and isinstance(d.get(cls.name), dict) else d.get("kwargs", {})
    provider = cls(settings or {}, d["bands"], d["size"], d.get("netrc_file"))
    provider.fetch_options = {k: d[k] for k in ("connections", "retries", "retry_wait") if k in d}
    return provider


def checked(fetched: Fetched, size: int) -> Outcome:
    """A fetched band cut to size x size (the centre), or Rejected saying why it can't be."""
    image = fetched.image
    if image.ndim != 2:
        return Rejected(f"an image of shape {image.shape}, not 2-D")
    h, w = image.shape
    if h < size or w < size:
        return Rejected(f"a {h}x{w} cutout, smaller than download.size ({size})")
    top, left = (h - size) // 2, (w - size) // 2
    image = image[top:top + size, left:left + size]
    if not np.isfinite(image).any():
        return Rejected("every pixel is NaN or inf")
    return Fetched(np.ascontiguousarray(image, dtype=np.float32), fetched.fits)


def file_credentials(path: str | os.PathLike, host: str) -> tuple[str, str] | None:
    """(user, password) for `host` from a netrc-style file (`machine <host> login <user> password <pw>`,
    or a `default` entry); the reference Hyrax's `username = ...` / `password = ...` lines work too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"download.netrc_file {path} does not exist; create it (netrc style: "
                         f"machine {host or '<host>'} login <user> password <password>) or leave it out")
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
        if entry and entry[2] is not None:
            return entry[0] or "", entry[2]
    except netrc.NetrcParseError:
        pass
    pairs = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip().strip("'\"")
    if "password" in pairs:
        return pairs.get("username") or pairs.get("user") or pairs.get("login") or "", pairs["password"]
    return None

