"""Resuming on changed packed data: the sampler's checkpoint records each domain's number of
sequences, and the driver (kopretrain/train/resume.py, before Ray starts) refuses a resume on data
re-prepared in place in one line, unless `data.allow_changed_data=true`.

The checkpoint is written by the real save path (the plain loop on the local strategy, two steps,
`save_checkpoint`) into the layout Ray Train leaves (`<run dir>/ray/train/checkpoint_*` listed in its
snapshot, with the driver's fingerprint record); no Ray is started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kopretrain.data.packed import PackedDataset, write_index, write_shard
from kopretrain.errors import UserError
from kopretrain.train import resume
from kopretrain.train.checkpoint import save_checkpoint
from kopretrain.train.command import resolve_train_paths, run_train
from kopretrain.train.fingerprint import fingerprint, math_keys
from kopretrain.train.loop import TrainState, train
from kopretrain.train.mixing import MixingSampler
from kopretrain.train.model import build_model, plan_model
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
from kopretrain.train.worker import loop_plan
from tests.train.conftest import smoke_cfg

REPO = Path(__file__).resolve().parents[2]
CKPT = "checkpoint_2026-11-30_00-00-00.000000"


class SaveInto:
    """Loop hooks that write the last checkpoint where Ray Train would keep it."""

    def __init__(self, strategy, directory: Path, fp: str):
        self.strategy, self.directory, self.fp = strategy, directory, fp

    def on_step(self, state, record):
        pass

    def save_checkpoint(self, state):
        save_checkpoint(self.directory, self.strategy, state, fingerprint=self.fp)


def checkpointed_run(tmp_path: Path):
    """Smoke tokens copied to tmp, a 2-step local run's checkpoint in <run>/ray/train: (run_dir, overrides)."""
    tokens = tmp_path / "tokens"
    shutil.copytree(REPO / "data/smoke/tokens", tokens)
    overrides = (f"data.tokens_dir={tokens}", "strategy.name=local", "scale.num_workers=1", "num_steps=2",
                 "optim.lr_warmup_steps=1")
    run_dir = (tmp_path / "run").resolve()
    cfg = resolve_train_paths(smoke_cfg(*overrides), run_dir)
    keys = math_keys(cfg)
    fp = fingerprint(keys)
    model, _ = build_model(plan_model(cfg), seed=cfg.seed)
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu"), micro_batch_size=2, num_accumulation_steps=4,
                                              max_grad_norm=1.0))
    strategy.wrap(model)
    weights = cfg.mix.resolved_weights()
    datasets = {d: PackedDataset(tokens / d) for d in weights}
    sampler = MixingSampler({d: len(ds) for d, ds in datasets.items()}, weights, cfg.seed)
    exp = run_dir / "ray" / "train"
    train(strategy, datasets, sampler, loop_plan(cfg, None, 0, 1), TrainState(), SaveInto(strategy, exp / CKPT, fp))
    snapshot = {"checkpoint_results": [{"checkpoint_dir_name": CKPT, "metrics": {}}],
                "latest_checkpoint_result": {"checkpoint_dir_name": CKPT, "metrics": {}}}
    (exp / resume.SNAPSHOT_FILE).write_text(json.dumps(snapshot))
    resume.write_record(str(run_dir / "ray"), fp, keys)
    return run_dir, tokens, overrides


def grow_domain(tokens: Path, domain: str, extra: int) -> None:
    """Re-prepare `domain` in place with `extra` more sequences (a second shard, a new index.json)."""
    directory = tokens / domain
    index = json.loads((directory / "index.json").read_text())
    ds = PackedDataset(directory)
    rows = np.stack([ds[i] for i in range(extra)])
    shards = [*index["shards"], write_shard(directory, len(index["shards"]), rows, ds.dtype)]
    fields = {k: v for k, v in index.items() if k not in ("format", "num_sequences", "num_tokens", "shards", "dtype")}
    write_index(directory, dtype=ds.dtype, shards=shards, **fields)


def test_resume_on_changed_packed_data_fails_before_ray_in_one_line_unless_allowed(tmp_path):
    run_dir, tokens, overrides = checkpointed_run(tmp_path)
    prior = resume.find_prior(str(run_dir / "ray"))
    assert prior.last_step == 2 and prior.data_sizes == {"ko": 400, "en": 300}  # what the sampler recorded
    assert resume.check_data(prior, {"ko": 400, "en": 300}, allow_changed=False) == ""

    grow_domain(tokens, "ko", 40)
    with pytest.raises(UserError) as err:
        run_train(smoke_cfg(*overrides), run_dir)  # refused on the driver: Ray is never started
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.tokens_dir: the checkpoint at step 2 was drawing from other packed data "
                              "(ko: 400 -> 440 sequences); set data.allow_changed_data=true")

    allowed = resume.check_data(resume.find_prior(str(run_dir / "ray")), {"ko": 440, "en": 300}, allow_changed=True)
    assert allowed.startswith("data.allow_changed_data: the checkpoint at step 2 was drawing from other packed data "
                              "(ko: 400 -> 440 sequences); continuing")
    # allowing it is not a change of configuration: the fingerprint stays the same
    keys = math_keys(resolve_train_paths(smoke_cfg(*overrides, "data.allow_changed_data=true"), run_dir))
    assert fingerprint(keys) == prior.record["fingerprint"]
