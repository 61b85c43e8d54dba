"""The registry's one error type."""
from __future__ import annotations


class LifecycleError(ValueError):
    """An illegal step of the learning loop: self-approval, a skipped step, a second decision, a
    gate-failed approval, a rollback with nothing to roll back to, an unknown request or version.

    Raised before anything is written, so MLflow and the audit trail are unchanged. `request_id`
    (or the model name for alias operations) and `reason` say what was refused and why.
    """

    def __init__(self, message: str, *, request_id: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.reason = reason or message
