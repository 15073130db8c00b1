"""Nothing in a results directory runs as code unless this user's Hyrax wrote it, or the user said yes.

Results directories are data that people copy from colleagues and shared disks, but three kinds of file in
them would run code when loaded: a fitted reducer (`reducer.pkl`, a pickle), the Python source of a model
class written in a notebook (`model_source.py`), and the pickles some vector-index backends keep. When
Hyrax writes one of these it signs it: an HMAC-SHA256 of the file's bytes under a key that only this
account can read (`~/.config/hyrax/signing.key`, made on first use, mode 0600; `HYRAX_SIGNING_KEY` names
another file), kept beside it as `<file>.sig`. Before loading such a file Hyrax checks the signature; a
file from anyone else (or edited since) is refused with a message naming the run, unless the user trusts
that run explicitly:

    hyrax infer --from results/<their-train-run> --set 'general.trusted_runs=["results/<their-train-run>"]'

A user's own runs keep working everywhere their home directory is mounted (Slurm nodes, containers).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from libhyrax import atomic
from libhyrax.errors import UsageError

log = logging.getLogger("hyrax.trust")
SUFFIX = ".sig"


def key_file() -> Path:
    return Path(os.environ.get("HYRAX_SIGNING_KEY") or Path.home() / ".config" / "hyrax" / "signing.key")


def _key() -> bytes:
    path = key_file()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # create-if-absent: two processes making the key at once agree on one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def _digest(path: Path) -> str:
    mac = hmac.new(_key(), digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            mac.update(block)
    return mac.hexdigest()


def sign(path: str | os.PathLike) -> Path:
    """Mark a file this process just wrote as written by this user's Hyrax."""
    path = Path(path)
    sig = path.with_name(path.name + SUFFIX)
    atomic.write_text(sig, _digest(path) + "\n")
    return sig


def is_signed(path: str | os.PathLike) -> bool:
    path = Path(path)
    sig = path.with_name(path.name + SUFFIX)
    try:
        want = sig.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(want, _digest(path))


def is_trusted_run(path: Path, trusted_runs) -> bool:
    """Whether `path` lies in one of the runs the user named in general.trusted_runs."""
    p = path.resolve()
    return any(p == Path(t).expanduser().resolve() or Path(t).expanduser().resolve() in p.parents
               for t in (trusted_runs or []))


def check_loadable(
    path: str | os.PathLike, what: str, trusted_runs=(), run: str | os.PathLike | None = None
) -> None:
    """Refuse to load `path` (a pickle or Python source: loading it runs code) unless this user's Hyrax
    signed it or the user trusts its run (general.trusted_runs; `run`: the results
    directory it belongs to, default the folder holding it)."""
    path = Path(path)
    if is_signed(path):
        return
    if is_trusted_run(path, trusted_runs):
        log.warning(
            "loading %s (%s), not signed by this account, because general.trusted_runs names its run",
            path,
            what,
        )
        return
    run = Path(run) if run is not None else path.parent
    raise UsageError(
        f"refusing to load {path}: it is {what}, and loading it would run code, but it was not written by "
        f"Hyrax on this account (no valid {path.name}{SUFFIX}; a copied or edited results directory). If you "
        f"trust whoever made {run}, say so: --set 'general.trusted_runs=[\"{run}\"]'"
    )
