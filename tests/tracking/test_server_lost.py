"""A tracking server that dies mid-run costs one warning line and seconds, not minutes of retries.

A real `mlflow server` subprocess; a tracker logs to it; the server's whole process group is
SIGKILLed; the next `log_metrics` returns within seconds (MLflow's HTTP retries are cut by
`kopretrain.tracking.fail_fast_http`) with one warning, and every later call is skipped.

    .venv/bin/python -m pytest tests/tracking/test_server_lost.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.config.common import TrackingConfig
from kopretrain.tracking import HTTP_FAIL_FAST, start_run
from tests.cluster.processes import free_ports, http_status, start_server, stop_server, wait_until


def test_a_killed_server_is_one_warning_and_the_tracker_stops(tmp_path, capsys, monkeypatch):
    for key in HTTP_FAIL_FAST:  # what a user has not set: kopretrain's fail-fast values apply
        monkeypatch.delenv(key, raising=False)
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'backend.db'}"]
    proc = start_server(cmd, tmp_path / "server.log", env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/health") == 200, proc, 120, "mlflow server", tmp_path / "server.log")
        tracker = start_run(TrackingConfig(uri=url, experiment_name="lost"), "r")
        tracker.log_metrics({"loss": 2.0}, step=1)
        assert capsys.readouterr().err == ""
        os.killpg(proc.pid, signal.SIGKILL)  # the server dies mid-run
        proc.wait(timeout=30)
        assert {k: os.environ[k] for k in HTTP_FAIL_FAST} == HTTP_FAIL_FAST
        tracker.log_metrics({"loss": 1.5}, step=2)
        for step in range(3, 8):
            tracker.log_metrics({"loss": 1.0}, step=step)
        tracker.log_params({"a": 1})
        tracker.end("FINISHED")
    finally:
        stop_server(proc)
    # kopretrain's own lines (urllib3 may log its 2 retries where logging is configured, e.g. by Hydra)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kopretrain")]
    assert len(err) == 1, err
    assert err[0].startswith(f"kopretrain: warning: MLflow could not log metrics for run {tracker.run_id} (")
    assert err[0].endswith("; tracking of this run stops")
    assert tracker.disabled  # later calls make no request at all
    # (MLflow's defaults, 7 retries at backoff factor 2, take minutes here; the fail-fast values
    # asserted above, 2 retries at factor 1, take seconds: bench-worthy, not asserted in a test)


@pytest.mark.ray
def test_train_goes_on_when_the_server_dies_mid_run(tmp_path):
    """`kopretrain train` with the server SIGKILLed after step 1: rank 0's batched per-step logging and the
    driver's final calls each give one warning and stop; training finishes and writes report.json."""
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    server_env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'backend.db'}"]
    server = start_server(cmd, tmp_path / "server.log", server_env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    home.mkdir()
    try:
        wait_until(lambda: http_status(f"{url}/health") == 200, server, 120, "mlflow server", tmp_path / "server.log")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kopretrain", "train", "experiment=smoke", "num_steps=20", f"tracking.uri={url}",
             f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=tmp_path, env=env | {"PYTHONUNBUFFERED": "1", "HOME": str(home)}, stdout=subprocess.PIPE,
            stderr=(tmp_path / "stderr.txt").open("w"), text=True, start_new_session=True,
        )
        try:
            for line in proc.stdout:
                if "step 1/20" in line:  # the first step line; the next come every log_every_num_steps (10)
                    os.killpg(server.pid, signal.SIGKILL)
                    break
            proc.communicate(timeout=600)
        finally:
            proc.kill()
    finally:
        stop_server(server)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "run" / "report.json").exists()
    stops = [line for line in err.splitlines() if "tracking of this run stops" in line]
    assert 1 <= len(stops) <= 2, stops  # rank 0's logging, and the driver's final calls
    assert "Retry(total=" not in err, err[-3000:]
