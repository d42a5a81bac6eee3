"""Bits per character (bpc), loss per token and perplexity of a causal LM on plain text.

Why characters and not tokens: the models we compare have different vocabularies (the
base tokenizer vs the Korean-expanded one), so per-token loss is not comparable. The
total information the model assigns to a text, in bits, divided by the text's length in
Unicode characters (after NFC, as `prepare` writes its output), is. For each document:

    bits(doc) = sum over its tokens t_i of -log2 p(t_i | EOS, t_<i)

Conditioning is the one training saw: `prepare` packs documents as `doc EOS doc EOS ...` with no
BOS (kopretrain/data/tokenize.py), so in training a document starts right after an EOS. Here
each document is scored after a single EOS token (the context, not scored), never a BOS; the
EOS that would end it is not scored either (its bits are not part of the text's characters).
Loss per token (nats) and perplexity are over the same scored text tokens; they depend on the
tokenizer, bpc does not.

Documents longer than the model's context are cut into consecutive windows; each window
after the first is scored given the last `context_overlap` tokens of the previous one
(a sliding window, as in the Hugging Face perplexity guide), so no token is scored twice
and late tokens still see context. A window needs room for its context, its first token and one
scored token, so `max_len` must be at least `MIN_MAX_LEN` (3): the overlap is capped at
max_len // 2, and max_len // 2 < max_len - 1 holds from 3 on. Windows are scored by
`kopretrain.eval.scoring.loglikelihoods` (chunked: no whole-window fp32 logits).

Texts are encoded by `kopretrain.tokenizer.load.TextTokenizer.encode_batch`, the one encoder of
the project (no BOS/EOS added; special-token strings in the text are text).

Pure torch; no Ray.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from kopretrain.config.eval import MIN_MAX_LEN
from kopretrain.eval.scoring import Request, loglikelihoods


@dataclass
class BpcResult:
    bits: float
    """Total bits the model assigns to the texts."""
    num_chars: int
    """Total characters (Unicode code points) of the texts."""
    num_tokens: int
    """Tokens scored (text tokens; the EOS before each document is context, not scored)."""
    num_docs: int

    @property
    def bpc(self) -> float:
        return self.bits / max(self.num_chars, 1)

    @property
    def tokens_per_char(self) -> float:
        return self.num_tokens / max(self.num_chars, 1)

    @property
    def loss_per_token(self) -> float:
        """Mean negative log-likelihood per scored token, in nats."""
        return self.bits * math.log(2) / max(self.num_tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss_per_token)

    def as_dict(self) -> dict:
        return {"bpc": self.bpc, "loss_per_token": self.loss_per_token, "perplexity": self.perplexity,
                "tokens_per_char": self.tokens_per_char, "num_docs": self.num_docs,
                "num_chars": self.num_chars, "num_tokens": self.num_tokens}


def _windows(ids: list[int], max_len: int, overlap: int) -> list[tuple[list[int], int]]:
    """Split `ids` (the EOS context first) into (window, num_context_tokens) so that every id after
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


def document_windows(tokenizer, texts: list[str], max_len: int, context_overlap: int = 32):
    """(requests, num_chars, num_tokens): every window of every NFC text as a scoring request."""
    assert max_len >= MIN_MAX_LEN, f"max_len={max_len} < {MIN_MAX_LEN}: no window can score a token"
    overlap = min(context_overlap, max_len // 2)
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    requests: list[Request] = []
    num_chars = num_tokens = 0
    for text, text_ids in zip(texts, tokenizer.encode_batch(texts)):
        ids = [tokenizer.eos_id] + list(text_ids)  # as in training: a document follows an EOS
        num_chars += len(text)
        num_tokens += len(ids) - 1
        for window, num_context in _windows(ids, max_len, overlap):
            requests.append(Request(window[: 1 + num_context], window[1 + num_context :]))
    return requests, num_chars, num_tokens


def bits_per_char(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_len: int,
    batch_size: int = 8,
    context_overlap: int = 32,
    device="cpu",
) -> BpcResult:
    """Score `texts` with `model` (an HF causal LM) and `tokenizer` (a `TextTokenizer` from
    `load_tokenizer`); see module docstring."""
    requests, num_chars, num_tokens = document_windows(tokenizer, texts, max_len, context_overlap)
    lls = loglikelihoods(model, requests, max_len=max_len, batch_size=batch_size, device=device,
                         pad_id=tokenizer.eos_id)
    total_nats = -sum(ll.logprob for ll in lls)
    return BpcResult(bits=total_nats / math.log(2), num_chars=num_chars, num_tokens=num_tokens, num_docs=len(texts))
