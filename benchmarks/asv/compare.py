"""The change between the two newest recorded commits in benchmarks/asv/results/ (for one machine), and a
non-zero exit when a benchmark got worse beyond the noise.

    .venv/bin/python benchmarks/asv/compare.py                 # (make bench-compare) newest vs the one before
    .venv/bin/python benchmarks/asv/compare.py --factor 1.5 --machine devbox --before abc123 --after def456

Beyond the noise, as `asv compare` decides it: the ratio of the medians is beyond `--factor` AND the two
commits' samples differ (ASV's Mann-Whitney U test on the raw samples when each side has enough of them
for p < 0.002, else its 99% confidence intervals must not overlap). The samples are the `repeat` x `rounds`
timings ASV keeps of each `time_*` benchmark; a `track_*` figure (one value per run) is flagged on the
factor alone. The factor's default (1.3) is above the spread we measured between two runs of one commit on
the 2 shared cores (benchmarks/asv/README.md). Every benchmark is "lower is better".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def recorded(results: Path, machine: str | None) -> tuple[str, list[tuple[int, str]]]:
    """(machine, [(commit date, commit hash)] oldest first) of the results kept for one machine."""
    machines = sorted(p.name for p in results.iterdir() if (p / "machine.json").exists())
    if not machines:
        sys.exit(f"no results in {results}: run `make bench-record` first")
    if machine is None:
        if len(machines) > 1:
            sys.exit(f"results for several machines ({', '.join(machines)}): choose one with --machine")
        machine = machines[0]
    commits = {}
    for f in (results / machine).glob("*.json"):
        if f.name != "machine.json":
            d = json.loads(f.read_text())
            commits[d["commit_hash"]] = d.get("date") or 0
    return machine, sorted((date, h) for h, date in commits.items())


def results(conf, machine: str, commit: str):
    """A commit's results as `asv compare` reads them, except that the environment is named "existing"
    whatever the path of its python: ASV names an existing environment by its interpreter's absolute
    path, so the same machine's records from two checkouts would otherwise never meet."""
    from asv.results import iter_results_for_machine_and_hash

    for result in iter_results_for_machine_and_hash(conf.results_dir, machine, commit):
        for key in result.get_all_result_keys():
            params = result.get_result_params(key)
            yield (key, params, result.get_result_value(key, params), result.get_result_stats(key, params),
                   result.get_result_samples(key, params), result.benchmark_version.get(key),
                   result.params["machine"], "existing")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=HERE / "asv.conf.json")
    ap.add_argument("--machine", help="whose results (default: the only machine recorded)")
    ap.add_argument("--before", help="a recorded commit (default: the one before --after)")
    ap.add_argument("--after", help="a recorded commit (default: the newest)")
    ap.add_argument(
        "--factor", type=float, default=1.3, help="flag a change beyond this ratio (and the noise)"
    )
    args = ap.parse_args(argv)

    from asv.commands.compare import Compare
    from asv.config import Config

    conf = Config.load(str(args.config))
    conf.results_dir = str((args.config.parent / conf.results_dir).resolve())  # as asv sees it from there
    machine, commits = recorded(Path(conf.results_dir), args.machine)
    hashes = [h for _, h in commits]

    def full(name):
        match = [h for h in hashes if h.startswith(name)]
        if len(match) != 1:
            sys.exit(
                f"{name!r} is not one recorded commit of {machine} (recorded: "
                f"{', '.join(h[:8] for h in hashes)})"
            )
        return match[0]

    after = full(args.after) if args.after else hashes[-1] if hashes else None
    before = (
        full(args.before)
        if args.before
        else (hashes[hashes.index(after) - 1] if after and hashes.index(after) > 0 else None)
    )
    if before is None:
        sys.exit(f"only one commit recorded for {machine}: nothing to compare with")
    print(f"{machine}: {before[:8]} -> {after[:8]} (factor {args.factor}, and beyond the samples' noise)")
    worsened, _ = Compare.print_table(
        conf,
        before,
        after,
        factor=args.factor,
        split=True,
        machine=machine,
        commit_names={},
        resultset_1=results(conf, machine, before),
        resultset_2=results(conf, machine, after),
    )
    if worsened:
        print("REGRESSION: a benchmark above got worse beyond the noise", file=sys.stderr)
    return 1 if worsened else 0


if __name__ == "__main__":
    sys.exit(main())
