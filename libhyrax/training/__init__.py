"""Training: Ignite engines, checkpoints, distributed runs and run tracking (metrics.csv, MLflow)."""
