"""The functional core: pure Python + numpy/pandas. No dagster, mlflow or database import here."""
