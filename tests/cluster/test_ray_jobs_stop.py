"""Ctrl-C of a `hydra/launcher=ray_jobs` sweep against a real `ray start --head` cluster (token
authentication): the running point is stopped and recorded STOPPED, the queued one CANCELLED (never
submitted), and every MLflow run says KILLED, not RUNNING or FAILED.

`kopretrain train -m ... mix.replay_ratio=0,0.5 hydra.launcher.max_concurrent=1` runs in its own
process group; once the first point trains (a step line in its copied log), the group gets SIGINT, as
from a terminal's Ctrl-C. Ray stops the point's job with SIGTERM; the point's CLI ends its run KILLED,
prints `terminated` and exits before Ray's SIGKILL (RAY_JOB_STOP_WAIT_TIME_S, `stop_grace_s`).

    .venv/bin/python -m pytest tests/cluster/test_ray_jobs_stop.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.cluster.processes import wait_until
from tests.cluster.ray_head import RayHead, start_ray_head, stop_ray_head
from tests.cluster.test_job_submit import jobs_api

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> RayHead:
    head = start_ray_head(num_cpus=4)  # the smoke run's 2 one-CPU Train workers; the driver reserves none
    try:
        yield head
    finally:
        survivors = stop_ray_head(head, keep_log_in=tmp_path_factory.mktemp("ray-head-log"))
        assert survivors == [], f"Ray processes outlived the cluster stop: {survivors}"


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _cmdlines(procs) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return out


def test_ctrl_c_stops_the_running_point_and_cancels_the_queued_one(ray_head, tmp_path):
    sweep_dir, stdout, stderr = tmp_path / "sweep", tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "kopretrain", "train", "-m", "experiment=smoke", "mix.replay_ratio=0,0.5",
           "num_steps=100000", "log_every_num_steps=1", "checkpoint.every_num_steps=0",
           "hydra/launcher=ray_jobs", "hydra.launcher.max_concurrent=1", "hydra.launcher.poll_interval_s=1",
           f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.dashboard_url}
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        # the first point trains: its log, copied by the launcher every second, has a step line
        wait_until(lambda: "[train] step" in _text(sweep_dir / "0" / "ray-job.log"), proc, 600,
                   "the first point's training", stderr)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=180)  # stop_grace_s (10) + 20 s of waiting for STOPPED, and the parent run's end
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out, err = _text(stdout), _text(stderr)
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert [line for line in err.splitlines() if line.strip()][-1] == "kopretrain train: interrupted", err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = out.splitlines()
    assert "[sweep] #0: RUNNING" in lines
    assert "[sweep] #1 mix.replay_ratio=0.5: CANCELLED (not submitted)" in lines
    assert (f"[sweep] #0: STOPPED (stopped: the sweep was interrupted); log {sweep_dir / '0' / 'ray-job.log'}"
            in lines), out[-3000:]

    first, second = json.loads((sweep_dir / "ray_jobs.json").read_text())["points"]
    assert (first["status"], first["message"]) == ("STOPPED", "stopped: the sweep was interrupted")
    assert (second["status"], second["submission_id"]) == ("CANCELLED", "")
    assert second["message"] == "not submitted: the sweep was interrupted"
    assert jobs_api(ray_head, first["submission_id"])["status"] == "STOPPED"  # the cluster's own record
    submitted = [job["submission_id"] for job in jobs_api(ray_head) if job.get("submission_id")]
    assert submitted == [first["submission_id"]]  # the second point never reached the cluster
    # the point's CLI took Ray's SIGTERM itself (not Ray's SIGKILL after the grace period)
    assert "kopretrain train: terminated" in (sweep_dir / "0" / "ray-job.log").read_text()

    report = json.loads((sweep_dir / "report.json").read_text())
    client = MlflowClient(report["tracking_uri"])
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"
    (child,) = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.info.status == "KILLED" and child.info.run_name == "replay_ratio=0"
    assert child.data.tags["kopretrain.sweep_point"] == "0"

    # nothing of the point is left: its driver ended with its job, its Train actors with the driver's connection
    assert not [c for c in _cmdlines(psutil.process_iter()) if f"hydra.run.dir={sweep_dir / '0'}" in c]
    head_family = psutil.Process(ray_head.proc.pid).children(recursive=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        train = [c for c in _cmdlines(head_family) if "RayTrainWorker" in c or "TrainController" in c]
        if not train:
            break
        time.sleep(1)
        head_family = psutil.Process(ray_head.proc.pid).children(recursive=True)
    assert not train, train
