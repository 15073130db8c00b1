"""Benchmark `hyrax download` against loopback servers that speak each service's protocol
(tests/survey_servers.py), run in a process of their own so the client's figures are its own.

    .venv/bin/python benchmarks/bench_download.py                         # every figure, about 6 minutes
    .venv/bin/python benchmarks/bench_download.py --only hsc --objects 100000
    .venv/bin/python benchmarks/bench_download.py --latency 0.05 --seconds 20 --json out.json

1. One object per request (`legacysurvey`, `url_template`), one band of 64x64: objects/s at 1, 4 and 16
   connections when every answer takes `--latency` seconds (50 ms), against the ideal, connections /
   latency. Each figure is over about `--seconds` of ideal work (1 connection: 300 objects; 16: 4,800).
   Goals: >= 0.8x the ideal at 4 connections, >= 0.6x at 16.
2. `hsc`: the client's own cost of turning served tar answers (990 lines each, 64x64 float32 cutouts)
   into HDF5 rows, in band-cutouts/s: the service answers at once, from tars it built once. For scale:
   astropy.io.fits alone parses about 700 such images per second per core here. Goal >= 1,200/s.
3. Memory: the peak RSS of a fresh process downloading `--objects` (100k) objects and a quarter of them
   (both long enough for the window of requests in flight to fill), with `hsc` and with `legacysurvey`
   (16 connections, no latency): flat in the number of objects, but for the catalogue's own columns
   (astropy's CSV reader peaks at about 230 bytes per row).

Each download runs `libhyrax.download` in a fresh process (its own peak RSS); the rate is objects
fetched over the run's own time (provenance `seconds`: from the first request to the last row written).
Nothing leaves 127.0.0.1, and the server stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from survey_servers import Faults, Sky, SurveyServer
    sky = Sky.flat({n}, bands=("r",), size=66)
    sky.catalog(__import__("pathlib").Path({catalog!r}))
    with SurveyServer(sky, Faults(latency={latency}), lifetime={lifetime}, cache_fits=True) as server:
        print(server.url("hsc").rsplit("/das_cutout", 1)[0], flush=True)
        time.sleep({lifetime})
""")
CLIENT = textwrap.dedent("""
    import json, resource, sys
    import libhyrax
    cfg = json.loads(sys.argv[1])
    run = libhyrax.download(cfg, run_name=sys.argv[2])
    info = run.provenance["stage_info"]
    print(json.dumps({"ok": info["ok"], "seconds": info["seconds"],
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")
URLS = {"hsc": "/das_cutout/pdr3/cgi-bin/cutout", "legacysurvey": "/viewer/fits-cutout",
        "url_template": "/cutout?ra={ra}&dec={dec}&size={size}&band={band}"}


class Server:
    """The loopback services in a process of their own, for at most `lifetime` seconds."""

    def __init__(self, root: Path, n: int, latency: float, lifetime: float = 900):
        self.catalog = root / f"catalog-{n}.csv"
        code = SERVER.format(tests=str(REPO / "tests"), n=n, catalog=str(self.catalog), latency=latency,
                             lifetime=lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root
        )
        self.base = self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def download(root: Path, server: Server, provider: str, n_rows: int, connections: int) -> dict:
    """One download of the first `n_rows` objects in a fresh process: its rate and peak memory."""
    catalog = root / f"rows-{n_rows}.csv"
    if not catalog.exists():
        with open(server.catalog) as f, open(catalog, "w") as out:
            for k, line in enumerate(f):
                if k > n_rows:
                    break
                out.write(line)
    cfg = {
        "general": {"results_dir": str(root / "results")},
        "download": {
            "provider": provider,
            "catalog": str(catalog),
            "size": 64,
            "bands": ["r"],
            "connections": connections,
            provider: {"url": server.base + URLS[provider]},
        },
    }
    if provider == "hsc":
        cfg["download"]["hsc"] |= {"user": "bench"}
    name = f"{provider}-{n_rows}-{connections}-{time.monotonic_ns()}"
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(cfg), name],
        capture_output=True,
        text=True,
        env={**os.environ, "HSC_SSP_CAS_PASSWORD": "bench"},
        cwd=root,
    )
    if proc.returncode:
        raise SystemExit(f"download failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(root / "results" / name)  # the disk stays small
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] == n_rows, out
    return out | {"rate": out["ok"] / out["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per answer for part 1")
    ap.add_argument("--seconds", type=float, default=15.0, help="ideal seconds of work per part-1 figure")
    ap.add_argument(
        "--objects", type=int, default=100_000, help="objects of the memory runs (and of hsc's rate)"
    )
    ap.add_argument("--only", choices=("per-object", "hsc", "memory"), help="one part")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hyrax-bench-download-"))
    figures: dict = {}
    try:
        if args.only in (None, "per-object"):
            server = Server(root, int(16 / args.latency * args.seconds), args.latency)
            try:
                print(f"one object per request, 64x64, answers after {args.latency * 1000:.0f} ms:")
                for provider in ("legacysurvey", "url_template"):
                    for c in (1, 4, 16):
                        ideal = c / args.latency
                        got = download(root, server, provider, int(ideal * args.seconds), c)
                        figures[f"{provider}_{c}"] = {
                            "objects_per_s": round(got["rate"], 1),
                            "ideal": ideal,
                            "ratio": round(got["rate"] / ideal, 3),
                        }
                        print(
                            f"  {provider:13s} {c:2d} connections: {got['rate']:7.1f} objects/s = "
                            f"{got['rate'] / ideal:.2f}x the ideal {ideal:.0f}/s ({got['peak_mb']:.0f} MB)"
                        )
            finally:
                server.close()
        server = Server(root, args.objects, 0.0) if args.only in (None, "hsc", "memory") else None
        try:
            if args.only in (None, "hsc"):
                got = download(root, server, "hsc", args.objects, 4)
                figures["hsc"] = {
                    "band_cutouts_per_s": round(got["rate"], 1),
                    "objects": args.objects,
                    "peak_mb": round(got["peak_mb"], 1),
                }
                print(
                    f"hsc, tar answers of 990 64x64 cutouts into HDF5: {got['rate']:,.0f} band-cutouts/s "
                    f"({args.objects:,} objects, peak {got['peak_mb']:.0f} MB)"
                )
            if args.only in (None, "memory"):
                for provider, c in (("hsc", 4), ("legacysurvey", 16)):
                    small, large = (
                        download(root, server, provider, n, c) for n in (args.objects // 4, args.objects)
                    )
                    figures[f"memory_{provider}"] = {
                        "objects": [args.objects // 4, args.objects],
                        "peak_mb": [round(small["peak_mb"], 1), round(large["peak_mb"], 1)],
                        "objects_per_s": [round(small["rate"]), round(large["rate"])],
                    }
                    print(
                        f"memory, {provider} ({c} connections, no latency): "
                        f"peak {small['peak_mb']:.0f} MB at "
                        f"{args.objects // 4:,} objects, {large['peak_mb']:.0f} MB at {args.objects:,} "
                        f"({small['rate']:,.0f} and {large['rate']:,.0f} objects/s)"
                    )
        finally:
            if server is not None:
                server.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
