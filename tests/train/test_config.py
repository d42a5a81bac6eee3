"""`kopretrain train` config: every shipped YAML composes, bad values fail as one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kopretrain.cli import compose_typed
from kopretrain.errors import UserError
from kopretrain.paths import CONF_DIR
from kopretrain.train.strategies import STRATEGIES

REQUIRED = ["data.tokens_dir=unused", "tokenizer=unused", "model.name_or_path=unused"]
GROUPS = ("model", "mix", "strategy", "optim", "peft", "scale")
NEEDS = {"adamw_8bit": ["strategy=ddp"]}  # options that refuse the default strategy (fsdp)


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    cfg = compose_typed("train", REQUIRED + NEEDS.get(option, []) + [f"{group}={option}"])
    assert cfg.num_accumulation_steps >= 1
    if group == "strategy":
        assert cfg.strategy.name == option and option in STRATEGIES


def test_smoke_recipe_is_a_tiny_fsdp_run_on_the_shipped_sample(repo_root):
    cfg = compose_typed("train", ["experiment=smoke"])
    assert cfg.strategy.name == "fsdp" and cfg.scale.num_workers == 2 and not cfg.scale.use_gpu
    assert cfg.model.arch["model_type"] == "llama" and cfg.num_steps <= 10
    assert (repo_root / cfg.tokenizer / "tokenizer.json").exists()
    for domain in cfg.mix.resolved_weights():
        assert (repo_root / cfg.data.tokens_dir / domain / "index.json").exists()
    assert compose_typed("train", ["experiment=smoke", "strategy=ddp"]).strategy.name == "ddp", "smoke must not pin the strategy"


def test_replay_ratio_sets_the_two_domain_weights():
    cfg = compose_typed("train", ["experiment=smoke", "mix.replay_ratio=0.05"])
    assert cfg.mix.resolved_weights() == pytest.approx({"ko": 0.95, "en": 0.05})
    zero = compose_typed("train", ["experiment=smoke", "mix.replay_ratio=0"])
    assert zero.mix.resolved_weights() == {"ko": 1.0}, "a zero-share domain is not read at all"
    assert zero.mix.resolved_weights(keep_zero=True) == {"ko": 1.0, "en": 0.0}
    general = compose_typed("train", ["experiment=smoke", "mix.replay_ratio=null", "mix.weights={ko:0.6,en:0.4}"])
    assert general.mix.resolved_weights() == {"ko": 0.6, "en": 0.4}


def test_scale_options_map_to_ray_scaling_configs():
    from kopretrain.train.command import scaling_config

    hetero = compose_typed("train", REQUIRED + ["scale=hetero_a100_group"])
    sc = scaling_config(hetero)
    assert sc.num_workers == 16 and sc.use_gpu
    assert sc.resources_per_worker == {"CPU": 8, "A100": 1, "GPU": 1}
    assert sc.label_selector == {"ray.io/accelerator-type": "A100"}
    h100 = compose_typed("train", REQUIRED + ["scale=h100x8"])
    assert scaling_config(h100).accelerator_type == "H100"
    assert h100.scale.peak_flops() == 989e12
    cpu = compose_typed("train", REQUIRED + ["scale=cpu2"])
    assert scaling_config(cpu).resources_per_worker == {"CPU": 1} and cpu.scale.peak_flops() == 0.0


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optim.lr=-1"], r"^optim\.lr: must be > 0"),
        (["mix.replay_ratio=null", "mix.weights={ko:0.5,en:0.4}"], r"^mix\.weights: shares must sum to 1"),
        (["mix.replay_ratio=1.5"], r"^mix\.replay_ratio: 1.5 is not in \[0, 1\]"),
        (["strategy.name=zero9"], r"^strategy\.name: 'zero9' is not one of"),
        (["strategy=zero9"], r"unknown option 'zero9' for 'strategy'"),
        (["batch.micro_batch_size=3"], r"^batch\.num_sequences_per_step: 8 is not a multiple"),
        (["stages=[{name:a,num_steps:2}]"], r"^num_steps: 6 != the sum of stages' num_steps \(2\)"),
        (["num_steps=2", "stages=[{name:a,num_steps:2,trainable:rows}]"], r"^stages\[0\]\.trainable: 'rows' is not one of"),
        (["strategy.name=local"], r"^strategy\.name: 'local' trains on one worker"),
        (["optim.lr_schedule=step"], r"^optim\.lr_schedule: 'step' is not one of"),
        (["scale.num_workers=0"], r"^scale\.num_workers: must be >= 1"),
        (["data.tokens_dir="], r"^data\.tokens_dir: set the packed tokens directory"),
        (["model=pretrained"], r"^model\.name_or_path: set the model to continue"),
        (["batch.num_sequences_per_step=8", "optim.betas=1"], r"unknown config key 'optim.betas'"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(overrides, expected):
    with pytest.raises(UserError, match=expected) as info:
        compose_typed("train", ["experiment=smoke"] + overrides)
    assert "\n" not in str(info.value)


def test_cli_rejects_a_bad_value_before_anything_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "kopretrain", "train", "experiment=smoke", "-m", "mix.replay_ratio=0,1.5"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["kopretrain train: error: mix.replay_ratio: 1.5 is not in [0, 1]"]
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
