"""hyrax download against loopback servers that speak each service's protocol (tests/survey_servers.py):
every provider fetches a catalogue into a cutouts.h5 equal to what was served, in catalogue order, and
`train` runs on it; each fault ends exactly as documented."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from survey_servers import (  # noqa: F401  (fixtures)
    PASSWORD,
    SIZE,
    Faults,
    N,
    Sky,
    SurveyServer,
    catalog_fixture,
    center,
    sky_fixture,
)

import libhyrax
from libhyrax.errors import ConfigError, RunError, UsageError
from libhyrax.stages import BY_NAME
from libhyrax.surveys.store import FAILED, MISSING, OK, REJECTED

PROVIDERS = ("hsc", "legacysurvey", "url_template")


def settings(server: SurveyServer, provider: str, catalog: Path, **download) -> dict:
    """A config fetching `catalog` from the loopback `server` (fast retries, small HSC requests)."""
    own = {"url": server.url(provider)}
    if provider == "hsc":
        own |= {"user": "me", "lines_per_request": 100}
    d = {"provider": provider, "catalog": str(catalog), "size": SIZE, "bands": ["g", "r"], "retry_wait": 0.01,
         provider: own}
    for key, value in download.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) and key in d else value
    return {"general": {"results_dir": "results", "device": "cpu"}, "download": d}


def cutouts(run) -> dict:
    with h5py.File(run.file("cutouts.h5"), "r") as f:
        assert f.attrs["complete"] and list(f.attrs["bands"]) == ["g", "r"]
        return {"ids": f["object_id"][:].astype(str), "images": f["images"][:],
                **{c: f["catalog"][c][:] for c in f["catalog"]}, "pixel_scale": f.attrs.get("pixel_scale")}


def record(run) -> dict:
    with h5py.File(run.file("download.h5"), "r") as f:
        return {k: f[k][:] for k in f} | {"attrs": dict(f.attrs)}


def served(sky: Sky, rows) -> np.ndarray:
    return center(sky.images[list(rows)], SIZE)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_fetches_the_catalogue_in_order(provider, sky, catalog):
    outside = {4, 150}
    with SurveyServer(sky, Faults(outside=outside)) as server:
        run = libhyrax.download(settings(server, provider, catalog))
    kept = [i for i in range(N) if i not in outside]
    got = cutouts(run)
    assert list(got["ids"]) == list(sky.ids[kept])  # catalogue order, the misses left out
    np.testing.assert_array_equal(got["images"], served(sky, kept))
    np.testing.assert_array_equal(got["ra"], sky.ra[kept])
    np.testing.assert_array_equal(got["dec"], sky.dec[kept])
    assert list(got["mag"]) == [20 + (i % 7) / 2 for i in kept]
    assert got["pixel_scale"] == {"hsc": 0.168, "legacysurvey": 0.262, "url_template": None}[provider]
    for name in BY_NAME["download"].writes:  # the registry says what a default run writes
        assert run.file(name).exists(), name
    rec = record(run)
    assert rec["attrs"]["complete"] and rec["attrs"]["committed"] == N
    assert (rec["status"][kept] == OK).all() and (rec["status"][sorted(outside)] == MISSING).all()
    assert list(rec["row"][kept]) == list(range(len(kept))) and (rec["row"][sorted(outside)] == -1).all()
    assert (rec["attempts"][kept] == 1).all() and np.isfinite(rec["fetched_at"][kept]).all()
    rows = list(csv.DictReader(open(run.file("download.csv"), encoding="utf-8")))
    assert len(rows) == 2 * N and rows[8] == rows[8] | {
        "object_id": sky.ids[4],
        "band": "g",
        "status": "missing",
    }
    assert (
        run.provenance["stage_info"] | {"ok": N - 2, "missing": 2, "failed": 0}
        == run.provenance["stage_info"]
    )


def test_train_runs_on_each_providers_download(sky, catalog):
    small = [i for i in range(N) if i % 3 == 0]
    part = sky.catalog(catalog.with_name("part.csv"), small)
    with SurveyServer(sky) as server:
        runs = [libhyrax.download(settings(server, p, part)) for p in PROVIDERS]
    cfg = {
        "general": {"results_dir": "results", "device": "cpu"},
        "train": {"epochs": 1},
        "model": {"HyraxAutoencoder": {"base_channel_size": 8, "latent_dim": 8}},
        "data_loader": {"batch_size": 50},
    }
    for run in runs:
        trained = libhyrax.train(cfg, from_run=run)
        assert trained.find("download") == run  # the data run is in the train run's lineage
        assert sum(trained.provenance["stage_info"]["split_sizes"].values()) == len(small)


def test_5xx_is_retried_with_backoff_then_succeeds(sky, catalog):
    with SurveyServer(sky, Faults(fail={7: 2, 8: 1}, fail_status=503)) as server:
        run = libhyrax.download(settings(server, "legacysurvey", catalog, retries=3))
    rec = record(run)
    assert (rec["status"] == OK).all()
    assert list(rec["attempts"][[7, 8, 9], 0]) == [3, 2, 1]
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky, range(N)))
    assert run.provenance["stage_info"]["retries"] == 3


@pytest.mark.parametrize("provider", ["legacysurvey", "hsc"])
def test_a_hung_service_stops_the_run_within_seconds_and_it_resumes(sky, catalog, provider):
    """A service that accepts and never answers: each attempt waits stall_timeout (not the whole timeout),
    and the circuit breaker stops the run after 2 silent attempts per connection; --resume finishes it."""
    import time

    with SurveyServer(sky, Faults(hang={i: 1000 for i in range(N)}, hang_s=5.0)) as server:
        cfg = settings(server, provider, catalog, retries=3, **{provider: {"stall_timeout": 0.5}})
        t0 = time.monotonic()
        with pytest.raises(RunError, match=r"gave no answer to 8 attempts in a row .*no answer for 0.5 s"):
            libhyrax.download(cfg)
        assert time.monotonic() - t0 < 15  # the default timeout alone would be 60 s (hsc: 3600 s) per attempt
        failed = next(Path("results").glob("*-download-*.failed"))
        server.faults.hang.clear()
        run = libhyrax.download(resume=failed)
    assert len(cutouts(run)["ids"]) == N


def test_4xx_is_never_retried(sky, catalog):
    with SurveyServer(sky, Faults(fail={7: 5}, fail_status=400)) as server:
        run = libhyrax.download(settings(server, "url_template", catalog, retries=3))
        assert server.asked[7] == 2  # one request per band, each once
    rec = record(run)
    assert list(rec["status"][7]) == [REJECTED, REJECTED] and list(rec["attempts"][7]) == [1, 1]
    assert rec["reason"][7, 0].decode() == "400 Bad Request"
    assert list(cutouts(run)["ids"]) == [s for i, s in enumerate(sky.ids) if i != 7]


def test_a_timeout_is_retried_and_one_that_persists_fails_the_run_which_resumes(sky, catalog, tmp_path):
    hang = {5: 1, 9: 100}  # object 5 hangs once, object 9 every time
    with SurveyServer(sky, Faults(hang=hang, hang_s=2.0)) as server:
        cfg = settings(server, "legacysurvey", catalog, retries=1, legacysurvey={"timeout": 0.5})
        with pytest.raises(
            RunError,
            match=r"1 of 300 objects could not be fetched yet \(no whole answer within "
            r"the timeout \(0.5 s\) \(2\)\).*--resume",
        ):
            libhyrax.download(cfg)
        failed = next(Path("results").glob("*-download-*.failed"))
        rec = record(libhyrax.Result(failed))
        assert list(rec["attempts"][5]) == [2, 2] and (rec["status"][5] == OK).all()
        assert (rec["status"][9] == FAILED).all() and rec["attrs"]["complete"] == 0
        assert rec["reason"][9, 0].decode() == "no whole answer within the timeout (0.5 s)"
        assert "no whole answer" in (failed / "download.csv").read_text()

        server.faults.hang.clear()
        asked = server.asked.copy()
        run = libhyrax.download(resume=failed)
        assert server.asked - asked == {9: 1}  # only what failed is asked again
        clean = libhyrax.download(cfg)
    assert run.path == failed.with_name(failed.name.removesuffix(".failed"))
    _assert_same_download(run, clean)


def test_a_connection_dropped_mid_tar_is_retried(sky, catalog):
    with SurveyServer(sky, Faults(drop={60: 1})) as server:  # the second request of 50 objects
        run = libhyrax.download(settings(server, "hsc", catalog))
        assert server.requests == 7
    rec = record(run)
    assert (rec["status"] == OK).all()
    assert (rec["attempts"][50:100] == 2).all() and (rec["attempts"][:50] == 1).all()
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky, range(N)))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_and_non_fits_bodies_are_rejected_with_their_reason(provider, sky, catalog):
    with SurveyServer(sky, Faults(truncate={3}, not_fits={11})) as server:
        run = libhyrax.download(settings(server, provider, catalog))
    rec = record(run)
    assert (rec["status"][[3, 11]] == REJECTED).all()
    assert rec["reason"][3, 0].decode().startswith("truncated FITS file")
    assert (
        rec["reason"][11, 0].decode() == "not a FITS file (it starts with '<html><body>Internal error: pl')"
    )
    kept = [i for i in range(N) if i not in (3, 11)]
    assert list(cutouts(run)["ids"]) == list(sky.ids[kept])
    assert run.provenance["stage_info"]["rejected"] == 2


def test_a_401_stops_at_once_with_a_message_about_credentials(sky, catalog, monkeypatch, caplog):
    monkeypatch.setenv("HSC_SSP_CAS_PASSWORD", "not-the-password")
    with SurveyServer(sky, Faults(auth=("me", PASSWORD))) as server:
        with pytest.raises(
            UsageError,
            match=r"refused the credentials \(401 Unauthorized\).*check download.hsc.user "
            r"\('me'\) and the password in HSC_SSP_CAS_PASSWORD",
        ) as e:
            libhyrax.download(settings(server, "hsc", catalog, connections=2))
        assert server.requests <= 2  # the requests already on their way, nothing after
    assert "not-the-password" not in str(e.value)
    # refused before anything was fetched: no run is kept, and --resume (which can't help) is not suggested
    assert list(Path("results").iterdir()) == []
    assert "--resume" not in caplog.text and "no results directory is kept" in caplog.text

    monkeypatch.delenv("HSC_SSP_CAS_PASSWORD")
    with pytest.raises(UsageError, match="needs an HSC-SSP account.*HSC_SSP_CAS_PASSWORD"):
        libhyrax.download(settings(server, "hsc", catalog))


def test_a_tar_with_unsafe_members_is_refused_whole_and_nothing_is_written_outside(sky, catalog, workdir):
    outside = Path("/tmp/hyrax-evil-absolute.fits")
    outside.unlink(missing_ok=True)
    with SurveyServer(sky, Faults(evil_tar=True)) as server:
        with pytest.raises(RunError, match="300 of 300 objects could not be fetched yet"):
            libhyrax.download(settings(server, "hsc", catalog, keep_fits=True))
    failed = next(Path("results").glob("*-download-*.failed"))
    rec = record(libhyrax.Result(failed))
    assert (rec["status"] == FAILED).all()
    assert rec["reason"][0, 0].decode() == (
        "the service's answer held an unsafe tar member '../evil.fits' (a path "
        "with '..'); refused, nothing written"
    )
    assert (
        not outside.exists()
        and not (workdir / "evil.fits").exists()
        and not (workdir.parent / "evil.fits").exists()
    )
    assert not any((failed / "fits").iterdir())  # not even the safe members of that answer
    with h5py.File(failed / "cutouts.h5", "r") as f:
        assert not f.attrs["complete"] and np.isnan(f["images"][:]).all()


def test_keep_fits_writes_the_files_as_received(sky, catalog):
    with SurveyServer(sky) as server:
        hsc = libhyrax.download(settings(server, "hsc", catalog), keep_fits=True)
        ls = libhyrax.download(settings(server, "legacysurvey", catalog, keep_fits=True))
        plain = libhyrax.download(settings(server, "legacysurvey", catalog))
    from libhyrax.surveys.fits_bytes import read_images

    assert len(list(hsc.file("fits").glob("*.fits"))) == 2 * N  # one per object and band (HSC's own files)
    images = read_images(hsc.file(f"fits/{sky.ids[7]}-r.fits").read_bytes())
    assert len(images) == 1 and images[0].shape == (SIZE + 2, SIZE + 2)  # as served, before the crop
    assert len(list(ls.file("fits").glob("*.fits"))) == N  # one cube per object
    assert read_images(ls.file(f"fits/{sky.ids[7]}.fits").read_bytes())[0].shape == (2, SIZE, SIZE)
    assert not plain.file("fits").exists()


def test_a_catalogue_with_duplicate_ids_or_bad_coordinates_is_refused_before_anything_is_written(
    sky, workdir
):
    with SurveyServer(sky) as server:
        for rows, message in [
            ([0, 1, 1, 2], r"1 ids appear more than once \(SYN-001\).*drop the duplicate rows"),
        ]:
            bad = sky.catalog(workdir / "dup.csv", rows)
            with pytest.raises(UsageError, match=message):  # the user's file: exit 2
                libhyrax.download(settings(server, "legacysurvey", bad))
        text = sky.catalog(workdir / "nan.csv", range(4)).read_text().replace(f"{float(sky.ra[2])!r}", "nan")
        (workdir / "nan.csv").write_text(text)
        with pytest.raises(UsageError, match=r"1 rows have a missing or non-finite ra/dec \(ids SYN-002\)"):
            libhyrax.download(settings(server, "legacysurvey", workdir / "nan.csv"))
        with pytest.raises(UsageError, match=r"no column 'rra'; did you mean ra\?.*set download.ra_column"):
            libhyrax.download(settings(server, "legacysurvey", workdir / "dup.csv", ra_column="rra"))
        with pytest.raises(UsageError, match="download.catalog is not set"):
            libhyrax.download({"general": {"results_dir": "results"}})
    assert not Path("results").exists() or not any(Path("results").iterdir())


def test_provider_settings_are_checked(sky, catalog):
    def cfg(url, **kw):
        return {
            "download": {
                "provider": "url_template",
                "catalog": str(catalog),
                "url_template": {"url": url},
                **kw,
            }
        }

    with pytest.raises(ConfigError, match=r"unknown field \{rah\}; the template can use \{ra\}"):
        libhyrax.download(cfg("http://127.0.0.1:1/c?ra={rah}&dec={dec}&band={band}"))
    with pytest.raises(ConfigError, match=r"no \{band\} field, but download.bands asks for 3 bands"):
        libhyrax.download(cfg("http://127.0.0.1:1/c?ra={ra}&dec={dec}"))
    with pytest.raises(ConfigError, match=r"download.url_template.url must be an http\(s\) URL"):
        libhyrax.download(cfg(False))
    with pytest.raises(ConfigError, match=r"unknown download.provider 'hcs'; did you mean hsc\?"):
        libhyrax.download({"download": {"provider": "hcs", "catalog": str(catalog)}})
    with pytest.raises(UsageError, match="bearer_env names HYRAX_NO_SUCH_TOKEN, which is not set"):
        libhyrax.download(
            cfg(
                "http://127.0.0.1:1/c?ra={ra}&dec={dec}&band={band}",
                url_template={
                    "url": "http://127.0.0.1:1/c?ra={ra}&dec={dec}&band={band}",
                    "bearer_env": "HYRAX_NO_SUCH_TOKEN",
                },
            )
        )


def _assert_same_download(run, clean) -> None:
    """Two runs of one catalogue wrote the same cutouts and the same outcomes."""
    a, b = cutouts(run), cutouts(clean)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ra, rb = record(run), record(clean)
    for key in ("object_id", "row", "status"):
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def test_the_provider_docstring_example_is_a_working_provider(sky, catalog):
    """The extension point's example, as written, downloads (a user class, settings in [download.kwargs])."""
    import libhyrax.surveys.base as base

    example = base.__doc__.split("\n\n`self.settings`")[0].split("\n\n", 1)[1]  # the indented code
    namespace = {"__name__": "provider_example"}
    exec(compile("\n".join(line[4:] for line in example.splitlines()), "provider_example", "exec"), namespace)
    with SurveyServer(sky, Faults(outside={2})) as server:
        cfg = settings(server, "url_template", catalog)
        cfg["download"] |= {
            "provider": "myarchive",
            "kwargs": {"url": server.url("url_template").split("?")[0]},
        }
        run = libhyrax.download(cfg)
    kept = [i for i in range(N) if i != 2]
    np.testing.assert_array_equal(cutouts(run)["images"], served(sky, kept))
    assert cutouts(run)["pixel_scale"] == 0.2 and record(run)["reason"][2, 0].decode() == "404 Not Found"
