"""`soda`: any IVOA SODA cutout service (position + size + band -> FITS); `rubin`: the Rubin Science
Platform's image cutout service, a preset of it.

    [download]
    provider = "rubin"                        # or "soda" with its url (and sia_url or id) for another archive
    bands = ["g", "r", "i"]
    size = 64                                 # pixels (0.2" each on Rubin coadds)
    # the token: export ACCESS_TOKEN=...      # (download.rubin.bearer_env), never written anywhere

SODA 1.0 (IVOA) cuts a dataset on the server: `GET {url}?ID=<dataset id>&CIRCLE=<ra> <dec> <radius>`
answers one FITS cutout. The circle's radius is half the size plus a pixel (`pixel_scale` arcsec per
pixel), so the cutout is never too small; it is centre-cropped to `size`.

Which dataset ID holds an object in a band: either `id`, a template with {band} and {object_id} (an
archive whose one dataset per band covers the sky), or an SIAv2 query (`sia_url`): `GET
{sia_url}?POS=CIRCLE <ra> <dec> 0&<sia_params>` answers a VOTable of the images covering the position;
the row of each band (`band_column`) whose centre (s_ra, s_dec) is nearest the object is taken (an object
near a patch edge gets the image it is most inside), its `id_column` (ObsCore's obs_publisher_did) is the
ID. Lookups go through the same engine as the cutouts (connections, retries, timeouts); a band with no
covering image is Missing, a lookup that kept failing is Failed (`--resume` looks it up again).

Authentication: a bearer token from the environment variable `bearer_env` (sent as `Authorization:
Bearer <token>`), or basic auth from download.netrc_file; never written anywhere.
"""

from __future__ import annotations

import io
import logging
import string
from collections.abc import Iterable, Iterator
from urllib.parse import quote

import numpy as np

from libhyrax.errors import ConfigError
from libhyrax.surveys.base import (
    BearerToken,
    Cell,
    Failed,
    Missing,
    Outcome,
    Provider,
    Rejected,
    Request,
    Target,
    one_image,
)

log = logging.getLogger("hyrax.download")

TEMPLATE_FIELDS = ("band", "object_id")


class SODA(BearerToken, Provider):
    name = "soda"
    default_timeout = 120.0
    default_stall = 60.0  # a cutout is cut on the server before its first byte

    def __init__(self, settings: dict, bands, size: int, netrc_file=None):
        super().__init__(settings, bands, size, netrc_file)
        s = self.settings
        self.pixel_scale = float(s.get("pixel_scale") or 0.2)
        self.id_template = str(s.get("id") or "")
        self.sia_url = str(s.get("sia_url") or "")
        if bool(self.id_template) == bool(self.sia_url):
            raise ConfigError(
                f"download.{self.name}: set exactly one of id (a dataset ID template with {{band}}) "
                "and sia_url (an SIAv2 query service that finds each object's image)"
            )
        if self.sia_url and not self.sia_url.startswith(("http://", "https://")):
            raise ConfigError(f"download.{self.name}.sia_url must be an http(s) URL, not {self.sia_url!r}")
        for _, field, _, _ in string.Formatter().parse(self.id_template):
            if field is not None and field not in TEMPLATE_FIELDS:
                raise ConfigError(
                    f"download.{self.name}.id: unknown field {{{field}}}; it can use {{band}} "
                    "and {object_id}"
                )
        self.sia_params = {str(k): str(v) for k, v in dict(s.get("sia_params") or {}).items()}
        self.sia_select = {str(k): str(v) for k, v in dict(s.get("sia_select") or {}).items()}
        self.params = {str(k): str(v) for k, v in dict(s.get("params") or {}).items()}
        self.band_column, self.id_column = (
            str(s.get("band_column") or "band"),
            str(s.get("id_column") or "obs_publisher_did"),
        )
        # a pixel more than half the size: the service's cutout (the circle's bounding box) is never too small
        self.radius_deg = (self.size / 2 + 1) * self.pixel_scale / 3600.0

    # --- requests ----------------------------------------------------------------------------------

    def requests(self, targets: Iterable[Target]) -> Iterator[Request]:
        if self.id_template:
            for t in targets:
                for b in t.bands:
                    dataset = self.id_template.format(
                        band=quote(self.service_band(self.bands[b]), safe=""),
                        object_id=quote(t.object_id, safe=""),
                    )
                    yield self._cutout(t, b, dataset)
            return
        yield from self._looked_up(targets)

    def _cutout(self, t: Target, band: int, dataset: str) -> Request:
        circle = f"{t.ra!r} {t.dec!r} {self.radius_deg!r}"
        return Request(
            [(t.index, band)], "GET", self.url, params={"ID": dataset, "CIRCLE": circle, **self.params}
        )

    def _looked_up(self, targets: Iterable[Target]) -> Iterator[Request]:
        """The cutout requests, each after its object's image lookup (one SIA query per object, a few ahead,
        through an engine of their own with the download's connections and retries)."""
        from libhyrax.surveys.fetch import Fetcher

        opts = self.fetch_options
        fetcher = Fetcher(
            connections=int(opts.get("connections", 2)),
            retries=int(opts.get("retries", 3)),
            retry_wait=float(opts.get("retry_wait", 2.0)),
            timeout=self.timeout,
            stall=self.stall,
            auth=self.auth(),
            headers=self.headers(),
            cell_bytes=1 << 12,
            refused_hint=self.credentials_hint(),
        )
        queries = (
            Request(
                [(t.index, b) for b in t.bands],
                "GET",
                self.sia_url,
                params={"POS": f"CIRCLE {t.ra!r} {t.dec!r} 0", **self.sia_params},
                info=t,
            )
            for t in targets
        )
        for answer in fetcher.answers(queries):
            t = answer.request.info
            if answer.body is None:
                kind = Missing if answer.status == 404 else Failed if answer.retryable else Rejected
                found = dict.fromkeys(t.bands, kind(f"image lookup: {answer.error}"))
            else:
                found = self._images(t, answer.body)
            for b in t.bands:
                got = found[b]
                yield (
                    self._cutout(t, b, got)
                    if isinstance(got, str)
                    else Request([(t.index, b)], "GET", self.url, settled=got)
                )

    def _images(self, t: Target, body: bytes) -> dict[int, str | Outcome]:
        """Per band: the dataset ID of the covering image nearest the object, or why there is none."""
        try:
            rows = votable_rows(body)
        except ValueError as e:
            return dict.fromkeys(t.bands, Rejected(f"image lookup: {e}"))
        for col in (self.band_column, self.id_column):
            if rows and col not in rows:
                return dict.fromkeys(
                    t.bands,
                    Rejected(
                        f"image lookup: the answer has no column {col!r} (it has "
                        f"{', '.join(rows)}); set download.{self.name}."
                        f"{'band_column' if col == self.band_column else 'id_column'}"
                    ),
                )
        out: dict[int, str | Outcome] = {}
        keep = np.ones(len(rows[self.id_column]) if rows else 0, dtype=bool)
        for col, value in self.sia_select.items():
            keep &= rows[col].astype(str) == value if col in rows else False
        for b in t.bands:
            band = self.service_band(self.bands[b])
            hit = np.flatnonzero(keep & (rows[self.band_column] == band)) if rows else np.array([], int)
            if not len(hit):
                out[b] = Missing(f"no image covers it in band {band}")
                continue
            if len(hit) > 1 and "s_ra" in rows and "s_dec" in rows:
                hit = hit[[np.argmin(separation(t.ra, t.dec, rows["s_ra"][hit], rows["s_dec"][hit]))]]
            out[b] = str(rows[self.id_column][hit[0]])
        return out

    # --- answers -----------------------------------------------------------------------------------

    def read(self, request: Request, body: bytes) -> dict[Cell, Outcome]:
        return one_image(request, body)


class Rubin(SODA):
    """The Rubin Science Platform: its cutout service and its SIA service for the data release, a token."""

    name = "rubin"
    pixel_scale = 0.2


def votable_rows(body: bytes) -> dict[str, np.ndarray]:
    """The first table of a VOTable as columns (strings as str); ValueError for an error status or bad XML."""
    import warnings

    from astropy.io.votable import parse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # VOTable spec nits of real services
            doc = parse(io.BytesIO(body), verify="ignore")
    except Exception as e:
        raise ValueError(f"not a VOTable ({type(e).__name__}: {str(e)[:120]})") from None
    for info in list(doc.infos) + [i for r in doc.resources for i in r.infos]:
        if info.name == "QUERY_STATUS" and str(info.value).upper() == "ERROR":
            raise ValueError(f"the service said: {str(info.content or '').strip()[:200] or 'ERROR'}")
    tables = list(doc.iter_tables())
    if not tables:
        return {}
    table = tables[0].to_table()
    out = {}
    for name in table.colnames:
        col = np.asarray(np.ma.filled(table[name], "" if table[name].dtype.kind in "SUO" else np.nan))
        out[name] = (
            np.char.decode(col, "utf-8")
            if col.dtype.kind == "S"
            else col.astype(str)
            if col.dtype.kind == "O"
            else col
        )
    return out


def separation(ra: float, dec: float, ras: np.ndarray, decs: np.ndarray) -> np.ndarray:
    """Angular distances (degrees) from one position to many (haversine)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra, dec, ras, decs))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))
