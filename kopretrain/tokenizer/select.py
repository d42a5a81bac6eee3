"""Choosing the new tokens: Korean candidates ranked by frequency, closed under merges.

Both merge paths (SentencePiece pieces, byte-level BPE tokens) use the same rule:

1. A candidate must pass the Korean filter (it touches Hangul). Text without Hangul can then
   never produce a new token, which is what keeps English prose and code tokenizing to the
   exact same ids as with the base tokenizer.
2. Candidates are taken in order of frequency on the Korean corpus (ties: the Korean model's
   own order), up to the token budget.
3. A candidate is only useful if the merged tokenizer can actually produce it: every BPE token
   longer than one symbol needs a split into two tokens that are both in the vocabulary (and,
   for SentencePiece, every character of it must be a piece, so that SentencePiece and the
   Hugging Face conversion build it the same way). Missing parts are added with it, before it,
   when they pass the filter and fit the budget; otherwise the candidate is skipped.

Pure Python; see tests/tokenizer/test_select.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

PLACEHOLDER = "<kopretrain_unused_{}>"
"""Name of the never-produced tokens that pad a vocabulary to the multiple when candidates run out."""

# Hangul Jamo, Compatibility Jamo, Jamo Extended-A, Syllables, Jamo Extended-B.
HANGUL_RANGES = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FF))


def is_hangul(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in HANGUL_RANGES)


def has_hangul(text: str) -> bool:
    return any(is_hangul(ch) for ch in text)


def bytes_touch_hangul(data: bytes) -> bool:
    """True if a byte string (a byte-level BPE token) can only occur inside text with Hangul.

    Every Hangul character is 3 bytes in UTF-8. For each lead byte of a 3-byte sequence in the
    token, the code points its known bytes allow (missing continuation bytes: any of
    0x80-0xBF) must all be Hangul: 0xEB alone (U+B000-U+BFFF) qualifies, 0xEA alone does not
    (U+A000 is Yi) but 0xEA 0xB0 does (U+AC00-U+AC3F). Tokens made only of continuation bytes
    also occur inside Chinese or emoji, so they are refused.
    """
    for i, lead in enumerate(data):
        if not 0xE0 <= lead <= 0xEF:
            continue
        tail = data[i + 1 : i + 3]
        if any(not 0x80 <= b <= 0xBF for b in tail):
            continue
        low = high = lead & 0x0F
        for k in range(2):
            low = (low << 6) | ((tail[k] & 0x3F) if k < len(tail) else 0x00)
            high = (high << 6) | ((tail[k] & 0x3F) if k < len(tail) else 0x3F)
        if any(lo <= low and high <= hi for lo, hi in HANGUL_RANGES):
            return True
    return False


def rank_candidates(counts: Counter, model_order: Iterable[str]) -> list[str]:
    """Candidates by descending corpus frequency; ties (and never-seen ones) in the model's order."""
    order = {tok: i for i, tok in enumerate(model_order)}
    seen = [t for t in order if counts.get(t, 0) > 0]
    return sorted(seen, key=lambda t: (-counts[t], order[t]))


class Selector:
    """Greedy selection with closure. `splits(token)` lists the (left, right) ways a token can
    be built by one merge, best first; `is_atom(token)` is True for a token no merge builds (one
    character or one byte), which must itself be in the vocabulary to be merged with."""

    def __init__(
        self,
        known: set[str],
        accept: Callable[[str], bool],
        splits: Callable[[str], list[tuple[str, str]]],
        is_atom: Callable[[str], bool],
    ):
        self.known = known
        """Tokens already in the vocabulary (the base's, then the ones added)."""
        self.accept = accept
        self.splits = splits
        self.is_atom = is_atom
        """True for a token made by no merge (one character / one byte)."""
        self.added: list[str] = []
        self.merge_of: dict[str, tuple[str, str]] = {}
        """The merge each added non-atom token was planned with."""

    def _plan(self, token: str, pending: dict[str, tuple[str, str] | None], depth: int = 0) -> bool:
        """Add to `pending` (in dependency order) what `token` needs; False if impossible."""
        if token in self.known or token in pending:
            return True
        if depth > 32 or not self.accept(token):
            return False
        if self.is_atom(token):
            pending[token] = None
            return True
        # Prefer a split whose parts are already known; else the first one that can be planned.
        def num_missing(split: tuple[str, str]) -> int:
            return sum(part not in self.known and part not in pending for part in split)

        options = sorted(self.splits(token), key=num_missing)  # stable: keeps the given preference
        for left, right in options:
            trial = dict(pending)
            if self._plan(left, trial, depth + 1) and self._plan(right, trial, depth + 1):
                trial[token] = (left, right)
                pending.clear()
                pending.update(trial)
                return True
        return False

    def add(self, token: str, budget: int) -> int:
        """Try to add `token` (with what it needs) within `budget` more tokens; returns how many were added."""
        pending: dict[str, tuple[str, str] | None] = {}
        if not self._plan(token, pending) or len(pending) > budget:
            return 0
        for t, merge in pending.items():
            self.known.add(t)
            self.added.append(t)
            if merge is not None:
                self.merge_of[t] = merge
        return len(pending)


def select_tokens(ranked: list[str], selector: Selector, num_tokens: int) -> list[str]:
    """Walk `ranked` and add candidates until `num_tokens` were added or candidates run out."""
    budget = num_tokens
    for token in ranked:
        if budget <= 0:
            break
        budget -= selector.add(token, budget)
    return list(selector.added)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n
