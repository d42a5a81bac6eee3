"""The shared batched log-likelihood: equal to a direct full-logits computation, whatever the batch
and chunk sizes; the output projection only ever sees <= chunk_size scored positions (never a
[batch, seq_len, vocab] logits tensor); long requests keep their last max_len + 1 tokens."""

from __future__ import annotations

import pytest
import torch

from kopretrain.eval.scoring import Request, loglikelihoods
from tests.helpers import make_tiny_llama_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory, repo_root):
    from transformers import AutoModelForCausalLM

    texts = (repo_root / "data/heldout/en.txt").read_text().splitlines()[:100]  # vocabulary of 400
    return AutoModelForCausalLM.from_pretrained(make_tiny_llama_dir(tmp_path_factory.mktemp("m"), texts, max_position_embeddings=32))


def _direct(model, req: Request, max_len: int) -> float:
    ids = (req.context + req.continuation)[-(max_len + 1):]
    inp = torch.tensor([ids[:-1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=inp).logits[0].double(), -1)
    n = min(len(req.continuation), max_len)
    positions = range(len(ids) - 1 - n, len(ids) - 1)
    return sum(float(lp[p, t]) for p, t in zip(positions, req.continuation[-n:]))


REQUESTS = [Request([5, 6, 7], [8, 9]), Request([3], [4]), Request(list(range(10, 30)), [40, 41, 42, 43]),
            Request(list(range(50, 100)), [7, 8, 9]),  # longer than max_len: the context is left-truncated
            Request([1], list(range(60, 100)))]  # a continuation longer than max_len: its last max_len tokens


@pytest.mark.parametrize("batch_size,chunk_size", [(1, 1), (2, 3), (8, 1024)])
def test_loglikelihoods_equal_a_direct_computation(model, batch_size, chunk_size):
    got = loglikelihoods(model, REQUESTS, max_len=32, batch_size=batch_size, chunk_size=chunk_size)
    for req, ll in zip(REQUESTS, got):
        assert ll.num_tokens == min(len(req.continuation), 32)
        assert ll.logprob == pytest.approx(_direct(model, req, 32), abs=1e-4)


def test_the_head_sees_only_chunks_of_scored_positions(model):
    shapes = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    try:
        loglikelihoods(model, REQUESTS, max_len=32, batch_size=4, chunk_size=3)
    finally:
        handle.remove()
    hidden = model.config.hidden_size
    assert shapes and all(len(s) == 2 and s[0] <= 3 and s[1] == hidden for s in shapes)
    assert sum(s[0] for s in shapes) == sum(min(len(r.continuation), 32) for r in REQUESTS)


def test_greedy_flag(model):
    ctx = [5, 6, 7]
    with torch.no_grad():
        best = int(model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
    [hit, miss] = loglikelihoods(model, [Request(ctx, [best]), Request(ctx, [(best + 1) % 300])], max_len=32)
    assert hit.is_greedy and not miss.is_greedy and hit.logprob > miss.logprob
