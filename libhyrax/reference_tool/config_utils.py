"""The reference's `hyrax.config_utils` functions that its notebooks import, here:

    from libhyrax.reference_tool.config_utils import find_most_recent_results_dir
    # was: from hyrax.config_utils import find_most_recent_results_dir
"""

from __future__ import annotations

from pathlib import Path

from libhyrax import stages
from libhyrax.errors import UsageError
from libhyrax.results import newest_run


def find_most_recent_results_dir(config: dict, verb: str) -> Path | None:
    """The newest finished run of `verb` (a stage or the reference's name for it: "infer", "train",
    "umap", "to_onnx", ...) in the config's results directory; None when there is none. Newest by the
    time each run finished (the reference goes by the directory's name, to the second)."""
    try:
        stage = stages.get(verb).name
    except KeyError:
        raise UsageError(
            f"{verb!r} is not a stage; stages: {', '.join(s.name for s in stages.STAGES)}"
        ) from None
    try:
        return newest_run(stage, config)
    except UsageError:
        return None
