"""A `-m` sweep in MLflow: one parent run, one child per point named and tagged by its swept values,
the experiment marked as model training; the pieces (names, tags, swept keys, the hand-over to a
point in another process) as pure functions, and one real sweep (Hydra's basic launcher, a real
SQLite store) through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient

from kopretrain.launch.points import (POINT_ENV, PointFailure, SweepFailed, decode_point, encode_point, error_line,
                                      hydra_quoted, point_name, point_tags, swept_values, values_from_tags)
from kopretrain.sweep import swept_keys


def test_swept_keys_are_the_overrides_with_several_values():
    overrides = ["experiment=smoke", "mix.replay_ratio=0,0.2,0.5", "+foo=range(2)", "optim.lr=choice(1e-3,3e-3)"]
    assert swept_keys(overrides) == ["mix.replay_ratio", "foo", "optim.lr"]
    assert swept_keys(["experiment=smoke"]) == []


def test_a_point_is_named_and_tagged_by_its_swept_values():
    values = swept_values(["experiment=smoke", "mix.replay_ratio=0.2", "optim.lr=0.001"], ["mix.replay_ratio", "optim.lr"])
    assert values == {"mix.replay_ratio": "0.2", "optim.lr": "0.001"}
    assert point_name(values) == "replay_ratio=0.2, lr=0.001"
    assert point_tags(values) == {"sweep.mix.replay_ratio": "0.2", "sweep.optim.lr": "0.001"}
    assert values_from_tags({**point_tags(values), "mlflow.runName": "x"}) == values
    # two keys ending alike keep their full names
    assert point_name({"optim.lr": "1", "head.lr": "2"}) == "optim.lr=1, head.lr=2"


def test_the_point_handed_to_another_process_round_trips():
    text = encode_point("abc123", {"mix.replay_ratio": "0.2"}, "/s", 1)
    assert decode_point({POINT_ENV: text}) == {"parent_run_id": "abc123", "values": {"mix.replay_ratio": "0.2"},
                                               "sweep_dir": "/s", "num": 1}
    assert decode_point({}) is None


def test_the_parent_logs_only_the_swept_keys_and_a_point_its_config(tmp_path, monkeypatch):
    """Parent params `sweep.<key>`: the swept keys with their value lists, not the fixed overrides; a
    point's params: its config as given (the sweep's tags and parent are tags of the run, not params)."""
    from kopretrain import sweep
    from kopretrain.cli import compose_typed
    from kopretrain.tracking import start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fixed = ["experiment=smoke", f"tracking.uri={uri}", "+tracking.tags.team=ko"]
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    sweep.start_sweep("eval", sweep_dir, [*fixed, "max_docs_per_domain=2,3", "batch_size=range(2,4)"],
                      compose_typed("eval", fixed).tracking)
    parent_id = sweep.parent_run_id()
    sweep.finish_sweep("FINISHED")
    client = MlflowClient(uri)
    assert client.get_run(parent_id).data.params == {"sweep.max_docs_per_domain": "2,3", "sweep.batch_size": "2,3"}
    monkeypatch.setenv(POINT_ENV, encode_point(parent_id, {"max_docs_per_domain": "3", "batch_size": "2"}, str(sweep_dir), 1))
    typed = sweep.point_tracking(compose_typed("eval", [*fixed, "max_docs_per_domain=3", "batch_size=2"]))
    child = client.get_run(start_run(typed.tracking, run_name="eval-x", config=typed).run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id and child.data.tags["sweep.max_docs_per_domain"] == "3"
    assert child.data.tags["kopretrain.sweep_point"] == "1" and child.info.run_name == "max_docs_per_domain=3, batch_size=2"
    params = child.data.params
    assert [k for k in params if k.startswith("tracking.tags.")] == ["tracking.tags.team"]  # the configured tag only
    assert params["tracking.parent_run_id"] == "" and params["tracking.run_name"] == ""
    assert params["max_docs_per_domain"] == "3" and params["tracking.uri"] == uri
    config = json.loads(open(client.download_artifacts(child.info.run_id, "config.json", str(tmp_path))).read())
    assert config["tracking"]["tags"] == {"team": "ko"} and config["tracking"]["parent_run_id"] == ""


@pytest.mark.parametrize("value", ["/tmp/a-b_c.1/2", "/tmp/with space/x", "it's", "a,b=c"])
def test_hydra_quoted_values_parse_back_to_themselves(value):
    parsed = OverridesParser.create().parse_overrides([f"hydra.run.dir={hydra_quoted(value)}"])[0]
    assert not parsed.is_sweep_override() and parsed.value() == value


def test_the_failure_summary_lists_every_failed_point_with_its_cli_error():
    log = "loading...\nTraceback (most recent call last):\nkopretrain eval: error: model_dir: not found: x\n"
    assert error_line(log) == "kopretrain eval: error: model_dir: not found: x"
    failed = SweepFailed([PointFailure(1, "model_dir=x", "FAILED", error_line(log), "/s/1/ray-job.log")], 3)
    assert failed.summary().splitlines() == [
        "1 of 3 sweep points failed:",
        "  #1 model_dir=x: FAILED (kopretrain eval: error: model_dir: not found: x); log: /s/1/ray-job.log"]
    assert not isinstance(failed, Exception)  # Hydra's run_and_report lets it through to the CLI


@pytest.mark.slow
def test_an_eval_sweep_is_one_parent_run_with_a_tagged_child_per_point(tmp_path):
    sweep_dir, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke", "max_docs_per_domain=2,3",
                          f"tracking.uri={uri}", "tracking.experiment_name=sweep-test", f"hydra.sweep.dir={sweep_dir}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((sweep_dir / "report.json").read_text())
    assert report["swept"] == ["max_docs_per_domain"] and report["tracking_uri"] == uri
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep-test")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # `mlflow ui` opens on runs
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.info.run_name == "eval-sweep-sweep" and parent.info.status == "FINISHED"
    assert parent.data.tags["kopretrain.sweep_dir"] == str(sweep_dir)
    assert parent.data.params == {"sweep.max_docs_per_domain": "2,3"}  # the swept key only, not experiment or tracking.*
    assert "report.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    runs = client.search_runs([experiment.experiment_id], "", order_by=["attributes.start_time ASC"])
    assert len(runs) == 3  # the parent and its two points, nothing else
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [c.info.run_name for c in children] == ["max_docs_per_domain=2", "max_docs_per_domain=3"]
    for num, (child, job) in enumerate(zip(children, report["jobs"])):
        assert child.data.tags["sweep.max_docs_per_domain"] == str(num + 2)
        assert child.data.tags["kopretrain.sweep_point"] == str(num)
        assert not [k for k in child.data.params if k.startswith("tracking.tags.")]  # the sweep's tags are no config
        assert child.data.params["max_docs_per_domain"] == str(num + 2)
        assert child.info.run_id == job["report"]["mlflow_run_id"] and child.info.status == "FINISHED"
        assert child.data.metrics["ko_bpc"] == pytest.approx(job["report"]["domains"]["ko"]["bpc"])
        # the parent spans its points
        assert parent.info.start_time <= child.info.start_time and child.info.end_time <= parent.info.end_time


def test_ray_jobs_without_a_cluster_address_is_one_line_and_the_parent_run_fails(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke", "max_docs_per_domain=2,3",
                          "hydra/launcher=ray_jobs", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "kopretrain eval: error: hydra.launcher.address: no Ray cluster given (set it, or RAY_ADDRESS, to the "
        "dashboard's address, e.g. http://head:8265)")
    report = json.loads((tmp_path / "sweep" / "report.json").read_text())
    assert report["jobs"] == [] and MlflowClient(uri).get_run(report["mlflow_parent_run_id"]).info.status == "FAILED"


def test_a_plain_sweep_stops_at_its_first_failing_point_and_the_parent_run_fails(tmp_path):
    sweep_dir, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke",
                          "model_dir=no/such/dir,data/smoke/model", "max_docs_per_domain=2", f"tracking.uri={uri}",
                          "tracking.experiment_name=plain-fail", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2  # the failing point's own exit code (2: its config was refused)
    assert out.stderr.strip().splitlines()[-1].startswith("kopretrain eval: error: model_dir: 'no/such/dir' does not exist")
    assert (sweep_dir / "0").is_dir() and not (sweep_dir / "1").exists()  # point #1 never ran
    report = json.loads((sweep_dir / "report.json").read_text())
    assert report["jobs"] == []
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("plain-fail").experiment_id])  # no run for point #1
    assert [(r.info.run_id, r.info.status) for r in runs] == [(report["mlflow_parent_run_id"], "FAILED")]
