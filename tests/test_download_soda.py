"""`soda` and its `rubin` preset against a loopback IVOA SODA cutout service and its SIAv2 image lookup
(tests/survey_servers.py): the catalogue in order, the nearest deep coadd chosen, the bearer token sent and
never written, and the faults the other providers meet ending the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from survey_servers import (  # noqa: F401  (fixtures)
    SIZE,
    Faults,
    SurveyServer,
    center,
    sky_fixture,
)
from test_download import cutouts, record

import libhyrax
from libhyrax.errors import ConfigError, RunError, UsageError
from libhyrax.surveys.store import FAILED, MISSING, OK, REJECTED

TOKEN = "rsp-token-for-the-loopback"
M = 60  # objects of the catalogue: each costs three requests


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN", TOKEN)


@pytest.fixture(name="catalog")
def small_catalog(sky, workdir) -> Path:
    return sky.catalog(workdir / "objects.csv", range(M))


def served(sky, rows=range(M)) -> np.ndarray:
    return center(sky.images[list(rows)], SIZE)


def settings(server: SurveyServer, catalog: Path, provider: str = "rubin", **download) -> dict:
    own = {"url": server.url("soda"), "sia_url": server.url("sia")}
    d = {"provider": provider, "catalog": str(catalog), "size": SIZE, "bands": ["g", "r"], "retry_wait": 0.01,
         provider: own}
    for key, value in download.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) and key in d else value
    return {"general": {"results_dir": "results", "device": "cpu"}, "download": d}


def test_rubin_fetches_the_catalogue_in_order_through_the_image_lookup(sky, catalog):
    outside = {4, 50}
    with SurveyServer(sky, Faults(outside=outside, bearer=TOKEN)) as server:
        run = libhyrax.download(settings(server, catalog))
        assert server.requests == M + 2 * (M - len(outside))  # one lookup per object, one cutout per band
        assert server.authorization == {f"Bearer {TOKEN}"}
    kept = [i for i in range(M) if i not in outside]
    got = cutouts(run)
    assert list(got["ids"]) == list(sky.ids[kept])
    # the nearest deep coadd of each band, cut on the server: a farther patch or a template would be refused
    np.testing.assert_array_equal(got["images"], served(sky, kept))
    assert got["pixel_scale"] == 0.2
    rec = record(run)
    assert (rec["status"][kept] == OK).all() and (rec["status"][sorted(outside)] == MISSING).all()
    assert rec["reason"][4, 1].decode() == "no image covers it in band r"
    assert (
        run.provenance["stage_info"] | {"ok": M - 2, "missing": 2, "failed": 0}
        == run.provenance["stage_info"]
    )
    for path in run.path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_soda_with_an_id_template_needs_no_lookup(sky, catalog):
    with SurveyServer(sky) as server:
        cfg = settings(
            server,
            catalog,
            "soda",
            soda={"sia_url": False, "id": "ivo://loopback/dp1?id=coadd-{band}-{object_id}"},
        )
        run = libhyrax.download(cfg)
        assert server.requests == 2 * M
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky))


def test_5xx_timeouts_and_dropped_connections_are_retried(sky, catalog):
    faults = Faults(fail={7: 2}, fail_status=503, hang={9: 1}, hang_s=1.5, drop={11: 1}, bearer=TOKEN)
    with SurveyServer(sky, faults) as server:
        run = libhyrax.download(settings(server, catalog, retries=3, rubin={"timeout": 0.5}))
    rec = record(run)
    assert (rec["status"] == OK).all()
    # a countdown fault hits the first requests naming the object, whichever band they ask
    assert (
        rec["attempts"][7].sum() == 2 + 2
        and rec["attempts"][9].sum() == 2 + 1
        and rec["attempts"][11].sum() == 3
    )
    assert run.provenance["stage_info"]["retries"] == 4
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky))


def test_a_failure_that_persists_fails_the_run_and_resume_fetches_just_it(sky, catalog):
    with SurveyServer(sky, Faults(fail={5: 100}, bearer=TOKEN)) as server:
        cfg = settings(server, catalog, retries=1)
        with pytest.raises(
            RunError, match=r"1 of 60 objects could not be fetched yet \(500 Internal Server Error"
        ):
            libhyrax.download(cfg)
        failed = next(Path("results").glob("*-download-*.failed"))
        assert (record(libhyrax.Result(failed))["status"][5] == FAILED).all()
        server.faults.fail.clear()
        asked = server.asked.copy()
        run = libhyrax.download(resume=failed)
        assert server.asked - asked == {5: 2}  # its two bands, nothing else
    assert (record(run)["status"] == OK).all()
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky))


def test_a_lookup_that_keeps_failing_fails_its_object_only(sky, catalog):
    with SurveyServer(sky, Faults(lookup_fail={0: 100}, bearer=TOKEN)) as server:
        with pytest.raises(RunError, match="1 of 60 objects could not be fetched yet"):
            libhyrax.download(settings(server, catalog, retries=1))
    rec = record(libhyrax.Result(next(Path("results").glob("*-download-*.failed"))))
    assert (rec["status"][0] == FAILED).all() and (rec["status"][1:] == OK).all()
    assert rec["reason"][0, 0].decode() == "image lookup: 500 Internal Server Error"


def test_truncated_and_non_fits_cutouts_are_rejected_with_their_reason(sky, catalog):
    with SurveyServer(sky, Faults(truncate={3}, not_fits={11}, bearer=TOKEN)) as server:
        run = libhyrax.download(settings(server, catalog))
    rec = record(run)
    assert (rec["status"][[3, 11]] == REJECTED).all()
    assert rec["reason"][3, 0].decode().startswith("truncated FITS file")
    assert rec["reason"][11, 0].decode().startswith("not a FITS file")


def test_a_wrong_or_missing_token_stops_with_a_message_that_does_not_hold_it(sky, catalog, monkeypatch):
    monkeypatch.setenv("ACCESS_TOKEN", "not-the-token")
    with SurveyServer(sky, Faults(bearer=TOKEN)) as server:
        with pytest.raises(
            UsageError,
            match=r"refused the credentials \(401 Unauthorized\).*check the token in "
            r"ACCESS_TOKEN",
        ) as e:
            libhyrax.download(settings(server, catalog, connections=2))
        assert server.requests <= 3
    assert "not-the-token" not in str(e.value)
    monkeypatch.delenv("ACCESS_TOKEN")
    with pytest.raises(UsageError, match="bearer_env names ACCESS_TOKEN, which is not set"):
        libhyrax.download(settings(server, catalog))


def test_soda_settings_are_checked(sky, catalog):
    with SurveyServer(sky) as server:
        with pytest.raises(ConfigError, match="set exactly one of id .* and sia_url"):
            libhyrax.download(settings(server, catalog, "soda", soda={"sia_url": False}))
        with pytest.raises(ConfigError, match=r"unknown field \{ra\}"):
            libhyrax.download(settings(server, catalog, "soda", soda={"sia_url": False, "id": "x-{ra}"}))
