"""KoBEST during training (kopretrain/train/validate_kobest.py), no Ray: sharded over 2 (and 3)
simulated ranks -- threads, each with its own copy of the model, meeting in a real sum -- the
scores equal `kopretrain eval`'s `score_kobest` on the same items and model; no random number is
drawn and the model goes back to train mode; config and data mistakes are one line naming the key."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kopretrain.config.eval import TrainEvalConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.eval.kobest import score_kobest
from kopretrain.tokenizer.load import load_tokenizer
from kopretrain.train.validate_kobest import KobestValidator, check_kobest, step_metrics

ROOT = Path(__file__).resolve().parents[2]
MAX_LEN = 96


class SimulatedRank:
    """What KobestValidator.score uses of a strategy: `model`, `s.device` and a sum over the ranks."""

    def __init__(self, model, rank: int, world_size: int, slots: list, barrier: threading.Barrier):
        self.model, self.rank, self.slots, self.barrier = model, rank, slots, barrier
        self.s = SimpleNamespace(device=torch.device("cpu"), rank=rank, world_size=world_size)

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        self.slots[self.rank] = value.detach().clone()
        self.barrier.wait()
        total = torch.zeros_like(value)
        for part in self.slots:  # every rank adds in rank order: the same sum everywhere
            total += part
        self.barrier.wait()
        return total


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    return model.train()


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_scores_equal_kopretrain_eval(world_size):
    tok = load_tokenizer(ROOT / "data/smoke/tokenizer")
    cfg = TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa", "SentiNeg"], kobest_max_items=7, batch_size=3)
    kcfg = cfg.kobest_config()
    assert kcfg.tasks == ["COPA", "SentiNeg"] and kcfg.split == "dev" and kcfg.limit == 7
    model = tiny_model()
    reference = score_kobest(copy.deepcopy(model), tok, kcfg, max_len=MAX_LEN)  # `kopretrain eval`'s numbers

    slots, barrier, results = [None] * world_size, threading.Barrier(world_size), [None] * world_size
    validators = [KobestValidator.from_config(cfg, tok, MAX_LEN, r, world_size) for r in range(world_size)]
    assert len({len(v.mine) for v in validators}) == 1  # every rank the same number of forward passes
    assert sum(i >= 0 for v in validators for i, _ in v.mine) == validators[0].num_requests == 28
    ranks = [SimulatedRank(copy.deepcopy(model), r, world_size, slots, barrier) for r in range(world_size)]
    rng = torch.get_rng_state()

    def work(r):
        results[r] = validators[r].score(ranks[r])

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(rng, torch.get_rng_state())  # no random number drawn
    assert all(rank.model.training for rank in ranks)  # back in train mode
    assert all(res == results[0] for res in results)  # every rank the same scores
    assert results[0] == reference
    assert set(results[0]) == {"COPA", "SentiNeg", "mean"} and results[0]["COPA"]["num_items"] == 7
    metrics = step_metrics(results[0])
    assert metrics["eval/kobest_copa_acc"] == reference["COPA"]["acc"]
    assert metrics["eval/kobest_sentineg_macro_f1"] == reference["SentiNeg"]["macro_f1"]
    assert metrics["eval/kobest_mean_acc"] == reference["mean"]["acc"]


def test_mistakes_are_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^kobest_tasks: 'nope' is not one of BoolQ, COPA"):
        TrainEvalConfig(every_num_steps=2, kobest_tasks=["nope"])
    with pytest.raises(ConfigError, match=r"^kobest_split: 'train' is not one of test, dev$"):
        TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa"], kobest_split="train")
    with pytest.raises(ConfigError, match=r"^kobest_max_items: must be >= 0"):
        TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa"], kobest_max_items=-1)
    with pytest.raises(ConfigError, match=r"^kobest_tasks: scored only at evals"):
        TrainEvalConfig(every_num_steps=0, at_end=False, kobest_tasks=["copa"])
    with pytest.raises(UserError, match=rf"^eval\.kobest_data_dir: COPA dev split not found: {tmp_path}/COPA/dev\.tsv "
                                        r"\(eval\.kobest_data_dir holds <Task>/<split>\.tsv\)$"):
        check_kobest(TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa"], kobest_data_dir=str(tmp_path)))
    with pytest.raises(UserError, match=r"^eval\.kobest_num_fewshot=5000: the COPA dev split has 499 examples to draw "
                                        r"from, 5000 needed \(scoring the dev split, an item is not its own example\)$"):
        check_kobest(TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa"], kobest_num_fewshot=5000))
    with pytest.raises(UserError, match=r"^eval\.kobest_num_fewshot=501: the COPA dev split has 500 examples to draw "
                                        r"from, 501 needed$"):
        check_kobest(TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa"], kobest_split="test", kobest_num_fewshot=501))
    check_kobest(TrainEvalConfig(every_num_steps=2, kobest_tasks=["copa", "boolq"]))  # the shipped files
    check_kobest(TrainEvalConfig(every_num_steps=0, at_end=False, kobest_data_dir=str(tmp_path)))  # off: not read
