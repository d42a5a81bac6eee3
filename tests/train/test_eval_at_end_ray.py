"""`eval.at_end` on a real local Ray instance (2 CPU workers, FSDP2): two points of a replay-ratio
sweep under one MLflow parent each carry their held-out evaluation as plain metrics (ko_bpc,
en_bpc, en_bpc_retained, ...) equal to their report.json `eval`; the base part equals
`kopretrain eval` of the base checkpoint; `kopretrain report` over the sweep directory shows the
bpc, change and retention columns from them."""

from __future__ import annotations

import pytest
import yaml

from kopretrain.config.common import TrackingConfig
from kopretrain.config.report import ReportConfig
from kopretrain.report.command import run_report
from kopretrain.run_dir import collect_sweep_report, write_report
from kopretrain.tracking import MlflowTracker
from kopretrain.train.command import run_train
from tests.report.test_report import table_rows
from tests.train.conftest import expanded_overrides, smoke_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RATIOS = ("0", "0.5")


def test_sweep_points_carry_their_eval_as_metrics_and_report_shows_retention(ray_local, base_model_dir, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from kopretrain.config.eval import EvalConfig, KobestConfig
    from kopretrain.eval.command import run_eval

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_dir = tmp_path / "sweep"
    parent = MlflowTracker(uri, "kopretrain", "train-sweep", tags={"kopretrain.swept": "mix.replay_ratio"})
    reports = []
    for num, ratio in enumerate(RATIOS):
        cfg = smoke_cfg(*expanded_overrides(base_model_dir), f"mix.replay_ratio={ratio}", "num_steps=2",
                        "optim.lr_warmup_steps=1", "checkpoint.every_num_steps=0", "eval.at_end=true",
                        "eval.max_docs_per_domain=6", f"tracking.parent_run_id={parent.run_id}", tmp_path=tmp_path)
        job = sweep_dir / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=smoke", f"mix.replay_ratio={ratio}"]))
        reports.append(run_train(cfg, job))
    out = capsys.readouterr().out
    assert out.count("kopretrain train: retention: ko bpc retained ") == 2  # once per run, at the end

    client = MlflowClient(uri)
    for report in reports:
        ev = report["eval"]
        assert ev["step"] == 2 and set(ev["domains"]) == {"ko", "en"} and ev["base_exact"] is True
        assert ev["domains"]["ko"]["num_docs"] == 6 and ev["base"]["en"]["num_docs"] == 6
        logged = client.get_run(report["mlflow_run_id"]).data.metrics
        for d in ("ko", "en"):
            assert logged[f"{d}_bpc"] == pytest.approx(ev["domains"][d]["bpc"], rel=1e-12)
            assert logged[f"{d}_bpc_delta"] == pytest.approx(ev["domains"][d]["bpc"] - ev["base"][d]["bpc"], rel=1e-9)
            assert logged[f"{d}_bpc_retained"] == pytest.approx(ev["base"][d]["bpc"] / ev["domains"][d]["bpc"], rel=1e-12)
            assert logged[f"{d}_bpc_retained"] == pytest.approx(ev["retention"]["bpc_retained"][d], rel=1e-12)
        assert client.get_metric_history(report["mlflow_run_id"], "en_bpc")[0].step == 2
    assert reports[0]["eval"]["base"]["ko"]["bpc"] == pytest.approx(reports[1]["eval"]["base"]["ko"]["bpc"], abs=1e-9)
    assert reports[0]["eval"]["domains"]["en"]["bpc"] != reports[1]["eval"]["domains"]["en"]["bpc"]

    base = run_eval(EvalConfig(model_dir=str(base_model_dir), heldout=dict(cfg.eval.heldout), max_docs_per_domain=6, max_len=reports[0]["seq_len"], kobest=KobestConfig(enabled=False),
                               tracking=TrackingConfig(enabled=False)), tmp_path / "base_eval")
    for d in ("ko", "en"):  # the base scored inside the sharded, expanded model = the base checkpoint's own
        assert reports[0]["eval"]["base"][d]["bpc"] == pytest.approx(base["domains"][d]["bpc"], abs=1e-5)

    sweep = collect_sweep_report(sweep_dir, "train")
    sweep.update(swept=["mix.replay_ratio"], mlflow_parent_run_id=parent.run_id, tracking_uri=uri)
    write_report(sweep_dir / "report.json", sweep)
    parent.end()
    run_report(ReportConfig(sweep=str(sweep_dir), tracking=TrackingConfig(enabled=False)), tmp_path / "report")
    rows = table_rows((sweep_dir / "report.md").read_text(encoding="utf-8"))
    assert rows[0]["replay_ratio"] == "base"
    assert float(rows[0]["English bpc"]) == round(reports[0]["eval"]["base"]["en"]["bpc"], 4)
    assert [r["replay_ratio"] for r in rows[1:]] == list(RATIOS)
    for row, report in zip(rows[1:], reports):
        ev = report["eval"]
        assert float(row["Korean bpc"]) == round(ev["domains"]["ko"]["bpc"], 4)
        assert float(row["English bpc"]) == round(ev["domains"]["en"]["bpc"], 4)
        assert float(row["Δ English bpc"]) == round(ev["delta_bpc"]["en"], 4)
        assert float(row["Δ Korean bpc"]) == round(ev["delta_bpc"]["ko"], 4)
        assert float(row["English retained"]) == round(ev["retention"]["bpc_retained"]["en"], 4)
