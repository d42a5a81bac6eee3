"""`kopretrain demo experiment=smoke`: every step of `make demo` at toy size, through the CLI,
on a private local Ray instance, with a real MLflow store (~2-3 minutes on 2 cores); and
mistakes in the demo's keys that only its derived configs reveal, caught before any work."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from kopretrain.demo import format_table


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    run_dir, db = tmp / "run", tmp / "mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-m", "kopretrain", "demo", "experiment=smoke", f"tracking.uri=sqlite:///{db}",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out, run_dir, f"sqlite:///{db}"


def test_demo_prints_the_table_and_the_run_dir_last(demo_run):
    out, run_dir, _ = demo_run
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert format_table(report) in out.stdout
    assert "replay_ratio" in out.stdout and "ko_bpc" in out.stdout and "en_bpc" in out.stdout
    # the local instance has no dashboard; its trainings (run by the demo against it) must not
    # print Ray Train's "state API unavailable" warning every second (kopretrain.ray_session)
    assert "Failed to query Ray Train Controller actor state" not in out.stdout + out.stderr


def test_demo_console_is_stage_lines_and_progress_and_ray_logs_go_to_the_run_dir(demo_run):
    out, run_dir, _ = demo_run
    console = out.stdout + out.stderr
    # measured: 256 lines before (Ray's INFO, execution plans, worker-group lines); about 80 now
    assert len(console.splitlines()) < 120, console
    for noise in ["Full logs are in", "Execution plan of Dataset", "PreemptionWatcher", "has constructor arguments",
                  "(RayTrainWorker pid=", "(TrainController pid=", "Loading weights", "Autoscaler status"]:
        assert noise not in console, noise
    # training progress: rank 0's step lines, forwarded by Ray without its pid prefix
    assert "[train] step 1/8  loss" in out.stdout and "[train] step 8/8  loss" in out.stdout  # the base
    assert "[train] step 6/6  loss" in out.stdout  # the sweep jobs (child process)
    for step in ("prepare", "tokenizer", "base_model", "replay_sweep", "eval"):
        assert f"[demo] --- {step}" in out.stdout
    # ...while Ray's INFO logs and the workers' output are kept in the run directory
    assert (run_dir / "logs" / "ray.log").is_file()
    logs = {p.relative_to(run_dir).parts[0]: p.read_text(encoding="utf-8") for p in run_dir.glob("*/logs/ray.log")}
    assert "Full logs are in" in logs["prepare"]
    assert "(RayTrainWorker pid=" in logs["base"] and "[train] step 8/8" in logs["base"]
    assert "has constructor arguments" not in "".join(logs.values())  # the watcher is off on a local instance
    assert any((run_dir / "cpt" / str(i) / "logs" / "ray.log").is_file() for i in range(2))


def run_demo_cli(tmp_path, *overrides: str):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "kopretrain", "demo", *overrides, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    return out, run_dir


@pytest.mark.parametrize("overrides,message", [
    (["num_workers=3"], "kopretrain demo: error: base_train.num_sequences_per_step: 16 is not a multiple of "
                        "base_train.micro_batch_size x num_workers (8 x 3 = 24)"),
    (["strategy=local"], "kopretrain demo: error: unknown option 'local' for 'strategy' (available: ddp, "
                         "deepspeed_zero2, deepspeed_zero3, fsdp)"),
    (["strategy.name=local"], "kopretrain demo: error: strategy.name: 'local' trains on one worker; set num_workers=1 too, "
                              "or use strategy=ddp, fsdp or deepspeed_* with num_workers=2"),
    (["experiment=smoke", "cpt_train.micro_batch_size=3"],
     "kopretrain demo: error: cpt_train.num_sequences_per_step: 8 is not a multiple of cpt_train.micro_batch_size "
     "x num_workers (3 x 2 = 6)"),  # found only by composing the sweep's `kopretrain train` config
])
def test_demo_mistakes_in_derived_configs_fail_before_any_work_in_the_demos_keys(tmp_path, overrides, message):
    out, run_dir = run_demo_cli(tmp_path, *overrides)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [message]
    assert "batch." not in out.stderr and "scale." not in out.stderr  # train's keys, not the demo's
    assert not (run_dir / "prepared").exists() and not (run_dir / "prepare").exists()


def test_demo_report_has_the_base_and_one_row_per_ratio(demo_run):
    _, run_dir, _ = demo_run
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["replay_ratio"] for row in report["rows"]] == [0.0, 0.2]
    for value in [report["base"]["ko_bpc"], report["base"]["en_bpc"]] + [r[k] for r in report["rows"] for k in ("ko_bpc", "en_bpc")]:
        assert math.isfinite(value) and value > 0
    # The base never saw Korean and spells it in bytes; continued pretraining on Korean must help a lot.
    assert all(row["ko_bpc"] < 0.7 * report["base"]["ko_bpc"] for row in report["rows"])
    no_replay, replay = report["rows"]
    assert "en" not in no_replay["token_share"] or no_replay["token_share"]["en"] == 0
    assert replay["token_share"]["en"] == pytest.approx(0.2, abs=0.1)
    assert report["tokenizer"]["vocab_size"] > report["tokenizer"]["base_vocab_size"]
    assert report["tokenizer"]["vocab_size"] % 64 == 0
    assert set(report["timings_s"]) == {"prepare", "tokenizer", "pack_base", "pack_expanded", "base_model", "replay_sweep", "eval"}
    # The sweep was a real Hydra multirun with its own sweep report.
    sweep = json.loads((run_dir / "cpt" / "report.json").read_text())
    assert sweep["command"] == "train" and len(sweep["jobs"]) == 2


def test_demo_is_one_parent_run_with_a_child_per_step(demo_run):
    _, run_dir, uri = demo_run
    report = json.loads((run_dir / "report.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(report["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["base_ko_bpc"] == pytest.approx(report["base"]["ko_bpc"])
    assert "report.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = sorted(c.info.run_name for c in children)
    # prepare, tokenizer, 2 packing runs, the base, and the sweep's parent run
    assert len(children) == 6, names
    sweep = next(c for c in children if c.data.tags.get("kopretrain.swept") == "mix.replay_ratio")
    assert sweep.info.run_name == "train-sweep-cpt" and sweep.info.status == "FINISHED"
    # the sweep's parent holds one run per replay ratio, named and tagged by it, with its own eval results
    points = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{sweep.info.run_id}'")
    assert sorted(c.info.run_name for c in points) == ["replay_ratio=0.0", "replay_ratio=0.2"]
    for row in report["rows"]:
        child = client.get_run(row["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert float(child.data.tags["sweep.mix.replay_ratio"]) == row["replay_ratio"]
        assert len(client.get_metric_history(child.info.run_id, "loss")) >= 1
        assert child.data.params["mix.replay_ratio"] == str(row["replay_ratio"])
        assert child.data.metrics["ko_bpc"] == pytest.approx(row["ko_bpc"])
        assert child.data.metrics["en_bpc_delta"] == pytest.approx(row["en_bpc_change"])
    # the demo ends with `kopretrain report <sweep dir>`: its files in the sweep dir and on the sweep's run
    assert {"report.md", "tradeoff.png", "report.json"} <= {a.path for a in client.list_artifacts(sweep.info.run_id)}
    assert (run_dir / "cpt" / "report.md").is_file() and (run_dir / "cpt" / "tradeoff.png").is_file()


@pytest.mark.parametrize("overrides,message", [
    (["model_arch.hidden_size=63"],
     "model_arch: The hidden size (63) is not a multiple of the number of attention heads (4)."),
    (["model_arch.num_attention_heads=3"],
     "model_arch: The hidden size (64) is not a multiple of the number of attention heads (3)."),
    (["model_arch.model_type=nosuch"], "model_arch: Unrecognized model identifier: nosuch"),
    (["seq_len=128"], "seq_len: 128 is longer than the base model's context (model_arch.max_position_embeddings=64)"),
])
def test_demo_model_arch_and_seq_len_fail_before_any_work(tmp_path, monkeypatch, capsys, overrides, message):
    """Before, each failed after prepare and the tokenizers (a 45-line traceback from the base training)."""
    from tests.test_cli_errors import run_in_process

    code, err = run_in_process(["demo", "experiment=smoke", *overrides, "tracking.enabled=false", "hydra.run.dir=run"],
                               tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, [f"kopretrain demo: error: {message}"])
    assert not (tmp_path / "run" / "prepared").exists() and not (tmp_path / "run" / "prepare").exists()
