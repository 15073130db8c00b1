"""hyrax index: a vector index of an infer run's latents."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None,
            debug: DebugOpt = False) -> None:
    """Build a vector index of an infer run's latents (ChromaDB by default; `exact` or `qdrant` with
    --set vector_db.name=...). Prints the index run's directory.

    Example: hyrax train | hyrax infer | hyrax index
    """

    def body():
        from libhyrax.stages.index import index

        return index(config, overrides=set_ or (), from_run=input_run(from_run))

    run_stage(body, debug)
