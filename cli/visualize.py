"""hyrax visualize: an interactive HTML map of an embedding."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None,
            debug: DebugOpt = False) -> None:
    """Write visualize.html: the embedding of a umap run as a scatter coloured by a catalog column, the
    anomaly score or the reconstruction error, with cutout thumbnails on hover and box/lasso selection.
    The page is self-contained: open it in a browser, no server or network needed.

    Examples:
      hyrax umap | hyrax visualize
      hyrax visualize --from results/<umap-run> --set visualize.color_column=recon_error
    """

    def body():
        from libhyrax.stages.visualize import visualize

        return visualize(config, overrides=set_ or (), from_run=input_run(from_run))

    run_stage(body, debug)
