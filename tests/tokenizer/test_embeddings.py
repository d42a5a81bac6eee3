"""Embedding resize/init for tiny random llama, mistral, gemma (tied), gpt_neox and qwen2
models, saved and reloaded with from_pretrained; the resized model through the training stages
of kopretrain/train/stages.py (as the loop runs them, on the local strategy)."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import torch

from kopretrain.config.tokenizer import SpmTrainConfig, TokenizerCommandConfig
from kopretrain.errors import UserError
from kopretrain.tokenizer.embeddings import backend, base_pieces, resize_and_init
from kopretrain.tokenizer.expand import expand, resolve_base
from kopretrain.train.stages import StagePlan, embedding_param_names, plan_stage
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
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


def _stage(model, trainable: str, num_base_rows: int, strategy=None):
    """Start a stage the way the training loop does (plan_stage, then the strategy's optimizer)."""
    if strategy is None:
        strategy = LocalStrategy(StrategySettings(device=torch.device("cpu")))
        strategy.wrap(model)
    plan = plan_stage(model, trainable, embedding_param_names(model), num_base_rows, weight_decay=0.1)
    plan.apply(model)
    return strategy, plan


def _steps(strategy, plan, batch, n=3):
    strategy.start_stage(plan.param_groups(strategy.module), plan.freeze)
    for _ in range(n):
        strategy.forward_backward(batch, last=True)
        strategy.step(1e-2)


def test_stage_one_trains_only_new_rows_even_with_adamw_weight_decay(tokenizers):
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    batch = torch.tensor([new.encode(CASES["korean"]).ids[:24], new.encode(CASES["mixed"]).ids[:24]])
    assert (batch >= n).any() and (batch < n).any()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}

    strategy, plan = _stage(model, "new_embeddings", n)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == plan.trainable
    assert plan.trainable == {"model.embed_tokens.weight", "lm_head.weight"} and plan.weight_decay == 0.0
    _steps(strategy, plan, batch)
    for name, p in model.named_parameters():
        if p is model.get_input_embeddings().weight or p is model.get_output_embeddings().weight:
            assert torch.equal(p[:n], before[name][:n]), f"{name}: base rows moved"
            assert not torch.equal(p[n:], before[name][n:]), f"{name}: new rows did not train"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen in stage 1"


def test_weight_decay_on_masked_rows_would_move_them(tokenizers):
    """Why a new_embeddings stage runs at weight_decay=0: AdamW decays rows whose gradient is zeroed."""
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    batch = torch.tensor([new.encode(CASES["korean"]).ids[:24]])
    emb = model.get_input_embeddings().weight
    before = emb[:n].detach().clone()
    strategy, plan = _stage(model, "new_embeddings", n)
    _steps(strategy, StagePlan(plan.trainable, 0.1, plan.freeze), batch, n=1)
    assert not torch.equal(emb[:n], before)


def test_stage_two_trains_everything(tokenizers):
    base_dir, new_dir = tokenizers
    new = backend(new_dir)
    model = tiny_model("llama", backend(base_dir).get_vocab_size()).train()
    n = resize_and_init(model, base_dir, new_dir)["num_base_rows"]
    strategy, _ = _stage(model, "new_embeddings", n)
    strategy, plan = _stage(model, "all", n, strategy)
    assert all(p.requires_grad for p in model.parameters()) and plan.freeze.num_base_rows == 0
    emb = model.get_input_embeddings().weight
    before = emb[:n].detach().clone()
    batch = torch.tensor([new.encode(CASES["mixed"]).ids[:24]])
    _steps(strategy, plan, batch, n=1)
    assert not torch.equal(emb[:n], before), "the base rows train in stage 2"
