"""Known model shapes (the fields of their public Hugging Face `config.json`) and config loading.

Each entry is the part of the model's config.json that decides its parameter count, copied from
the public configs on the Hugging Face hub (the repo id is the comment); `tests/plan` builds each
with transformers on the meta device and checks the count. `load_model_config(name_or_dir)` returns
such a dict for a known name or an HF model/config directory (or a config.json file).
"""

from __future__ import annotations

import json
import os

from kopretrain.errors import UserError


def _llama(h, inter, layers, heads, kv, vocab, max_pos, model_type="llama", **extra) -> dict:
    return {"model_type": model_type, "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
            "max_position_embeddings": max_pos, "tie_word_embeddings": False, **extra}


def _neox(h, inter, layers, heads) -> dict:
    return {"model_type": "gpt_neox", "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "vocab_size": 30080, "max_position_embeddings": 2048, "rotary_pct": 0.5,
            "use_parallel_residual": True, "tie_word_embeddings": False}


KNOWN_SHAPES: dict[str, dict] = {
    "Llama-2-7B": _llama(4096, 11008, 32, 32, 32, 32000, 4096),  # meta-llama/Llama-2-7b-hf
    "Llama-2-13B": _llama(5120, 13824, 40, 40, 40, 32000, 4096),  # meta-llama/Llama-2-13b-hf
    "SOLAR-10.7B": _llama(4096, 14336, 48, 32, 8, 32000, 4096),  # upstage/SOLAR-10.7B-v1.0
    "Yi-6B": _llama(4096, 11008, 32, 32, 4, 64000, 4096),  # 01-ai/Yi-6B
    "Mistral-7B": _llama(4096, 14336, 32, 32, 8, 32000, 32768, "mistral"),  # mistralai/Mistral-7B-v0.1
    "Gemma-2B": {"model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
                 "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000,
                 "max_position_embeddings": 8192, "tie_word_embeddings": True},  # google/gemma-2b
    "Gemma-7B": {"model_type": "gemma", "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
                 "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "vocab_size": 256000,
                 "max_position_embeddings": 8192, "tie_word_embeddings": True},  # google/gemma-7b
    "Polyglot-Ko-1.3B": _neox(2048, 8192, 24, 16),  # EleutherAI/polyglot-ko-1.3b
    "Polyglot-Ko-5.8B": _neox(4096, 16384, 28, 16),  # EleutherAI/polyglot-ko-5.8b
    "Polyglot-Ko-12.8B": _neox(5120, 20480, 40, 40),  # EleutherAI/polyglot-ko-12.8b
    "Qwen2-7B": _llama(3584, 18944, 28, 28, 4, 152064, 131072, "qwen2"),  # Qwen/Qwen2-7B
    "Llama-3-8B": _llama(4096, 14336, 32, 32, 8, 128256, 8192),  # meta-llama/Meta-Llama-3-8B
}
"""`model=` name -> the parameter-relevant fields of its HF config.json."""


def load_model_config(model: str, resolved_path: str = "") -> dict:
    """The HF config dict of a known shape name, or of `resolved_path` (a directory with config.json,
    or a config.json file). UserError (one line) for anything else."""
    if model in KNOWN_SHAPES:
        return dict(KNOWN_SHAPES[model])
    path = resolved_path or model
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UserError(f"base_model: {model!r} is neither a known shape ({', '.join(KNOWN_SHAPES)}) "
                        "nor an HF model directory with a config.json")
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as exc:
        raise UserError(f"base_model: {file} is not JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserError(f"base_model: {file} has no model_type; is it a Hugging Face config.json?")
    return config
