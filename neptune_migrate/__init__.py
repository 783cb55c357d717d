"""neptune-migrate: move Neptune runs to MLflow, Weights & Biases or Aim, completely and provably."""

__version__ = "0.1.0"
