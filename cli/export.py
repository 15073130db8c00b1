"""hyrax export: a trained model as model.onnx plus preprocessing.json, checked against torch."""

from __future__ import annotations

from typing import Annotated

import typer
from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage

OpsetOpt = Annotated[int | None, typer.Option("--opset", help="The ONNX opset (default: onnx.opset_version).",
                                              show_default=False)]


def command(config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None, opset: OpsetOpt = None,
            debug: DebugOpt = False) -> None:
    """Export a train run's model to ONNX (dynamic batch size) with the preprocessing it expects.

    Fails when onnxruntime and torch differ by more than onnx.tolerance on a real batch.

    Examples:

      hyrax train | hyrax export

      hyrax export --from results/<train-run> --opset 18

      hyrax infer --engine onnx --from results/<export-run>
    """

    def body():
        from libhyrax.stages.export import export

        return export(config, overrides=set_ or (), from_run=input_run(from_run), opset=opset)

    run_stage(body, debug)
