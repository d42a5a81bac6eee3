"""Tracking through the real CLI and a real local MLflow store: a result is never lost to tracking,
and every command's MLflow run ends FINISHED or FAILED, never RUNNING."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import make_tiny_llama_dir

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "kopretrain", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@pytest.mark.ray
def test_train_with_a_domain_name_mlflow_refuses_keeps_its_report_and_finishes(tmp_path):
    tokens = tmp_path / "tokens"  # the shipped smoke tokens, Korean filed under a name with brackets
    tokens.mkdir()
    (tokens / "ko(news)").symlink_to(REPO / "data/smoke/tokens/ko")
    (tokens / "en").symlink_to(REPO / "data/smoke/tokens/en")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "run"
    out = run_cli("train", "experiment=smoke", "num_steps=2", "checkpoint.every_num_steps=0", "mix.replay_ratio=0.25",
                  "mix.target_domain='ko(news)'", f"data.tokens_dir={tokens}", f"tracking.uri={uri}",
                  "tracking.experiment_name=names", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    assert "kopretrain: warning" not in out.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["token_share"] == {"ko(news)": 0.75, "en": 0.25}
    run = only_run(uri, "names")
    assert run.info.run_id == report["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.metrics["token_share_ko_news_"] == 0.75 and run.data.metrics["token_share_en"] == 0.25
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss")) == 2
    assert "report.json" in {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}


def test_a_command_that_fails_after_opening_its_run_ends_it_failed(tmp_path):
    texts = (REPO / "data/heldout/en.txt").read_text().splitlines()[:50]
    model = make_tiny_llama_dir(tmp_path / "model", texts)
    for weights in model.glob("*.safetensors"):
        weights.unlink()  # a model directory without weights: loading fails after the run is open
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run_cli("eval", f"model_dir={model}", "max_docs_per_domain=2", f"tracking.uri={uri}",
                  "tracking.experiment_name=broken", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode != 0
    assert only_run(uri, "broken").info.status == "FAILED"
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("signame, code, last_line", [("SIGINT", 130, "kopretrain eval: interrupted"),
                                                      ("SIGTERM", 143, "kopretrain eval: terminated")])
def test_ctrl_c_or_sigterm_ends_the_run_killed(tmp_path, signame, code, last_line):
    """Ctrl-C, and SIGTERM (`kill`, what `ray job stop` sends a sweep point's entrypoint), stop any
    command the same way: its MLflow run ends KILLED, never RUNNING or FAILED, and the CLI says one
    line, exiting 130 / 143. `kopretrain eval` starts no Ray, so the CLI's own handlers take them here;
    a Ray command takes SIGTERM through Ray's (tests/cluster/test_ray_jobs_stop.py stops a training
    point that way)."""
    import signal
    import time

    texts = (REPO / "data/heldout/en.txt").read_text().splitlines()
    model = make_tiny_llama_dir(tmp_path / "model", texts[:50])
    long_text = tmp_path / "long.txt"
    long_text.write_text("\n".join(texts * 200) + "\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("stopped")  # the store exists before the command opens it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopretrain", "eval", f"model_dir={model}", f"heldout.en={long_text}",
         f"tracking.uri={uri}", "tracking.experiment_name=stopped", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not client.search_runs([experiment]) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # inside the evaluation now
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert err.strip().splitlines()[-1] == last_line and "Traceback" not in err, err[-3000:]
    (run,) = client.search_runs([experiment])
    assert run.info.status == "KILLED"
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.ray
def test_ctrl_c_during_train_exits_130_and_ends_the_run_killed(tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) at step 10 of 40: Ray Train's
    own SIGINT handler aborts the training, the CLI still says one line, exits 130, the run is KILLED."""
    import signal

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env |= {"PYTHONUNBUFFERED": "1", "HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopretrain", "train", "experiment=smoke", "num_steps=40", f"tracking.uri={uri}",
         "tracking.experiment_name=ctrlc-train", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=(tmp_path / "stderr.txt").open("w"), text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        for line in proc.stdout:
            if "step 10/40" in line:  # a step line every log_every_num_steps (10)
                os.killpg(proc.pid, signal.SIGINT)
                break
        proc.communicate(timeout=300)
    finally:
        proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "kopretrain train: interrupted" and "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "run" / "report.json").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ctrlc-train").experiment_id])
    assert run.info.status == "KILLED"


@pytest.mark.ray
def test_sigint_stops_prepare_even_when_inherited_as_ignored(tmp_path):
    """`kopretrain prepare ... &` in a script starts with SIGINT ignored (POSIX shells do that to
    background jobs): `kill -INT` still stops it within its first stage, as one line and exit 130."""
    import signal

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env |= {"PYTHONUNBUFFERED": "1", "HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopretrain", "prepare", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=(tmp_path / "stderr.txt").open("w"), text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        for line in proc.stdout:
            if "[1/4] clean:" in line:
                os.killpg(proc.pid, signal.SIGINT)
                break
        proc.communicate(timeout=300)
    finally:
        proc.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "kopretrain prepare: interrupted" and "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "run" / "report.json").exists()
    assert not list((tmp_path / "run").rglob("clean_done.json"))  # the clean stage did not pretend to finish
