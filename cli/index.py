"""hyrax index: a vector index of an infer run's latents."""

from __future__ import annotations

from hyrax_cli.common import (
    ConfigOpt,
    DebugOpt,
    FromOpt,
    ResumeOpt,
    RunNameOpt,
    SetOpt,
    ShardOpt,
    input_run,
    run_stage,
)


def command(config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None, shard: ShardOpt = None,
            run_name: RunNameOpt = None, resume: ResumeOpt = None, debug: DebugOpt = False) -> None:
    """Build a vector index of an infer run's latents (ChromaDB up to 1M latents, FAISS IVF-PQ above;
    --set vector_db.name=chromadb|faiss|exact|qdrant chooses). Prints the index run's directory.

    Examples:

      hyrax train | hyrax infer | hyrax index

      sbatch --array=0-9 --wrap 'hyrax index --from results/<infer-run>'   (faiss, 10 shards, one index)
    """

    def body():
        from libhyrax.stages.index import index

        return index(config, overrides=set_ or (), from_run=input_run(from_run), shard=shard,
                     run_name=run_name, resume=resume)

    run_stage(body, debug)
