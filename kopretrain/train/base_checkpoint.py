"""The pretrained checkpoint's safetensors files, checked on the driver before Ray starts.

    check_base_checkpoint(plan)   # kopretrain/train/command.py, after the .bin conversion

- every shard file the index (model.safetensors.index.json) names exists, its header opens and
  holds the tensors the index puts there (a missing or truncated shard would otherwise fail inside
  every worker, after Ray started);
- every parameter of the model its config.json describes is in the files (checkpoints saved from
  the base model, without the causal LM's prefix, count; a tied output layer needs none). A
  parameter the files lack would make the sharded load fall back to Hugging Face's full load,
  which starts it from random values and trains on silently.

Local directories only: a hub id is downloaded by the workers (the driver reads its config).
Errors: one-line UserError naming the key (`model.name_or_path`, or `model.safetensors_dir` for a
`.bin` conversion) and the file or tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

from kopretrain.errors import UserError


def check_base_checkpoint(plan) -> None:
    """Raise UserError if the local safetensors checkpoint of `plan` (a ModelPlan) lacks a file or a weight."""
    from kopretrain.train import model_init

    if not plan.name_or_path:
        return
    key = "model.safetensors_dir" if plan.safetensors_dir else "model.name_or_path"
    directory = Path(plan.safetensors_dir or plan.name_or_path)
    if not directory.is_dir():
        return
    weight_map = _weight_map(directory / model_init.INDEX, key)
    if weight_map is None:
        if not (directory / model_init.SINGLE).is_file():
            return  # no safetensors: .bin files are converted before this; neither: HF's own error
        files = [model_init.SINGLE]
    else:
        files = sorted(set(weight_map.values()))
    stored: dict[str, Path] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise UserError(f"{key}: {model_init.INDEX} names {name}, which is not in {directory}")
        stored.update({k: path for k in _tensor_names(path, key)})
    for tensor, name in (weight_map or {}).items():
        if stored.get(tensor, Path()).name != name:
            raise UserError(f"{key}: {model_init.INDEX} puts {tensor} in {name}, which does not hold it ({directory})")
    ckpt = model_init.Checkpoint(stored)
    missing = model_init.missing_keys(model_init.meta_model(plan), ckpt)  # the workers' test for an in-place load
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{key}: {directory} lacks {missing[0]}{more} of the weights its config.json describes "
                        "(they would start from random values)")


def _weight_map(index: Path, key: str) -> dict[str, str] | None:
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        assert isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())
    except (ValueError, KeyError, TypeError, AssertionError):
        raise UserError(f"{key}: {index} is not a safetensors index (a JSON object with a weight_map of tensor -> file)") from None
    return weight_map


def _tensor_names(path: Path, key: str) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors' SafetensorError, OSError: a truncated or foreign file
        raise UserError(f"{key}: cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
