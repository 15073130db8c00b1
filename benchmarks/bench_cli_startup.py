"""How long `hyrax --help` and `hyrax <stage> --help` take (goal: under 0.3 s; the reference tool takes
6-8 s on this kind of machine). Prints the median of several runs for each command."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from libhyrax.stages import STAGES

HYRAX = str(Path(sys.executable).parent / "hyrax")
REPEAT = 5


def time_command(args: list[str]) -> float:
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    python_only = time_command([sys.executable, "-c", "pass"])
    print(f"python -c pass                     {python_only:6.3f} s (interpreter start-up, for scale)")
    worst = 0.0
    for args in [["--help"], ["--version"]] + [[s.name, "--help"] for s in STAGES]:
        t = time_command([HYRAX, *args])
        worst = max(worst, t)
        print(f"hyrax {' '.join(args):28s} {t:6.3f} s")
    print(f"slowest: {worst:.3f} s (goal < 0.3 s): {'OK' if worst < 0.3 else 'OVER GOAL'}")


if __name__ == "__main__":
    main()
