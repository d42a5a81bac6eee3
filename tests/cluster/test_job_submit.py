"""`ray job submit` of `kopretrain train` to a real local Ray cluster with token authentication.

The module starts one cluster (`ray start --head --block`, RAY_AUTH_MODE=token, private HOME,
temp dir and ports; see tests/cluster/ray_head.py) and submits, with `--working-dir` set to
this checkout as the README tells users to, exactly the entrypoint of cluster/rayjob.yaml (the
train smoke recipe; the shared volume /mnt/data becomes a temporary directory). It checks what
a user would: the job SUCCEEDED, its log ends with the run directory, report.json and the model
are there, the Train workers were actors of this job, and the MLflow run with the per-step
losses exists in the store the command was pointed at. It also shows that the cluster refuses a
submission without the token or with a wrong one. The cluster is stopped in a finally block.

    .venv/bin/python -m pytest tests/cluster/test_job_submit.py -q
"""

from __future__ import annotations

import json
import shlex
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster.processes import http_status
from tests.cluster.conftest import ray_head_fixture
from tests.cluster.ray_head import RayHead, clean_env

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


ray_head = ray_head_fixture(num_cpus=8)


def submit(head: RayHead, entrypoint: list[str], env: dict[str, str] | None = None, submission_id: str | None = None):
    args = ["job", "submit", "--address", head.dashboard_url]
    if submission_id:
        args += ["--submission-id", submission_id]
    # Ray 2.60 leaves .git, .venv and __pycache__ behind by default and honours .gitignore
    # (outputs/, mlruns/, ...), so the upload is the code, conf/ and data/ (~7 MB).
    args += ["--working-dir", str(REPO), "--", *entrypoint]
    return head.ray(*args, env=env, timeout_s=600)


def http_json(head: RayHead, path: str) -> dict | list:
    """GET a dashboard REST endpoint with the cluster's token."""
    request = urllib.request.Request(f"{head.dashboard_url}{path}", headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def jobs_api(head: RayHead, path: str = "") -> dict | list:
    """The Jobs REST API (what `ray job status/logs/list` call)."""
    return http_json(head, f"/api/jobs/{path}")


def test_cluster_refuses_requests_without_the_token(ray_head, tmp_path):
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    entrypoint = ["python", "-c", f"print('{marker}')"]
    assert http_status(f"{ray_head.dashboard_url}/api/jobs/") == 401

    no_token = clean_env(tmp_path / "empty-home")  # no ~/.ray/auth_token, no RAY_AUTH_MODE
    refused = submit(ray_head, entrypoint, env=no_token)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr + refused.stdout

    wrong_token = {**no_token, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    refused = submit(ray_head, entrypoint, env=wrong_token)
    assert refused.returncode != 0
    assert "invalid" in (refused.stderr + refused.stdout).lower()

    # Nothing of the refused submissions reached the cluster.
    assert not any(marker in job["entrypoint"] for job in jobs_api(ray_head))


def rayjob_entrypoint(name: str, data_root: Path) -> list[str]:
    """The entrypoint of the RayJob `name` in cluster/, with its volume /mnt/data moved to `data_root`
    and the MLflow Service (cluster/mlflow; tests/tracking/test_postgres.py runs that server) replaced
    by a SQLite store on that volume."""
    jobs = [d for p in sorted((REPO / "cluster").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
            if d and d["kind"] == "RayJob" and d["metadata"]["name"] == name]
    assert len(jobs) == 1, name
    entrypoint = jobs[0]["spec"]["entrypoint"].replace("/mnt/data", str(data_root))
    return shlex.split(entrypoint.replace("tracking.uri=http://mlflow:5000", f"tracking.uri=sqlite:///{data_root}/mlflow.db"))


def test_train_rayjob_entrypoint_runs_on_the_cluster_and_logs_to_mlflow(ray_head, tmp_path):
    """Submit exactly what cluster/rayjob.yaml submits (the train smoke recipe, a sqlite MLflow
    store and a timestamped run dir on the shared volume), here with the volume in tmp_path."""
    from mlflow.tracking import MlflowClient

    entrypoint = rayjob_entrypoint("kopretrain-train", tmp_path)
    assert entrypoint[:3] == ["kopretrain", "train", "experiment=smoke"]
    submission_id = f"kopretrain-train-{uuid.uuid4().hex[:8]}"
    out = submit(ray_head, entrypoint, submission_id=submission_id)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    job = jobs_api(ray_head, submission_id)
    assert job["status"] == "SUCCEEDED"
    # The checkout was uploaded as the job's working directory (a package in the cluster's store).
    assert job["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    log_lines = [line for line in jobs_api(ray_head, f"{submission_id}/logs")["logs"].splitlines() if line.strip()]
    run_dir = Path(log_lines[-1])  # the CLI prints the run dir last
    assert run_dir.parent == tmp_path / "runs" / "train"
    report = json.loads((run_dir / "report.json").read_text())
    assert (run_dir / "model" / "config.json").exists()

    # The Train workers were actors of this job in this cluster (not of a private local instance).
    actors = http_json(ray_head, f"/api/v0/actors?limit=10000&detail=true&filter_keys=job_id&filter_predicates=%3D&filter_values={job['job_id']}")
    workers = [a for a in actors["data"]["result"]["result"] if a["class_name"] == "RayTrainWorker"]
    assert len(workers) == report["num_workers"] == 2

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["scale.num_workers"] == "2"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}  # logged by rank 0
    assert history == {r["step"]: pytest.approx(r["loss"]) for r in report["losses"]}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.json", "config.json"}
