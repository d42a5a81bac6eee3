"""A hub id on the driver (kopretrain/hub.py): from the local cache without network; one line, at
once, when it is not cached and the hub's host cannot be resolved (no retry warnings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env_for(tmp_path: Path) -> dict:
    # no HF_* and no *_OFFLINE (an lm-eval test earlier in the session sets TRANSFORMERS_OFFLINE in os.environ)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and not k.endswith("_OFFLINE") and k != "RAY_ADDRESS"}
    # an endpoint that cannot resolve (RFC 2606 .invalid), a cache of our own
    return {**env, "HOME": str(tmp_path), "HF_ENDPOINT": "https://hub.invalid", "HF_HUB_CACHE": str(tmp_path / "hub")}


def test_a_cached_hub_id_loads_without_network(tmp_path):
    import transformers

    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / ("a" * 40)
    transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                             vocab_size=101).save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    (snapshot / "tokenizer_config.json").write_text("{}")
    code = ("import os; from types import SimpleNamespace; from huggingface_hub import constants; "
            "from kopretrain.hub import load_config; c = load_config('tiny-org/tiny-llama'); "
            "print(c.model_type, c.vocab_size, os.environ.get('HF_HUB_OFFLINE'), constants.HF_HUB_OFFLINE); "
            # the base's tokenizer for eval.at_end: the cached snapshot, offline
            "from kopretrain.train.eval_at_end import base_reference; "
            "plan = SimpleNamespace(name_or_path='tiny-org/tiny-llama', new_rows=SimpleNamespace(rows=[101, 102]), "
            "tokenizer_dir='/elsewhere', model_vocab_size=101, num_rows=103); print(base_reference(plan).tokenizer_dir)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_for(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["llama", "101", "1", "True"]  # the hub cannot be resolved: the run goes offline
    assert Path(lines[1]) == snapshot
    assert out.stderr.splitlines() == ["kopretrain: hub.invalid cannot be resolved (" + out.stderr.split(" resolved (")[1]
                                       .split(")")[0] + "): tiny-org/tiny-llama is read from the Hugging Face cache "
                                       "(HF_HUB_OFFLINE=1 for this run)"], out.stderr


def test_an_uncached_hub_id_without_network_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kopretrain", "train", "experiment=smoke", "model=pretrained",
                          "model.name_or_path=tiny-org/not-cached"], cwd=ROOT, env=env_for(tmp_path), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and re.fullmatch(
        re.escape(f"kopretrain train: error: model.name_or_path: cannot load a model config from 'tiny-org/not-cached' "
                  f"(not in the Hugging Face cache ({tmp_path / 'hub'}) and hub.invalid cannot be resolved (") + r"[^)]+"
        + re.escape("); download it where there is network (huggingface-cli download) or give a local directory)"),
        lines[0]), lines


def test_offline_mode_is_named():
    import pytest

    from huggingface_hub import constants

    from kopretrain.hub import load_config

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        with pytest.raises(OSError, match=r"^not in the Hugging Face cache \(.*\) and HF_HUB_OFFLINE is set$"):
            load_config("tiny-org/surely-not-cached-anywhere")
    finally:
        constants.HF_HUB_OFFLINE = old
