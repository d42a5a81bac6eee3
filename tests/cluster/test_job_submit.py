"""`ray job submit` of a kopretrain command to a real local Ray cluster with token authentication.

The module starts one cluster (`ray start --head --block`, RAY_AUTH_MODE=token, private HOME,
temp dir and ports; see tests/cluster/ray_head.py), submits the command with `--working-dir`
set to this checkout exactly as the README tells users to, and checks what a user would: the
job SUCCEEDED, its log ends with the run directory, report.json is there, and the MLflow run
exists in the store the command was pointed at. It also shows that the cluster really refuses
a submission without the token (or with a wrong one). The cluster is stopped in a finally
block, whatever happens.

    .venv/bin/python -m pytest tests/cluster/test_job_submit.py -q
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.cluster.processes import http_status
from tests.cluster.ray_head import RayHead, clean_env, start_ray_head, stop_ray_head
from tests.helpers import make_tiny_llama_dir

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
# Ray honours .gitignore (so .venv/, outputs/, mlruns/ stay behind); .git is not in it.
RUNTIME_ENV_JSON = json.dumps({"excludes": [".git"]})


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> RayHead:
    head = start_ray_head(num_cpus=8)
    try:
        yield head
    finally:
        survivors = stop_ray_head(head, keep_log_in=tmp_path_factory.mktemp("ray-head-log"))
        assert survivors == [], f"Ray processes outlived the cluster stop: {survivors}"


def submit(head: RayHead, entrypoint: list[str], env: dict[str, str] | None = None, submission_id: str | None = None):
    args = ["job", "submit", "--address", head.dashboard_url]
    if submission_id:
        args += ["--submission-id", submission_id]
    args += ["--working-dir", str(REPO), "--runtime-env-json", RUNTIME_ENV_JSON, "--", *entrypoint]
    return head.ray(*args, env=env, timeout_s=600)


def jobs_api(head: RayHead, path: str = "") -> dict | list:
    """GET the Jobs REST API (what `ray job status/logs/list` call) with the cluster's token."""
    request = urllib.request.Request(
        f"{head.dashboard_url}/api/jobs/{path}", headers={"Authorization": f"Bearer {head.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    texts = (REPO / "data/heldout/en.txt").read_text().splitlines()[:100]
    texts += (REPO / "data/heldout/ko.txt").read_text().splitlines()[:100]
    return make_tiny_llama_dir(tmp_path_factory.mktemp("model"), texts)


def test_submitted_command_succeeds_and_its_mlflow_run_exists(ray_head, tiny_model, tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    submission_id = f"kopretrain-{uuid.uuid4().hex[:8]}"
    entrypoint = [
        "kopretrain", "eval", f"model={tiny_model}", "max_docs_per_domain=20",
        f"tracking.uri={store}", "tracking.experiment_name=job-submit", f"hydra.run.dir={run_dir}",
    ]
    out = submit(ray_head, entrypoint, submission_id=submission_id)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    assert jobs_api(ray_head, submission_id)["status"] == "SUCCEEDED"
    log_lines = [line for line in jobs_api(ray_head, f"{submission_id}/logs")["logs"].splitlines() if line.strip()]
    assert log_lines[-1] == str(run_dir)  # the CLI prints the run dir last
    report = json.loads((run_dir / "report.json").read_text())

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "job-submit"
    assert run.data.metrics["ko_bpc"] == pytest.approx(report["domains"]["ko"]["bpc"])
    assert run.data.params["model"] == str(tiny_model)
    # The checkout was uploaded as the job's working directory (a package in the cluster's store).
    assert jobs_api(ray_head, submission_id)["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
