"""Files written whole or not at all: write a temporary file beside the target, then rename it over.

    with replacing(path) as tmp:       # any writer: h5py, torch.save, a zip...
        write(tmp)
    write_text(path, text)              # or these
    write_json(path, data)

The temporary name `.<name>.<pid>.<random>.tmp` is unique to the process and call, so tasks of a Slurm
array writing the same file never share one (the last rename wins, whole); a failed write removes it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def unique_tmp(path: str | os.PathLike) -> Path:
    """A temporary name beside `path` that no other process (a Slurm array task) can pick too."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def replacing(path: str | os.PathLike, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it replaces `path`
    (atomically), else it is removed. `exclusive`: only when `path` doesn't exist yet (of several racing
    processes the first keeps its file; the others' are dropped)."""
    path = Path(path)
    tmp = unique_tmp(path)
    try:
        yield tmp
        if not exclusive:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)  # another process made it first: theirs is whole too
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> bool:
    try:
        os.link(tmp, path)  # fails if path exists: create-if-absent, atomically
        return True
    except FileExistsError:
        return False


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data: Any, *, exclusive: bool = False) -> bool:
    """Write JSON whole or not at all. `exclusive`: only when `path` doesn't exist yet (atomically, so of
    several racing processes exactly one wins); returns whether this call wrote it."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    if not exclusive:
        write_text(path, text)
        return True
    tmp = unique_tmp(path)
    tmp.write_text(text, encoding="utf-8")
    try:
        return _link_new(tmp, Path(path))
    finally:
        tmp.unlink()
