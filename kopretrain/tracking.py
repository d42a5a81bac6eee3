"""Experiment tracking: MLflow on the driver and on rank 0, a null tracker elsewhere.

One explicit `MlflowClient` per run (no fluent global state, so it behaves the same in the
CLI process and inside a Ray Train worker). A run is nested under a parent by the standard
`mlflow.parentRunId` tag, which is how the demo files one child run per training under its
own parent run and how the MLflow UI shows them.

    tracker = start_run(cfg.tracking, run_name="train", params=cfg)   # cfg: any dataclass
    tracker.log_metrics({"loss": 2.3}, step=10)
    tracker.log_artifact(run_dir / "report.json")
    tracker.end()
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from kopretrain.config.common import TrackingConfig
from kopretrain.errors import UserError


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


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dataclasses / dicts / lists -> {"optim.lr": 0.001, "sources.0.path": ...}."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list)) or dataclasses.is_dataclass(v) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


class NullTracker:
    """Does nothing; used when tracking is disabled and on ranks other than 0."""

    run_id = ""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: dict, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker:
    """One MLflow run, written through an explicit client."""

    def __init__(self, uri: str, experiment_name: str, run_name: str, parent_run_id: str = "", tags=None, run_id: str = ""):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        if run_id:  # re-attach (a restarted worker continues the same run)
            self.run_id = run_id
            return
        exp = self.client.get_experiment_by_name(experiment_name)
        exp_id = exp.experiment_id if exp else self._create_experiment(experiment_name)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name or None, tags=all_tags).info.run_id

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another process created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, ensure_ascii=False, default=str), name)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when no server answers at `uri`."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"tracking.uri: no MLflow server answers at {uri} ({reason})") from None


def start_run(cfg: TrackingConfig, run_name: str, config: Any = None, base_dir=None) -> NullTracker | MlflowTracker:
    """Open a run per `cfg` (NullTracker when disabled) and log `config` as params and artifact."""
    if not cfg.enabled:
        return NullTracker()
    check_server(cfg.uri)
    tracker = MlflowTracker(
        resolve_tracking_uri(cfg.uri, base_dir), cfg.experiment_name, cfg.run_name or run_name, cfg.parent_run_id, cfg.tags
    )
    if config is not None:
        tracker.log_params(flatten(config))
        as_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
        tracker.log_dict(as_dict, "config.json")
    return tracker
