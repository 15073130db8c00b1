"""`legacysurvey`: the DESI Legacy Surveys viewer's FITS cutouts (public, no account).

    [download]
    provider = "legacysurvey"
    bands = ["g", "r", "z"]
    [download.legacysurvey]
    layer = "ls-dr10"
    pixscale = 0.262                 # arcsec per pixel: the survey's own

One GET per object, `fits-cutout?ra=&dec=&layer=&pixscale=&bands=grz&size=`, answered with one FITS
cube (bands, size, size) in band order. The viewer answers positions off its footprint with zeros: a
band whose pixels are all zero is Missing, not a cutout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from libhyrax.errors import ConfigError
from libhyrax.surveys.base import Cell, Fetched, Missing, Outcome, Provider, Rejected, Request, Target
from libhyrax.surveys.fits_bytes import BadFits, read_images


class LegacySurvey(Provider):
    name = "legacysurvey"
    default_timeout = 60.0

    def __init__(self, settings: dict, bands, size: int, netrc_file=None):
        super().__init__(settings, bands, size, netrc_file)
        self.layer = str(self.settings.get("layer") or "ls-dr10")
        self.pixel_scale = float(self.settings.get("pixscale") or 0.262)
        if any(len(b) != 1 for b in self.bands):
            raise ConfigError(
                f"download.bands {self.bands}: the Legacy Surveys viewer names bands by one letter "
                "(g, r, i, z)"
            )

    def requests(self, targets: Iterable[Target]) -> Iterator[Request]:
        for t in targets:
            params = {
                "ra": repr(t.ra),
                "dec": repr(t.dec),
                "layer": self.layer,
                "pixscale": repr(self.pixel_scale),
                "bands": "".join(self.bands[b] for b in t.bands),
                "size": self.size,
            }
            yield Request([(t.index, b) for b in t.bands], "GET", self.url, params=params)

    def read(self, request: Request, body: bytes) -> dict[Cell, Outcome]:
        try:
            cube = read_images(body, first_only=True)[0]
        except BadFits as e:
            return {c: Rejected(str(e)) for c in request.cells}
        if cube.ndim == 2:
            cube = cube[None]
        if cube.ndim != 3 or len(cube) != len(request.cells):
            return {
                c: Rejected(f"a cube of shape {cube.shape} for {len(request.cells)} bands")
                for c in request.cells
            }
        out: dict[Cell, Outcome] = {}
        for cell, plane in zip(request.cells, cube, strict=True):
            if not np.any(plane):
                out[cell] = Missing("all pixels are zero: outside the Legacy Surveys footprint in this band")
            else:
                out[cell] = Fetched(plane, body)
        return out
