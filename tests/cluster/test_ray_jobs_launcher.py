"""`hydra/launcher=ray_jobs` against a real `ray start --head` cluster with token authentication:
each sweep point is a Ray job (Jobs API), followed to its end, its log kept in the sweep directory,
its MLflow run filed under the sweep's parent run; a failed point is reported and the others still
finish. The eval points are `kopretrain eval experiment=smoke` on the shipped tiny model (the
cheapest command that makes a real, tracked point); the train points are `kopretrain train
experiment=smoke` (3 steps), packed by the launcher's fit check into a cluster that holds two of
them at once; a point that could never fit is refused before anything is submitted. One cluster
for all sweeps; stopped in a finally block.

    .venv/bin/python -m pytest tests/cluster/test_ray_jobs_launcher.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster.conftest import ray_head_fixture
from tests.cluster.ray_head import RayHead
from tests.cluster.test_job_submit import jobs_api

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# 6 logical CPUs: three eval points (1 CPU each) run at once; of the train points (2 driver CPUs + 1
# one-CPU worker = 3 each) two fit at once, so the third must wait for one of them to end.
ray_head = ray_head_fixture(num_cpus=6)


def sweep(head: RayHead, tmp_path, *overrides: str, command: str = "eval") -> subprocess.CompletedProcess:
    """`kopretrain <command> -m ... hydra/launcher=ray_jobs` from tmp_path, authenticated by the cluster's token
    (HOME/.ray/auth_token and RAY_AUTH_MODE=token in head.env), the cluster found through RAY_ADDRESS."""
    env = {**head.env, "RAY_ADDRESS": head.dashboard_url}
    cmd = [sys.executable, "-m", "kopretrain", command, "-m", "experiment=smoke", *overrides, "hydra/launcher=ray_jobs",
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


def test_train_points_are_packed_into_the_cluster_and_all_succeed(ray_head, tmp_path):
    """max_concurrent=3 but only two train points fit the 6 CPUs at once (each reserves 2 CPUs for its
    driver and 1 for its worker): the third is submitted when one has ended (without the fit check
    three drivers take all 6 CPUs and no point's worker can ever start)."""
    ratios = ("0", "0.2", "0.5")
    out = sweep(ray_head, tmp_path, f"mix.replay_ratio={','.join(ratios)}", "num_steps=3", "checkpoint.every_num_steps=0",
                "scale.num_workers=1", "hydra.launcher.max_concurrent=3", "hydra.launcher.entrypoint_num_cpus=2", command="train")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    said = [line for line in out.stdout.splitlines() if line.startswith("[sweep] ")]
    print("\n".join(said))  # shown when an assertion fails
    assert "[sweep] fit check: the cluster has 6 CPU in all; a point is submitted when its needs fit beside the " \
           "running points' (other jobs on the cluster are not counted)" in said
    waits = [line for line in said if " waits: " in line]
    assert waits == ["[sweep] #2 waits: needs 3 CPU beside 6 CPU of the running points, the cluster has 6 "
                     "(running: #0, #1; submitted when they leave room)"]
    submitted = [i for i, line in enumerate(said) if line.startswith("[sweep] #2 mix.replay_ratio=0.5: submitted as ")]
    first_end = min(i for i, line in enumerate(said) if line.startswith(("[sweep] #0: SUCCEEDED", "[sweep] #1: SUCCEEDED")))
    assert len(submitted) == 1 and first_end < submitted[0]

    launched = json.loads((sweep_dir / "ray_jobs.json").read_text())["points"]
    assert [p["status"] for p in launched] == ["SUCCEEDED"] * 3
    jobs = [jobs_api(ray_head, p["submission_id"]) for p in launched]  # the cluster's own record
    assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 3
    assert jobs[2]["start_time"] >= min(jobs[0]["end_time"], jobs[1]["end_time"])  # never three at once

    report = json.loads((sweep_dir / "report.json").read_text())
    assert report["swept"] == ["mix.replay_ratio"] and len(report["jobs"]) == 3
    client = MlflowClient(report["tracking_uri"])
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == [f"replay_ratio={r}" for r in ratios]
    for child in children:
        ratio = child.data.tags["sweep.mix.replay_ratio"]
        num = child.data.tags["kopretrain.sweep_point"]
        assert ratio == ratios[int(num)] and child.info.run_name == f"replay_ratio={ratio}"
        job_report = json.loads((sweep_dir / num / "report.json").read_text())
        assert job_report["mlflow_run_id"] == child.info.run_id and child.info.status == "FINISHED"
        assert job_report["weights"] == {"ko": pytest.approx(1 - float(ratio)), "en": pytest.approx(float(ratio))}
        assert [r["step"] for r in job_report["losses"]] == [1, 2, 3]
        history = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "loss")}
        assert history == {r["step"]: pytest.approx(r["loss"]) for r in job_report["losses"]}
        assert history[3] == pytest.approx(job_report["final_loss"])


def test_a_point_that_can_never_fit_the_cluster_is_refused_before_anything_is_submitted(ray_head, tmp_path):
    before = {j["submission_id"] for j in jobs_api(ray_head)}
    out = sweep(ray_head, tmp_path, "mix.replay_ratio=0,0.2", "hydra.launcher.entrypoint_num_cpus=5", command="train")
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "kopretrain train: error: #0 mix.replay_ratio=0: needs 7 CPU (hydra.launcher.entrypoint_num_cpus=5 + "
        "scale.num_workers=2 x scale.cpus_per_worker=1), the cluster has 6 CPU in all (and 1 more point); no autoscaler "
        "can add nodes, so its job would wait forever: lower them, or add nodes (hydra.launcher.fit_check=false submits anyway)")
    assert "Traceback" not in out.stderr
    assert {j["submission_id"] for j in jobs_api(ray_head)} == before
    assert not (tmp_path / "sweep" / "ray_jobs.json").exists()
