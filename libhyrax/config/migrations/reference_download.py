"""The reference Hyrax's `[download]` (it downloads from HSC) as our `[download]` with provider "hsc"; a
helper of step 7 (007_reference_to_hyrax.py), not a step of its own.

    fits_file -> catalog            filter ["HSC-G", ...] -> bands ["g", ...]
    sw, sh ("22asec") -> size in HSC pixels (0.168"), the full width: 2 x 22 / 0.168 = 262
    concurrent_connections -> connections      chunk_size -> hsc.lines_per_request
    timeout -> hsc.timeout    rerun, type -> hsc.rerun, hsc.type    username -> hsc.user
    password -> dropped, never copied: the password belongs in HSC_SSP_CAS_PASSWORD

    credentials_file -> netrc_file (its `username = ...`/`password = ...` lines are read too)

retries and retry_wait keep their names; the reference's other download keys are dropped with the usual
warning about reference-only keys.
"""

from __future__ import annotations

import re

HSC_PIXEL_ARCSEC = 0.168
HSC_SHORT = {"HSC-G": "g", "HSC-R": "r", "HSC-I": "i", "HSC-Z": "z", "HSC-Y": "y"}
ARCSEC = {"deg": 3600.0, "arcmin": 60.0, "amin": 60.0, "arcsec": 1.0, "asec": 1.0}
MOVES = {
    "fits_file": "catalog",
    "concurrent_connections": "connections",
    "chunk_size": "hsc.lines_per_request",
    "timeout": "hsc.timeout",
    "rerun": "hsc.rerun",
    "type": "hsc.type",
    "username": "hsc.user",
    "credentials_file": "netrc_file",
}


def migrate(cfg: dict) -> list[str]:
    d = cfg.get("download")
    if not isinstance(d, dict) or not d:
        return []
    done = []
    if "provider" not in d:
        d["provider"] = "hsc"
        done.append('download.provider = "hsc" (where the reference Hyrax downloads from)')
    for old, new in MOVES.items():
        if old in d:
            value = d.pop(old)
            if value is False:  # the reference's "unset"
                continue
            table, _, key = new.rpartition(".")
            (d.setdefault(table, {}) if table else d)[key] = value
            done.append(f"download.{old} -> download.{new}")
    filters = d.pop("filter", False)
    if filters is not False:
        d["bands"] = [HSC_SHORT.get(f, f) for f in ([filters] if isinstance(filters, str) else filters)]
        done.append(f"download.filter -> download.bands {d['bands']}")
    widths = [_arcsec(w) for w in (d.pop("sw", False), d.pop("sh", False)) if w is not False]
    if widths and all(w is not None for w in widths):
        d["size"] = int(round(2 * max(widths) / HSC_PIXEL_ARCSEC))
        done.append(f'download.sw/sh -> download.size = {d["size"]} pixels (2 x {max(widths):g}" / 0.168")')
    elif widths:
        done.append("download.sw/sh not understood (an angle like 22asec); download.size keeps its default")
    if d.pop("password", False) is not False:
        done.append("download.password dropped (not copied anywhere): put it in HSC_SSP_CAS_PASSWORD")
    return done


def _arcsec(text) -> float | None:
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(deg|arcmin|amin|arcsec|asec)\s*", str(text))
    return float(m[1]) * ARCSEC[m[2]] if m else None
