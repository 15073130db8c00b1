"""Training: Ignite engines and checkpoints (engine.py), the handlers a training run attaches to them
(handlers.py), resuming an interrupted run (resume.py), distributed runs (distributed.py) and run tracking
(metrics.csv, MLflow: tracking.py)."""
