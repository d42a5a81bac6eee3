"""The plain-torch loop on the tiny smoke model, no Ray: it trains, accumulation does not change
the math, a new_embeddings stage moves only the new rows, and resume is bitwise exact."""

from __future__ import annotations

from pathlib import Path

import pytest
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
SMOKE_TOKENS = Path(__file__).resolve().parents[2] / "data/smoke/tokens"


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


def test_per_domain_losses_average_back_to_the_step_loss():
    strategy, datasets, _ = setup()
    weights = {"ko": 0.95, "en": 0.05}  # one English sequence in 20: most steps have none
    sizes = {d: len(v) for d, v in datasets.items()}
    sampler = MixingSampler(sizes, weights, seed=0, seq_lens={d: 128 for d in weights})
    state = train(strategy, datasets, sampler, plan([StageSpec("train", 4)]), TrainState(), Recorder())
    replay = MixingSampler(sizes, weights, seed=0)  # the same draws: each step's domains
    for record in state.losses:
        by_domain = record["loss_by_domain"]
        drawn = [d for d, _ in replay.next_batch(8)]
        assert set(by_domain) == set(drawn)
        # every sequence has 127 targets: the token-weighted mean of the domain losses is the step loss
        mean = sum(drawn.count(d) * 127 * loss for d, loss in by_domain.items()) / (8 * 127)
        assert mean == pytest.approx(record["loss"], abs=1e-6)
    steps_without_en = [r for r in state.losses if "en" not in r["loss_by_domain"]]
    assert steps_without_en and len(steps_without_en) < 4, "English is absent from some steps (never 0), present in one"
    assert all(r["loss_by_domain"]["ko"] == pytest.approx(r["loss"], abs=1e-6) for r in steps_without_en)


TWO_RANKS = ("ddp", "fsdp", "deepspeed_zero2")


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: the same 3 steps with micro-batches [2, 2] and [1, 3], per strategy."""
    import json
    import os

    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.registry import STRATEGIES, load

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    datasets = {d: PackedDataset(SMOKE_TOKENS / d) for d in WEIGHTS}
    results = {}
    for name in TWO_RANKS:
        for sizes in ([2, 2], [1, 3]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
            gas = 8 // sum(sizes)
            strategy = load(STRATEGIES, name)(StrategySettings(
                device=torch.device("cpu"), rank=rank, world_size=2, num_accumulation_steps=gas,
                micro_batch_size=sizes[rank], max_grad_norm=1.0))
            strategy.wrap(model)
            sampler = MixingSampler({d: len(v) for d, v in datasets.items()}, WEIGHTS, seed=0, seq_lens={d: 128 for d in WEIGHTS})
            loop = LoopPlan(stages=[StageSpec("train", 3)], lr=3e-3, lr_warmup_steps=1, weight_decay=0.1,
                            num_sequences_per_step=8, micro_batch_sizes=sizes, rank=rank, world_size=2)
            state = train(strategy, datasets, sampler, loop, TrainState(), Recorder())
            full = strategy.full_state_dict()
            if rank == 0:
                torch.save(full, f"{out_dir}/{name}-{sizes[0]}{sizes[1]}.pt")
                results[f"{name}-{sizes[0]}{sizes[1]}"] = state.losses
    if rank == 0:
        with open(f"{out_dir}/losses.json", "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


def test_unequal_micro_batches_on_two_ranks_give_the_homogeneous_update(tmp_path):
    """Micro-batches [1, 3] vs [2, 2] on 2 gloo ranks (same global batch of 8, 2 passes each):
    per-step losses and the trained weights equal within 1e-5 for DDP, FSDP2 and ZeRO-2; and
    equal to one process with the whole batch (token-weighted loss, gradients reduced as a sum)."""
    import json
    from tests.cluster.processes import free_ports

    import torch.multiprocessing as mp

    (port,) = free_ports(1)
    mp.start_processes(_two_rank_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    results = json.loads((tmp_path / "losses.json").read_text())
    # the single-process reference: the same model, all 8 sequences on one rank
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu"), num_accumulation_steps=2, micro_batch_size=4,
                                              max_grad_norm=1.0))
    strategy.wrap(model)
    datasets = {d: PackedDataset(SMOKE_TOKENS / d) for d in WEIGHTS}
    sampler = MixingSampler({d: len(v) for d, v in datasets.items()}, WEIGHTS, seed=0, seq_lens={d: 128 for d in WEIGHTS})
    ref = train(strategy, datasets, sampler, LoopPlan(stages=[StageSpec("train", 3)], lr=3e-3, lr_warmup_steps=1,
                                                      weight_decay=0.1, num_sequences_per_step=8, micro_batch_size=4),
                TrainState(), Recorder())
    expected = [r["loss"] for r in ref.losses]
    ref_weights = {k: v.detach() for k, v in model.state_dict().items()}
    for key, losses in results.items():
        got = [r["loss"] for r in losses]
        assert got == pytest.approx(expected, abs=1e-5), key
        for r, e in zip(losses, ref.losses):
            assert r["loss_by_domain"] == pytest.approx(e["loss_by_domain"], abs=1e-5), key
        weights = torch.load(tmp_path / f"{key}.pt", weights_only=True)
        worst = max(float((weights[k] - ref_weights[k]).abs().max()) for k in ref_weights)
        assert worst < 1e-5, (key, worst)
