"""HyraxCifarDataset: CIFAR-10 (32x32 colour images in 10 classes), the reference Hyrax's own test data set.

Read from the binary version of the standard archive (`cifar-10-binary.tar.gz`: records of one label byte
then 3,072 pixel bytes, the red, green and blue 32x32 planes), never from the Python version's pickles.
Where the data come from, first found:

1. `data_location` (else general.data_dir) holds `cifar-10-batches-bin/`: read in place (memory-mapped);
2. it holds `cifar-10-binary.tar.gz` (a copy you have): checked against `md5`, then unpacked there;
3. else the archive is fetched from `url` into that folder once, checked against `md5` (the checksum the
   CIFAR page publishes), then unpacked. A download that does not match is deleted and nothing is kept.

The archive is untrusted: only its six batch files (regular files of whole records) are unpacked, by name,
into `cifar-10-batches-bin/`; any other member is ignored. Fields: `image` float32 (3, 32, 32) scaled as the
reference scales it, (pixel / 255 - 0.5) / 0.5 in [-1, 1]; `label` (0-9); `index`; `object_id` ("000123").
dataset_config: use_training_data (true: the 50,000 training images; false: the 10,000 test images), url,
md5.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from pathlib import Path

import numpy as np

from libhyrax import atomic
from libhyrax.data.base import Dataset
from libhyrax.errors import DataError

log = logging.getLogger("hyrax.data")

ARCHIVE, FOLDER = "cifar-10-binary.tar.gz", "cifar-10-batches-bin"
TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST = ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # the binary version's, from the CIFAR-10 page


class HyraxCifarDataset(Dataset):
    """CIFAR-10 from its binary archive (see the module docstring)."""

    fresh_arrays = True  # read() builds new image arrays: the transform may work in place
    fetches_into_location = True  # data_location is made when the archive is first fetched

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location)
        c = self.dataset_config
        general = self.config.get("general") or {}
        self.folder = Path(data_location or general.get("data_dir") or "./data").expanduser()
        batches = ensure_batches(self.folder, str(c.get("url") or URL), str(c.get("md5") or MD5))
        self.paths = [batches / n for n in (TRAIN if c.get("use_training_data", True) else TEST)]
        self.starts = np.cumsum([0] + [p.stat().st_size // RECORD for p in self.paths])
        self.n = int(self.starts[-1])
        self.width = max(6, len(str(self.n - 1)))
        self._parts = None

    def __getstate__(self):  # a DataLoader worker maps the files itself instead of getting a copy of them
        return self.__dict__ | {"_parts": None}

    @property
    def parts(self) -> list[np.memmap]:
        if self._parts is None:
            self._parts = [np.memmap(p, dtype=np.uint8, mode="r").reshape(-1, RECORD) for p in self.paths]
        return self._parts

    def __len__(self):
        return self.n

    def _records(self, start: int, stop: int) -> np.ndarray:
        """Records start..stop (label byte + pixels) across the batch files."""
        out = []
        for k, part in enumerate(self.parts):
            a, b = max(start, self.starts[k]), min(stop, self.starts[k + 1])
            if a < b:
                out.append(part[a - self.starts[k]:b - self.starts[k]])
        return np.concatenate(out) if out else np.empty((0, RECORD), np.uint8)

    def get_image(self, index):
        return self.get_image_batch(index, index + 1)[0]

    def get_image_batch(self, start, stop):
        pixels = self._records(start, stop)[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32)
        return (pixels / 255.0 - 0.5) / 0.5

    def get_label(self, index):
        return self.get_label_batch(index, index + 1)[0]

    def get_label_batch(self, start, stop):
        return self._records(start, stop)[:, 0].astype(np.int64)

    def get_index(self, index):
        return np.int64(index)

    def get_index_batch(self, start, stop):
        return np.arange(start, stop, dtype=np.int64)

    def get_object_id(self, index):
        return f"{int(index):0{self.width}d}"

    def get_object_id_batch(self, start, stop):
        return np.char.zfill(np.arange(start, stop).astype(str), self.width)


def ensure_batches(folder: Path, url: str, md5: str) -> Path:
    """`folder`/cifar-10-batches-bin with the six batch files: there already, unpacked from the archive
    there (checked), or from the archive fetched from `url` (checked)."""
    batches = folder / FOLDER
    if all((batches / n).is_file() for n in TRAIN + TEST):
        return batches
    archive = folder / ARCHIVE
    if not archive.is_file():
        fetch(url, archive, md5)
    elif file_md5(archive) != md5:
        raise DataError(
            f"{archive} does not match the CIFAR-10 binary archive's checksum (md5 {md5}); delete it "
            "(it is fetched again) or replace it with the right file"
        )
    unpack(archive, batches)
    return batches


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, archive: Path, md5: str) -> None:
    """Download `url` to `archive`, checked against `md5` while it streams; nothing is kept otherwise."""
    import httpx

    archive.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.md5(usedforsecurity=False)
    log.info("fetching CIFAR-10 (binary version) from %s into %s", url, archive.parent)
    with atomic.replacing(archive) as part:  # removed unless whole and checked
        try:
            with (
                httpx.stream(
                    "GET", url, timeout=httpx.Timeout(600.0, connect=30.0), follow_redirects=True
                ) as r,
                open(part, "wb") as out,
            ):
                if r.status_code != 200:
                    raise DataError(
                        f"fetching CIFAR-10 from {url} failed ({r.status_code} {r.reason_phrase}); "
                        f"put a copy of {ARCHIVE} in {archive.parent} (or set "
                        "data_set.HyraxCifarDataset.url)"
                    )
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as e:
            raise DataError(
                f"fetching CIFAR-10 from {url} failed ({type(e).__name__}: {e}); put a copy of "
                f"{ARCHIVE} in {archive.parent}, or set data_set.HyraxCifarDataset.url"
            ) from None
        if h.hexdigest() != md5:
            raise DataError(
                f"the archive fetched from {url} does not match the published checksum (md5 {md5}, "
                f"got {h.hexdigest()}); it was deleted. Try again, or put a checked copy in "
                f"{archive.parent}"
            )


def unpack(archive: Path, batches: Path) -> None:
    """The six batch files of the archive into `batches`, by name; nothing else is written."""
    wanted = {f"{FOLDER}/{n}": n for n in TRAIN + TEST}
    batches.mkdir(parents=True, exist_ok=True)
    found = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                if member.size == 0 or member.size % RECORD:
                    raise DataError(f"{archive}: {member.name} is not whole records of {RECORD} bytes")
                with (
                    atomic.replacing(batches / name) as tmp,
                    tar.extractfile(member) as src,
                    open(tmp, "wb") as out,
                ):
                    while block := src.read(1 << 20):
                        out.write(block)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"{archive} can't be read as the CIFAR-10 binary archive ({type(e).__name__}: {e})"
        ) from None
    missing = sorted(set(TRAIN + TEST) - found)
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: is it the binary version ({ARCHIVE})?")
