"""Bits per character (bpc) of a causal LM on plain text.

Why characters and not tokens: the models we compare have different vocabularies (the
base tokenizer vs the Korean-expanded one), so per-token loss is not comparable. The
total information the model assigns to a text, in bits, divided by the text's length in
Unicode characters, is. For each document:

    bits(doc) = sum over its tokens t_i of -log2 p(t_i | BOS, t_<i)

Documents longer than the model's context are cut into consecutive windows; each window
after the first is scored given the last `context_overlap` tokens of the previous one
(a sliding window, as in the Hugging Face perplexity guide), so no token is scored twice
and late tokens still see context. A window needs room for its context, its first token and one
scored token, so `max_len` must be at least `MIN_MAX_LEN` (3): the overlap is capped at
max_len // 2, and max_len // 2 < max_len - 1 holds from 3 on.

Texts are encoded by `kopretrain.tokenizer.load.TextTokenizer.encode_batch`, the one encoder of
the project (no BOS/EOS added; special-token strings in the text are text).

Pure torch; no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kopretrain.config.eval import MIN_MAX_LEN


@dataclass
class BpcResult:
    bits: float
    """Total bits the model assigns to the texts."""
    num_chars: int
    """Total characters (Unicode code points) of the texts."""
    num_tokens: int
    """Tokens scored (text tokens; BOS is context, not scored)."""
    num_docs: int

    @property
    def bpc(self) -> float:
        return self.bits / max(self.num_chars, 1)

    @property
    def tokens_per_char(self) -> float:
        return self.num_tokens / max(self.num_chars, 1)


def _windows(ids: list[int], max_len: int, overlap: int) -> list[tuple[list[int], int]]:
    """Split `ids` (BOS first) into (window, num_context_tokens) so that every id after
    the first is predicted exactly once, each window at most `max_len` long."""
    assert 0 <= overlap < max_len - 1
    out = []
    start = 0  # index of the first token this window predicts, minus one
    while start < len(ids) - 1:
        ctx_start = max(0, start - overlap)
        window = ids[ctx_start : ctx_start + max_len]
        num_context = start - ctx_start  # tokens whose prediction is not scored (beyond the first)
        out.append((window, num_context))
        start = ctx_start + len(window) - 1
    return out


@torch.no_grad()
def bits_per_char(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_len: int,
    batch_size: int = 8,
    context_overlap: int = 32,
    device: str | torch.device = "cpu",
) -> BpcResult:
    """Score `texts` with `model` (an HF causal LM) and `tokenizer` (a `TextTokenizer` from
    `load_tokenizer`); see module docstring."""
    assert max_len >= MIN_MAX_LEN, f"max_len={max_len} < {MIN_MAX_LEN}: no window can score a token"
    model.eval()
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    overlap = min(context_overlap, max_len // 2)
    pad = tokenizer.eos_id  # any id: padded positions are masked and come after every scored one

    items: list[tuple[list[int], int]] = []
    num_chars = num_tokens = 0
    for text, text_ids in zip(texts, tokenizer.encode_batch(texts)):
        ids = [bos] + list(text_ids)
        num_chars += len(text)
        num_tokens += len(ids) - 1
        items.extend(_windows(ids, max_len, overlap))

    total_nats = 0.0
    items.sort(key=lambda it: len(it[0]))  # similar lengths share a batch: less padding
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        width = max(len(w) for w, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (window, num_context) in enumerate(batch):
            n = len(window)
            input_ids[row, :n] = torch.tensor(window)
            attention[row, :n] = 1
            labels[row, 1 + num_context : n] = input_ids[row, 1 + num_context : n]
        input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nats += float(nll)
    return BpcResult(bits=total_nats / math.log(2), num_chars=num_chars, num_tokens=num_tokens, num_docs=len(texts))
