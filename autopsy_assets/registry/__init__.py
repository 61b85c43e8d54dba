"""MLflow side of the learning loop: tracking + registry, aliases, the retrain-request lifecycle,
A/B scoring and champion degradation (DESIGN.md sections 1, 2 "Learning loop", 2a, 5).

No dagster import: the Dagster shell (defs/) and the CLI call these functions. Every function
takes an explicit `client` (MlflowClient or tracking URI; None = `tracking_uri()`), and the
alias/lifecycle functions the audit store whose trail is authoritative.
"""
from autopsy_assets.registry.ab import (
    arm_audits,
    champion_degraded,
    compare_arms,
    score_with_ab,
)
from autopsy_assets.registry.aliases import (
    promote,
    promote_challenger,
    rollback_alias,
    set_challenger,
)
from autopsy_assets.registry.errors import LifecycleError
from autopsy_assets.registry.lifecycle import (
    STATUSES,
    approve,
    list_requests,
    reject,
    request_retrain,
    rollback,
    rollback_request,
    show_request,
    simulate,
    sync_status,
    ui_decisions,
)
from autopsy_assets.registry.tracking import (
    META_EXPERIMENT,
    RETRAIN_EXPERIMENT,
    autopsy_home,
    ensure_experiment,
    get_client,
    model_name,
    tracking_uri,
)
from autopsy_assets.registry.versions import (
    ALIASES,
    aliases,
    flatten_metrics,
    load_meta_model,
    log_model_version,
    model_versions_frame,
)

__all__ = [
    "ALIASES", "META_EXPERIMENT", "RETRAIN_EXPERIMENT", "STATUSES", "LifecycleError",
    "aliases", "approve", "arm_audits", "autopsy_home", "champion_degraded", "compare_arms",
    "ensure_experiment", "flatten_metrics", "get_client", "list_requests", "load_meta_model",
    "log_model_version", "model_name", "model_versions_frame", "promote", "promote_challenger",
    "reject", "request_retrain", "rollback", "rollback_alias", "rollback_request",
    "score_with_ab", "set_challenger", "show_request", "simulate", "sync_status",
    "tracking_uri", "ui_decisions",
]
