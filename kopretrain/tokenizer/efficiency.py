"""Token efficiency: tokens per character and per word on held-out text, per tokenizer.

Fewer tokens for the same Korean text means more text per context window and per training
step. Words are whitespace-separated units (Korean eojeol); characters are Unicode code
points. Counts exclude BOS/EOS.

    table = measure_all({"base": base_tok, "expanded": new_tok}, {"ko": ko_docs, "en": en_docs})
    print(format_table(table))

Pass `kopretrain.tokenizer.load.load_tokenizer(...)` objects: their `encode_batch` is the one
document encoder of kopretrain (the same ids `prepare` packs: no BOS/EOS, special-token strings
in the text counted as the text they are). Anything with `encode_batch(texts) -> list[list[int]]`
works; tested in tests/tokenizer/test_efficiency.py.
"""

from __future__ import annotations

from typing import Protocol

EXAMPLE_SENTENCE = "안녕하세요, 오늘은 날씨가 좋네요"
"""Llama-2's tokenizer needs 29 tokens for it (issue 4)."""


class Encoder(Protocol):
    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


def measure(tokenizer: Encoder, texts: list[str], batch_size: int = 1024) -> dict:
    """Token counts of `texts` and their ratios to characters and words."""
    num_tokens = 0
    for i in range(0, len(texts), batch_size):
        num_tokens += sum(len(ids) for ids in tokenizer.encode_batch(texts[i : i + batch_size]))
    num_chars = sum(len(t) for t in texts)
    num_words = sum(len(t.split()) for t in texts)
    return {
        "num_docs": len(texts),
        "num_chars": num_chars,
        "num_words": num_words,
        "num_tokens": num_tokens,
        "tokens_per_char": num_tokens / max(num_chars, 1),
        "tokens_per_word": num_tokens / max(num_words, 1),
    }


def measure_all(tokenizers: dict[str, Encoder], heldout: dict[str, list[str]]) -> dict:
    """{tokenizer name: {domain: measure(...), "example_tokens": n}}."""
    out = {}
    for name, tok in tokenizers.items():
        out[name] = {domain: measure(tok, texts) for domain, texts in heldout.items()}
        out[name]["example_tokens"] = len(tok.encode_batch([EXAMPLE_SENTENCE])[0])
    return out


def ratios(table: dict, numerator: str = "base", denominator: str = "expanded") -> dict:
    """Domain -> tokens with `numerator` / tokens with `denominator` (2.0 = half as many tokens)."""
    a, b = table[numerator], table[denominator]
    return {d: a[d]["num_tokens"] / max(b[d]["num_tokens"], 1) for d in a if d != "example_tokens"}


def format_table(table: dict, vocab_sizes: dict[str, int] | None = None) -> str:
    domains = [d for d in next(iter(table.values())) if d != "example_tokens"]
    head = f"{'tokenizer':<12} {'vocab':>7}" + "".join(f" {d + ' tok/char':>13} {d + ' tok/word':>13}" for d in domains)
    lines = [head + f"  {'example':>7}"]
    for name, row in table.items():
        vocab = (vocab_sizes or {}).get(name, "")
        cells = "".join(f" {row[d]['tokens_per_char']:>13.3f} {row[d]['tokens_per_word']:>13.3f}" for d in domains)
        lines.append(f"{name:<12} {vocab!s:>7}{cells}  {row['example_tokens']:>7}")
    lines.append(f"example = tokens for {EXAMPLE_SENTENCE!r}")
    return "\n".join(lines)
