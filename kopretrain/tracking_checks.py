"""What only the tracking store can tell, checked before any work (one-line UserErrors), and the
settings that make MLflow's HTTP client fail in seconds.

    check_tracking(cfg.tracking)   # the server answers, the database connects, experiment/parent run usable
    fail_fast_http(uri)            # few retries and a short timeout, unless the user set MLflow's variables

`kopretrain.tracking` re-exports these names.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from kopretrain.config.common import TrackingConfig
from kopretrain.errors import UserError
from kopretrain.tracking_sqlite import prepare_store


def resolve_tracking_uri(uri: str, base_dir: str | os.PathLike | None = None) -> str:
    """Make a local store URI absolute, so Ray workers (other cwd) write to the same store.

    `sqlite:///mlflow.db` -> `sqlite:////abs/launch/dir/mlflow.db`; a bare path -> `file:///abs/path`;
    http(s), databricks and absolute URIs are returned unchanged.
    """
    base = Path(base_dir or os.getcwd())
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((base / uri[len("sqlite:///") :]).resolve())
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return (base / uri).resolve().as_uri()
    return uri


# A tracking server that stopped answering must cost seconds, not MLflow's minutes of retries per call
# (7 retries, backoff factor 2, 120 s timeout): set in-process, before the client's first request,
# unless the user set them.
HTTP_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http(uri: str) -> None:
    """For an http(s) tracking URI: few retries and a short timeout for every MLflow request."""
    if str(uri).startswith(("http://", "https://")):
        for key, value in HTTP_FAIL_FAST.items():
            os.environ.setdefault(key, value)


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when no server answers at `uri`."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"tracking.uri: no MLflow server answers at {uri} ({reason})") from None


_DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy database stores other than SQLite


def check_database(uri: str, timeout_s: int = 10) -> None:
    """A database store: its driver imports and the database answers, as one line, in seconds
    (MLflow itself retries a refused connection for minutes and then raises a long traceback)."""
    dialect = urlparse(uri).scheme.split("+")[0]
    if dialect not in _DATABASES:
        return
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(uri).render_as_string(hide_password=True)
        args = {"connect_timeout": timeout_s} if dialect in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(uri, connect_args=args)
    except ImportError as exc:
        raise UserError(f"tracking.uri: the {dialect} driver is not installed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a malformed URL or an unknown driver name
        raise UserError(f"tracking.uri: cannot use the database at {uri}: {str(exc).splitlines()[0][:200]}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - refused, unknown host, bad password, no such database
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise UserError(f"tracking.uri: cannot connect to the database at {shown}: {reason}") from None
    finally:
        engine.dispose()


def _local_store_missing(uri: str) -> bool:
    """A local store that does not exist yet (nothing to look up in it; opening it would create it)."""
    if uri.startswith("sqlite:///"):
        return not Path(uri[len("sqlite:///") :]).exists()
    if uri.startswith("file:"):
        return not Path(urllib.request.url2pathname(urlparse(uri).path)).exists()
    return False


def check_tracking(cfg: TrackingConfig, base_dir=None) -> None:
    """What only the store can tell, before any work: the server answers, the experiment is not
    deleted, the parent run exists and is not deleted. Raises UserError (one line)."""
    if not cfg.enabled:
        return
    check_server(cfg.uri)
    check_database(cfg.uri)
    fail_fast_http(cfg.uri)
    uri = resolve_tracking_uri(cfg.uri, base_dir)
    if _local_store_missing(uri):
        if cfg.parent_run_id:
            raise UserError(f"tracking.parent_run_id: no run {cfg.parent_run_id!r} in {cfg.uri} (the store does not exist yet)")
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=prepare_store(uri))
        exp = client.get_experiment_by_name(cfg.experiment_name)
    except MlflowException as exc:
        raise UserError(f"tracking.uri: cannot read the MLflow store at {cfg.uri} ({str(exc).splitlines()[0][:200]})") from None
    if exp is not None and exp.lifecycle_stage != "active":
        raise UserError(f"tracking.experiment_name: experiment {cfg.experiment_name!r} is deleted in {cfg.uri}; restore it "
                        f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or choose another name")
    if cfg.parent_run_id:
        try:
            parent = client.get_run(cfg.parent_run_id)
        except MlflowException:
            raise UserError(f"tracking.parent_run_id: no run {cfg.parent_run_id!r} in {cfg.uri}") from None
        if parent.info.lifecycle_stage != "active":
            raise UserError(f"tracking.parent_run_id: run {cfg.parent_run_id!r} is deleted in {cfg.uri}")
