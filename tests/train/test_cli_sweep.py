"""`kopretrain train -m experiment=smoke mix.replay_ratio=0,0.2` through the real CLI (a subprocess):
two jobs in one process, one Ray instance, each with its run dir, model and MLflow run, and the
sweep-level report.json whose path is the last line of stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def test_replay_ratio_sweep_runs_both_jobs_and_writes_the_sweep_report(tmp_path):
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
    sweep_dir = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "kopretrain", "train", "-m", "experiment=smoke", "mix.replay_ratio=0,0.2", "num_steps=3",
         "checkpoint.every_num_steps=0", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(sweep_dir)
    assert "Failed to query Ray Train Controller actor state" not in out.stdout + out.stderr  # no dashboard, no noise
    assert "Setting accelerator to CPU" not in out.stdout + out.stderr  # DeepSpeed's detection: ray.log only
    assert "Setting accelerator to CPU" in (Path(sweep_dir) / "0/logs/ray.log").read_text(encoding="utf-8")
    sweep = json.loads((sweep_dir / "report.json").read_text())
    assert sweep["command"] == "train" and len(sweep["jobs"]) == 2
    no_replay, replay = (job["report"] for job in sweep["jobs"])
    assert "mix.replay_ratio=0" in sweep["jobs"][0]["overrides"] and "mix.replay_ratio=0.2" in sweep["jobs"][1]["overrides"]
    assert no_replay["token_share"] == {"ko": 1.0, "en": 0.0}
    assert abs(replay["token_share"]["en"] - 0.2) <= 1 / 24 and replay["token_share"]["en"] > 0
    assert no_replay["losses"][0]["loss"] != replay["losses"][0]["loss"], "different mixes, different batches"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for job in sweep["jobs"]:
        report = job["report"]
        assert Path(report["model_path"]) == Path(job["run_dir"]) / "model"
        assert (Path(report["model_path"]) / "model.safetensors").exists()
        assert len(report["losses"]) == 3 and report["strategy"] == "fsdp" and report["num_workers"] == 2
        assert len(client.get_metric_history(report["mlflow_run_id"], "loss")) == 3
    assert no_replay["mlflow_run_id"] != replay["mlflow_run_id"]
