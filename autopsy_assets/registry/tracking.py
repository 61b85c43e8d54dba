"""Where MLflow lives and how autopsy talks to it (DESIGN.md sections 1, 2a "Learning loop", 5).

Tracking and registry share one URI: MLFLOW_TRACKING_URI when set, else the embedded default
`sqlite:////<abs AUTOPSY_HOME or ./.autopsy>/mlflow.db` with artifacts under `<home>/mlartifacts`.
The `./mlruns` file store is never used (it raises in MLflow 3.17).

Every public function of the registry takes an explicit `client` (an `MlflowClient` or a URI
string; None means `tracking_uri()`), so tests run against a temporary store. The few MLflow
calls that exist only in the fluent API (`mlflow.sklearn.log_model`) run inside `fluent(client)`,
which points MLflow's process-wide URIs at the client's store under a lock and restores them
(and the environment variables MLflow writes) afterwards.
"""
from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

META_EXPERIMENT = "autopsy-meta"
RETRAIN_EXPERIMENT = "autopsy-retrain"
MODEL_PREFIX = "autopsy-meta-"

ClientLike = MlflowClient | str | None

_FLUENT_LOCK = threading.RLock()


def autopsy_home() -> Path:
    """The local folder of the embedded default: AUTOPSY_HOME, else ./.autopsy (absolute)."""
    return Path(os.environ.get("AUTOPSY_HOME") or Path.cwd() / ".autopsy").resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else `sqlite:////<abs home>/mlflow.db` (created on demand)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    home = autopsy_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"  # an absolute path: four slashes in all


def get_client(client: ClientLike = None) -> MlflowClient:
    """An MlflowClient whose tracking and registry URIs are the same store."""
    if isinstance(client, MlflowClient):
        return client
    uri = client or tracking_uri()
    if uri.startswith("file:") or uri.rstrip("/").endswith("mlruns"):
        raise ValueError(f"MLflow URI {uri!r} is the file store, which MLflow 3.17 refuses: use "
                         "sqlite:////abs/path/mlflow.db, PostgreSQL or an http(s) server")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client_uri(client: MlflowClient) -> str:
    return str(client.tracking_uri)


def artifact_root(uri: str) -> Path | None:
    """Where experiments created by autopsy keep their artifacts.

    A SQLite store keeps them beside its database file (`<dir>/mlartifacts`, so the default store
    gives `<home>/mlartifacts` and a test's temporary store stays in its tmp_path); a database
    server (PostgreSQL, ...) uses `<home>/mlartifacts`; an http(s) tracking server decides itself
    (None).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https", "databricks"):
        return None
    if parsed.scheme == "sqlite":
        path = unquote(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            db = Path(path if path.startswith("/") else Path.cwd() / path)
            return db.resolve().parent / "mlartifacts"
    return autopsy_home() / "mlartifacts"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it with an absolute `file://` artifact location (race-safe)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    root = artifact_root(client_uri(client))
    location = None
    if root is not None:
        (root / name).mkdir(parents=True, exist_ok=True)
        location = (root / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:  # another process won the race
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


@contextmanager
def fluent(client: MlflowClient) -> Iterator[None]:
    """Point MLflow's fluent API (process-wide URIs) at `client`'s store for the block.

    Serialised by a process lock; the previous URIs and the MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI environment variables (which `mlflow.set_tracking_uri` overwrites) are
    restored exactly afterwards.
    """
    import mlflow.tracking._model_registry.utils as reg_utils
    import mlflow.tracking._tracking_service.utils as trk_utils

    with _FLUENT_LOCK:
        saved = (trk_utils._tracking_uri, reg_utils._registry_uri,
                 os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
        uri = client_uri(client)
        try:
            mlflow_set_uris(uri, getattr(client, "_registry_uri", None) or uri)
            yield
        finally:
            trk_utils._tracking_uri, reg_utils._registry_uri = saved[0], saved[1]
            for key, value in (("MLFLOW_TRACKING_URI", saved[2]),
                               ("MLFLOW_REGISTRY_URI", saved[3])):
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No tqdm progress bars for artifact downloads (they flood logs and CLI output), unless
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR is set explicitly."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def mlflow_set_uris(tracking: str, registry: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def model_name(strategy: str) -> str:
    """The registered model of a strategy: `autopsy-meta-<strategy>`."""
    strategy = str(strategy or "").strip()
    if not strategy:
        raise ValueError("a strategy name is required (the model is autopsy-meta-<strategy>)")
    if any(ch in strategy for ch in "/@:'\"\\"):
        raise ValueError(f"strategy {strategy!r} cannot name a registered model: it contains one "
                         "of / @ : ' \" \\")
    return f"{MODEL_PREFIX}{strategy}"


def git_commit() -> str:
    """The checked-out commit of the code (best effort: 'unknown' outside a git work tree)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else "unknown"


def version_str(version: object) -> str:
    """Model version numbers are int on a SQL store and str over HTTP: always compare as str."""
    return str(version)
