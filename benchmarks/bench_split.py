"""Memory of train's split step at 1M and 10M objects: the ids streamed in blocks and hashed
(libhyrax.data.split.hashed_splits), as `hyrax train` does, with synthetic ids that are never all in memory.

    .venv/bin/python benchmarks/bench_split.py                    # 1M and 10M, train = 0.0002 (20k at 100M)
    .venv/bin/python benchmarks/bench_split.py --sizes 1000000 --train 0.8

Each size runs in a fresh process; it prints the peak RSS (ru_maxrss) before and after the split, the
wall time and the rows kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

BLOCK = 1 << 16


def synthetic_blocks(n: int):
    """(first row, ids) like a survey's: "HSC-<12 digits>", made block by block."""
    for a in range(0, n, BLOCK):
        yield a, np.char.add(b"HSC-", np.char.zfill(np.arange(a, min(a + BLOCK, n)).astype("S12"), 12))


def one(n: int, train: float) -> dict:
    from libhyrax.data.split import hashed_splits

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    rows, _ = hashed_splits(synthetic_blocks(n), {"train": train, "validate": train / 10}, 0)
    return {
        "n": n,
        "seconds": time.perf_counter() - t,
        "rows_kept": sum(len(r) for r in rows.values()),
        "peak_rss_before_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--train", type=float, default=0.0002)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.train)))
        return
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--train", str(args.train)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"N={n:>11,}: split in {r['seconds']:6.1f} s ({n / r['seconds']:,.0f} ids/s), "
            f"{r['rows_kept']:,} rows "
            f"kept, peak RSS {r['peak_rss_mib']:,.0f} MiB (imports {r['peak_rss_before_mib']:,.0f} MiB)",
            flush=True,
        )


if __name__ == "__main__":
    main()
