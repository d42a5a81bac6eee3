"""Batched log-likelihood of continuations given contexts: the one scorer of `eval`.

    lls = loglikelihoods(model, [Request(context_ids, continuation_ids), ...], max_len=512)
    lls[i].logprob    # sum of ln p(continuation token | everything before it), nats
    lls[i].is_greedy  # every continuation token is the model's argmax

Shared by bits per character (a window: its context tokens, then the tokens it scores) and
KoBEST (a prompt, then one answer choice). A request longer than `max_len + 1` tokens keeps its
last `max_len + 1` (the left of the context is dropped), as lm-evaluation-harness does; a
continuation longer than `max_len` has only its last `max_len` tokens scored (`num_tokens` says so).

Memory: the decoder runs on the padded batch once; the output projection is applied only to the
positions that predict a continuation token, `chunk_size` positions at a time, and only those
chunks' logits are upcast to fp32. No `[batch, seq_len, vocab]` fp32 tensor is ever built (a model
with a non-linear head -- logit soft-capping or scaling -- computes its logits whole, in its own
dtype, and the scored rows are upcast in chunks).

Pure torch; no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Request:
    context: list[int]
    """Token ids the continuation is conditioned on (at least one)."""
    continuation: list[int]
    """Token ids whose log-likelihood is summed (at least one)."""


@dataclass(frozen=True)
class LogLikelihood:
    logprob: float
    """Sum of the natural-log probabilities of the continuation tokens."""
    is_greedy: bool
    """True if each continuation token is the argmax of its prediction."""
    num_tokens: int
    """Continuation tokens scored (all of them unless the continuation exceeds max_len)."""


def _plain_head(model):
    """(decoder, output projection) when logits = head(decoder(x)) exactly, else None."""
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or not isinstance(head, torch.nn.Linear):
        return None
    return decoder, head


def _truncate(req: Request, max_len: int) -> tuple[list[int], int]:
    """(model input, number of scored positions at its end) for one request."""
    assert req.context and req.continuation, "a request needs a context and a continuation"
    whole = (list(req.context) + list(req.continuation))[-(max_len + 1):]
    return whole[:-1], min(len(req.continuation), max_len)


@torch.no_grad()
def loglikelihoods(model, requests: list[Request], *, max_len: int, batch_size: int = 8,
                   chunk_size: int = 1024, device: str | torch.device = "cpu",
                   pad_id: int = 0, split_head: bool = True) -> list[LogLikelihood]:
    """Score `requests` with `model` (an HF causal LM, in eval mode while scoring; its mode is
    restored); see the module docstring. `split_head=False` always calls the model's own forward
    (a wrapped model: FSDP2 unshards the root's parameters only in the root's forward)."""
    assert max_len >= 2 and batch_size >= 1 and chunk_size >= 1
    was_training = model.training
    model.eval()
    try:
        return _score(model, requests, max_len, batch_size, chunk_size, device, pad_id,
                      _plain_head(model) if split_head else None)
    finally:
        model.train(was_training)


def _score(model, requests, max_len, batch_size, chunk_size, device, pad_id, split) -> list[LogLikelihood]:
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context) - len(requests[i].continuation))
    out: list[LogLikelihood | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        items = [_truncate(requests[i], max_len) for i in idx]
        width = max(len(inp) for inp, _ in items)
        input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for r, ((inp, n), i) in enumerate(zip(items, idx)):
            input_ids[r, : len(inp)] = torch.tensor(inp, dtype=torch.long)
            attention[r, : len(inp)] = 1
            rows += [r] * n
            cols += range(len(inp) - n, len(inp))
            targets += requests[i].continuation[-n:]
        input_ids, attention = input_ids.to(device), attention.to(device)
        rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        if split is not None:
            decoder, head = split
            hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
            picked = hidden[rows_t, cols_t]  # [num_scored, hidden]: the positions that predict a token
            project = head
        else:
            picked = model(input_ids=input_ids, attention_mask=attention).logits[rows_t, cols_t]
            project = None
        target_t = torch.tensor(targets, device=device)
        logprobs, greedy = [], []
        for c in range(0, len(targets), chunk_size):
            part = picked[c : c + chunk_size]
            logits = (project(part) if project is not None else part).float()
            lp = torch.log_softmax(logits, dim=-1)
            tgt = target_t[c : c + chunk_size]
            logprobs.append(lp.gather(1, tgt[:, None])[:, 0])
            greedy.append(logits.argmax(-1) == tgt)
        logprob, is_greedy = torch.cat(logprobs).cpu(), torch.cat(greedy).cpu()
        pos = 0
        for (_, n), i in zip(items, idx):
            out[i] = LogLikelihood(float(logprob[pos : pos + n].double().sum()), bool(is_greedy[pos : pos + n].all()), n)
            pos += n
    return out  # type: ignore[return-value]
