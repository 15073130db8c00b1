"""Loopback HTTP servers that speak the cutout services' protocols (../shared/notes/download.md), serving a
synthetic survey's cutouts, with faults to order. For tests and benchmarks: they listen on 127.0.0.1
only, and stop by themselves after `lifetime` seconds.

    sky = Sky.synthetic(tmp_path, n=200, bands=("g", "r", "i"), size=34)
    with SurveyServer(sky, faults=Faults(outside={3})) as server:
        server.url("hsc")            # POST .../das_cutout/pdr3/cgi-bin/cutout: coordlist.txt -> tar of FITS,
                                     # basic auth
        server.url("legacysurvey")   # GET /viewer/fits-cutout?ra=&dec=&layer=&pixscale=&bands=&size= -> cube
        server.url("url_template")   # GET /cutout?ra=&dec=&size=&band= -> one FITS image
        server.url("soda")           # GET /api/cutout/sync?ID=&CIRCLE=ra dec r -> one FITS image (IVOA SODA)
        server.url("sia")            # GET /api/sia/dp1/query?POS=CIRCLE ra dec 0 -> VOTable of images (SIAv2)

Faithful to the notes: HSC lines carry `rerun type filter tract ra dec sw sh image mask variance` after
a `#?` header, at most 1,000 of them; the answer is an uncompressed tar whose members are
`arch-<n>-<n>/<line>-cutout-<filter>-<tract>-<rerun>.fits` (line 1 is the header), none for a line outside
the footprint; each FITS file is an empty primary HDU then the image with a WCS, about 2 x sw / 0.168 + 1
pixels wide. The Legacy Surveys viewer answers one cube (bands, size, size) and zeros off the footprint;
the URL-template service one image per band, 404 off the footprint. The SODA service (Rubin's shape)
cuts the image named by `ID` to the bounding box of `CIRCLE` at 0.2"/pixel, and its SIA service lists,
per band, the deep coadd covering a position, a farther one (a neighbouring patch) and a template coadd
(ObsCore columns obs_publisher_did, lsst_band, dataproduct_subtype, s_ra, s_dec); nothing off the
footprint. A cutout of an image that does not hold the position is a 400, as a real service refuses it.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import re
import socket
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from libhyrax.surveys.fits_bytes import BLOCK, CARD

HSC_PATH, LS_PATH, URL_PATH = "/das_cutout/pdr3/cgi-bin/cutout", "/viewer/fits-cutout", "/cutout"
SODA_PATH, SIA_PATH = "/api/cutout/sync", "/api/sia/dp1/query"
RUBIN_SCALE = 0.2
HSC_BANDS = {"HSC-G": "g", "HSC-R": "r", "HSC-I": "i", "HSC-Z": "z", "HSC-Y": "y"}
UNITS = {"deg": 3600.0, "arcmin": 60.0, "amin": 60.0, "arcsec": 1.0, "asec": 1.0}
HEADER_FIELDS = "rerun type filter tract ra dec sw sh image mask variance".split()


def center(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size pixels (the client's crop too)."""
    h, w = image.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[..., top : top + size, left : left + size]


@dataclass
class Sky:
    """Objects at known positions, with their cutouts (n, bands, size, size)."""

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    images: np.ndarray
    bands: tuple[str, ...]

    def __post_init__(self):
        self._at = {
            (round(float(r), 7), round(float(d), 7)): i
            for i, (r, d) in enumerate(zip(self.ra, self.dec, strict=True))
        }

    @classmethod
    def synthetic(
        cls, folder: Path, n: int = 200, bands=("g", "r", "i"), size: int = 34, seed: int = 0
    ) -> Sky:
        """The synthetic survey's galaxies (libhyrax.data.synthetic), with its ra/dec."""
        import h5py

        from libhyrax.data.synthetic import generate_survey

        path = generate_survey(
            Path(folder) / f"sky-{n}-{size}-{seed}.h5", n=n, size=size, bands=tuple(bands), seed=seed
        )
        with h5py.File(path, "r") as f:
            ids = np.char.decode(f["object_id"][:].astype("S"), "utf-8")
            return cls(ids, f["catalog/ra"][:], f["catalog/dec"][:], f["images"][:], tuple(bands))

    @classmethod
    def flat(cls, n: int, bands=("r",), size: int = 66, seed: int = 0) -> Sky:
        """n objects sharing one image per band (cheap at a million objects: for benchmarks)."""
        rng = np.random.default_rng(seed)
        image = rng.normal(size=(1, len(bands), size, size)).astype(np.float32)
        ra, dec = 150.0 + np.arange(n) * 1e-4, 2.0 + (np.arange(n) % 1000) * 1e-4
        return cls(
            np.char.mod("obj%08d", np.arange(n)),
            ra,
            dec,
            np.broadcast_to(image, (n, *image.shape[1:])),
            tuple(bands),
        )

    def find(self, ra: float, dec: float) -> int | None:
        return self._at.get((round(ra % 360.0, 7), round(dec, 7)))

    def catalog(self, path: Path, rows=None) -> Path:
        """A CSV catalogue of these objects (object_id, ra, dec, mag)."""
        rows = range(len(self.ids)) if rows is None else rows
        lines = ["object_id,ra,dec,mag"] + [
            f"{self.ids[i]},{float(self.ra[i])!r},{float(self.dec[i])!r},{20 + (i % 7) / 2}" for i in rows
        ]
        path.write_text("\n".join(lines) + "\n")
        return path


@dataclass
class Faults:
    """Faults to order, by object index (each counts down where it has a number)."""

    outside: set = field(default_factory=set)  # off the footprint
    fail: dict = field(default_factory=dict)  # index -> requests for it answered `fail_status`
    fail_status: int = 500
    fail_all: int = 0  # the first N requests, whatever they ask
    hang: dict = field(default_factory=dict)  # index -> requests for it that hang `hang_s` seconds
    hang_s: float = 3.0
    drop: dict = field(
        default_factory=dict
    )  # index -> answers holding it cut off half-way (connection dropped)
    truncate: set = field(default_factory=set)  # its FITS file cut short (the HTTP answer whole)
    not_fits: set = field(default_factory=set)  # an HTML page instead of its FITS file
    evil_tar: bool = False  # HSC answers also hold ../ and absolute members, and a link
    auth: tuple[str, str] | None = None  # basic auth the service wants
    bearer: str | None = None  # the bearer token the service wants (soda)
    lookup_fail: dict = field(default_factory=dict)  # index -> SIA image lookups for it answered 500
    latency: float = 0.0  # seconds before each answer

    def take(self, counts: dict, objects) -> bool:
        """Whether a countdown fault hits a request for `objects` (and count it down)."""
        hit = [i for i in objects if counts.get(i, 0) > 0]
        for i in hit:
            counts[i] -= 1
        return bool(hit)


class SurveyServer:
    """The three services on one loopback port (see the module docstring)."""

    def __init__(
        self, sky: Sky, faults: Faults | None = None, lifetime: float = 120.0, cache_fits: bool = False
    ):
        self.sky, self.faults, self.lifetime = sky, faults or Faults(), lifetime
        self.lock = threading.Lock()
        self.requests, self.asked = 0, Counter()  # requests answered; how often each object was asked for
        self.authorization: set[str] = set()  # Authorization headers seen
        self.cache: dict | None = {} if cache_fits else None
        handler = type("Handler", (_Handler,), {"service": self})
        self.httpd = _HTTPServer(("127.0.0.1", 0), handler)

    def url(self, provider: str) -> str:
        base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return (
            base
            + {
                "hsc": HSC_PATH,
                "legacysurvey": LS_PATH,
                "soda": SODA_PATH,
                "sia": SIA_PATH,
                "url_template": URL_PATH + "?ra={ra}&dec={dec}&size={size}&band={band}",
            }[provider]
        )

    def __enter__(self) -> SurveyServer:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.httpd.shutdown)  # never outlives a stuck test
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def cube(self, i: int, bands: list[int], size: int) -> bytes:
        """The Legacy Surveys viewer's answer: one FITS cube (bands, size, size) with a WCS."""
        key = ("cube", i if self.cache is None else 0, tuple(bands), size)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        cube = center(self.sky.images[i][bands], size)
        data = write_image(cube, _wcs(self.sky.ra[i], self.sky.dec[i], cube.shape, 0.262))
        if self.cache is not None:
            self.cache[key] = data
        return data

    def fits(self, i: int, band: int, npix: int | None, hsc: bool) -> bytes:
        """FITS bytes of object i in one band (HSC: an empty primary HDU, then the image with a WCS)."""
        key = (i if self.cache is None else 0, band, npix, hsc)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        image = self.sky.images[i, band] if npix is None else center(self.sky.images[i, band], npix)
        data = write_image(
            image,
            _wcs(self.sky.ra[i], self.sky.dec[i], image.shape, 0.168 if hsc else 0.262),
            primary_empty=hsc,
        )
        if i in self.faults.truncate:
            data = data[: len(data) - 3000]
        if i in self.faults.not_fits:
            data = b"<html><body>Internal error: please try again later</body></html>"
        if self.cache is not None:
            self.cache[key] = data
        return data


def _wcs(ra: float, dec: float, shape, scale: float) -> dict:
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": float(ra),
        "CRVAL2": float(dec),
        "CRPIX1": (shape[-1] + 1) / 2,
        "CRPIX2": (shape[-2] + 1) / 2,
        "CD1_1": -scale / 3600,
        "CD2_2": scale / 3600,
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many connections opening at once (a benchmark's 16)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    disable_nagle_algorithm = True  # headers and body leave at once (else 40 ms delayed-ACK stalls)
    service: SurveyServer

    def log_message(self, *args) -> None:  # quiet
        pass

    # --- the protocols ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._count()
        if urlsplit(self.path).path != HSC_PATH:
            return self._send(404, b"no such service")
        if not self._authorized():
            return
        try:
            lines = _coordlist(self.headers.get("Content-Type", ""), body)
        except ValueError as e:
            return self._send(400, str(e).encode())
        sky, faults = self.service.sky, self.service.faults
        objects = [sky.find(ra, dec) for _, ra, dec, _, _ in lines]
        if self._fault(objects):
            return
        key = ("tar", tuple((f, sw) for f, _, _, sw, _ in lines), frozenset(objects) & faults.outside)
        data = self.service.cache.get(key) if self.service.cache is not None else None
        if data is None:
            data = self._tar(lines, objects)
            if self.service.cache is not None:
                self.service.cache[key] = data
        if faults.take(faults.drop, [i for i in objects if i is not None]):
            return self._send(200, data, "application/x-tar", cut=len(data) // 2)
        self._send(200, data, "application/x-tar")

    def _tar(self, lines, objects) -> bytes:
        sky, faults = self.service.sky, self.service.faults
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            for lineno, (filt, _ra, _dec, semi_arcsec, rerun) in enumerate(lines, start=2):
                i = objects[lineno - 2]
                if i is None or i in faults.outside or HSC_BANDS.get(filt, filt) not in sky.bands:
                    continue
                band = sky.bands.index(HSC_BANDS.get(filt, filt))
                npix = 2 * int(round(semi_arcsec / 0.168)) + 1
                data = self.service.fits(i, band, npix, hsc=True)
                _add(t, f"arch-{lineno // 100}-{lineno % 100}/{lineno}-cutout-{filt}-9813-{rerun}.fits", data)
            if faults.evil_tar:
                _add(t, "../evil.fits", b"evil")
                _add(t, "/tmp/hyrax-evil-absolute.fits", b"evil")
                link = tarfile.TarInfo("arch-0-0/2-cutout-link.fits")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(link)
        return tar.getvalue()

    def do_GET(self) -> None:
        self._count()
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path not in (LS_PATH, URL_PATH, SODA_PATH, SIA_PATH):
            return self._send(404, b"no such service")
        if not self._authorized():
            return
        if url.path == SIA_PATH:
            return self._sia(q)
        if url.path == SODA_PATH:
            return self._soda(q)
        sky, faults = self.service.sky, self.service.faults
        try:
            ra, dec, size = float(q["ra"]), float(q["dec"]), int(q["size"])
            bands = list(q["bands"]) if url.path == LS_PATH else [q["band"]]
        except (KeyError, ValueError):
            return self._send(400, b"ra, dec, size and bands (or band) are needed")
        i = sky.find(ra, dec)
        if self._fault([i]):
            return
        if any(b not in sky.bands for b in bands):
            return self._send(400, f"unknown band in {bands}".encode())
        idx = [sky.bands.index(b) for b in bands]
        if url.path == URL_PATH:
            if i is None or i in faults.outside:
                return self._send(404, b"no cutout here")
            return self._send(200, self.service.fits(i, idx[0], size, hsc=False), "application/fits")
        if i is None or i in faults.outside:  # the viewer answers zeros off its footprint
            cube = np.zeros((len(idx), size, size), np.float32)
            return self._send(200, write_image(cube), "application/fits")
        if i in faults.truncate or i in faults.not_fits:
            return self._send(200, self.service.fits(i, idx[0], size, hsc=False), "application/fits")
        self._send(200, self.service.cube(i, idx, size), "application/fits")

    def _sia(self, q: dict) -> None:
        """SIAv2: the images covering POS=CIRCLE ra dec r, as a VOTable of ObsCore rows."""
        from astropy.io.votable import from_table
        from astropy.table import Table

        try:
            shape, ra, dec, _ = q["POS"].split()
            assert shape == "CIRCLE"
            ra, dec = float(ra), float(dec)
        except (KeyError, ValueError, AssertionError):
            return self._send(400, b"POS=CIRCLE ra dec radius is needed")
        sky, faults = self.service.sky, self.service.faults
        i = sky.find(ra, dec)
        with self.service.lock:
            fail = faults.take(faults.lookup_fail, [i])
        if fail:
            return self._send(500, b"<html>Internal Server Error</html>", "text/html")
        rows = []
        if i is not None and i not in faults.outside:
            for b in sky.bands:  # the coadd holding it, a neighbouring patch's (farther) and a template
                rows += [
                    (f"ivo://loopback/dp1?id=coadd-{b}-{i}", b, "lsst.deep_coadd", ra + 1e-4, dec),
                    (f"ivo://loopback/dp1?id=coadd-{b}-{i}-next", b, "lsst.deep_coadd", ra + 0.05, dec),
                    (f"ivo://loopback/dp1?id=template-{b}-{i}", b, "lsst.template_coadd", ra, dec),
                ]
        names = ["obs_publisher_did", "lsst_band", "dataproduct_subtype", "s_ra", "s_dec"]
        table = Table(rows=rows or None, names=names, dtype=[str, str, str, float, float])
        out = io.BytesIO()
        from_table(table).to_xml(out)
        self._send(200, out.getvalue(), "application/x-votable+xml")

    def _soda(self, q: dict) -> None:
        """SODA sync: the image named ID, cut to CIRCLE's bounding box."""
        try:
            ra, dec, radius = (float(v) for v in q["CIRCLE"].split())
            dataset = q["ID"]
        except (KeyError, ValueError):
            return self._send(400, b"ID and CIRCLE=ra dec radius are needed")
        sky, faults = self.service.sky, self.service.faults
        i = sky.find(ra, dec)
        if self._fault([i]):
            return
        m = re.fullmatch(r"ivo://loopback/dp1\?id=coadd-([a-z])-(.+)", dataset)  # object: its index or id
        if i is None or not m or m[2] not in (str(i), str(sky.ids[i])) or m[1] not in sky.bands:
            return self._send(400, f"UsageError: the image {dataset} does not contain the cutout".encode())
        npix = 2 * int(round(radius * 3600 / RUBIN_SCALE))
        data = self.service.fits(i, sky.bands.index(m[1]), npix, hsc=False)
        if faults.take(faults.drop, [i]):
            return self._send(200, data, "application/fits", cut=len(data) // 2)
        self._send(200, data, "application/fits")

    # --- helpers ---------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        faults = self.service.faults
        if faults.bearer is not None:
            if self.headers.get("Authorization") == f"Bearer {faults.bearer}":
                return True
            self._send(401, b"Unauthorized", extra={"WWW-Authenticate": 'Bearer realm="rsp"'})
            return False
        want = faults.auth
        if want is None:
            return True
        import base64

        expected = "Basic " + base64.b64encode(f"{want[0]}:{want[1]}".encode()).decode()
        if self.headers.get("Authorization") == expected:
            return True
        self._send(401, b"Unauthorized", extra={"WWW-Authenticate": 'Basic realm="cutout"'})
        return False

    def _count(self) -> None:
        with self.service.lock:
            self.service.requests += 1
            self.service.authorization.add(self.headers.get("Authorization", ""))

    def _fault(self, objects) -> bool:
        """Answer a fault ordered for these objects (True when one was answered)."""
        s, faults = self.service, self.service.faults
        with s.lock:
            s.asked.update(i for i in objects if i is not None)
            fail = faults.fail_all > 0 or faults.take(faults.fail, objects)
            faults.fail_all = max(0, faults.fail_all - 1)
            hang = faults.take(faults.hang, objects)
        if faults.latency:
            time.sleep(faults.latency)
        if hang:
            time.sleep(faults.hang_s)
        if fail:
            self._send(faults.fail_status, b"<html>Service Unavailable</html>", "text/html")
        return fail

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/plain",
        cut: int | None = None,
        extra: dict | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            if cut is not None:  # the connection drops part-way through the answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client gave up (a timeout): nothing to answer
            self.close_connection = True


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _coordlist(content_type: str, body: bytes) -> list[tuple[str, float, float, float, str]]:
    """(filter, ra, dec in degrees, semi-width in arcsec, rerun) per line of the uploaded `list` part;
    ValueError if bad."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "list"]
    if not parts or parts[0].get_filename() != "coordlist.txt":
        raise ValueError("no `list` file part named coordlist.txt")
    text = parts[0].get_payload(decode=True).decode()
    rows = [ln for ln in text.splitlines() if ln.strip()]
    if not rows or rows[0].split()[0] != "#?" or rows[0].split()[1:] != HEADER_FIELDS:
        raise ValueError("the list must start with the header line #? " + " ".join(HEADER_FIELDS))
    if len(rows) - 1 > 1000:
        raise ValueError(f"too many lines ({len(rows) - 1}); at most 1000 per request")
    out = []
    for row in rows[1:]:
        f = row.split()
        if len(f) != len(HEADER_FIELDS):
            raise ValueError(f"bad line {row!r}")
        rerun, _type, filt, _tract, ra, dec, sw = f[:7]
        out.append((filt, _angle(ra) / 3600.0, _angle(dec) / 3600.0, _angle(sw), rerun))
    return out


def _angle(text: str) -> float:
    """An angle with its unit, in arcsec: 1.5e+02deg, 22asec, 0.5arcmin."""
    m = re.fullmatch(r"([-+0-9.eE]+)(deg|arcmin|amin|arcsec|asec)", text)
    if not m:
        raise ValueError(f"bad angle {text!r}")
    return float(m[1]) * UNITS[m[2]]


# --- the fixtures of the download tests (imported by them, as tests/slurm_cluster.py's are) -----------------

N, SIZE, PASSWORD = 300, 16, "pw-for-the-loopback-hsc"


@pytest.fixture(scope="module", name="sky")
def sky_fixture(tmp_path_factory) -> Sky:
    return Sky.synthetic(tmp_path_factory.mktemp("sky"), n=N, bands=("g", "r"), size=SIZE + 2)


@pytest.fixture(name="catalog")
def catalog_fixture(sky, workdir, monkeypatch) -> Path:
    monkeypatch.setenv("HSC_SSP_CAS_PASSWORD", PASSWORD)
    return sky.catalog(workdir / "objects.csv")


def write_image(image: np.ndarray, header: dict | None = None, primary_empty: bool = False) -> bytes:
    """FITS bytes of a float32 image (big-endian, BITPIX -32) with `header` cards (numbers and strings):
    a primary HDU holding the image, or with `primary_empty` an empty primary HDU and an IMAGE extension
    (the HSC layout). What the loopback servers (and benchmarks/bench_download.py) serve."""
    image = np.asarray(image, dtype=">f4")
    hdus = []
    if primary_empty:
        hdus.append(_header_bytes([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True)]))
        first = [("XTENSION", "IMAGE"), ("BITPIX", -32), ("NAXIS", image.ndim)]
    else:
        first = [("SIMPLE", True), ("BITPIX", -32), ("NAXIS", image.ndim)]
    cards = first + [(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(image.shape))]
    cards += [("PCOUNT", 0), ("GCOUNT", 1)] if primary_empty else []
    cards += list((header or {}).items())
    body = image.tobytes()
    hdus.append(_header_bytes(cards) + body + b"\0" * (-len(body) % BLOCK))
    return b"".join(hdus)


def _header_bytes(cards: list[tuple[str, object]]) -> bytes:
    lines = []
    for key, value in cards:
        if isinstance(value, bool):
            text = f"{'T' if value else 'F':>20}"
        elif isinstance(value, str):
            text = f"'{value:<8}'".ljust(20)
        elif isinstance(value, float):
            text = f"{value:>20.15G}"
        else:
            text = f"{value:>20}"
        lines.append(f"{key:<8}= {text}".ljust(CARD)[:CARD])
    lines.append("END".ljust(CARD))
    raw = "".join(lines).encode("ascii")
    return raw + b" " * (-len(raw) % BLOCK)
