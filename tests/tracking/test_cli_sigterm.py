"""SIGTERM (`kill`, and what `ray job stop` sends a sweep point's entrypoint) stops any command like
Ctrl-C does: its MLflow run ends KILLED, never RUNNING or FAILED, and the CLI says one line, exiting
143. `kopretrain eval` starts no Ray, so the CLI's own SIGTERM handler takes it here; a Ray command
takes it through Ray's (tests/cluster/test_ray_jobs_stop.py stops a training point that way)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.helpers import make_tiny_llama_dir

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_ends_the_run_killed_and_exits_143(tmp_path):
    texts = (REPO / "data/heldout/en.txt").read_text().splitlines()
    model = make_tiny_llama_dir(tmp_path / "model", texts[:50])
    long_text = tmp_path / "long.txt"
    long_text.write_text("\n".join(texts * 200) + "\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sigterm")  # the store exists before the command opens it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopretrain", "eval", f"model_dir={model}", f"heldout.en={long_text}",
         f"tracking.uri={uri}", "tracking.experiment_name=sigterm", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not client.search_runs([experiment]) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # inside the evaluation now
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "kopretrain eval: terminated" and "Traceback" not in err, err[-3000:]
    (run,) = client.search_runs([experiment])
    assert run.info.status == "KILLED"
    assert not (tmp_path / "run" / "report.json").exists()
