"""`hydra/launcher=ray_jobs` against a real `ray start --head` cluster with token authentication:
each sweep point is a Ray job (Jobs API), followed to its end, its log kept in the sweep directory,
its MLflow run filed under the sweep's parent run; a failed point is reported and the others still
finish. The points are `kopretrain eval experiment=smoke` on the shipped tiny model (the cheapest
command that makes a real, tracked point). One cluster for both sweeps; stopped in a finally block.

    .venv/bin/python -m pytest tests/cluster/test_ray_jobs_launcher.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster.ray_head import RayHead, start_ray_head, stop_ray_head
from tests.cluster.test_job_submit import jobs_api

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> RayHead:
    head = start_ray_head(num_cpus=4)
    try:
        yield head
    finally:
        survivors = stop_ray_head(head, keep_log_in=tmp_path_factory.mktemp("ray-head-log"))
        assert survivors == [], f"Ray processes outlived the cluster stop: {survivors}"


def sweep(head: RayHead, tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """`kopretrain eval -m ... hydra/launcher=ray_jobs` from tmp_path, authenticated by the cluster's token
    (HOME/.ray/auth_token and RAY_AUTH_MODE=token in head.env), the cluster found through RAY_ADDRESS."""
    env = {**head.env, "RAY_ADDRESS": head.dashboard_url}
    cmd = [sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke", *overrides, "hydra/launcher=ray_jobs",
           "hydra.launcher.poll_interval_s=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_three_points_are_three_succeeded_jobs_under_one_parent_run(ray_head, tmp_path):
    out = sweep(ray_head, tmp_path, "max_docs_per_domain=2,3,4", "hydra.launcher.max_concurrent=3",
                "hydra.launcher.entrypoint_num_cpus=1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    assert out.stdout.strip().splitlines()[-1] == str(sweep_dir)
    launched = json.loads((sweep_dir / "ray_jobs.json").read_text())["points"]
    assert [p["status"] for p in launched] == ["SUCCEEDED"] * 3
    for num, point in enumerate(launched):
        job = jobs_api(ray_head, point["submission_id"])  # the cluster's own record
        assert job["status"] == "SUCCEEDED"
        assert job["metadata"]["kopretrain.point"] == str(num)
        assert f"hydra.run.dir={sweep_dir / str(num)}" in job["entrypoint"]
        point_env = json.loads(job["runtime_env"]["env_vars"]["KOPRETRAIN_SWEEP_POINT"])
        assert point_env["values"] == {"max_docs_per_domain": str(num + 2)}
        log = (sweep_dir / str(num) / "ray-job.log").read_text()
        assert log.strip().splitlines()[-1] == str(sweep_dir / str(num))  # the point's CLI printed its run dir
        assert (sweep_dir / str(num) / "report.json").is_file()

    report = json.loads((sweep_dir / "report.json").read_text())
    assert report["swept"] == ["max_docs_per_domain"] and len(report["jobs"]) == 3
    client = MlflowClient(report["tracking_uri"])
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kopretrain.swept"] == "max_docs_per_domain"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == [f"max_docs_per_domain={n}" for n in (2, 3, 4)]
    for child in children:
        n = child.data.tags["sweep.max_docs_per_domain"]
        job_report = json.loads((sweep_dir / child.data.tags["kopretrain.sweep_point"] / "report.json").read_text())
        assert job_report["mlflow_run_id"] == child.info.run_id and child.info.status == "FINISHED"
        assert job_report["domains"]["en"]["num_docs"] == int(n)
        assert child.data.metrics["en_bpc"] == pytest.approx(job_report["domains"]["en"]["bpc"])
        assert parent.info.start_time <= child.info.start_time and child.info.end_time <= parent.info.end_time
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_failed_point_is_reported_and_the_others_finish(ray_head, tmp_path):
    # one at a time, the bad point first: the good one is submitted after it failed
    out = sweep(ray_head, tmp_path, "model_dir=no/such/model,data/smoke/model", "max_docs_per_domain=2",
                "hydra.launcher.max_concurrent=1")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    error = out.stderr.strip().splitlines()
    i = error.index("kopretrain eval: error: 1 of 2 sweep points failed:")
    assert error[i + 1].startswith("  #0 model_dir=no/such/model: FAILED (kopretrain eval: error: model_dir")
    assert error[i + 1].endswith(f"log: {sweep_dir / '0' / 'ray-job.log'}")
    launched = json.loads((sweep_dir / "ray_jobs.json").read_text())["points"]
    assert [p["status"] for p in launched] == ["FAILED", "SUCCEEDED"]
    assert jobs_api(ray_head, launched[0]["submission_id"])["status"] == "FAILED"
    assert "kopretrain eval: error: model_dir" in (sweep_dir / "0" / "ray-job.log").read_text()
    # the sweep's report has the point that succeeded; its parent run says the sweep failed
    report = json.loads((sweep_dir / "report.json").read_text())
    assert [job["run_dir"] for job in report["jobs"]] == [str(sweep_dir / "1")]
    client = MlflowClient(report["tracking_uri"])
    assert client.get_run(report["mlflow_parent_run_id"]).info.status == "FAILED"
    child = client.get_run(report["jobs"][0]["report"]["mlflow_run_id"])
    assert child.info.status == "FINISHED" and child.info.run_name == "model_dir=data/smoke/model"
