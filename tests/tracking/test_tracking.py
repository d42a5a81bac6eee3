"""The MLflow tracker against a real local store: nesting, params, metrics, artifacts; names MLflow
refuses mapped; failures after the start as warnings; truthful end states; settings checked first."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from kopretrain.config.common import TrackingConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.tracking import (
    MlflowTracker,
    NullTracker,
    check_tracking,
    end_open_runs,
    flatten,
    metric_name,
    resolve_tracking_uri,
    start_run,
)


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


# ---------------------------------------------------------------- names MLflow refuses
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One real local store for the tests below (creating one takes seconds); each test its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/m.db"


def _warnings(capsys) -> list[str]:
    """Our stderr lines (MLflow adds its own INFO lines when it creates a store)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("kopretrain")]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("loss", "loss"),
        ("token_share_ko(news)", "token_share_ko_news_"),
        ("한국어_bpc", "한국어_bpc"),  # Unicode letters are valid as they are
        ("a b/c:d-e.f", "a b/c:d-e.f"),
        ("a//b", "a__b"),
        ("/x", "_x"),
        ("x/", "x_"),
        ("..x", "_.x"),
        ("", "_"),
        ("x" * 300, "x" * 250),
    ],
)
def test_metric_name_mapping(name, expected):
    assert metric_name(name) == expected


def test_mapped_names_reach_a_real_store(store, capsys):
    uri = store
    weird = ["token_share_ko(news)", "a//b", "/x", "x/", "..x", "q?&=%", "ko[1]"]
    tracker = start_run(TrackingConfig(uri=uri), "r", config={"mix": {"weights": {"ko(news)": 0.8, "en": 0.2}}})
    tracker.log_metrics({name: float(i) for i, name in enumerate(weird)}, step=1)
    tracker.end()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.metrics == {metric_name(name): float(i) for i, name in enumerate(weird)}
    assert run.data.metrics["token_share_ko_news_"] == 0.0
    assert run.data.params["mix.weights.ko_news_"] == "0.8"
    assert run.info.status == "FINISHED"
    assert "kopretrain: warning" not in capsys.readouterr().err  # nothing failed, nothing to warn about


def test_colliding_names_warn_once_and_keep_the_later_value(store, capsys):
    uri = store
    tracker = start_run(TrackingConfig(uri=uri), "r")
    tracker.log_metrics({"ko(news)": 1.0, "ko_news_": 2.0})
    tracker.log_metrics({"ko(news)": 3.0, "ko_news_": 4.0}, step=1)
    tracker.end()
    err = _warnings(capsys)
    assert err == ["kopretrain: warning: MLflow names 'ko(news)' and 'ko_news_' both map to 'ko_news_'; the later value is kept"]
    assert MlflowClient(uri).get_run(tracker.run_id).data.metrics["ko_news_"] == 4.0


# ---------------------------------------------------------------- failures after the start are warnings
def test_mlflow_failures_after_the_start_are_one_warning_line_each(store, capsys):
    uri = store
    tracker = start_run(TrackingConfig(uri=uri), "r")
    MlflowClient(uri).delete_run(tracker.run_id)  # the store now refuses every write to the run
    for _ in range(3):
        tracker.log_metrics({"loss": 1.0}, step=1)  # no exception, and a warning only the first time
    tracker.log_params({"a": 1})
    tracker.end("FINISHED")
    err = _warnings(capsys)
    assert [line.split(" for run ")[0] for line in err] == [
        "kopretrain: warning: MLflow could not log metrics",
        "kopretrain: warning: MLflow could not log params",
        "kopretrain: warning: MLflow could not end the run",
    ]
    assert all(line.endswith("the command goes on") and tracker.run_id in line for line in err)


def test_end_is_final_and_open_runs_end_truthfully(store):
    uri = store
    done = start_run(TrackingConfig(uri=uri), "done")
    left_open = start_run(TrackingConfig(uri=uri), "left-open")
    done.end()
    end_open_runs("FAILED")  # what the CLI does when a command raised
    done.end("FAILED")  # a second end (e.g. a command's own except clause) changes nothing
    left_open.end("FINISHED")
    client = MlflowClient(uri)
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert client.get_run(left_open.run_id).info.status == "FAILED"


def test_a_reattached_tracker_knows_the_last_logged_step(store):
    tracker = start_run(TrackingConfig(uri=store, experiment_name="reattach"), "r")
    tracker.log_metrics({"loss": 2.0}, step=3)
    tracker.log_metrics({"loss": 1.0}, step=5)
    worker = MlflowTracker(tracker.uri, "reattach", "", run_id=tracker.run_id)  # rank 0 after a restart
    assert (worker.last_step("loss"), worker.last_step("lr"), NullTracker().last_step("loss")) == (5, 0, 0)
    tracker.end()


def test_a_run_failed_by_ctrl_c_is_killed(store):
    tracker = start_run(TrackingConfig(uri=store, experiment_name="interrupted"), "r")
    try:
        raise KeyboardInterrupt
    except BaseException:  # what train, eval and demo do around their work
        tracker.end("FAILED")
    assert MlflowClient(store).get_run(tracker.run_id).info.status == "KILLED"


# ---------------------------------------------------------------- settings MLflow would refuse
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"experiment_name": ""}, "experiment_name: must not be empty"),
        ({"experiment_name": "e" * 257}, "experiment_name: is 257 characters; MLflow's stores keep at most 256"),
        ({"run_name": "r" * 251}, "run_name: is 251 characters; MLflow keeps at most 250"),
        ({"parent_run_id": "not a run"}, "parent_run_id: 'not a run' is not an MLflow run id"),
        ({"tags": {"a(b)": "x"}}, "tags: tag name 'a(b)' is refused by MLflow"),
        ({"tags": {"/abs": "x"}}, "tags: tag name '/abs' is refused by MLflow"),
        ({"tags": {"k": "v" * 8001}}, "tags: the value of tag 'k' is 8001 characters"),
        ({"uri": " "}, "uri: must not be empty"),
    ],
)
def test_settings_mlflow_refuses_fail_in_the_config(kwargs, message):
    with pytest.raises(ConfigError) as info:
        TrackingConfig(**kwargs)
    assert str(info.value).startswith(message)
    TrackingConfig(enabled=False, **kwargs)  # not checked when tracking is off


def test_store_dependent_settings_fail_before_the_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    with pytest.raises(UserError, match=r"^tracking.parent_run_id: no run 'abc' in .* \(the store does not exist yet\)$"):
        check_tracking(TrackingConfig(uri=uri, parent_run_id="abc"))
    assert not (tmp_path / "m.db").exists(), "checking must not create the store"
    parent = start_run(TrackingConfig(uri=uri, experiment_name="gone"), "parent")
    parent.end()
    with pytest.raises(UserError, match=r"^tracking.parent_run_id: no run 'abc' in "):
        start_run(TrackingConfig(uri=uri, parent_run_id="abc"), "child")
    client = MlflowClient(uri)
    client.delete_run(parent.run_id)
    with pytest.raises(UserError, match=rf"^tracking.parent_run_id: run '{parent.run_id}' is deleted in "):
        check_tracking(TrackingConfig(uri=uri, parent_run_id=parent.run_id))
    client.delete_experiment(client.get_experiment_by_name("gone").experiment_id)
    with pytest.raises(UserError, match=r"^tracking.experiment_name: experiment 'gone' is deleted in .*; restore it"):
        start_run(TrackingConfig(uri=uri, experiment_name="gone"), "r")
    assert [r.info.run_name for r in client.search_runs([e.experiment_id for e in client.search_experiments()])] == []
