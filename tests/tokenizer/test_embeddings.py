"""Embedding resize/init for tiny random llama, mistral, gemma (tied), gpt_neox and qwen2
models, saved and reloaded with from_pretrained; staged training on an unsharded model."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F

from kopretrain.config.tokenizer import SpmTrainConfig, TokenizerCommandConfig
from kopretrain.errors import UserError
from kopretrain.tokenizer.embeddings import (
    backend,
    base_pieces,
    new_rows_only,
    resize_and_init,
    train_all,
)
from kopretrain.tokenizer.expand import expand, resolve_base
from tests.tokenizer.conftest import CASES

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64)


def _config(model_type: str, vocab_size: int):
    from transformers import GemmaConfig, GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config

    kv = dict(num_key_value_heads=1)
    return {
        "llama": lambda: LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=False, **kv, **TINY),
        "mistral": lambda: MistralConfig(vocab_size=vocab_size, tie_word_embeddings=False, **kv, **TINY),
        "gemma": lambda: GemmaConfig(vocab_size=vocab_size, head_dim=16, tie_word_embeddings=True, **kv, **TINY),
        "gpt_neox": lambda: GPTNeoXConfig(vocab_size=vocab_size, tie_word_embeddings=False, **TINY),
        "qwen2": lambda: Qwen2Config(vocab_size=vocab_size, tie_word_embeddings=False, **kv, **TINY),
    }[model_type]()


def tiny_model(model_type: str, vocab_size: int, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(_config(model_type, vocab_size)).eval()


@pytest.fixture(scope="module")
def tokenizers(en_base_dir, ko_texts, tmp_path_factory):
    """(base dir, expanded dir): the 1,000-piece English base + ~300 Korean pieces, vocab % 64 != 0 padding."""
    out = tmp_path_factory.mktemp("en-ko")
    cfg = TokenizerCommandConfig(base=str(en_base_dir), num_new_tokens=300, pad_to_multiple_of=8,
                                 spm=SpmTrainConfig(vocab_size=1500))
    expand(resolve_base(en_base_dir), ko_texts[:5000], cfg, out)
    return en_base_dir, out


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma", "gpt_neox", "qwen2"])
def test_resize_and_init_then_save_and_reload(model_type, tokenizers, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir, new_dir = tokenizers
    base, new = backend(base_dir), backend(new_dir)
    num_base, num_vocab = base.get_vocab_size(), new.get_vocab_size()
    model = tiny_model(model_type, num_base)
    ids = torch.tensor([base.encode(CASES["english"]).ids[:40]])
    with torch.no_grad():
        logits_before = model(input_ids=ids).logits
    in_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.get_output_embeddings().weight.detach().clone()

    info = resize_and_init(model, base_dir, new_dir, pad_to_multiple_of=64)
    tied = model_type == "gemma"
    assert info["num_base_rows"] == num_base == 1000 and info["tied"] is tied
    assert info["num_rows"] % 64 == 0 and info["num_rows"] >= num_vocab > num_base
    assert info["num_placeholder_rows"] == info["num_rows"] - num_vocab
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == w_out.shape[0] == model.config.vocab_size == info["num_rows"]
    assert torch.equal(w_in[:num_base], in_before) and torch.equal(w_out[:num_base], out_before)
    assert (w_out.data_ptr() == w_in.data_ptr()) is tied

    sp_base = spm.SentencePieceProcessor(model_file=str(base_dir / "tokenizer.model"))
    sp_new = spm.SentencePieceProcessor(model_file=str(new_dir / "tokenizer.model"))
    for i in range(num_base, num_vocab):
        pieces = base_pieces(base, new.id_to_token(i))
        assert sp_base.decode(pieces) == sp_new.decode([i]), "the base pieces spell the new token"
        torch.testing.assert_close(w_in[i], in_before[pieces].mean(0), rtol=0, atol=1e-6)
        if not tied:
            torch.testing.assert_close(w_out[i], out_before[pieces].mean(0), rtol=0, atol=1e-6)
    for i in range(num_vocab, info["num_rows"]):  # padding rows: the average base row
        torch.testing.assert_close(w_in[i], in_before.mean(0), rtol=0, atol=1e-6)

    with torch.no_grad():
        logits_after = model(input_ids=ids).logits
    torch.testing.assert_close(logits_after[..., :num_base], logits_before, rtol=0, atol=1e-5)

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.get_input_embeddings().weight, w_in)
    assert torch.equal(reloaded.get_output_embeddings().weight, w_out)
    assert (reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()) is tied


def test_eeve_output_init_uses_the_first_piece(tokenizers):
    base_dir, new_dir = tokenizers
    base, new = backend(base_dir), backend(new_dir)
    model = tiny_model("llama", base.get_vocab_size())
    out_before = model.get_output_embeddings().weight.detach().clone()
    info = resize_and_init(model, base_dir, new_dir, pad_to_multiple_of=1, output_init="first_piece")
    assert info["output_init"] == "first_piece" and info["num_rows"] == new.get_vocab_size()
    w_out = model.get_output_embeddings().weight
    multi = 0
    for i in range(info["num_base_rows"], new.get_vocab_size()):
        pieces = base_pieces(base, new.id_to_token(i))
        multi += len(pieces) > 1
        assert torch.equal(w_out[i], out_before[pieces[0]])
    assert multi > 0


def test_mismatched_inputs_are_user_errors(tokenizers, shared_dir):
    base_dir, new_dir = tokenizers
    with pytest.raises(UserError, match="does not extend the base"):
        resize_and_init(tiny_model("llama", 32000), shared_dir / "tokenizers/llama2/tokenizer.model", new_dir)
    with pytest.raises(UserError, match="embedding rows"):
        resize_and_init(tiny_model("llama", 500), base_dir, new_dir)
    with pytest.raises(UserError, match="output_init"):
        resize_and_init(tiny_model("llama", 1000), base_dir, new_dir, output_init="zeros")


def _steps(model, optimizer, batch, n=3):
    for _ in range(n):
        logits = model(input_ids=batch).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_stage_one_trains_only_new_rows_even_with_adamw_weight_decay(tokenizers):
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    batch = torch.tensor([new.encode(CASES["korean"]).ids[:24], new.encode(CASES["mixed"]).ids[:24]])
    assert (batch >= n).any() and (batch < n).any()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}

    stage = new_rows_only(model, n)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in stage.params} and len(stage.params) == 2
    _steps(model, torch.optim.AdamW(stage.param_groups(weight_decay=0.1), lr=1e-2), batch)
    for name, p in model.named_parameters():
        if p is model.get_input_embeddings().weight or p is model.get_output_embeddings().weight:
            assert torch.equal(p[:n], before[name][:n]), f"{name}: base rows moved"
            assert not torch.equal(p[n:], before[name][n:]), f"{name}: new rows did not train"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen in stage 1"


def test_weight_decay_on_masked_rows_would_move_them(tokenizers):
    """Why `param_groups` puts the embeddings at weight_decay=0: AdamW decays rows with zero grad."""
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    batch = torch.tensor([new.encode(CASES["korean"]).ids[:24]])
    emb = model.get_input_embeddings().weight
    before = emb[:n].detach().clone()
    stage = new_rows_only(model, n)
    _steps(model, torch.optim.AdamW(stage.params, lr=1e-2, weight_decay=0.1), batch, n=1)
    assert not torch.equal(emb[:n], before)


def test_stage_two_trains_everything(tokenizers):
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    stage = new_rows_only(model, n)
    stage.remove()
    stage2 = train_all(model, n)
    assert all(p.requires_grad for p in model.parameters()) and len(stage2.params) == len(list(model.parameters()))
    emb = model.get_input_embeddings().weight
    before = emb[:n].detach().clone()
    batch = torch.tensor([new.encode(CASES["mixed"]).ids[:24]])
    _steps(model, torch.optim.AdamW(stage2.param_groups(weight_decay=0.0), lr=1e-2), batch, n=1)
    assert not torch.equal(emb[:n], before), "the masks are gone in stage 2"
