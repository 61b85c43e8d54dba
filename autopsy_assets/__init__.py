"""autopsy: audits every trading insight after the fact (Dagster + MLflow)."""

__version__ = "0.1.0"
