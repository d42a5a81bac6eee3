"""Fixtures for the train tests: typed smoke configs and a tiny *base* model whose vocabulary
the shipped smoke tokenizer extends, so the tests exercise the real Korean-expansion path
(resize before sharding, EEVE stage on the new rows) without downloading anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from kopretrain.cli import compose_typed

SMOKE_TOKENIZER = Path(__file__).resolve().parents[2] / "data/smoke/tokenizer"
NUM_BASE_TOKENS = 1500  # the base keeps the first 1,500 of the smoke tokenizer's 2,000 pieces


def smoke_cfg(*overrides: str, tmp_path: Path | None = None):
    """The typed `experiment=smoke` config plus overrides (tracking off unless a tmp dir is given)."""
    tracking = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"] if tmp_path else ["tracking.enabled=false"]
    return compose_typed("train", ["experiment=smoke", *tracking, *overrides])


def make_base_model(out: Path, num_tokens: int = NUM_BASE_TOKENS, seed: int = 7) -> Path:
    """A tiny Llama over the first `num_tokens` pieces of the smoke SentencePiece model, saved with
    its tokenizer: the smoke tokenizer is then an expansion of it (same ids below num_tokens)."""
    import torch
    from sentencepiece import sentencepiece_model_pb2
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((SMOKE_TOKENIZER / "tokenizer.model").read_bytes())
    del proto.pieces[num_tokens:]
    spm_dir = out / "spm"
    spm_dir.mkdir(parents=True)
    (spm_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    tok = LlamaTokenizer.from_pretrained(str(spm_dir))
    assert len(tok) == num_tokens
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=num_tokens, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model_dir = out / "base"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def save_as_bin(model_dir: Path, out: Path, max_shard_size: str = "120KB") -> Path:
    """`model_dir` with its safetensors rewritten as pytorch_model-0000k-of-0000n.bin + their index
    (as `save_pretrained(safe_serialization=False)` wrote them); the tiny base: several shards."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            (out / f.name).write_bytes(f.read_bytes())
    save_torch_state_dict(load_file(model_dir / "model.safetensors"), out, safe_serialization=False, max_shard_size=max_shard_size)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train tests run torch on one thread: on a shared 2-core box a 2-thread OpenMP pool spins
    against the other processes and a tiny step takes 10-100x longer (Ray Train workers get
    OMP_NUM_THREADS=1 from Ray already)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    return make_base_model(tmp_path_factory.mktemp("base_model"))


def expanded_overrides(base_dir: Path) -> list[str]:
    """Continue `base_dir` with the smoke tokenizer (2,000 tokens): resized to 2,048 rows."""
    return ["model=pretrained", f"model.name_or_path={base_dir}", f"tokenizer={SMOKE_TOKENIZER}",
            "model.gradient_checkpointing=false"]
