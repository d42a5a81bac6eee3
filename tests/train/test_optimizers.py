"""The optimizer factory: `optim.name` is a key of `kopretrain.registry.OPTIMIZERS`, and an entry
added to that table trains through the unchanged loop and strategies (here plain SGD, on the tiny
smoke model with the local strategy)."""

from __future__ import annotations

import torch

from kopretrain import registry
from kopretrain.data.packed import PackedDataset
from kopretrain.paths import resolve_path
from kopretrain.train.loop import LoopPlan, StageSpec, TrainState, train
from kopretrain.train.mixing import MixingSampler
from kopretrain.train.model import build_model, plan_model
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
from tests.train.conftest import smoke_cfg


def sgd(param_groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """A factory with the table's signature (betas and eps unused by SGD)."""
    return torch.optim.SGD(param_groups, lr=0.0)


class NoHooks:
    def on_step(self, state, record):
        pass

    def save_checkpoint(self, state):
        pass


def test_an_optimizer_added_to_the_table_trains_through_the_unchanged_loop(monkeypatch):
    monkeypatch.setitem(registry.OPTIMIZERS, "sgd", (__name__, "sgd"))
    cfg = smoke_cfg("optim.name=sgd", "strategy.name=local", "scale.num_workers=1")  # the config accepts the new name
    assert cfg.optim.name == "sgd"
    model, _ = build_model(plan_model(cfg), seed=0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu"), micro_batch_size=4, num_accumulation_steps=2,
                                              optimizer=cfg.optim.name))
    strategy.wrap(model)
    weights = {"ko": 0.8, "en": 0.2}
    datasets = {d: PackedDataset(resolve_path(cfg.data.tokens_dir) / d) for d in weights}
    sampler = MixingSampler({d: len(v) for d, v in datasets.items()}, weights, seed=0)
    plan = LoopPlan(stages=[StageSpec("train", 2)], lr=0.5, lr_schedule="constant", num_sequences_per_step=8,
                    micro_batch_size=4)
    state = train(strategy, datasets, sampler, plan, TrainState(), NoHooks())
    assert type(strategy.optimizer) is torch.optim.SGD
    assert [r["lr"] for r in state.losses] == [0.5, 0.5]
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "SGD stepped the weights"


def test_deepspeed_refuses_8bit_adamw_in_one_line():
    import pytest

    from kopretrain.errors import UserError

    for strategy in ("deepspeed_zero2", "deepspeed_zero3"):
        with pytest.raises(UserError, match=rf"^optim\.name: adamw_8bit runs with strategy=local\|ddp \(got {strategy}; "
                                            r"DeepSpeed: strategy\.offload_optimizer=true\)$"):
            smoke_cfg("optim=adamw_8bit", f"strategy={strategy}")
