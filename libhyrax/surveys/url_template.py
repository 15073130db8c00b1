"""`url_template`: any service that answers one GET per object and band with a FITS image.

    [download]
    provider = "url_template"
    bands = ["g", "r"]
    [download.url_template]
    url = "https://archive.example.org/cutout?ra={ra}&dec={dec}&size={size}&band={band}"
    pixel_scale = 0.2                  # arcsec per pixel, recorded in cutouts.h5 (false: unknown)
    bearer_env = "ARCHIVE_TOKEN"       # sent as `Authorization: Bearer <token>` (false: none)

The template's fields: {ra} and {dec} (degrees; a format like {ra:.6f} works), {size} (pixels), {band}
and {object_id} (URL-quoted). A 404 means the service has no such cutout. Basic auth comes from
download.netrc_file (netrc style) when it has an entry for the URL's host.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from libhyrax.errors import ConfigError
from libhyrax.surveys.base import BearerToken, Cell, Outcome, Provider, Request, Target, one_image

FIELDS = ("ra", "dec", "size", "band", "object_id")


class URLTemplate(BearerToken, Provider):
    name = "url_template"
    default_timeout = 60.0

    def __init__(self, settings: dict, bands, size: int, netrc_file=None):
        super().__init__(settings, bands, size, netrc_file)
        self.pixel_scale = float(self.settings["pixel_scale"]) if self.settings.get("pixel_scale") else None
        fields = set()
        try:
            parsed = list(string.Formatter().parse(self.url))
        except ValueError as e:
            raise ConfigError(
                f"download.url_template.url {self.url!r} is not a valid template: {e}"
            ) from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in FIELDS or conversion:
                raise ConfigError(
                    f"download.url_template.url: unknown field {{{name}}}; the template can use "
                    f"{', '.join('{' + f + '}' for f in FIELDS)}"
                )
            if spec and name in ("band", "object_id"):
                raise ConfigError(f"download.url_template.url: {{{name}:{spec}}} takes no format")
            fields.add(name)
        if len(self.bands) > 1 and "band" not in fields:
            raise ConfigError(
                f"download.url_template.url has no {{band}} field, but download.bands asks for "
                f"{len(self.bands)} bands; put {{band}} in the URL"
            )
        if not {"ra", "dec"} <= fields and "object_id" not in fields:
            raise ConfigError("download.url_template.url needs {ra} and {dec} (or {object_id})")

    def requests(self, targets: Iterable[Target]) -> Iterator[Request]:
        for t in targets:
            oid = quote(t.object_id, safe="")
            for b in t.bands:
                url = self.url.format(
                    ra=t.ra,
                    dec=t.dec,
                    size=self.size,
                    object_id=oid,
                    band=quote(self.service_band(self.bands[b]), safe=""),
                )
                yield Request([(t.index, b)], "GET", url)

    def read(self, request: Request, body: bytes) -> dict[Cell, Outcome]:
        return one_image(request, body)
