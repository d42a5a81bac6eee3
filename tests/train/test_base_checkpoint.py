"""A pretrained checkpoint's safetensors are checked on the driver (kopretrain/train/base_checkpoint.py):
a missing shard, an unreadable shard, an index that points at the wrong file and a missing weight
are one line naming the key and the file or tensor, before Ray; a complete checkpoint passes, sharded or not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kopretrain.errors import UserError
from kopretrain.train.base_checkpoint import check_base_checkpoint
from kopretrain.train.model import plan_model
from tests.train.conftest import expanded_overrides, smoke_cfg


@pytest.fixture(scope="module")
def sharded_dir(base_model_dir, tmp_path_factory) -> Path:
    """The tiny base saved as 4+ safetensors shards with an index, its tokenizer beside it."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharded") / "base"
    AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).save_pretrained(out, max_shard_size="200KB")
    for f in base_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, out / f.name)
    assert len(list(out.glob("*.safetensors"))) >= 3
    return out


def copy_of(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "model"))


def check(model_dir: Path) -> None:
    check_base_checkpoint(plan_model(smoke_cfg(*expanded_overrides(model_dir))))


def test_complete_checkpoints_pass(base_model_dir, sharded_dir):
    check(base_model_dir)  # one model.safetensors
    check(sharded_dir)


def test_a_missing_shard_is_one_line(sharded_dir, tmp_path):
    model = copy_of(sharded_dir, tmp_path)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[1]
    (model / gone).unlink()
    with pytest.raises(UserError) as err:
        check(model)
    assert str(err.value) == f"model.name_or_path: model.safetensors.index.json names {gone}, which is not in {model}"


def test_a_truncated_shard_is_one_line(sharded_dir, tmp_path):
    model = copy_of(sharded_dir, tmp_path)
    shard = sorted(model.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:5])
    with pytest.raises(UserError, match=rf"^model.name_or_path: cannot read {shard}: \S"):
        check(model)


def test_a_missing_weight_is_one_line_not_a_random_start(sharded_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    model = copy_of(sharded_dir, tmp_path)
    index_path = model / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "model.layers.1.mlp.down_proj.weight"
    shard = model / index["weight_map"].pop(name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    with pytest.raises(UserError) as err:
        check(model)
    assert str(err.value) == (f"model.name_or_path: {model} lacks {name} of the weights its config.json describes "
                              "(they would start from random values)")
    # the index still naming it, the shard not holding it: the index is wrong
    index["weight_map"][name] = shard.name
    index_path.write_text(json.dumps(index))
    with pytest.raises(UserError, match=rf"^model.name_or_path: model.safetensors.index.json puts {name} in {shard.name}, "
                                        "which does not hold it"):
        check(model)


def test_the_cli_refuses_before_ray(sharded_dir, tmp_path):
    import os
    import subprocess
    import sys

    model = copy_of(sharded_dir, tmp_path)
    (model / sorted(model.glob("*.safetensors"))[-1].name).unlink()
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "kopretrain", "train", "experiment=smoke", *expanded_overrides(model),
                          "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kopretrain train: error: model.name_or_path: model.safetensors.index.json "
                                                   "names "), lines
    assert not (tmp_path / "run" / "logs" / "ray.log").exists()  # Ray never started
