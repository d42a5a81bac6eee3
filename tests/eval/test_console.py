"""A healthy `kopretrain eval` keeps its console to the result: MLflow's INFO lines ("Creating initial
MLflow database tables...") go to <run dir>/logs/ray.log, and transformers' "Loading weights" bar is off
(KoBEST included: lm-eval is not on this path)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import make_tiny_llama_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, repo_root):
    texts = (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:100]
    return make_tiny_llama_dir(tmp_path_factory.mktemp("model"), texts, max_position_embeddings=64)


def test_healthy_eval_prints_no_mlflow_info_and_no_progress_bar(tmp_path, tiny_model, repo_root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    done = subprocess.run([sys.executable, "-m", "kopretrain", "eval", f"model_dir={tiny_model}",
                           f"heldout={{ko:{repo_root}/data/heldout/ko.txt}}", "max_docs_per_domain=4",
                           "kobest.limit=2", "kobest.tasks=[COPA,WiC]",
                           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ko" in done.stdout
    assert "KoBEST (test, 0-shot)" in done.stdout  # the shipped data/kobest, found from another directory
    for noise in ("Creating initial MLflow database tables", "INFO mlflow", "Loading weights"):
        assert noise not in done.stdout + done.stderr, (noise, done.stderr)
    assert "Creating initial MLflow database tables" in (tmp_path / "run/logs/ray.log").read_text(encoding="utf-8")
