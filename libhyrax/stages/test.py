"""hyrax test: evaluate a trained run on its test split, into a results directory of its own.

    hyrax train | hyrax test                                 # the piped train run
    hyrax test --from results/<train-run> \
        --set test.model_weights_file=results/<train-run>/checkpoints/best.pt

    import libhyrax
    result = libhyrax.test(from_run="results/<train-run>")

The data are the train run's own (its data request, transforms and `split.h5`), so the test split is
exactly the objects the model never trained on. Writes `test_metrics.json` (the loss and the model's
metrics, averaged over objects) and `metrics.csv`; for a classifier (a model with `predict_batch`) also
`predictions.h5` (object_id, predicted, label), accuracy and `confusion_matrix.csv`. Logged to MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from libhyrax.config import read_toml
from libhyrax.errors import UsageError
from libhyrax.results import Result
from libhyrax.rundir import CONFIG_FILE
from libhyrax.start import start_run

log = logging.getLogger("hyrax.test")


def test(config=None, *, from_run=None, overrides=()) -> Result:
    """Evaluate the train run `from_run` (default: the newest finished one) on its test split."""
    from libhyrax.data import open_group
    from libhyrax.data.split import load_splits
    from libhyrax.device import pick_device
    from libhyrax.hdf5 import write_arrays
    from libhyrax.models import load_trained, load_weights, place
    from libhyrax.training.engine import EpochBatches, EpochMeans, create_evaluator
    from libhyrax.training.tracking import METRICS_FILE, MetricsCSV, MLflowRun

    plan = start_run("test", config, overrides, from_run=from_run)
    cfg, src = plan.config, plan.input.path
    trained = read_toml(src / CONFIG_FILE)
    data_cfg = {**cfg, "data_request": trained["data_request"], "data_set": trained["data_set"]}
    group = open_group(data_cfg, "train")
    rows = load_splits(src / "split.h5", id_blocks=group.id_blocks()).get("test", np.zeros(0, dtype=np.int64))
    if len(rows) == 0:
        raise UsageError(
            f"{src} has no test split (split.test was 0 when it trained); train with "
            "--set split.test=0.1 to keep a test split"
        )
    device = pick_device(cfg["general"]["device"])
    model, desc = load_trained(src, device=device)
    weights = cfg["test"]["model_weights_file"]
    if weights:
        load_weights(model, weights)
    place(model, device)
    predictions: list = []
    evaluator = create_evaluator(model, device, bool(cfg["train"]["mixed_precision"]), predictions)
    means = EpochMeans(evaluator)
    with plan.open() as run:
        run.add_upstream(src)
        if weights:
            run.add_input(weights)
        evaluator.run(
            EpochBatches(
                group,
                rows,
                int(cfg["data_loader"]["batch_size"]),
                False,
                0,
                int(cfg["data_loader"]["num_workers"]),
            )
        )
        metrics = {f"test_{k}": v for k, v in means.means().items()}
        if predictions:
            metrics |= _classifier_outputs(
                run, group, rows, predictions, int(getattr(model, "output_classes", 0)), write_arrays
            )
        (run.file("test_metrics.json")).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        MetricsCSV(run.file(METRICS_FILE)).add({"epoch": 0} | metrics)
        with MLflowRun(cfg, "test", run.final_path, cfg["train"]["experiment_name"], None) as tracker:
            tracker.set_tag("hyrax.train_run", str(Path(src).resolve()))
            tracker.log_metrics(metrics, step=0)
            tracker.log_artifact(run.file("test_metrics.json"))
        run.record(n_objects=len(rows), model=desc["class"], mlflow_run_id=tracker.run_id, **metrics)
        log.info("test on %d objects: %s", len(rows), " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return Result(run.path)


def _classifier_outputs(run, group, rows, predictions, n_classes: int, write_arrays) -> dict:
    predicted = np.concatenate([p for p, _ in predictions]).astype(np.int64)
    label = np.concatenate([t for _, t in predictions]).astype(np.int64)
    ids = group.object_ids()[rows]  # EpochBatches reads the rows in sorted order, unshuffled
    write_arrays(run.file("predictions.h5"), ids, predicted=predicted, label=label)
    k = max(n_classes, int(predicted.max()) + 1, int(label.max()) + 1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (label, predicted), 1)
    header = "true\\predicted," + ",".join(str(i) for i in range(k))
    lines = [header] + [f"{i}," + ",".join(str(c) for c in confusion[i]) for i in range(k)]
    run.file("confusion_matrix.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"test_accuracy": float((predicted == label).mean())}
