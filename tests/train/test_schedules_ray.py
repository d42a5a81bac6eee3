"""The schedules in a real `run_train` on the session Ray instance (2 CPU workers, FSDP2, the tiny
smoke Llama): every step trains at the learning rate `lr_at` gives for a re-warmed, relative,
warmup-stable-decay schedule, and the mix follows `mix=ko_ramp` (the scheduled shares are logged to
MLflow per step next to the realized ones). One fit, ~45 s on 2 cores."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from kopretrain.train.command import run_train
from kopretrain.train.mix_schedule import build_mix_schedule
from kopretrain.train.schedule import lr_at
from tests.train.conftest import smoke_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_run_follows_the_lr_and_mix_schedules(ray_local, tmp_path):
    cfg = smoke_cfg("num_steps=6", "mix=ko_ramp", "optim=adamw_wsd", "optim.lr_relative_to_base=true",
                    "optim.base_peak_lr=3e-3", "optim.lr=1.0", "optim.lr_warmup_start=0.25", "optim.lr_warmup_steps=2",
                    "optim.lr_decay_fraction=0.34", "checkpoint.every_num_steps=0", "log_every_num_steps=3",
                    tmp_path=tmp_path)
    report = run_train(cfg, tmp_path / "run")

    # 2 warmup steps from 0.25 x 3e-3, 2 stable at 3e-3, 2 decay steps (0.34 x 6 -> 2) with 1-sqrt to 0
    expected = [lr_at(s, num_steps=6, peak_lr=3e-3, warmup_steps=2, schedule="wsd", min_ratio=0.0, warmup_start=7.5e-4,
                      decay_fraction=0.34, decay_shape="1-sqrt") for s in range(6)]
    assert [r["lr"] for r in report["losses"]] == pytest.approx(expected, rel=1e-12)
    assert expected[:4] == pytest.approx([1.875e-3, 3e-3, 3e-3, 3e-3]) and expected[5] == 0.0

    schedule = build_mix_schedule(cfg.mix, [("train", 6)])
    assert report["mix_schedule"] == [[0, {"en": 0.5, "ko": 0.5}], [5, {"en": 0.1, "ko": 0.9}]]
    client = MlflowClient(cfg.tracking.uri)
    for domain in ("ko", "en"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(report["mlflow_run_id"], f"mix_weight_{domain}"))
        assert logged == [(s + 1, pytest.approx(schedule.weights_at(s)[domain])) for s in range(6)]
    assert logged[0][1] == pytest.approx(0.5) and logged[-1][1] == pytest.approx(0.1)  # en: 0.5 -> 0.1
    # 6 steps x 8 sequences: ko's scheduled sequences 4, 4.64, 5.28, 5.92, 6.56, 7.2 (sum 33.6); drawn to within one
    assert abs(report["token_share"]["ko"] * 48 - 33.6) < 1.0
