"""check_provider: ask a provider class for the requests of two objects, read an answer, and say what is
wrong; nothing is sent over the network."""

from __future__ import annotations

import io

import numpy as np

from libhyrax.contract import contract_error, missing_methods, require_subclass
from libhyrax.surveys.base import Failed, Fetched, Missing, Provider, Rejected, Request, Target

REQUIRED = {
    "requests": "requests(self, targets) yielding a Request for some (object index, band index) cells",
    "read": "read(self, request, body) mapping each cell of a 200 answer to Fetched/Missing/Rejected/Failed"}


def check_provider(cls: type, settings: dict | None = None, bands=("g", "r"), size: int = 16,
                   body: bytes | None = None) -> dict:
    """`cls(settings, bands, size)` (default settings: an https URL) asked for two objects: every cell
    (object, band) must be in a request with an http(s) URL, and `read` of an answer (`body`; default a
    FITS image of size x size pixels) must say what became of each cell of the request. Returns a summary;
    raises a UsageError listing every problem."""
    require_subclass(cls, Provider, "check_provider")
    problems = missing_methods(cls, Provider, REQUIRED)
    if problems:
        raise contract_error(cls, "survey provider", problems)
    targets = [Target(0, "obj_0", 150.0, 2.0, tuple(range(len(bands)))),
               Target(1, "obj_1", 150.1, 2.1, tuple(range(len(bands))))]
    try:
        settings = settings if settings is not None else {"url": "https://example.org/cutout"}
        provider = cls(settings, bands, size)
        requests = list(provider.requests(targets))
    except Exception as e:  # noqa: BLE001 - any failure is the user's to read
        raise contract_error(cls, "survey provider", [
            f"building it or asking for requests failed: {type(e).__name__}: {e} (pass settings= its "
            "config table)"]) from None
    bad = [r for r in requests if not isinstance(r, Request)]
    if bad or not requests:
        gave = [type(r).__name__ for r in bad] or "none"
        raise contract_error(
            cls, "survey provider", [f"requests(targets) must yield Request objects; it gave {gave}"]
        )
    asked = {(t.index, b) for t in targets for b in t.bands}
    covered = {tuple(c) for r in requests for c in r.cells}
    if asked - covered:
        problems.append(f"no request fetches the cells {sorted(asked - covered)} (object index, band index)")
    if covered - asked:
        problems.append(f"requests fetch cells nobody asked for: {sorted(covered - asked)}")
    if not all(str(r.url).startswith(("http://", "https://")) for r in requests):
        problems.append("every Request needs an http(s) url (self.url is the configured one)")
    try:
        outcomes = provider.read(requests[0], body if body is not None else _fits_image(size))
    except Exception as e:  # noqa: BLE001
        problems.append(
            f"read(request, body) failed on a FITS image answer: {type(e).__name__}: {e} (pass "
            "body= a real answer of the service if it answers in another format)"
        )
        outcomes = None
    if outcomes is not None:
        kinds = (Fetched, Missing, Rejected, Failed)
        if not isinstance(outcomes, dict) or set(map(tuple, outcomes)) != set(map(tuple, requests[0].cells)):
            problems.append("read must return a dict with one entry per cell of the request")
        elif not all(isinstance(o, kinds) for o in outcomes.values()):
            problems.append("read's values must be Fetched, Missing, Rejected or Failed")
    if problems:
        raise contract_error(cls, "survey provider", problems)
    return {"class": cls.__name__, "name": cls.name or None, "requests": len(requests), "cells": len(covered)}


def _fits_image(size: int) -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((size, size), np.float32)).writeto(buf)
    return buf.getvalue()
