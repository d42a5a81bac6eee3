"""The chunked loss (kopretrain/train/loss.py, ce_chunked.py) equals HF's full-logits loss and its
gradients within 1e-5, per domain too, on tiny real models of the supported families; the fused
one and unsupported models are one-line refusals."""

from __future__ import annotations

import pytest
import torch
import transformers

from kopretrain.errors import UserError
from kopretrain.train.ce_chunked import chunked_linear_cross_entropy
from kopretrain.train.loss import LossOutput, LossRequest, check_loss, full_logits_loss, install_loss

VOCAB = 97


def tiny(model_type: str, tie: bool = False, **extra):
    fields = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "tie_word_embeddings": tie, **extra}
    if model_type == "gpt_neox":
        fields.pop("num_key_value_heads")
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **fields)
    return transformers.AutoModelForCausalLM.from_config(config).double()


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("model_type,tie,extra", [
    ("llama", False, {}), ("llama", True, {}),
    ("gemma2", True, {"final_logit_softcapping": 3.0, "head_dim": 8}),
    ("gpt_neox", False, {}), ("qwen2", False, {}),
])
def test_chunked_equals_the_full_logits_loss_and_gradients(model_type, tie, extra):
    model = tiny(model_type, tie, **extra)
    ids = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    ref, n = full_logits_loss(model, ids)
    ref.backward()
    expected = grads(model)
    assert n == 3 * 16
    install_loss(model, "chunked", chunk_size=5)  # 48 positions: 10 chunks, the last one short
    # rows 0, 2 are domain 1, row 1 domain 0 (grouped: [1, 0] order is the caller's business)
    out = model(input_ids=ids[[1, 0, 2]], loss_request=LossRequest(groups=[(0, 0, 1), (1, 1, 3)], num_domains=2))
    assert isinstance(out, LossOutput)
    out.loss.backward()
    got = grads(model)
    assert torch.allclose(out.loss, ref, rtol=0, atol=1e-8 * n), (float(out.loss), float(ref))
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=1e-5), name
    row_loss = [full_logits_loss(model, ids[i : i + 1])[0] for i in range(3)]
    assert torch.allclose(out.by_domain, torch.stack([row_loss[1], row_loss[0] + row_loss[2]]), atol=1e-8)
    assert not out.by_domain.requires_grad
    # without a loss request the model is HF's own
    assert model(input_ids=ids).logits.shape == (3, 17, VOCAB)


def test_fp32_chunked_gradients_match_autograd_and_ignore_index():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (23,), generator=g)
    targets[[2, 7]] = -100
    ref = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    gh, gw = torch.autograd.grad(2.5 * ref, (hidden, weight), retain_graph=True)
    for chunk in (1, 4, 23, 100):
        got = chunked_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk)
        ch, cw = torch.autograd.grad(2.5 * got, (hidden, weight))
        assert torch.allclose(got, ref, atol=1e-4) and torch.allclose(ch, gh, atol=1e-5) and torch.allclose(cw, gw, atol=1e-5)
    frozen = weight.detach()  # no weight gradient wanted: none computed, hidden's still right
    (ch,) = torch.autograd.grad(chunked_linear_cross_entropy(hidden, frozen, targets, chunk_size=4), (hidden,))
    assert torch.allclose(2.5 * ch, gh, atol=1e-5)


def test_per_position_losses_and_no_ignored_targets():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(19, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 40, (19,), generator=g)
    ref = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    gh, gw = torch.autograd.grad(0.5 * ref.sum(), (hidden, weight))
    # ignore_index=None (packed rows: every position a target) skips the mask, same values and gradients
    total, losses = chunked_linear_cross_entropy(hidden, weight, targets, chunk_size=6, ignore_index=None, per_position=True)
    assert losses.shape == (19,) and not losses.requires_grad
    assert torch.allclose(losses, ref, atol=1e-12) and torch.allclose(total, ref.sum(), atol=1e-12)
    ch, cw = torch.autograd.grad(0.5 * total, (hidden, weight), retain_graph=True)
    assert torch.allclose(ch, gh, atol=1e-12) and torch.allclose(cw, gw, atol=1e-12)
    # backward scales the stored gradients in place: a second backward through the same graph fails loudly
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(0.5 * total, (hidden, weight))
    masked = targets.clone()
    masked[[0, 5]] = -100
    _, losses = chunked_linear_cross_entropy(hidden, weight, masked, chunk_size=6, per_position=True)
    assert losses[[0, 5]].eq(0).all() and torch.allclose(losses[1:5], ref[1:5], atol=1e-12)


def test_a_loss_without_per_position_losses_is_called_per_domain_group():
    """The path liger's fused loss takes (one call per domain group) gives the same loss and sums."""
    from kopretrain.train.loss import chunked_cross_entropy

    ids = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    request = LossRequest(groups=[(0, 0, 1), (1, 1, 3)], num_domains=2)
    outs, calls = [], []
    for per_group in (False, True):
        model = tiny("llama")
        lm = install_loss(model, "chunked", chunk_size=5)
        if per_group:
            def per_group_loss(h, w, t, softcap=None, chunk_size=0):
                calls.append(h.shape[0])
                return chunked_cross_entropy(h, w, t, softcap=softcap, chunk_size=chunk_size)
            lm._kopretrain_loss_fn = per_group_loss
        out = model(input_ids=ids, loss_request=request)
        out.loss.backward()
        outs.append((out, grads(model)))
    assert calls == [16, 32]
    (one, g1), (per, g2) = outs
    assert torch.allclose(one.loss, per.loss, atol=1e-10) and torch.allclose(one.by_domain, per.by_domain, atol=1e-10)
    assert all(torch.allclose(g1[n], g2[n], atol=1e-10) for n in g1)


def test_refusals_are_one_line():
    with pytest.raises(UserError, match=r"^loss.name: fused \(liger-kernel\) runs on GPU only"):
        check_loss("fused", "llama", use_gpu=False)
    with pytest.raises(UserError, match=r"^loss.name: model_type 't5' has no causal-LM loss here \(supported: "):
        check_loss("chunked", "t5", use_gpu=False)
    check_loss("chunked", "gemma2", use_gpu=False)


def test_the_driver_refuses_before_ray(tmp_path):
    from kopretrain.train.model import plan_model
    from tests.train.conftest import smoke_cfg

    with pytest.raises(UserError, match=r"^loss.name: fused \(liger-kernel\) runs on GPU only \(scale.use_gpu=true\)"):
        smoke_cfg("loss.name=fused")
    with pytest.raises(UserError, match=r"^loss.name: model_type 'gpt2' has no causal-LM loss here"):
        plan_model(smoke_cfg("model.arch.model_type=gpt2"))
