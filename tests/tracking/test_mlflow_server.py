"""`tracking.uri=http://...`: `kopretrain train` logs to a real MLflow tracking server.

The test starts `mlflow server` on a free port (SQLite backend, artifacts proxied by the server
into a directory of its own), runs the train smoke recipe pointed at it, reads the run back with
MlflowClient over HTTP, and stops the server (its whole process group) in a finally block.

    .venv/bin/python -m pytest tests/tracking/test_mlflow_server.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.processes import free_ports, http_status, start_server, stop_server, wait_until


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """(url, artifacts dir) of a running `mlflow server`; stopped when the module is done."""
    root = tmp_path_factory.mktemp("mlflow-server")
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # MLflow 3 also starts background job consumers (huey) by default; a test server needs none.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'backend.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]
    proc = start_server(cmd, root / "server.log", env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/health") == 200, proc, 120, "mlflow server", root / "server.log")
        yield url, root / "artifacts"
    finally:
        survivors = stop_server(proc)
        assert survivors == [], f"mlflow server processes outlived the stop: {survivors}"


@pytest.mark.ray
def test_train_logs_params_losses_and_report_to_the_server(mlflow_server, tmp_path):
    """`kopretrain train experiment=smoke`: the driver opens the run, rank 0 (a Ray Train worker,
    another process) logs the per-step losses into it over HTTP, the driver uploads report.json."""
    from mlflow.tracking import MlflowClient

    url, artifacts_dir = mlflow_server
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    out = subprocess.run(
        [sys.executable, "-m", "kopretrain", "train", "experiment=smoke",
         f"tracking.uri={url}", "tracking.experiment_name=server-test", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("server-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [report["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["tracking.uri"] == url
    assert run.data.params["strategy.name"] == "fsdp"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert history == {r["step"]: pytest.approx(r["loss"]) for r in report["losses"]}
    assert len(history) == 6  # conf/experiment/train/smoke.yaml: num_steps 6

    # The report artifact round-trips through the server's artifact proxy...
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.json", "config.json"}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))).read_text())
    assert logged["losses"] == report["losses"]
    # ...and lands in the server's artifact store, not in a local store next to the command.
    assert list(artifacts_dir.rglob("report.json"))
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
