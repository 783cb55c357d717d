"""The real MLflow backends of the destination tests, for the reliability tests too."""

from tests.destinations.mlflow.conftest import mlflow_server, mlflow_sqlite

__all__ = ["mlflow_server", "mlflow_sqlite"]
