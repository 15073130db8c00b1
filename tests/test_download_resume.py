"""hyrax download under interruption and in pieces: kill -9 then --resume equals an uninterrupted run;
Ctrl-C keeps what was fetched; a resumed object that turns out missing is compacted away; shards read as
one; no secret reaches the results tree or the output; the command line chains into train and infer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from survey_servers import (  # noqa: F401  (fixtures)
    SIZE,
    Faults,
    N,
    SurveyServer,
    catalog_fixture,
    center,
    sky_fixture,
)
from test_download import _assert_same_download, cutouts, record, settings

import libhyrax
from libhyrax.errors import RunError
from libhyrax.surveys.store import FAILED, MISSING, OK


def toml(cfg: dict, path: Path) -> Path:
    import tomlkit

    path.write_text(tomlkit.dumps(cfg))
    return path


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(sky, catalog, workdir):
    with SurveyServer(sky, Faults(latency=0.01)) as server:
        cfg = settings(server, "legacysurvey", catalog, connections=2)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hyrax_cli", "download", "-c", str(toml(cfg, workdir / "c.toml"))],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while server.requests < 200 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        partial = next(workdir.glob("results/*-download-*.partial"))
        with h5py.File(partial / "download.h5", "r") as f:
            committed = int(f.attrs["committed"])
        assert 0 < committed < N  # it stopped part-way, with a prefix of the catalogue written

        asked = server.asked.copy()
        resumed = subprocess.run(
            [sys.executable, "-m", "hyrax_cli", "download", "--resume", str(partial)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
        again = server.asked - asked
        assert min(again) == committed and max(again.values()) == 1  # nothing written before is fetched again
        clean = libhyrax.download(cfg)
    run = libhyrax.Result(workdir / resumed.stdout.strip())
    assert run.path == partial.with_name(partial.name.removesuffix(".partial"))
    _assert_same_download(run, clean)
    assert len(run.provenance["resumed"]) == 1
    requests = record(run)["request"]
    assert len(np.unique(requests)) == N  # one request per object, numbered on across the resume


def test_ctrl_c_keeps_what_was_fetched_and_resume_finishes(sky, catalog, monkeypatch):
    from libhyrax.surveys.store import Store

    add, seen = Store.add, []

    def interrupted_add(self, answer, outcomes):
        seen.append(answer.number)
        if len(seen) == 150:
            raise KeyboardInterrupt
        return add(self, answer, outcomes)

    with SurveyServer(sky) as server:
        cfg = settings(server, "legacysurvey", catalog)
        monkeypatch.setattr(Store, "add", interrupted_add)
        with pytest.raises(KeyboardInterrupt):
            libhyrax.download(cfg)
        monkeypatch.setattr(Store, "add", add)
        failed = next(Path("results").glob("*-download-*.failed"))
        assert libhyrax.Result(failed).provenance["status"] == "interrupted"
        assert record(libhyrax.Result(failed))["attrs"]["committed"] == 149  # everything complete was written
        assert not (failed / "download.csv").exists()  # no time spent on it when interrupted
        run = libhyrax.download(resume=failed)
        _assert_same_download(run, libhyrax.download(cfg))


def test_a_failed_object_keeps_its_row_and_a_resumed_one_that_turns_out_missing_is_compacted_away(
    sky, catalog
):
    with SurveyServer(sky, Faults(fail={7: 100, 200: 100})) as server:
        cfg = settings(server, "url_template", catalog, retries=0)
        with pytest.raises(RunError, match="2 of 300 objects could not be fetched yet"):
            libhyrax.download(cfg)
        failed = next(Path("results").glob("*-download-*.failed"))
        with h5py.File(failed / "cutouts.h5", "r") as f:
            assert f["images"].shape[0] == N and np.isnan(f["images"][7]).all()  # a row kept for it, NaN
            np.testing.assert_array_equal(f["images"][8], center(sky.images[8], SIZE))

        server.faults.fail.clear()
        server.faults.outside = {7}  # object 7 now turns out to be off the footprint; 200 comes
        run = libhyrax.download(resume=failed)
        clean = libhyrax.download(cfg)
    _assert_same_download(run, clean)
    rec = record(run)
    assert rec["status"][7, 0] == MISSING and (rec["status"][200] == OK).all() and rec["row"][200] == 199
    assert list(cutouts(run)["ids"]) == [s for i, s in enumerate(sky.ids) if i != 7]


def test_shards_write_one_directory_read_as_one_cutout_file(sky, catalog):
    with SurveyServer(sky, Faults(outside={10})) as server:
        cfg = settings(server, "hsc", catalog)
        first = libhyrax.download(cfg, shard="0/2", run_name="survey")
        assert not first.file("cutouts.h5").exists()  # not every shard is there yet
        second = libhyrax.download(cfg, shard="1/2", run_name="survey")
        whole = libhyrax.download(cfg)
    assert first.path == second.path
    assert sorted(p.name for p in first.path.glob("download.shard-*") if p.suffix != ".log") == [
        "download.shard-0000-of-0002.csv",
        "download.shard-0000-of-0002.h5",
        "download.shard-0001-of-0002.csv",
        "download.shard-0001-of-0002.h5",
    ]
    _assert_same_download_cutouts(second, whole)
    from libhyrax.data import HyraxHDF5Dataset

    data = HyraxHDF5Dataset(data_location=second.file("cutouts.h5"))
    assert len(data) == N - 1 and "ra" in data.catalog_columns()


def test_no_secret_reaches_the_results_or_the_output(sky, workdir, hyrax):
    secret, token = "pw-3c9f1e7a-never-written", "tok-b82d4aa1-never-written"
    catalog = sky.catalog(workdir / "objects.csv", range(60))
    env = {"HSC_SSP_CAS_PASSWORD": secret, "ARCHIVE_TOKEN": token}
    outputs = []
    with SurveyServer(sky, Faults(auth=("me", secret), fail={3: 1})) as server:
        hsc = settings(server, "hsc", catalog)
        ok = hyrax("download", "-c", str(toml(hsc, workdir / "hsc.toml")), "--debug", cwd=workdir, env=env)
        assert ok.returncode == 0, ok.stderr
        refused = hyrax(
            "download",
            "-c",
            str(workdir / "hsc.toml"),
            cwd=workdir,
            env={**env, "HSC_SSP_CAS_PASSWORD": "wrong-" + secret},
        )
        assert refused.returncode == 2 and "refused the credentials (401 Unauthorized)" in refused.stderr
        server.faults.auth = None
        url = settings(server, "url_template", catalog, url_template={"bearer_env": "ARCHIVE_TOKEN"})
        with_token = hyrax(
            "download", "-c", str(toml(url, workdir / "url.toml")), "--debug", cwd=workdir, env=env
        )
        assert with_token.returncode == 0, with_token.stderr
        assert f"Bearer {token}" in server.authorization  # it was sent, and only there
        outputs += [ok, refused, with_token]
    for proc in outputs:
        assert secret not in proc.stdout + proc.stderr and token not in proc.stdout + proc.stderr
    files = [p for p in (workdir / "results").rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data and token.encode() not in data, path


def readme_survey(server: SurveyServer, catalog: Path) -> tuple[dict, str]:
    """The README's "Your own survey" config, pointed at the loopback server, and its first command."""
    import re

    import tomlkit

    text = (
        (Path(__file__).parent.parent / "README.md")
        .read_text()
        .split("## Your own survey")[1]
        .split("\n## ")[0]
    )
    cfg = tomlkit.parse(re.search(r"```toml\n(.*?)```", text, re.S)[1]).unwrap()
    command = re.search(r"```sh\n(.*?)```", text, re.S)[1].splitlines()[0]
    cfg["download"] |= {
        "catalog": str(catalog),
        "bands": ["g", "r"],
        "size": SIZE,
    }  # what the loopback sky has
    cfg["download"]["hsc"]["url"] = server.url("hsc")
    return cfg, command


def test_the_readme_survey_config_downloads(sky, catalog):
    with SurveyServer(sky) as server:
        cfg, command = readme_survey(server, catalog)
        run = libhyrax.download(cfg)
    assert command == "hyrax download -c survey.toml | hyrax train | hyrax infer"
    assert cfg["download"]["provider"] == "hsc" and cfg["download"]["hsc"]["user"] == "alice"
    assert list(cutouts(run)["ids"]) == list(sky.ids)


@pytest.mark.slow
def test_the_readme_survey_command_chains_download_train_and_infer(sky, catalog, workdir):
    with SurveyServer(sky) as server:
        cfg, command = readme_survey(server, catalog)
        toml(cfg, workdir / "survey.toml")
        toml(
            {
                "general": {"device": "cpu"},
                "train": {"epochs": 1},
                "data_loader": {"batch_size": 64},  # quick
                "model": {"HyraxAutoencoder": {"base_channel_size": 8}},
            },
            workdir / "hyrax_config.toml",
        )
        proc = subprocess.run(
            command,
            shell=True,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=600,
            executable="/bin/bash",
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
    assert proc.returncode == 0, proc.stderr
    infer = libhyrax.Result(workdir / proc.stdout.strip())
    assert infer.find("download") is not None and infer.find("train") is not None
    with h5py.File(infer.file("latents.h5"), "r") as f:  # the downloaded objects, not the built-in sample
        assert list(f["object_id"][:].astype(str)) == list(sky.ids)


def _assert_same_download_cutouts(run, clean) -> None:
    a, b = cutouts(run), cutouts(clean)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_status_names_are_in_the_record(sky, catalog):
    with SurveyServer(sky, Faults(outside={1})) as server:
        run = libhyrax.download(settings(server, "legacysurvey", catalog))
    with h5py.File(run.file("download.h5"), "r") as f:
        names = h5py.check_enum_dtype(f["status"].dtype)
    assert names == {"pending": 0, "ok": OK, "missing": MISSING, "rejected": 3, "failed": FAILED}
