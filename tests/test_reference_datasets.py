"""The reference Hyrax's built-in data sets and HSC models by their names: each passes check_dataset (or
check_model), trains and infers end to end; CIFAR-10 from a small archive in the binary format (read from a
copy, or fetched once from a loopback server and checked), an HSC download folder read in place, LSST
cutouts fetched once from a loopback SODA service; a reference config naming each runs."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from survey_servers import Faults, Sky, SurveyServer, center
from test_infer import read_latents

import libhyrax
from libhyrax.config import resolve
from libhyrax.data import check_dataset, open_group
from libhyrax.data.cifar import RECORD
from libhyrax.errors import ConfigError, DataError

BASE = {"general": {"results_dir": "results", "device": "cpu", "mlflow_tracking_uri": False},
        "train": {"epochs": 1}, "data_loader": {"batch_size": 16}, "data_set": {"transform": "none"}}


def config(*parts: dict) -> dict:
    """BASE with `parts` merged in, table by table."""
    return merge(BASE, *parts)


def merge(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
                else value
    return out


def request(**datasets) -> dict:
    """The same datasets for train and infer, the first the primary one."""
    first = next(iter(datasets))
    datasets[first] = {"primary_id_field": "object_id", **datasets[first]}
    return {"train": datasets, "infer": datasets}


def train_and_infer(cfg: dict, n: int, export: bool = False) -> dict:
    """Train, infer (and export, checking the ONNX graph against torch): the latents."""
    run = libhyrax.train(cfg)
    latents = read_latents(libhyrax.infer(cfg, from_run=run).path)
    assert len(latents["object_id"]) == n and np.isfinite(latents["latent"]).all()
    if export:
        info = libhyrax.export(cfg, from_run=run).provenance["stage_info"]
        assert info["checked_objects"] > 0 and max(info["max_abs_diff"].values()) <= info["tolerance"]
    return latents


def test_the_reference_names_are_known():
    from libhyrax.models import model_class

    with pytest.raises(ConfigError) as e:
        libhyrax.data.dataset_class("NoSuchDataset")
    for name in (
        "HSCDataset",
        "HyraxCSVDataset",
        "HyraxCifarDataset",
        "LSSTDataset",
        "DownloadedLSSTDataset",
    ):
        assert name in str(e.value)
    with pytest.raises(ConfigError) as e:
        model_class("NoSuchModel")
    assert "HSCAutoencoder" in str(e.value) and "HSCDCAE" in str(e.value)


# --- HyraxCSVDataset ---------------------------------------------------------------------------------


def test_csv_columns_are_fields_joined_onto_images_for_training(workdir):
    from libhyrax.data import HyraxCSVDataset

    ids = [f"rand-{i:02d}" for i in range(40)]
    rows = ["object_id,g-r,label"] + [f"{oid},{i / 10},{(i * 7) % 3}" for i, oid in enumerate(reversed(ids))]
    Path("table.csv").write_text("\n".join(rows) + "\n")
    assert "40 objects, fields object_id, g_r, label: ok" in check_dataset(
        HyraxCSVDataset, data_location="table.csv"
    )
    cfg = config(
        {
            "model": {"name": "HyraxCNN", "HyraxCNN": {"output_classes": 3}},
            "data_request": request(
                images={
                    "dataset_class": "HyraxRandomDataset",
                    "fields": ["image", "object_id"],
                    "dataset_config": {"size": 40, "shape": [2, 12, 12]},
                },
                table={
                    "dataset_class": "HyraxCSVDataset",
                    "data_location": "table.csv",
                    "fields": ["label"],
                    "join_field": "object_id",
                },
            ),
        }
    )
    batch = open_group(resolve(cfg), "train").read(0, 40)
    assert (batch["label"] == [((39 - i) * 7) % 3 for i in range(40)]).all()  # joined by id, not by row
    assert list(train_and_infer(cfg, 40)["object_id"]) == ids


def test_csv_without_an_id_column_numbers_its_rows(workdir):
    from libhyrax.data import HyraxCSVDataset

    Path("t.csv").write_text("a,b\n1,x\n2,y\n")
    ds = HyraxCSVDataset({}, "t.csv")
    assert ds.column("object_id").tolist() == ["0", "1"] and ds.fields == ["a", "b", "object_id"]


# --- HyraxCifarDataset ----------------------------------------------------------------------------------


def cifar_archive(path: Path, per_batch: int = 8, evil: bool = False) -> tuple[Path, np.ndarray]:
    """A small archive in CIFAR-10's binary format: five training batches and a test batch of records
    (label byte + 3,072 pixel bytes). Returns it and the training records."""
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, size=(6 * per_batch, RECORD), dtype=np.uint8)
    records[:, 0] %= 10
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for k, name in enumerate(names):
            data = records[k * per_batch : (k + 1) * per_batch].tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        if evil:
            info = tarfile.TarInfo("../cifar-10-batches-bin/evil.bin")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    path.write_bytes(buf.getvalue())
    return path, records[: 5 * per_batch]


def cifar_config(folder: Path, archive: Path, url: str = "http://127.0.0.1:9/none") -> dict:
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    return {"data_set": {"HyraxCifarDataset": {"url": url, "md5": md5}}, "general": {"data_dir": str(folder)}}


def test_cifar_reads_a_users_copy_of_the_binary_archive(workdir):
    from libhyrax.data import HyraxCifarDataset

    Path("data").mkdir()
    archive, records = cifar_archive(Path("data/cifar-10-binary.tar.gz"), evil=True)
    cfg = resolve(cifar_config(Path("data"), archive))
    assert "40 objects, fields image, index, label, object_id: ok" in check_dataset(HyraxCifarDataset, cfg)
    ds = HyraxCifarDataset(cfg)
    pixels = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32)
    np.testing.assert_allclose(ds.get_image_batch(5, 13), (pixels[5:13] / 255 - 0.5) / 0.5, rtol=1e-6)
    assert ds.get_label_batch(0, 40).tolist() == records[:, 0].tolist() and ds.get_object_id(7) == "000007"
    blob = pickle.dumps(ds)  # what a DataLoader worker gets: the file names, not the pixels
    assert len(blob) < 10_000 and np.array_equal(pickle.loads(blob).get_image(39), ds.get_image(39))
    assert sorted(p.name for p in Path("data/cifar-10-batches-bin").iterdir()) == [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]  # the batch files only: not the meta file, not the ../ member
    assert not Path("data/evil.bin").exists() and not Path("evil.bin").exists()
    test = HyraxCifarDataset(
        resolve(
            merge(
                cifar_config(Path("data"), archive),
                {"data_set": {"HyraxCifarDataset": {"use_training_data": False}}},
            )
        )
    )
    assert len(test) == 8


class _Files(SimpleHTTPRequestHandler):
    served = 0

    def do_GET(self):
        type(self).served += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Files,), {"served": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_cifar_is_fetched_once_checked_and_trains(workdir, file_server):
    root, url, handler = file_server
    archive, records = cifar_archive(root / "cifar-10-binary.tar.gz")
    cfg = config(
        cifar_config(Path("data"), archive, f"{url}/cifar-10-binary.tar.gz"),
        {
            "model": {"name": "HyraxCNN"},
            "data_request": request(
                cifar={"dataset_class": "HyraxCifarDataset", "fields": ["image", "label", "object_id"]}
            ),
        },
    )
    train_and_infer(cfg, 40)
    assert handler.served == 1  # fetched once, for train; infer read the unpacked batches
    assert Path("data/cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()

    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")  # the service now sends a corrupt file
    with pytest.raises(DataError, match="does not match the published checksum .* it was deleted"):
        check_dataset(
            libhyrax.data.HyraxCifarDataset,
            resolve(
                merge(
                    cifar_config(Path("other"), archive),
                    {
                        "data_set": {
                            "HyraxCifarDataset": {
                                "url": f"{url}/cifar-10-binary.tar.gz",
                                "md5": hashlib.md5(b"the real one").hexdigest(),
                            }
                        }
                    },
                )
            ),
        )
    assert not any(Path("other").iterdir())  # nothing kept


def test_cifar_that_cant_be_fetched_says_where_to_put_a_copy(workdir, file_server):
    _, url, _ = file_server
    cfg = resolve(
        {"data_set": {"HyraxCifarDataset": {"url": f"{url}/missing.tar.gz"}}, "general": {"data_dir": "d"}}
    )
    with pytest.raises(
        DataError, match=r"failed \(404 File not found\); put a copy of cifar-10-binary.tar.gz in d"
    ):
        libhyrax.data.HyraxCifarDataset(cfg)


# --- HSCDataset ---------------------------------------------------------------------------------------------


def hsc_folder(folder: Path, n: int = 24, size: int = 20, manifest: bool = True) -> np.ndarray:
    """A reference HSC download: <17-digit id>_coadd_<ra>_<dec>_<tract>_<band>.fits files (an empty primary
    HDU, then the image) and, optionally, manifest.fits. Object 3's HSC-R download failed."""
    from astropy.io import fits
    from astropy.table import Table

    folder.mkdir(parents=True)
    images = np.random.default_rng(1).normal(size=(n, 3, size, size)).astype(np.float32)
    rows = []
    for i in range(n):
        oid = 41000000000000000 + i
        for b, band in enumerate(("HSC-G", "HSC-R", "HSC-I")):
            name = f"{oid}_coadd_150.{i:05d}_+2.00000_9813_{band}.fits"
            if i == 3 and band == "HSC-R":
                rows.append((oid, band, "Attempted", 150 + i / 1e5))
                continue
            fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(images[i, b])]).writeto(folder / name)
            rows.append((oid, band, name, 150 + i / 1e5))
    if manifest:
        Table(rows=rows, names=["object_id", "filter", "filename", "ra"]).write(folder / "manifest.fits")
    return images


def test_hsc_dataset_reads_a_reference_download_in_place_and_trains_hsc_models(workdir):
    from libhyrax.data import HSCDataset

    images = hsc_folder(Path("data"))
    cfg = resolve({"general": {"data_dir": "data"}})
    assert "23 objects" in check_dataset(HSCDataset, cfg)  # data_location: general.data_dir by default
    ds = HSCDataset(cfg)
    kept = [i for i in range(24) if i != 3]
    np.testing.assert_array_equal(ds.column("image"), images[kept])
    assert ds.column("object_id")[:4].tolist() == [str(41000000000000000 + i) for i in (0, 1, 2, 4)]
    np.testing.assert_allclose(ds.column("ra"), 150 + np.array(kept) / 1e5)
    for model in ("HSCAutoencoder", "HSCDCAE"):
        run_cfg = config(
            {
                "model": {"name": model, model: {"base_channel_size": 4}},
                "data_request": request(
                    hsc={
                        "dataset_class": "HSCDataset",
                        "data_location": "data",
                        "fields": ["image", "object_id"],
                    }
                ),
            }
        )
        latents = train_and_infer(run_cfg, 23, export=True)
        assert latents["latent"].shape == (23, 16 if model == "HSCAutoencoder" else 32)
        assert (latents["recon_error"] > 0).all()


def test_hsc_dataset_without_a_manifest_finds_the_files_by_name(workdir):
    from libhyrax.data import HSCDataset

    images = hsc_folder(Path("bare"), n=6, manifest=False)
    ds = HSCDataset({}, "bare")
    assert ds.bands == ["HSC-G", "HSC-R", "HSC-I"] and len(ds) == 5  # object 3 lacks HSC-R
    np.testing.assert_array_equal(ds.column("image"), images[[0, 1, 2, 4, 5]])


# --- LSSTDataset / DownloadedLSSTDataset --------------------------------------------------------------------

TOKEN = "loopback-rsp-token"


@pytest.fixture
def rubin(tmp_path, workdir, monkeypatch):
    """A loopback Rubin cutout service (SODA + SIA) over 40 objects, and an LSST-style catalogue of them."""
    from astropy.table import Table

    monkeypatch.setenv("ACCESS_TOKEN", TOKEN)
    sky = Sky.synthetic(tmp_path, n=40, bands=("g", "r", "i"), size=18)
    Table({"objectId": sky.ids, "coord_ra": sky.ra, "coord_dec": sky.dec}).write("objects.fits")
    with SurveyServer(sky, Faults(outside={5}, bearer=TOKEN, fail={9: 1})) as server:
        yield sky, server


def rubin_service(server) -> dict:
    return {"rubin": {"url": server.url("soda"), "sia_url": server.url("sia")}, "retry_wait": 0.01}


@pytest.mark.parametrize("cls", ["LSSTDataset", "DownloadedLSSTDataset"])
def test_lsst_datasets_fetch_once_from_the_cutout_service_and_train(rubin, cls):
    sky, server = rubin
    table = {"catalog": "objects.fits", "bands": ["g", "r"], "size": 16}
    location = {"data_location": "lsst"} if cls == "DownloadedLSSTDataset" else {}
    cfg = config(
        {
            "download": rubin_service(server),
            "general": {"data_dir": "data"},
            "data_set": {cls: table},
            "model": {
                "name": "HyraxAutoencoder",
                "HyraxAutoencoder": {"base_channel_size": 4, "latent_dim": 8},
            },
            "data_request": request(
                lsst={"dataset_class": cls, **location, "fields": ["image", "object_id"]}
            ),
        }
    )
    assert "39 objects" in check_dataset(
        libhyrax.data.dataset_class(cls), resolve(cfg), location.get("data_location")
    )
    asked = server.requests
    latents = train_and_infer(cfg, 39)  # object 5 is off the footprint; object 9's 500 was retried
    assert server.requests == asked  # fetched once: train and infer read the folder
    kept = [i for i in range(40) if i != 5]
    assert list(latents["object_id"]) == list(sky.ids[kept])
    folder = Path("lsst") if location else next(Path("data").glob("lsst-*"))
    ds = libhyrax.data.HyraxHDF5Dataset({}, folder / "cutouts.h5")
    np.testing.assert_array_equal(ds.column("image"), center(sky.images[kept][:, :2], 16))
    assert "no image covers it in band g" in (folder / "download.csv").read_text()
    assert not any(TOKEN.encode() in p.read_bytes() for p in Path(".").rglob("*") if p.is_file())


def test_a_reference_lsst_config_downloads_what_it_meant(rubin, tmp_path):
    """A reference config (config_version 7) naming DownloadedLSSTDataset with the Butler's settings: the
    migration points it at the cutout service, `hyrax download` fetches the same cutouts as the data set."""
    sky, server = rubin
    reference = {
        "config_version": 7,
        "general": {"data_dir": "./data", "results_dir": "./results"},
        "model": {"name": "HSCDCAE", "HSCDCAE_final_layer": "tanh"},
        "data_set": {
            "astropy_table": "objects.fits",
            "filters": ["g", "r"],
            "semi_width_deg": 0.00044,
            "semi_height_deg": 0.00044,
            "butler_repo": "/repo/dp1",
            "butler_collection": "LSSTComCam/DP1",
            "skymap": "lsst_cells_v1",
            "object_id_column_name": "objectId",
            "transform": "tanh",
        },
        "data_request": {
            "train": {
                "data": {
                    "dataset_class": "DownloadedLSSTDataset",
                    "data_location": "./lsst",
                    "fields": ["image", "object_id"],
                    "primary_id_field": "object_id",
                }
            }
        },
        "train": {"epochs": 1},
        "data_loader": {"batch_size": 16},
    }
    with pytest.raises(ConfigError, match="HATS catalogues are not read here; write the objects"):
        resolve(merge(reference, {"data_set": {"hats_catalog": "dp1_objects.hats"}}))
    cfg = resolve(
        reference,
        overrides=[
            f"download.rubin.url={server.url('soda')}",
            f"download.rubin.sia_url={server.url('sia')}",
            "download.retry_wait=0.01",
            "model.HSCDCAE.base_channel_size=2",
            "general.mlflow_tracking_uri=false",
        ],
    )
    assert cfg["download"]["provider"] == "rubin" and cfg["download"]["size"] == 16  # 2 x 1.584" / 0.2"
    assert cfg["data_set"]["DownloadedLSSTDataset"]["bands"] == ["g", "r"]
    assert cfg["model"]["HSCDCAE"]["final_layer"] == "tanh"
    fetched = libhyrax.download(cfg)
    run = libhyrax.train(cfg)
    assert read_latents(libhyrax.infer(cfg, from_run=run).path)["latent"].shape == (39, 16)
    a = libhyrax.data.HyraxHDF5Dataset({}, fetched.file("cutouts.h5"))
    b = libhyrax.data.HyraxHDF5Dataset({}, "lsst/cutouts.h5")
    np.testing.assert_array_equal(a.column("image"), b.column("image"))


# --- reference configs naming each class --------------------------------------------------------------------

REFERENCE_HSC = """
config_version = 7
[general]
data_dir = "./data"
results_dir = "./results"
[model]
name = "HSCDCAE"
HSCDCAE_final_layer = "arcsinh"
[data_set]
filters = ["HSC-G", "HSC-I"]
crop_to = [16, 16]
transform = "tanh"
[data_request.train.data]
dataset_class = "HSCDataSet"
data_location = "./data"
fields = ["image", "object_id"]
primary_id_field = "object_id"
[train]
epochs = 1
[data_loader]
batch_size = 8
"""

REFERENCE_CIFAR = """
config_version = 7
[general]
data_dir = "./data"
[model]
name = "HyraxCNN"
[model.HyraxCNN]
output_classes = 10
[data_set.HyraxCifarDataset]
use_training_data = true
[data_request.train.data]
dataset_class = "HyraxCifarDataset"
data_location = "./data"
fields = ["image", "label", "object_id"]
primary_id_field = "object_id"
[data_request.train.extra]
dataset_class = "HyraxCSVDataset"
data_location = "./extra.csv"
fields = ["redshift"]
join_field = "object_id"
[train]
epochs = 1
[data_loader]
batch_size = 8
"""


def test_reference_configs_naming_each_class_run(workdir, file_server):
    """Config files as a reference user wrote them (config_version 7, its key names and spellings)."""
    images = hsc_folder(Path("data"), n=12)
    Path("hsc.toml").write_text(REFERENCE_HSC)
    cfg = resolve("hsc.toml", overrides=["model.HSCDCAE.base_channel_size=2"])
    assert cfg["model"]["HSCDCAE"]["final_layer"] == "arcsinh" and cfg["data_set"]["crop_to"] == 16
    assert cfg["data_set"]["HSCDataset"]["bands"] == ["HSC-G", "HSC-I"]
    group = open_group(cfg, "train")
    np.testing.assert_allclose(
        group.read(0, 2)["image"], np.tanh(center(images[[0, 1]][:, [0, 2]], 16)), atol=1e-6
    )
    run = libhyrax.train("hsc.toml", overrides=["model.HSCDCAE.base_channel_size=2"])
    assert (
        len(read_latents(libhyrax.infer("hsc.toml", from_run=run).path)["object_id"]) == 12
    )  # object 3 lacks HSC-R only

    root, url, _ = file_server
    archive, records = cifar_archive(root / "cifar-10-binary.tar.gz")
    Path("extra.csv").write_text(
        "object_id,redshift\n" + "".join(f"{i:06d},{i / 100}\n" for i in range(0, 40, 2))
    )
    Path("cifar.toml").write_text(REFERENCE_CIFAR)
    fetch = [
        f"data_set.HyraxCifarDataset.url={url}/cifar-10-binary.tar.gz",
        f"data_set.HyraxCifarDataset.md5={hashlib.md5(archive.read_bytes()).hexdigest()}",
    ]
    batch = open_group(resolve("cifar.toml", overrides=fetch), "train").read(0, 4)
    assert batch["label"].tolist() == records[:4, 0].tolist() and batch["extra.matched"].tolist() == [
        1,
        0,
        1,
        0,
    ]
    np.testing.assert_allclose(batch["redshift"][[0, 2]], [0.0, 0.02])
    run = libhyrax.train("cifar.toml", overrides=fetch)
    assert len(read_latents(libhyrax.infer("cifar.toml", from_run=run).path)["object_id"]) == 40
