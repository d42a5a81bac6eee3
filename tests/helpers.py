"""Small builders shared by tests: tiny HF tokenizers and models made in-process."""

from __future__ import annotations

from pathlib import Path


def make_tiny_bpe_tokenizer(texts: list[str], vocab_size: int = 400):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (BOS <s>, EOS </s>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_tiny_llama_dir(out: Path, texts: list[str], *, max_position_embeddings: int = 64, seed: int = 0) -> Path:
    """Save a tiny random Llama + its tokenizer to `out` (loadable by from_pretrained)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tiny_bpe_tokenizer(texts)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=max_position_embeddings,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
