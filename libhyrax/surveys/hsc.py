"""`hsc`: the HSC data release's cutout service (das_cutout), the reference Hyrax's source of cutouts.

    [download]
    provider = "hsc"
    bands = ["g", "r", "i", "z", "y"]        # or the service's names: "HSC-G", ..., "NB0921"
    [download.hsc]
    user = "me"                              # the password: HSC_SSP_CAS_PASSWORD (or netrc_file)

One POST per chunk of objects, with basic auth: a `coordlist.txt` of at most `lines_per_request` lines
(all bands of an object together; sorted by position, so the service reuses its cache), answered with an
uncompressed tar of FITS files `arch-<n>-<n>/<line>-cutout-<filter>-<tract>-<rerun>.fits`, where line 1
is the header. A line with no member lies outside the footprint in that band. The cutouts are asked a
pixel wider than `size` on each side and centre-cropped.

The tar is untrusted and never extracted: members are read into memory. An answer holding a member with
an absolute path, `..`, a link or a device is refused whole (its cutouts are Failed; nothing is
written), and one that ends early fails the cutouts it did not deliver.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator

from libhyrax.errors import ConfigError, UsageError
from libhyrax.surveys.base import Cell, Failed, Fetched, Missing, Outcome, Provider, Rejected, Request, Target
from libhyrax.surveys.fits_bytes import BadFits, read_images

log = logging.getLogger("hyrax.download")

PASSWORD_ENV = "HSC_SSP_CAS_PASSWORD"
HEADER = "#? rerun type filter tract ra dec sw sh image mask variance"
MEMBER = re.compile(r"^(\d+)-cutout-")
WORD = re.compile(r"^[A-Za-z0-9_.+/-]+$")  # a field of a coordlist line: no spaces, no new lines


class HSC(Provider):
    name = "hsc"
    pixel_scale = 0.168
    band_names = {"g": "HSC-G", "r": "HSC-R", "i": "HSC-I", "z": "HSC-Z", "y": "HSC-Y"}
    default_timeout = 3600.0  # a chunk of 990 cutouts can take long on a busy service
    default_stall = 300.0  # but its tar streams: 5 minutes without a byte is a hung request

    def __init__(self, settings: dict, bands, size: int, netrc_file=None):
        super().__init__(settings, bands, size, netrc_file)
        self.lines = int(self.settings.get("lines_per_request") or 990)
        if not 1 <= self.lines <= 1000:
            raise ConfigError(f"download.hsc.lines_per_request must be 1 to 1000 (the service takes about "
                              f"1,000 lines per request), not {self.lines}")
        self.rerun, self.type = str(self.settings.get("rerun")), str(self.settings.get("type"))
        for key, value in (("rerun", self.rerun), ("type", self.type), *(("bands", b) for b in self.bands)):
            if not WORD.match(self.service_band(value) if key == "bands" else value):
                raise ConfigError(
                    f"download.hsc: {key} {value!r} is not a valid HSC name (letters, digits, _-./+)"
                )
        if len(self.bands) > self.lines:
            raise ConfigError(f"{len(self.bands)} bands don't fit in {self.lines} lines per request")
        # semi-width a pixel more than half the size: the service's cutout is then never too small
        self.semi_arcsec = (self.size / 2 + 1) * self.pixel_scale

    def auth(self) -> tuple[str, str]:
        user, password = self.settings.get("user") or None, os.environ.get(PASSWORD_ENV)
        if password is None and self.netrc_file:
            found = super().auth()
            if found:
                user, password = user or found[0] or None, found[1]
        if not user or password is None:
            raise UsageError(
                f"the HSC cutout service needs an HSC-SSP account: set download.hsc.user and put "
                f"the password in the environment variable {PASSWORD_ENV} (or in a netrc-style "
                "file named by download.netrc_file)"
            )
        return str(user), password

    def credentials_hint(self) -> str:
        return (
            f"check download.hsc.user ({self.settings.get('user')!r}) and the password in {PASSWORD_ENV} "
            "(or download.netrc_file)"
        )

    def requests(self, targets: Iterable[Target]) -> Iterator[Request]:
        chunk, lines = [], 0
        for t in targets:
            if chunk and lines + len(t.bands) > self.lines:
                yield self._request(chunk)
                chunk, lines = [], 0
            chunk.append(t)
            lines += len(t.bands)
        if chunk:
            yield self._request(chunk)

    def _request(self, chunk: list[Target]) -> Request:
        cells, text = [], [HEADER]
        sw = f"{self.semi_arcsec:.6f}arcsec"
        for t in sorted(chunk, key=lambda t: (t.ra, t.dec)):  # by position: the service reuses its cache
            for b in t.bands:
                cells.append((t.index, b))
                text.append(
                    f"{self.rerun} {self.type} {self.service_band(self.bands[b])} any {t.ra:.16e}deg "
                    f"{t.dec:.16e}deg {sw} {sw} true false false"
                )
        body = ("\n".join(text) + "\n").encode()
        return Request(
            cells, "POST", self.url, files={"list": ("coordlist.txt", body, "text/plain")}, info=cells
        )

    def read(self, request: Request, body: bytes) -> dict[Cell, Outcome]:
        cells: list[Cell] = request.info  # line k + 2 of the list is cells[k]
        out: dict[Cell, Outcome] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
                for member in tar:
                    refused = unsafe_member(member)
                    if refused:
                        log.warning(
                            "refused the answer to request for %d cutouts: its tar holds %r (%s)",
                            len(cells),
                            member.name,
                            refused,
                        )
                        return {
                            c: Failed(
                                f"the service's answer held an unsafe tar member {member.name!r} "
                                f"({refused}); refused, nothing written"
                            )
                            for c in cells
                        }
                    m = MEMBER.match(posixpath.basename(member.name))
                    if not member.isfile() or not m:
                        continue
                    k = int(m[1]) - 2
                    if not 0 <= k < len(cells) or cells[k] in out:
                        log.debug("ignoring tar member %r: no such line in the request", member.name)
                        continue
                    out[cells[k]] = _cutout(tar.extractfile(member).read())
        except (tarfile.TarError, EOFError, OSError) as e:
            # the answer stopped part-way (or is no tar at all): what it did not deliver may come next time
            why = "is not a tar file" if not out else "ended early"
            return out | {c: Failed(f"the service's answer {why} ({e})") for c in cells if c not in out}
        return out | {
            c: Missing("no cutout in the answer: outside the HSC footprint in this band")
            for c in cells
            if c not in out
        }


def _cutout(data: bytes) -> Outcome:
    try:
        return Fetched(read_images(data, first_only=True)[0], data)
    except BadFits as e:
        return Rejected(str(e))


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why a tar member can't be trusted (None when it can): extracting it could write outside the folder
    or make a link or a device."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "a path with '..'"
    if member.issym() or member.islnk():
        return "a link"
    if member.isdev():
        return "a device"
    if not (member.isfile() or member.isdir()):
        return "not a plain file"
    return None
