"""The parts of hyrax download on their own: the FITS reader against astropy, the tar checks, credentials
files, and the reference Hyrax's [download] keys migrated."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from survey_servers import write_image

from libhyrax.errors import UsageError
from libhyrax.surveys.base import Failed, Fetched, Missing, Rejected, Request, file_credentials
from libhyrax.surveys.fits_bytes import BadFits, read_images
from libhyrax.surveys.hsc import HSC, unsafe_member


def fits_bytes(hdus) -> bytes:
    from astropy.io import fits

    out = io.BytesIO()
    fits.HDUList(hdus).writeto(out)
    return out.getvalue()


def test_fits_reader_agrees_with_astropy():
    from astropy.io import fits

    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 24)).astype(np.float32)
    scaled = fits.ImageHDU((image * 100).astype(np.int16))
    scaled.header.update({"BSCALE": 0.01, "BZERO": 3.0, "BLANK": -32768})
    scaled.data[0, 0] = -32768
    data = fits_bytes([fits.PrimaryHDU(), fits.ImageHDU(image), scaled, fits.ImageHDU(image.astype(">f8"))])
    plain, ints, doubles = read_images(data)
    with fits.open(io.BytesIO(data)) as hdul:
        np.testing.assert_array_equal(plain, hdul[1].data)
        np.testing.assert_allclose(ints[0, 1:], hdul[2].data[0, 1:], rtol=1e-6)
        np.testing.assert_array_equal(doubles, image)
    assert np.isnan(ints[0, 0])  # BLANK
    assert len(read_images(data, first_only=True)) == 1
    cube = rng.normal(size=(3, 8, 8)).astype(np.float32)  # our writer, read by astropy
    with fits.open(io.BytesIO(write_image(cube, {"CRVAL1": 150.0, "CTYPE1": "RA---TAN"}))) as hdul:
        np.testing.assert_array_equal(hdul[0].data, cube)
        assert hdul[0].header["CTYPE1"] == "RA---TAN"
    counts = (image * 1000).astype(np.int32)  # tile-compressed integers: lossless
    compressed = fits_bytes([fits.PrimaryHDU(), fits.CompImageHDU(counts)])
    np.testing.assert_array_equal(
        read_images(compressed)[0], counts
    )  # astropy reads what the fast path doesn't


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "an empty answer, not a FITS file"),
        (b"<html>Service Unavailable</html>", "not a FITS file (it starts with '<html>Service Unavailable"),
        (write_image(np.ones((30, 30)))[:-3000], "truncated FITS file: the data needs"),
        (write_image(np.ones((30, 30)))[:1000], "truncated FITS file: a header ends before its END card"),
        (write_image(np.ones((30, 30)))[: 2880 * 2], "truncated FITS file"),
        (
            b"SIMPLE  =                    T".ljust(2880),
            "truncated FITS file: a header ends before its END card",
        ),
        (b"SIMPLE  =                    T".ljust(2880 * 101), "FITS header without an END card"),
    ],
)
def test_a_body_that_is_not_a_whole_fits_image_is_bad_fits_saying_why(body, message):
    with pytest.raises(BadFits) as e:
        read_images(body)
    assert str(e.value).startswith(message)


def test_tar_members_that_could_write_outside_are_unsafe():
    def member(name, kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.type = kind
        return info

    assert unsafe_member(member("arch-1-2/2-cutout-HSC-G-9813-pdr3_wide.fits")) is None
    assert unsafe_member(member("arch-1-2", tarfile.DIRTYPE)) is None
    assert unsafe_member(member("/etc/passwd")) == "an absolute path"
    assert unsafe_member(member("C:\\evil.fits")) == "an absolute path"
    assert unsafe_member(member("arch/../../evil.fits")) == "a path with '..'"
    assert unsafe_member(member("arch-1/2-cutout.fits", tarfile.SYMTYPE)) == "a link"
    assert unsafe_member(member("arch-1/2-cutout.fits", tarfile.LNKTYPE)) == "a link"
    assert unsafe_member(member("arch-1/dev", tarfile.CHRTYPE)) == "a device"
    assert unsafe_member(member("arch-1/fifo", tarfile.FIFOTYPE)) == "a device"


def test_an_hsc_answer_that_ends_early_fails_what_it_did_not_deliver():
    hsc = HSC({"url": "http://127.0.0.1:1/cutout", "rerun": "pdr3_wide", "type": "coadd"}, ["g"], 8)
    cells = [(0, 0), (1, 0), (2, 0), (3, 0)]
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for line, n in ((2, 10), (3, 10), (5, 10)):  # line 4 (cell 2) missing: outside the footprint
            data = write_image(np.full((n, n), line, np.float32))
            info = tarfile.TarInfo(f"arch-0-0/{line}-cutout-HSC-G-9813-pdr3_wide.fits")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    whole = tar.getvalue()
    request = Request(cells, "POST", hsc.url, info=cells)
    out = hsc.read(request, whole)
    assert isinstance(out[(0, 0)], Fetched) and out[(0, 0)].image[0, 0] == 2 and out[(1, 0)].image[0, 0] == 3
    assert isinstance(out[(2, 0)], Missing) and isinstance(out[(3, 0)], Fetched)
    cut = hsc.read(request, whole[: 512 + 5760 + 512 + 3000])  # in the second member's data
    assert isinstance(cut[(0, 0)], Fetched)
    assert all(isinstance(cut[c], Failed) and "ended early" in cut[c].reason for c in cells[1:])
    garbage = hsc.read(request, b"<html>oops</html>" * 100)
    assert all(isinstance(o, Failed) and "is not a tar file" in o.reason for o in garbage.values())


def test_hsc_cutouts_too_small_or_empty_are_rejected():
    from libhyrax.surveys.base import checked

    assert isinstance(checked(Fetched(np.ones((10, 12))), 8), Fetched)
    assert checked(Fetched(np.ones((7, 12))), 8) == Rejected("a 7x12 cutout, smaller than download.size (8)")
    assert checked(Fetched(np.full((8, 8), np.nan)), 8) == Rejected("every pixel is NaN or inf")
    got = checked(Fetched(np.arange(100, dtype=np.float32).reshape(10, 10)), 4)
    np.testing.assert_array_equal(got.image, np.arange(100).reshape(10, 10)[3:7, 3:7])


def test_credentials_files_netrc_or_the_reference_style(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine hsc-release.mtk.nao.ac.jp login alice password pw1\ndefault login bob password pw2\n"
    )
    assert file_credentials(netrc, "hsc-release.mtk.nao.ac.jp") == ("alice", "pw1")
    assert file_credentials(netrc, "elsewhere.org") == ("bob", "pw2")
    ini = tmp_path / "credentials.ini"
    ini.write_text("username = carol\npassword = 'pw3'\n")
    assert file_credentials(ini, "any") == ("carol", "pw3")
    with pytest.raises(UsageError, match="download.netrc_file .*nothing does not exist"):
        file_credentials(tmp_path / "nothing", "host")


def test_the_reference_download_keys_migrate_and_the_password_goes_nowhere(tmp_path, caplog):
    from libhyrax.config import dump_config, load_config

    ref = tmp_path / "ref.toml"
    ref.write_text(
        'config_version = 7\n[download]\nsw = "22asec"\nsh = "22asec"\n'
        'filter = ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y", "NB0921"]\ntype = "coadd"\n'
        'rerun = "pdr3_dud"\ncredentials_file = "./credentials.ini"\nusername = "alice"\n'
        'password = "hunter2-in-a-file"\nnum_sources = -1\nconcurrent_connections = 2\n'
        'stats_print_interval = 60\nfits_file = "./catalog.fits"\nretry_wait = 30\nretries = 3\n'
        "timeout = 3600\nchunk_size = 500\nimage = true\nvariance = false\nmask = false\n"
    )
    with caplog.at_level("INFO", logger="hyrax"):
        d = load_config(ref)["download"]
    assert d["provider"] == "hsc" and d["catalog"] == "./catalog.fits" and d["size"] == 262
    assert (
        d["bands"] == ["g", "r", "i", "z", "y", "NB0921"] and d["connections"] == 2 and d["retry_wait"] == 30
    )
    assert d["netrc_file"] == "./credentials.ini"
    assert (
        d["hsc"]
        | {"user": "alice", "rerun": "pdr3_dud", "type": "coadd", "lines_per_request": 500, "timeout": 3600}
        == d["hsc"]
    )
    assert "hunter2" not in str(load_config(ref)) and "hunter2" not in dump_config(load_config(ref))
    assert "hunter2" not in caplog.text and "put it in HSC_SSP_CAS_PASSWORD" in caplog.text
    assert "download.num_sources" in caplog.text  # the keys with no use here are named when dropped
