"""Stage 3: the CTR / CTCVR models (LR, Wide&Deep, DeepFM, PLE, LARR, P5-style), their
trainer, metrics, report, sweeps and the MLflow scoring model."""
