"""A from-scratch `model.arch` that transformers refuses is one line naming `model.arch`, on the
driver before Ray starts (kopretrain/train/model.py: arch_config in plan_model); before, the
workers raised it as a StrictDataclassClassValidationError / ValueError traceback."""

from __future__ import annotations

import pytest

from kopretrain.errors import UserError
from kopretrain.train.model import plan_model
from tests.train.conftest import smoke_cfg


@pytest.mark.parametrize("override,message", [
    ("model.arch.num_attention_heads=3",
     "model.arch: The hidden size (64) is not a multiple of the number of attention heads (3)."),
    ("model.arch.model_type=nosuch", "model.arch: Unrecognized model identifier: nosuch"),
])
def test_a_bad_arch_is_one_line_on_the_driver(override, message):
    cfg = smoke_cfg(override)
    with pytest.raises(UserError) as info:
        plan_model(cfg)
    assert str(info.value) == message


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    from tests.test_cli_errors import run_in_process

    code, err = run_in_process(["train", "experiment=smoke", "model.arch.num_attention_heads=3", "tracking.enabled=false",
                                "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, ["kopretrain train: error: model.arch: The hidden size (64) is not a multiple of the "
                               "number of attention heads (3)."])
    assert not (tmp_path / "run" / "ray").exists()  # no checkpoint storage: Ray Train never started


def test_a_good_arch_plans_its_config():
    plan = plan_model(smoke_cfg())
    assert plan.arch["model_type"] == "llama" and plan.model_vocab_size > 0
