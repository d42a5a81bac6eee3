"""The configuration fingerprint of a training run: which keys change the math, and their hash.

    keys = math_keys(cfg)           # {"optim.lr": 0.003, "seed": 0, "model.arch.hidden_size": 64, ...}
    fp = fingerprint(keys)          # 16 hex digits, stable across processes and Python versions
    changed_keys(old, new)          # ["optim.lr 0.003 -> 0.001"]

A checkpoint may only be resumed by the configuration that wrote it: the driver compares the
fingerprint recorded with the checkpoints (`train_state.json` of each checkpoint and
`kopretrain_fingerprint.json` next to them) with the new run's before Ray starts
(kopretrain/train/resume.py).

Math keys: the model and tokenizer, the packed tokens, the mix, the strategy's name and
precision and optimizer offload, the optimizer (its name included), the LoRA settings (`peft.*`), the global batch, the step count and stages, and the seed. Not math
keys: how many workers share the global batch (`scale.*`, `batch.micro_batch_size`: the
accumulation count follows), checkpoint cadence and storage, output directory, tracking, Ray,
fault injection, gradient checkpointing and the resume policy itself. Paths must already be
absolute (command.resolve_train_paths), so `data/x` and `/abs/data/x` are the same key value.
Pure: no torch, Ray, Hydra or MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from kopretrain.config.train import TrainConfig

STATE_FILE = "train_state.json"
"""Rank 0's JSON state inside every checkpoint (kopretrain/train/checkpoint.py)."""
STATE_KEY = "config_fingerprint"
"""Key of the fingerprint in train_state.json and in report.json."""
RECORD_FILE = "kopretrain_fingerprint.json"
"""The driver's record next to Ray Train's checkpoints: {"fingerprint": ..., "keys": {...}}."""


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, (list, tuple)):
        if not value:
            out[prefix] = []
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = value


def math_keys(cfg: TrainConfig) -> dict[str, Any]:
    """Flat {dotted key: value} of every key that changes what the run computes."""
    m, mix = cfg.model, cfg.mix
    parts: dict[str, Any] = {
        "model.name_or_path": m.name_or_path,
        "model.arch": dict(m.arch),
        "model.num_base_rows": m.num_base_rows,
        "model.pad_vocab_to_multiple_of": m.pad_vocab_to_multiple_of,
        "model.new_rows_init": m.new_rows_init,
        "tokenizer": cfg.tokenizer,
        "data.tokens_dir": cfg.data.tokens_dir,
        "mix.replay_ratio": mix.replay_ratio,
        "strategy.name": cfg.strategy.name,
        "strategy.mixed_precision": cfg.strategy.mixed_precision,
        "strategy.offload_optimizer": cfg.strategy.offload_optimizer,
        "optim": cfg.optim,
        "batch.num_sequences_per_step": cfg.batch.num_sequences_per_step,
        "num_steps": cfg.num_steps,
        "stages": list(cfg.stages),
        "peft": cfg.peft,
        "seed": cfg.seed,
    }
    if mix.replay_ratio is None:  # the general form; with a replay ratio the weights are unused
        parts["mix.weights"] = dict(mix.weights)
    else:
        parts["mix.target_domain"], parts["mix.replay_domain"] = mix.target_domain, mix.replay_domain
    if mix.schedule != "constant":  # kopretrain/train/mix_schedule.py; constant adds no keys
        parts["mix.schedule"] = mix.schedule
        parts["mix.final_weights" if mix.schedule == "linear" else "mix.stage_weights"] = (
            dict(mix.final_weights) if mix.schedule == "linear" else {k: dict(v) for k, v in mix.stage_weights.items()})
    out: dict[str, Any] = {}
    for key, value in parts.items():
        _flatten(key, value, out)
    return out


def fingerprint(keys: dict[str, Any]) -> str:
    """A stable hash of `math_keys(cfg)` (key order does not matter; 1 and 1.0 differ, as in the config)."""
    text = json.dumps(keys, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _show(value: Any) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value, ensure_ascii=False, default=str)


_MISSING = object()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key old -> new` for every key whose value differs (or exists on one side only), sorted."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a is _MISSING or b is _MISSING or a != b or type(a) is not type(b):
            lines.append(f"{key} {_show(a)} -> {_show(b)}")
    return lines
