"""The CLI contract: one script, Hydra overrides and sweeps, one-line config errors,
report.json in the run directory whose path is the last line of stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.cli import _expand_sweeps, compose_typed
from kopretrain.errors import UserError
from tests.helpers import make_tiny_llama_dir

KOPRETRAIN = [sys.executable, "-m", "kopretrain"]


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([*KOPRETRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, repo_root) -> Path:
    texts = (repo_root / "data/heldout/en.txt").read_text().splitlines()[:100]
    texts += (repo_root / "data/heldout/ko.txt").read_text().splitlines()[:100]
    return make_tiny_llama_dir(tmp_path_factory.mktemp("model"), texts)


def test_help_lists_every_command(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("prepare", "tokenizer", "train", "eval", "demo"):
        assert f"  {command}" in out.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["eval", "model_dir=x", "batch_sise=3"], "unknown config key 'batch_sise'"),
        (["eval", "model_dir=x", "+typo=3"], "unknown config key 'typo'"),
        (["eval", "model_dir=x", "tracking.enabld=true"], "unknown config key 'tracking.enabld'"),
        (["eval", "model_dir=x", "batch_size=0"], "batch_size: must be >= 1"),
        (["eval", "model_dir=x", "batch_size=abc"], "bad value for 'batch_size'"),
        (["eval", "model_dir=x", "experiment=nope"], "unknown option 'nope' for 'experiment'"),
        (["eval", "-m", "model_dir=x", "batch_size=2,0"], "batch_size: must be >= 1"),
        (["nope"], "unknown command"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert expected in lines[0]
    assert lines[0].startswith(f"kopretrain {args[0]}: error:")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "outputs").exists(), "nothing may run before the config is valid"


def test_nested_errors_name_the_dotted_key():
    with pytest.raises(UserError, match=r"^tracking\.uri|^bad value for 'tracking"):
        compose_typed("eval", ["model_dir=x", "tracking.uri=null"])


def test_every_sweep_value_is_validated():
    combos = _expand_sweeps(["a=1,2", "b=x", "c=3,4,5", "hydra.run.dir=/tmp/x"])
    fixed = ["b=x", "hydra.run.dir=/tmp/x"]
    assert fixed + ["a=1", "c=3"] in combos and fixed + ["a=2", "c=3"] in combos and fixed + ["a=1", "c=5"] in combos
    assert all("hydra.run.dir=/tmp/x" in combo for combo in combos)  # Hydra's own keys are composed too


def test_eval_run_writes_report_and_prints_run_dir_last(tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    out = run_cli(
        "eval", f"model_dir={tiny_model}", "max_docs_per_domain=10", "kobest.enabled=false",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["domains"]) == {"ko", "en"}
    assert report["domains"]["ko"]["num_docs"] == 10
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(report["mlflow_run_id"])
    assert run.data.metrics["ko_bpc"] == pytest.approx(report["domains"]["ko"]["bpc"])
    assert run.data.params["max_docs_per_domain"] == "10"
    assert run.info.status == "FINISHED"


def test_multirun_writes_a_sweep_report_and_prints_the_sweep_dir(tmp_path, tiny_model):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "eval", "-m", f"model_dir={tiny_model}", "max_docs_per_domain=5", "batch_size=1,4", "kobest.enabled=false",
        "tracking.enabled=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(sweep)
    report = json.loads((sweep / "report.json").read_text())
    assert ["batch_size=1" in job["overrides"] for job in report["jobs"]] == [True, False]
    assert ["batch_size=4" in job["overrides"] for job in report["jobs"]] == [False, True]
    bpcs = [job["report"]["domains"]["en"]["bpc"] for job in report["jobs"]]
    assert bpcs[0] == pytest.approx(bpcs[1], rel=1e-5)  # batching must not change the math


def test_eval_smoke_recipe_runs_on_the_shipped_model(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli("eval", "experiment=smoke", "tracking.enabled=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert {d: v["num_docs"] for d, v in report["domains"].items()} == {"ko": 50, "en": 50}
    assert all(0 < v["bpc"] < 20 for v in report["domains"].values())
