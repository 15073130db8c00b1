"""FITS images from bytes a service sent: strict, fast, and never a file on disk.

    images = read_images(body)           # every image HDU, in order, as float32 arrays
    read_images(body, first_only=True)   # just the first

A cutout service answers with small uncompressed FITS files: a header of 80-character cards in 2880-byte
blocks, then big-endian pixels. They are read here directly, not with astropy.io.fits (which parses
every card into objects): over ten times faster, which decides whether the client or the service sets
the pace. Anything outside that simple case (tile-compressed images, random groups) goes to astropy. The
body is untrusted: every length is checked before it is used, and a body that is not a whole FITS image
is a `BadFits` naming what is wrong (not FITS, truncated, no image), never a crash.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

BLOCK, CARD = 2880, 80
BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
KEYS = {
    b"SIMPLE",
    b"XTENSION",
    b"BITPIX",
    b"NAXIS",
    b"BZERO",
    b"BSCALE",
    b"BLANK",
    b"PCOUNT",
    b"GCOUNT",
    b"ZIMAGE",
    b"GROUPS",
} | {b"NAXIS%d" % i for i in range(1, 10)}
MAX_AXES = 4
MAX_HEADER_BLOCKS = 100  # 3,600 cards: far more than any cutout's header


class BadFits(ValueError):
    """A body that is not a usable FITS image; the message says why (it goes into the download record)."""


def read_images(data: bytes, first_only: bool = False) -> list[np.ndarray]:
    """The image HDUs (2-D or more, pixels as float32, BSCALE/BZERO applied, BLANK -> NaN) of FITS bytes."""
    if data[:9] != b"SIMPLE  =":
        head = bytes(data[:40]).decode("ascii", "replace").strip()
        raise BadFits(
            f"not a FITS file (it starts with {head[:30]!r})" if head else "an empty answer, not a FITS file"
        )
    images, pos = [], 0
    while pos < len(data):
        cards, pos = _header(data, pos)
        if not cards:  # zero padding after the last HDU
            break
        if cards.get(b"ZIMAGE") is True or cards.get(b"GROUPS") is True:
            return _astropy_images(data, first_only)
        shape, nbytes = _data_shape(cards)
        if pos + nbytes > len(data):
            raise BadFits(
                f"truncated FITS file: the data needs {pos + nbytes} bytes, the body has {len(data)}"
            )
        is_image = cards.get(b"XTENSION", "IMAGE") == "IMAGE" and len(shape) >= 2
        if is_image:
            images.append(_pixels(data, pos, shape, cards))
            if first_only:
                return images
        pos += -(-nbytes // BLOCK) * BLOCK
    if not images:
        raise BadFits("the FITS file holds no image")
    return images


def _header(data: bytes, start: int) -> tuple[dict, int]:
    """The cards we need of the header at `start`, and where its data begins ({} at trailing padding)."""
    cards: dict = {}
    for pos in range(start, start + MAX_HEADER_BLOCKS * BLOCK, BLOCK):
        block = data[pos : pos + BLOCK]
        if pos == start and start and not block.strip(b"\0 "):
            return {}, len(data)  # padding after the last HDU
        if len(block) < BLOCK:
            raise BadFits("truncated FITS file: a header ends before its END card")
        for i in range(0, BLOCK, CARD):
            key = block[i : i + 8].rstrip()
            if key == b"END":
                return cards, pos + BLOCK
            if key in KEYS and block[i + 8 : i + 10] == b"= ":
                cards[key] = _value(block[i + 10 : i + CARD])
    raise BadFits("FITS header without an END card")


def _value(raw: bytes):
    text = raw.decode("ascii", "replace").strip()
    if text.startswith("'"):
        return text[1 : text.find("'", 1)].strip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text.replace("D", "E"))
        except ValueError:
            return text


def _data_shape(cards: dict) -> tuple[tuple[int, ...], int]:
    bitpix, naxis = cards.get(b"BITPIX"), cards.get(b"NAXIS")
    if bitpix not in BITPIX or not isinstance(naxis, int) or not 0 <= naxis <= 999:
        raise BadFits(f"bad FITS header (BITPIX {bitpix!r}, NAXIS {naxis!r})")
    axes = [cards.get(b"NAXIS%d" % i) for i in range(1, naxis + 1)]
    if naxis > MAX_AXES + 5 or not all(isinstance(a, int) and 0 <= a < (1 << 31) for a in axes):
        raise BadFits(f"bad FITS axes {axes}")
    n = int(np.prod(axes, dtype=np.int64)) if axes else 0
    pcount, gcount = int(cards.get(b"PCOUNT", 0) or 0), int(cards.get(b"GCOUNT", 1) or 1)
    if pcount < 0 or gcount < 1:
        raise BadFits("bad FITS header (PCOUNT/GCOUNT)")
    return tuple(reversed(axes)), abs(bitpix) // 8 * gcount * (pcount + n)


def _pixels(data: bytes, pos: int, shape: tuple[int, ...], cards: dict) -> np.ndarray:
    if len(shape) > MAX_AXES:
        raise BadFits(f"image of {len(shape)} axes")
    raw = np.frombuffer(data, dtype=BITPIX[cards[b"BITPIX"]], count=int(np.prod(shape)), offset=pos)
    out = raw.astype(np.float32).reshape(shape)  # a native-order copy
    blank = cards.get(b"BLANK")
    if blank is not None and raw.dtype.kind in "iu":
        out[raw.reshape(shape) == blank] = np.nan
    scale, zero = cards.get(b"BSCALE", 1), cards.get(b"BZERO", 0)
    if scale != 1:
        out *= np.float32(scale)
    if zero != 0:
        out += np.float32(zero)
    return out


def _astropy_images(data: bytes, first_only: bool) -> list[np.ndarray]:
    """Compressed or unusual FITS: astropy reads it (slower, and rare for cutout services)."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a truncated file only warns in astropy: make it an error
            with fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False) as hdul:
                images = [
                    np.asarray(h.data, dtype=np.float32)
                    for h in hdul
                    if h.is_image and h.data is not None and h.data.ndim >= 2
                ]
    except Exception as e:
        raise BadFits(f"unreadable FITS file ({type(e).__name__}: {str(e)[:100]})") from None
    if not images:
        raise BadFits("the FITS file holds no image")
    return images[:1] if first_only else images
