"""The MLflow tracker against a real local store: nesting, params, metrics, artifacts."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from kopretrain.config.common import TrackingConfig
from kopretrain.errors import UserError
from kopretrain.tracking import NullTracker, flatten, resolve_tracking_uri, start_run


@dataclass
class _Inner:
    lr: float = 0.1


@dataclass
class _Cfg:
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)
    sources: list = field(default_factory=lambda: [{"path": "a"}, {"path": "b"}])


def test_flatten_dotted_keys():
    assert flatten(_Cfg()) == {"name": "x", "inner.lr": 0.1, "sources.0.path": "a", "sources.1.path": "b"}


def test_relative_local_stores_become_absolute(tmp_path):
    assert resolve_tracking_uri("sqlite:///m.db", tmp_path) == f"sqlite:///{tmp_path}/m.db"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_disabled_tracking_is_a_null_tracker():
    assert isinstance(start_run(TrackingConfig(enabled=False), "r"), NullTracker)


def test_child_run_is_nested_and_logs_params_metrics_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    parent = start_run(TrackingConfig(uri=uri, experiment_name="t"), "parent")
    child = start_run(TrackingConfig(uri=uri, experiment_name="t", parent_run_id=parent.run_id), "child", config=_Cfg())
    child.log_metrics({"loss": 2.5}, step=3)
    (tmp_path / "report.json").write_text("{}")
    child.log_artifact(tmp_path / "report.json")
    child.end()
    parent.end()
    client = MlflowClient(uri)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params["inner.lr"] == "0.1"
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "loss")] == [(3, 2.5)]
    assert {a.path for a in client.list_artifacts(child.run_id)} == {"config.json", "report.json"}
    assert run.info.status == "FINISHED"


def test_unreachable_server_fails_fast_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UserError, match=r"^tracking.uri: no MLflow server answers at http://127.0.0.1"):
        start_run(TrackingConfig(uri=f"http://127.0.0.1:{port}"), "r")
