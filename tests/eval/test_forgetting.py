"""Forgetting against a base: `kopretrain eval` with a base model reports every metric's change
(bpc/loss/perplexity per domain, KoBEST per task and mean), the retention summary, and logs them
to MLflow under the documented names (a real local sqlite store)."""

from __future__ import annotations

import pytest

from kopretrain.config.common import TrackingConfig
from kopretrain.config.eval import KOBEST_TASKS, EvalConfig, KobestConfig
from kopretrain.eval.command import run_eval
from kopretrain.eval.forgetting import compare, metrics, retention_line
from tests.helpers import make_tiny_llama_dir


def test_compare_and_metric_names():
    dom = lambda bpc: {"bpc": bpc, "loss_per_token": bpc * 2, "perplexity": bpc * 3}  # noqa: E731
    task = lambda acc: {"acc": acc, "macro_f1": acc / 2, "num_items": 10}  # noqa: E731
    report = {"domains": {"ko": dom(1.0), "en": dom(1.25)}, "base": {"ko": dom(2.0), "en": dom(1.0)},
              "kobest": {"COPA": task(0.6), "mean": {"acc": 0.6, "macro_f1": 0.3}},
              "base_kobest": {"COPA": task(0.5), "mean": {"acc": 0.5, "macro_f1": 0.25}}}
    report.update(compare(report))
    assert report["delta_bpc"] == {"ko": -1.0, "en": 0.25}
    assert report["delta"]["domains"]["en"]["perplexity"] == pytest.approx(0.75)
    assert report["retention"]["bpc_retained"] == {"ko": 2.0, "en": 0.8}
    assert report["retention"]["bpc_change_pct"] == {"ko": -50.0, "en": 25.0}
    assert report["retention"]["kobest_mean_acc_gained"] == pytest.approx(0.1)
    m = metrics(report)
    assert m["en_bpc_retained"] == 0.8 and m["kobest_copa_acc_delta"] == pytest.approx(0.1)
    assert m["kobest_mean_acc"] == 0.6 and m["ko_loss_per_token_delta"] == -2.0 and m["en_perplexity"] == 3.75
    assert retention_line(report["retention"]) == "retention: ko bpc retained 200.0%, en bpc retained 80.0%, KoBEST mean acc +0.100"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, repo_root):
    texts = (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:100]
    texts += (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()[:50]
    return [make_tiny_llama_dir(tmp_path_factory.mktemp(f"m{seed}"), texts, max_position_embeddings=64, seed=seed)
            for seed in (0, 1)]


def test_eval_with_a_base_reports_changes_kobest_and_retention(tmp_path, two_models, repo_root, capsys):
    model, base = two_models
    cfg = EvalConfig(model_dir=str(model), base_model_dir=str(base), max_docs_per_domain=8,
                     heldout={"ko": str(repo_root / "data/heldout/ko.txt"), "en": str(repo_root / "data/heldout/en.txt")},
                     kobest=KobestConfig(data_dir=str(repo_root / "data/kobest"), limit=3, num_fewshot=1),
                     tracking=TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"))
    report = run_eval(cfg, tmp_path / "run")
    assert set(report["kobest"]) == {*KOBEST_TASKS, "mean"}
    for task in KOBEST_TASKS:
        assert set(report["kobest"][task]) == {"acc", "macro_f1", "num_items"}
        assert report["kobest"][task]["num_items"] == 3
        assert report["delta"]["kobest"][task]["acc"] == pytest.approx(
            report["kobest"][task]["acc"] - report["base_kobest"][task]["acc"])
    assert report["kobest_settings"] == {"split": "test", "num_fewshot": 1, "seed": 1234, "limit": 3}
    for d in ("ko", "en"):
        v, b = report["domains"][d], report["base"][d]
        assert set(v) >= {"bpc", "loss_per_token", "perplexity", "tokens_per_char", "num_docs"}
        assert report["retention"]["bpc_retained"][d] == pytest.approx(b["bpc"] / v["bpc"])
        assert report["delta"]["domains"][d]["loss_per_token"] == pytest.approx(v["loss_per_token"] - b["loss_per_token"])
    assert report["retention"]["kobest_mean_acc_gained"] == pytest.approx(
        report["kobest"]["mean"]["acc"] - report["base_kobest"]["mean"]["acc"])
    out = capsys.readouterr().out
    assert "KoBEST (test, 1-shot)" in out and retention_line(report["retention"]) in out

    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(report["mlflow_run_id"])
    assert run.data.metrics == pytest.approx(metrics(report))
    assert {"en_bpc_retained", "kobest_mean_acc_gained", "kobest_wic_macro_f1_delta", "ko_perplexity"} <= set(run.data.metrics)
