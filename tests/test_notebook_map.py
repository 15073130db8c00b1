"""The inline map in a real JupyterLab, driven by headless Chromium (playwright with the system Chromium):
served as a hub serves it (under a base URL, at a host name that isn't localhost, the browser able to reach
nothing but that origin: no localhost, no internet) and as plain Jupyter prints it (127.0.0.1, a port other
than 8888). A box drawn with the mouse must reach `res.selected`, a label button `res.labels`, read back
from the kernel by running a cell."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from test_visualize import make_runs

from libhyrax import hdf5

CHROMIUM = shutil.which("chromium")
TOKEN = "hyrax-test-token"
SHOW = """import json
import libhyrax
res = libhyrax.visualize({"general": {"results_dir": "results"}}, from_run=%r)"""
REPORT = """print("HYRAX-STATE " + json.dumps({"selected": res.selected,
    "types": sorted({type(i).__name__ for i in res.selected}),
    "labels": dict(zip(res.labels.object_id.tolist(), res.labels.label.tolist()))}))"""

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")]


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 8888:
            return port


def data_dir() -> str:
    """share/jupyter of the prefix the widget extensions were installed into (their labextensions): not
    sys.prefix where a venv borrows another's packages."""
    import jupyterlab_widgets

    return str(Path(jupyterlab_widgets.__file__).resolve().parents[4] / "share" / "jupyter")


def start_lab(root: Path, port: int, base_url: str) -> subprocess.Popen:
    """JupyterLab on 127.0.0.1:`port` under `base_url`, its state kept under `root` (no user settings)."""
    home = root / "home"
    env = {**os.environ, "HOME": str(home), "JUPYTER_PATH": data_dir(),
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.port_retries=0", f"--ServerApp.base_url={base_url}",
           f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_remote_access=True",  # the hub's Host header
           "--allow-root", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(root / "lab.log", "w") as log:
        lab = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{base_url}api/status?token={TOKEN}", timeout=2)
            return lab
        except OSError:
            assert lab.poll() is None, (root / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
    lab.kill()
    raise AssertionError("JupyterLab did not start: " + (root / "lab.log").read_text()[-3000:])


def write_notebook(path: Path, umap_run: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SHOW % str(umap_run)),
                                         nbformat.v4.new_code_cell(REPORT)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def run_cell(page, index: int) -> None:
    """Run a cell once the kernel is idle, as a person would (click into it, Ctrl+Enter)."""
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=120_000)
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    prompt = cell.locator(".jp-InputPrompt").inner_text()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    deadline = time.time() + 120
    while cell.locator(".jp-InputPrompt").inner_text() == prompt:  # [*] while it runs, then [n]
        assert time.time() < deadline, "the cell did not run"
        time.sleep(0.2)


def kernel_state(page) -> dict:
    """Run the report cell and read what the kernel printed."""
    out = page.locator(".jp-Notebook .jp-CodeCell").nth(1).locator(".jp-OutputArea-output")
    before = out.all_inner_texts()
    run_cell(page, 1)
    deadline = time.time() + 30
    while time.time() < deadline:
        texts = out.all_inner_texts()
        found = [t for t in texts if "HYRAX-STATE" in t]
        if found and texts != before:
            return json.loads(found[-1].split("HYRAX-STATE ", 1)[1])
        time.sleep(0.3)
    raise AssertionError(f"the report cell printed nothing: {out.all_inner_texts()}")


def reopened_without_kernel(page, path: Path, port: int, base_url: str) -> None:
    """Save the notebook, stop its kernel and open it again: the static copy of the map shows (drawn)."""
    from playwright.sync_api import expect

    for _ in range(4):  # the save button, again if the notebook isn't on disk within 30 s
        page.locator("[data-command='docmanager:save']").first.click()
        deadline = time.time() + 30
        while "hyrax-static-map" not in path.read_text() and time.time() < deadline:
            time.sleep(0.5)
        if "hyrax-static-map" in path.read_text():
            break
    assert "hyrax-static-map" in path.read_text(), "the notebook was not saved with its outputs"
    api = f"http://127.0.0.1:{port}{base_url}api/sessions"
    for session in json.load(urllib.request.urlopen(f"{api}?token={TOKEN}")):
        urllib.request.urlopen(
            urllib.request.Request(f"{api}/{session['id']}?token={TOKEN}", method="DELETE")
        )
    page.reload()
    static = page.locator(".hyrax-static-map")
    expect(static).to_be_visible(timeout=60_000)
    page.frame_locator(".hyrax-static-map iframe").locator("canvas").first.wait_for(timeout=60_000)


@pytest.mark.parametrize("where", ["hub", "plain"])
def test_a_box_and_a_label_drawn_in_jupyterlab_reach_python(where, workdir):
    from playwright.sync_api import expect, sync_playwright

    _, umap_run = make_runs(workdir, n=300, cutouts=False)
    write_notebook(workdir / "map.ipynb", umap_run)
    port = free_port()
    base_url, host = ("/user/alice/", "hub.example") if where == "hub" else ("/", "127.0.0.1")
    origin = f"{host}:{port}"
    lab = start_lab(workdir, port, base_url)
    blocked, sockets = [], []

    def only_the_origin(route):
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as pw:
            # Everything but the origin goes to a dead proxy (websockets too), loopback included; hub.example
            # resolves to 127.0.0.1 only inside this browser.
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--host-resolver-rules=MAP hub.example 127.0.0.1",
                    "--proxy-server=http://127.0.0.1:9",
                    f"--proxy-bypass-list=<-loopback>;{origin}",
                ],
            )
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_the_origin)
            page = context.new_page()
            page.on("websocket", lambda ws: sockets.append(ws.url))
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://{origin}{base_url}lab/tree/map.ipynb?token={TOKEN}", timeout=60_000)
            page.locator(".jp-Notebook .jp-CodeCell").nth(1).wait_for(timeout=60_000)
            run_cell(page, 0)

            live = page.locator(".jp-Notebook .jp-CodeCell").nth(0).locator("canvas").first
            live.wait_for(timeout=120_000)
            expect(page.locator(".hyrax-static-map")).to_have_count(1)
            expect(page.locator(".hyrax-static-map")).to_be_hidden()  # the live map hid its static copy
            page.locator("[title='Box Select']").first.click()
            box = live.bounding_box()
            x0, y0 = box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.15
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + box["width"] * 0.2, y0 + box["height"] * 0.3, steps=8)
            page.mouse.move(x0 + box["width"] * 0.4, y0 + box["height"] * 0.6, steps=8)
            page.mouse.up()
            count = page.get_by_text(re.compile(r"^[1-9]\d* selected$")).first
            count.wait_for(timeout=10_000)
            shown = int(count.inner_text().split()[0])  # what the page says it selected
            state = kernel_state(page)
            page.get_by_role("button", name="5", exact=True).first.click()
            page.get_by_text(f"{shown} labelled ({shown} interesting)").first.wait_for(timeout=10_000)
            labelled = kernel_state(page)
            reopened_without_kernel(page, workdir / "map.ipynb", port, base_url)
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)

    assert not errors, errors
    assert not blocked, f"the page asked for more than its origin {origin}: {blocked[:5]}"
    assert sockets and all(urlsplit(u).netloc == origin for u in sockets), sockets
    selected = state["selected"]
    assert 0 < len(selected) == shown < 300 and state["types"] == ["str"]
    # a box selection: exactly the points inside the box the selected points span
    with hdf5.open_result(umap_run, "embedding") as f:
        ids, emb = hdf5.read_ids(f["object_id"]), f["embedding"][:]
    picked = np.isin(ids, selected)
    lo, hi = emb[picked].min(axis=0), emb[picked].max(axis=0)
    inside = ((emb >= lo) & (emb <= hi)).all(axis=1)
    assert (picked == inside).all()
    assert labelled["selected"] == selected and labelled["labels"] == {i: 5.0 for i in selected}
