"""`export` to ONNX: the checked export, the onnx engine of `infer`, and a plain onnxruntime script that
uses nothing of Hyrax but model.onnx and preprocessing.json."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_infer import make_train_run, read_latents

from libhyrax import hdf5
from libhyrax.errors import ModelError
from libhyrax.rundir import read_provenance, upstream_paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A train run (crop and asinh scale differ from the defaults), its export and two infer runs."""
    from libhyrax.stages.export import export
    from libhyrax.stages.infer import infer

    root = tmp_path_factory.mktemp("onnx") / "results"
    train = make_train_run(root, asinh_scale=0.3, crop_to=48)
    cfg = {"general": {"results_dir": str(root)}}
    exported = export(cfg, from_run=train).path
    by_torch = infer(cfg, from_run=train).path
    by_onnx = infer(cfg, from_run=exported, engine="onnx").path
    return train, exported, by_torch, by_onnx


def test_export_writes_a_checked_model_and_its_preprocessing(runs):
    import onnx

    _, exported, _, _ = runs
    model = onnx.load(exported / "model.onnx")
    assert model.opset_import[0].version == 20
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 48, 48]  # dynamic batch
    assert [o.name for o in model.graph.output] == ["latent", "recon_error"]
    pre = json.loads((exported / "preprocessing.json").read_text())
    assert pre["bands"] == ["R", "G", "B"] and pre["raw_shape"] == [3, 64, 64]
    assert pre["data_set"]["crop_to"] == 48 and pre["data_set"]["asinh_scale"] == 0.3
    info = read_provenance(exported)["stage_info"]
    assert max(info["max_abs_diff"].values()) <= info["tolerance"] and info["checked_objects"] == 64


def test_onnx_engine_matches_torch(runs):
    _, _, by_torch, by_onnx = runs
    t, o = read_latents(by_torch), read_latents(by_onnx)
    assert list(t["object_id"]) == list(o["object_id"]) and len(t["object_id"]) == 1000
    np.testing.assert_allclose(o["latent"], t["latent"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(o["recon_error"], t["recon_error"], atol=1e-4, rtol=1e-3)
    assert [u.resolve() for u in upstream_paths(by_onnx)] == [runs[1].resolve()]
    assert read_provenance(by_onnx)["stage_info"]["runtime"] == "onnxruntime"


def test_plain_onnxruntime_script_needs_only_the_two_files(runs, tmp_path):
    """A user's script: h5py for the raw cutout, numpy for the documented steps, onnxruntime. No Hyrax."""
    from libhyrax.data import sample_path

    _, exported, by_torch, _ = runs
    script = textwrap.dedent("""
        import json, sys
        import h5py, numpy as np, onnxruntime as ort
        export_dir, cutouts, row = sys.argv[1], sys.argv[2], int(sys.argv[3])
        pre = json.load(open(f"{export_dir}/preprocessing.json"))
        with h5py.File(cutouts, "r") as f:
            assert [b.decode() if isinstance(b, bytes) else b for b in f.attrs["bands"]] == pre["bands"]
            x = f["images"][row:row + 1].astype(np.float32)
        ds = pre["data_set"]
        if ds["crop_to"]:
            c = ds["crop_to"]; top, left = (x.shape[2] - c) // 2, (x.shape[3] - c) // 2
            x = x[:, :, top:top + c, left:left + c]
        x = np.where(np.isfinite(x), x, 0).astype(np.float32)
        if ds["transform"] == "asinh":
            x = np.arcsinh(x / ds["asinh_scale"])
        sess = ort.InferenceSession(f"{export_dir}/model.onnx", providers=["CPUExecutionProvider"])
        latent = sess.run(["latent"], {pre["input"]["name"]: x.astype(np.float32)})[0]
        print(json.dumps(latent[0].tolist()))
    """)
    row = 123
    proc = subprocess.run([sys.executable, "-c", script, str(exported), str(sample_path()), str(row)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "libhyrax" not in script
    latent = np.array(json.loads(proc.stdout))
    np.testing.assert_allclose(latent, read_latents(by_torch)["latent"][row], atol=1e-4, rtol=1e-4)


def test_export_fails_when_onnxruntime_differs_beyond_tolerance(runs, workdir, capfd):
    from libhyrax.stages.export import export

    with pytest.raises(ModelError, match=r"differ by up to [0-9.e-]+ in '(latent|recon_error)'"):
        export({"onnx": {"tolerance": 1e-12}}, from_run=runs[0])
    assert "[torch.onnx]" not in capfd.readouterr().err  # the exporter's progress lines stay off
    failed = next((workdir / "results").glob("*-export-*.failed"))
    assert "differ by up to" in read_provenance(failed)["error"]


def test_onnx_engine_of_a_sharded_run(runs, workdir):
    from libhyrax.stages.infer import infer

    path = [infer(from_run=runs[1], engine="onnx", shard=f"{i}/2").path for i in range(2)][0]
    with hdf5.open_result(path, "latents") as f:
        np.testing.assert_array_equal(f["latent"][:], read_latents(runs[3])["latent"])
