"""Llama-3's `tokenizer.model` (tiktoken ranks, not SentencePiece) -> a Hugging Face tokenizer.json.

A tiktoken file is one `<base64 token bytes> <rank>` line per token; the rank is both the id
and the merge priority. The conversion is the one transformers' `TikTokenConverter` does
(without needing the `tiktoken` package): vocabulary = tokens spelled in the GPT-2 byte-level
alphabet; merges = every split of a token into two tokens, ordered by the merged token's
rank; Llama-3's pre-tokenizer regex; `ignore_merges` (a word that is a token is taken whole);
Meta's 256 special tokens after the ranks (<|begin_of_text|>, <|end_of_text|>, ...).

    tokenizer_json = tiktoken_to_json("llama3/tokenizer.model")

Pure `tokenizers`; tested in tests/tokenizer/test_tiktoken_convert.py.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from kopretrain.errors import UserError

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]
"""Meta's special tokens of Llama-3, with ids from the number of ranks on."""


def is_tiktoken_file(path: Path) -> bool:
    """True if the first line is `<base64> <integer>`."""
    with open(path, "rb") as f:
        first = f.readline(4096).split()
    if len(first) != 2 or not first[1].isdigit():
        return False
    try:
        base64.b64decode(first[0], validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise UserError(f"{path}:{n}: not a tiktoken line '<base64> <rank>'") from None
    return ranks


def _byte_encoder() -> dict[int, str]:
    from kopretrain.tokenizer.merge_bpe import byte_decoder

    return {b: ch for ch, b in byte_decoder().items()}


def tiktoken_to_json(path: str | Path) -> dict:
    """The tokenizer.json (as a dict) equivalent to a Llama-3 tiktoken file."""
    ranks = read_ranks(Path(path))
    enc = _byte_encoder()

    def spell(token: bytes) -> str:
        return "".join(enc[b] for b in token)

    merges = []
    for token, rank in ranks.items():
        local = [(ranks[token[:i]], ranks[token[i:]], token[:i], token[i:]) for i in range(1, len(token))
                 if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, rl, rr, left, right) for rl, rr, left, right in sorted(local)]
    merges.sort()
    tok = Tokenizer(models.BPE(vocab={spell(t): r for t, r in ranks.items()},
                               merges=[(spell(l), spell(r)) for *_, l, r in merges], fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, len(ranks))]),
    ])
    return json.loads(tok.to_str())
