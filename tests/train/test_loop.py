"""The plain-torch loop on the tiny smoke model, no Ray: it trains, accumulation does not change
the math, a new_embeddings stage moves only the new rows, and resume is bitwise exact."""

from __future__ import annotations

import torch

from kopretrain.data.packed import PackedDataset
from kopretrain.paths import resolve_path
from kopretrain.train.checkpoint import load_train_state, restore_rng, save_checkpoint
from kopretrain.train.loop import LoopPlan, StageSpec, TrainState, train
from kopretrain.train.mixing import MixingSampler
from kopretrain.train.model import build_model, plan_model
from kopretrain.train.stages import embedding_param_names
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
from tests.train.conftest import smoke_cfg

WEIGHTS = {"ko": 0.8, "en": 0.2}
STAGED = [StageSpec("embed", 2, "new_embeddings"), StageSpec("full", 4, "all")]


class Recorder:
    """Hooks that keep the records and, when asked, write checkpoints to a directory per step."""

    def __init__(self, strategy=None, ckpt_root=None):
        self.records, self.strategy, self.ckpt_root = [], strategy, ckpt_root

    def on_step(self, state, record):
        self.records.append(record)

    def save_checkpoint(self, state):
        if self.ckpt_root is not None:
            save_checkpoint(self.ckpt_root / f"step-{state.step}", self.strategy, state)


def setup(micro_batch_size=2, num_sequences=8, arch=None, num_base_rows=None):
    cfg = smoke_cfg(*(arch or []))
    model, _ = build_model(plan_model(cfg), seed=0)
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu"), micro_batch_size=micro_batch_size,
                                              num_accumulation_steps=num_sequences // micro_batch_size, max_grad_norm=1.0))
    strategy.wrap(model)
    datasets = {d: PackedDataset(resolve_path(cfg.data.tokens_dir) / d) for d in WEIGHTS}
    sampler = MixingSampler({d: len(v) for d, v in datasets.items()}, WEIGHTS, seed=0, seq_lens={d: 128 for d in WEIGHTS})
    return strategy, datasets, sampler


def plan(stages, micro_batch_size=2, **kw):
    return LoopPlan(stages=stages, lr=3e-3, lr_warmup_steps=1, weight_decay=0.1, num_sequences_per_step=8,
                    micro_batch_size=micro_batch_size, num_base_rows=1500, **kw)


def test_loss_goes_down_and_accumulation_does_not_change_the_math():
    losses = {}
    for micro in (1, 8):  # 8 micro-batches of 1 sequence vs one of 8
        strategy, datasets, sampler = setup(micro_batch_size=micro)
        hooks = Recorder()
        state = train(strategy, datasets, sampler, plan([StageSpec("train", 6)], micro), TrainState(), hooks)
        losses[micro] = [r["loss"] for r in state.losses]
        assert state.step == 6 and hooks.records == state.losses
    assert losses[1][-1] < losses[1][0] - 0.3, losses[1]
    assert torch.allclose(torch.tensor(losses[8]), torch.tensor(losses[1]), rtol=0, atol=2e-5), losses
    assert state.losses[-1]["tokens"] == 6 * 8 * 128


def test_new_embeddings_stage_moves_only_the_new_rows():
    strategy, datasets, sampler = setup()
    model = strategy.module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    emb = set(embedding_param_names(model))
    assert emb == {"model.embed_tokens.weight", "lm_head.weight"}
    state = train(strategy, datasets, sampler, plan([StageSpec("embed", 3, "new_embeddings")]), TrainState(), Recorder())
    after = model.state_dict()
    for name, value in after.items():
        if name in emb:
            assert torch.equal(value[:1500], before[name][:1500]), f"{name}: base rows moved"
            assert (value[1500:] - before[name][1500:]).abs().max() > 1e-4, f"{name}: new rows did not train"
        else:
            assert torch.equal(value, before[name]), f"{name} is frozen in a new_embeddings stage"
    assert state.stages[0]["trainable"] == "new_embeddings"
    assert state.stages[0]["num_trainable_params"] == sum(after[n].numel() for n in emb)


def test_tied_embeddings_are_one_parameter_and_stay_frozen_below_the_base():
    strategy, datasets, sampler = setup(arch=["model.arch.tie_word_embeddings=true"])
    model = strategy.module
    assert embedding_param_names(model) == ["model.embed_tokens.weight"]
    before = model.get_input_embeddings().weight.detach().clone()
    train(strategy, datasets, sampler, plan([StageSpec("embed", 2, "new_embeddings")]), TrainState(), Recorder())
    after = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is after
    assert torch.equal(after[:1500], before[:1500]) and not torch.equal(after[1500:], before[1500:])


def test_resume_reproduces_the_uninterrupted_losses_bitwise(tmp_path):
    strategy, datasets, sampler = setup()
    reference = train(strategy, datasets, sampler, plan(STAGED, checkpoint_every_num_steps=3), TrainState(),
                      Recorder(strategy, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-3", "step-6"]  # stage ends + every 3
    expected = [r["loss"] for r in reference.losses]
    for resume_at in ("step-2", "step-3"):  # a stage boundary (weights only), mid-stage (with optimizer)
        strategy, datasets, sampler = setup()
        directory = tmp_path / resume_at
        state = load_train_state(directory)
        sampler.load_state_dict(state.sampler)
        restore_rng(directory, 0)
        resumed = train(strategy, datasets, sampler, plan(STAGED), state, Recorder(), resume_dir=directory)
        assert [r["loss"] for r in resumed.losses] == expected, resume_at
        assert resumed.stages == reference.stages
