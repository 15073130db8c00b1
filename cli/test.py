"""hyrax test: evaluate a trained run on its test split (see libhyrax.stages.test)."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, FromOpt, SetOpt, input_run, run_stage


def command(
    config: ConfigOpt = None, set_: SetOpt = None, from_run: FromOpt = None, debug: DebugOpt = False
) -> None:
    """Evaluate a trained model on its test split: loss and metrics (accuracy and a confusion matrix for
    classifiers); prints the results directory.

    Example: hyrax train --set model.name=HyraxCNN | hyrax test
    """

    def body():
        from libhyrax.stages.test import test

        return test(config, overrides=set_ or (), from_run=input_run(from_run))

    run_stage(body, debug)
