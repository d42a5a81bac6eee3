"""Held-out bpc during training (kopretrain/train/validate.py), no Ray: evals every 2 steps leave the
losses, the weights and the RNG exactly as without them; the figures equal `kopretrain eval`'s
bits_per_char on the same model; sharded over 2 FSDP2 ranks (gloo) they equal one process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kopretrain.eval.bpc import bits_per_char
from kopretrain.tokenizer.load import load_tokenizer
from kopretrain.train.loop import StageSpec, TrainState, train
from kopretrain.train.validate import Validator
from tests.train.test_loop import Recorder, plan, setup

ROOT = Path(__file__).resolve().parents[2]
TEXTS = {"ko": (ROOT / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:5],
         "en": (ROOT / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()[:4]}


class Validating(Recorder):
    def __init__(self, strategy, validator):
        super().__init__()
        self.strategy, self.validator, self.evals = strategy, validator, {}

    def on_step(self, state, record):
        super().on_step(state, record)
        rng = torch.get_rng_state()
        metrics = self.validator.maybe_run(record["step"], self.strategy)
        assert torch.equal(rng, torch.get_rng_state()) and self.strategy.model.training
        if metrics:
            self.evals[record["step"]] = metrics


def test_evals_change_nothing_in_training_and_equal_kopretrain_eval():
    tok = load_tokenizer(ROOT / "data/smoke/tokenizer")
    runs = []
    for with_eval in (False, True):
        strategy, datasets, sampler = setup()
        validator = Validator.build(TEXTS, tok, every_num_steps=2, num_steps=5, max_len=32, batch_size=3, rank=0, world_size=1)
        hooks = Validating(strategy, validator) if with_eval else Recorder()
        state = train(strategy, datasets, sampler, plan([StageSpec("train", 5)]), TrainState(), hooks)
        runs.append((state, {k: v.detach().clone() for k, v in strategy.module.state_dict().items()}, hooks))
    (plain, w0, _), (evald, w1, hooks) = runs
    assert [r["loss"] for r in evald.losses] == [r["loss"] for r in plain.losses]  # bitwise
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert sorted(hooks.evals) == [2, 4, 5]  # every 2 steps and the last
    final = hooks.evals[5]
    for d, texts in TEXTS.items():
        ref = bits_per_char(hooks.strategy.module, tok, texts, max_len=32)
        assert final[f"eval/{d}_bpc"] == pytest.approx(ref.bpc, rel=1e-6)
        assert final[f"eval/{d}_loss_per_token"] == pytest.approx(ref.loss_per_token, rel=1e-6)
    assert hooks.evals[2]["eval/ko_bpc"] != final["eval/ko_bpc"]  # the model moved


def _rank(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.registry import STRATEGIES, load
    from kopretrain.train.strategies.base import StrategySettings

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    strategy = load(STRATEGIES, "fsdp")(StrategySettings(device=torch.device("cpu"), rank=rank, world_size=2,
                                                         num_accumulation_steps=1, micro_batch_size=1))
    strategy.wrap(model)
    tok = load_tokenizer(ROOT / "data/smoke/tokenizer")
    validator = Validator.build(TEXTS, tok, every_num_steps=1, num_steps=1, max_len=24, batch_size=2, rank=rank, world_size=2)
    metrics = validator.run(strategy)
    if rank == 0:
        (Path(out_dir) / "metrics.json").write_text(json.dumps({"metrics": metrics, "num_windows": len(validator.mine)}))
    dist.barrier()
    dist.destroy_process_group()


def test_sharded_over_two_fsdp_ranks_equals_one_process(tmp_path):
    from tests.cluster.processes import free_ports

    import torch.multiprocessing as mp
    from transformers import LlamaConfig, LlamaForCausalLM

    (port,) = free_ports(1)
    mp.start_processes(_rank, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    got = json.loads((tmp_path / "metrics.json").read_text())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    tok = load_tokenizer(ROOT / "data/smoke/tokenizer")
    one = Validator.build(TEXTS, tok, every_num_steps=1, num_steps=1, max_len=24, batch_size=2, rank=0, world_size=1)
    assert len(one.mine) % 2 == 1 and got["num_windows"] == math.ceil(len(one.mine) / 2)  # a padding window
    for d, texts in TEXTS.items():
        ref = bits_per_char(model, tok, texts, max_len=24)
        assert got["metrics"][f"eval/{d}_bpc"] == pytest.approx(ref.bpc, rel=1e-5)


def test_heldout_and_max_len_mistakes_are_one_line_before_ray(tmp_path):
    """`train eval.every_num_steps=N` reads eval.heldout in the driver: a path without documents or a
    window longer than the model's context is one UserError naming the key (not a worker traceback)."""
    from kopretrain.config.eval import TrainEvalConfig
    from kopretrain.errors import UserError
    from kopretrain.train.validate import check_heldout

    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": null}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"^eval\.heldout\.xx: source 'heldout\.xx': no files match"):
        check_heldout(TrainEvalConfig(every_num_steps=2, heldout={"xx": str(tmp_path / "empty")}), 256)
    with pytest.raises(UserError, match=rf"^eval\.heldout\.ko: no readable documents in {bad} \(1 records skipped: null_text 1\)$"):
        check_heldout(TrainEvalConfig(every_num_steps=2, heldout={"ko": str(bad)}), 256)
    with pytest.raises(UserError, match=r"^eval\.max_len=1024 exceeds the model's context \(max_position_embeddings=256\)$"):
        check_heldout(TrainEvalConfig(every_num_steps=2, max_len=1024), 256)
    check_heldout(TrainEvalConfig(every_num_steps=0, at_end=False, heldout={"xx": str(tmp_path / "empty")}), 256)  # no evals: not read
    check_heldout(TrainEvalConfig(every_num_steps=2), 256)  # the shipped held-out files
