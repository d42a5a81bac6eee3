"""Exact and near-duplicate detection: pure numpy, no Ray (the Ray glue is `data/pipeline.py`).

The pieces, each vectorised over a batch of documents:

- `exact_hashes(texts)`: 64-bit hash of the whitespace-normalised text (exact duplicates).
- `shingle_hashes(texts, ...)`: character n-grams ("shingles") hashed to 64 bits. Korean
  suits character n-grams better than word n-grams: spacing (띄어쓰기) is inconsistent in web
  text and one eojeol glues stem and particles, so by default whitespace is removed before
  shingling and "오늘은 날씨가" and "오늘은날씨가" give the same shingles.
- `MinHasher.signatures(texts)`: MinHash signatures (`num_perm` x uint32 per document), one
  multiply-add-shift hash family evaluated for all shingles of a batch at once.
- `band_keys(signatures, num_bands, rows_per_band)`: LSH banding; one 64-bit key per band
  (band index mixed in), so documents sharing any key are near-duplicate candidates.
- `duplicate_pairs(keys, doc_keys)`: within equal keys, every member but the first (smallest
  doc key) points at the first: for exact hashes these are the removed documents, for band
  keys these are the edges of the near-duplicate graph.
- `key_waves(keys, num_waves)`: which of `num_waves` disjoint key ranges a key falls in; equal
  keys share a wave, so the distributed run can group a few ranges at a time (bounded memory)
  and still find exactly the same pairs.
- `connected_components(u, v)`: deterministic union-find over those edges (vectorised hooking
  and pointer jumping); the representative of a cluster is its smallest doc key, i.e. the
  document that comes first in input order, whatever the parallelism.

`find_duplicates(texts, cfg)` runs all of it in memory (tests, small inputs, the reference the
distributed run must match). Try it:

    from kopretrain.data.dedup import DedupParams, find_duplicates
    find_duplicates(["오늘은 날씨가 좋네요 정말로", "오늘은  날씨가 좋네요 정말로", "오늘은날씨가 좋네요 정말로"], DedupParams())
    # -> Duplicates(exact={1: 0}, near={2: 0})

Tests: `.venv/bin/python -m pytest tests/data/test_dedup.py -q`; bench: `bench/dedup_vs_datasketch.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling n-gram hash
SHINGLE_WHITESPACE = {
    # option -> how a text is prepared for shingling (lower-cased in both cases)
    "remove": lambda t: "".join(t.lower().split()),
    "collapse": lambda t: " ".join(t.lower().split()),
}


@dataclass(frozen=True)
class DedupParams:
    """The knobs the pure functions need (built from `DedupConfig`; frozen: a fingerprint input)."""

    shingle_chars: int = 5
    shingle_whitespace: str = "remove"
    num_perm: int = 128
    threshold: float = 0.8
    num_bands: int = 0
    rows_per_band: int = 0
    seed: int = 1

    def bands(self) -> tuple[int, int]:
        if self.num_bands and self.rows_per_band:
            return self.num_bands, self.rows_per_band
        return lsh_params(self.threshold, self.num_perm)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit finaliser (Steele et al. 2014); wraps mod 2**64 by design."""
    x = np.asarray(x, dtype=_U64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> _U64(30)
        x *= _U64(0xBF58476D1CE4E5B9)
        x ^= x >> _U64(27)
        x *= _U64(0x94D049BB133111EB)
        x ^= x >> _U64(31)
    return x


def exact_key(text: str) -> str:
    """What exact dedup compares: the text with runs of whitespace collapsed and ends stripped."""
    return " ".join(text.split())


def exact_hashes(texts: list[str]) -> np.ndarray:
    """uint64 hash per text of `exact_key(text)` (blake2b: stable across processes and runs)."""
    out = np.empty(len(texts), dtype=_U64)
    for i, t in enumerate(texts):
        out[i] = int.from_bytes(hashlib.blake2b(exact_key(t).encode("utf-8"), digest_size=8).digest(), "little")
    return out


def shingles(text: str, shingle_chars: int, whitespace: str = "remove") -> set[str]:
    """The shingle set of one text as strings: the reference for tests and for datasketch."""
    t = SHINGLE_WHITESPACE[whitespace](text)
    if len(t) < shingle_chars:
        return {t}
    return {t[i : i + shingle_chars] for i in range(len(t) - shingle_chars + 1)}


def _poly_hash(codepoints: np.ndarray) -> int:
    """The rolling hash of one whole (short) text: same recurrence as the vectorised windows."""
    h = _U64(0)
    with np.errstate(over="ignore"):
        for c in codepoints:
            h = h * _GOLDEN + _U64(c)
    return int(h)


def shingle_hashes(texts: list[str], shingle_chars: int, whitespace: str = "remove") -> tuple[np.ndarray, np.ndarray]:
    """Hash every character n-gram of every text; returns (hashes uint64, per-text start offsets).

    Text i owns `hashes[starts[i]:starts[i+1]]` (at least one: a text shorter than n is one
    shingle; duplicated n-grams are kept, MinHash is insensitive to them).
    """
    n = shingle_chars
    prepared = [SHINGLE_WHITESPACE[whitespace](t) for t in texts]
    lengths = np.fromiter((len(t) for t in prepared), dtype=np.int64, count=len(prepared))
    cps = np.frombuffer("".join(prepared).encode("utf-32-le"), dtype="<u4").astype(_U64)
    text_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    counts = np.maximum(lengths - n + 1, 0)
    seg = np.maximum(counts, 1)
    seg_starts = np.concatenate([[0], np.cumsum(seg)[:-1]]) if len(seg) else seg
    out = np.empty(int(seg.sum()), dtype=_U64)
    total_windows = max(len(cps) - n + 1, 0)
    windows = np.zeros(total_windows, dtype=_U64)
    with np.errstate(over="ignore"):
        for j in range(n):  # polynomial hash of every length-n window of the concatenation
            windows = windows * _GOLDEN + cps[j : j + total_windows]
    long = counts > 0
    c = counts[long]
    within = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
    out[np.repeat(seg_starts[long], c) + within] = windows[np.repeat(text_starts[long], c) + within]
    for i in np.flatnonzero(~long):  # shorter than n: the whole text is the one shingle
        out[seg_starts[i]] = _poly_hash(cps[text_starts[i] : text_starts[i] + lengths[i]])
    return splitmix64(out), seg_starts


class MinHasher:
    """MinHash with the multiply-add-shift family h_k(x) = ((a_k x + b_k) mod 2**64) >> 32."""

    def __init__(self, num_perm: int = 128, seed: int = 1, shingle_chars: int = 5, whitespace: str = "remove"):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**63, num_perm, dtype=_U64) * _U64(2) + _U64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, num_perm, dtype=_U64) * _U64(2)
        self.num_perm, self.shingle_chars, self.whitespace = num_perm, shingle_chars, whitespace

    def signatures(self, texts: list[str], num_columns: int = 0, chunk_shingles: int = 12_000) -> np.ndarray:
        """uint32 [len(texts), num_columns or num_perm] (LSH only reads bands x rows columns, so
        the rest need not be computed). Works on chunks of whole texts so the (perm x shingle)
        scratch matrix stays ~12 MB (measured fastest), and shifts after taking the minimum
        (x -> x >> 32 is monotone), which saves a pass over that matrix."""
        k = num_columns or self.num_perm
        hashes, starts = shingle_hashes(texts, self.shingle_chars, self.whitespace)
        sig = np.empty((len(texts), k), dtype=np.uint32)
        ends = np.append(starts[1:], len(hashes)).astype(np.int64)
        a, b = self.a[:k, None], self.b[:k, None]
        i = 0
        while i < len(texts):
            j = int(np.searchsorted(ends, starts[i] + chunk_shingles, side="right"))
            j = max(j, i + 1)  # one long text alone may exceed the chunk
            lo, hi = int(starts[i]), int(ends[j - 1])
            with np.errstate(over="ignore"):
                m = a * hashes[lo:hi][None, :]
                m += b
            sig[i:j] = (np.minimum.reduceat(m, starts[i:j] - lo, axis=1) >> _U64(32)).T
            i = j
        return sig


def band_keys(signatures: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """uint64 [n, num_bands]: band k of a document hashes its k-th run of `rows_per_band` values
    together with k, so equal keys mean "this band is identical" and never cross bands."""
    assert num_bands * rows_per_band <= signatures.shape[1], "bands x rows exceeds num_perm"
    n = signatures.shape[0]
    keys = np.empty((n, num_bands), dtype=_U64)
    sig = signatures.astype(_U64)
    for k in range(num_bands):
        h = np.full(n, ((k + 1) * int(_GOLDEN)) % 2**64, dtype=_U64)
        for col in range(k * rows_per_band, (k + 1) * rows_per_band):
            h = splitmix64(h ^ sig[:, col])
        keys[:, k] = h
    return keys


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives around `threshold`, the same
    criterion (equal weights) as datasketch's MinHashLSH, integrated on a fine grid."""
    best, best_err = (1, 1), float("inf")
    lo = np.linspace(0.0, threshold, 2001)
    hi = np.linspace(threshold, 1.0, 2001)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)
            fn = np.trapezoid((1 - hi**r) ** b, hi)
            if fp + fn < best_err:
                best, best_err = (b, r), fp + fn
    return best


def duplicate_pairs(keys: np.ndarray, doc_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every group of equal `keys` with 2+ members: (member, first member) for all but the
    first, where "first" is the smallest doc key. Returns (members, firsts), int64 each."""
    order = np.lexsort((doc_keys, keys))
    k, d = keys[order], doc_keys[order]
    same_as_prev = np.zeros(len(k), dtype=bool)
    same_as_prev[1:] = k[1:] == k[:-1]
    group_first = np.maximum.accumulate(np.where(~same_as_prev, np.arange(len(k)), 0))
    return d[same_as_prev].astype(np.int64), d[group_first[same_as_prev]].astype(np.int64)


def key_waves(keys: np.ndarray, num_waves: int) -> np.ndarray:
    """Wave 0..num_waves-1 of each uint64 key, from its high 32 bits (exact hashes and band keys
    are uniform hashes, so waves come out even). Equal keys always share a wave, hence the pairs
    of `duplicate_pairs` run per wave, united, are the pairs of one run over all keys."""
    return ((np.asarray(keys, dtype=_U64) >> _U64(32)) % _U64(num_waves)).astype(np.int64)


def connected_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union-find over edges (u, v) of doc keys: returns (nodes, root of each node), sorted by node.

    Vectorised hook-and-compress: every root points at a smaller root (so the forest has no
    cycles), then pointer jumping flattens it; repeated until no edge spans two roots. The root
    of a component is its smallest node, which makes the result independent of edge order.
    Memory: 3 int64 per edge + 2 per node, i.e. only the documents that collide.
    """
    nodes, inv = np.unique(np.concatenate([u, v]).astype(np.int64), return_inverse=True)
    a, b = inv[: len(u)], inv[len(u) :]
    parent = np.arange(len(nodes), dtype=np.int64)
    while True:
        pa, pb = parent[a], parent[b]
        spanning = pa != pb
        if not spanning.any():
            break
        lo, hi = np.minimum(pa, pb)[spanning], np.maximum(pa, pb)[spanning]
        np.minimum.at(parent, hi, lo)  # hook the larger root under the smaller one
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return nodes, nodes[parent]


@dataclass
class Duplicates:
    """Which documents (by position) dedup removes, and whom each one duplicates."""

    exact: dict[int, int]
    """removed position -> kept position with the same normalised text."""
    near: dict[int, int]
    """removed position -> representative (first in input order) of its near-duplicate cluster."""


def find_duplicates(texts: list[str], params: DedupParams, exact: bool = True, near: bool = True) -> Duplicates:
    """The whole dedup of a list in memory: exact first, then MinHash LSH on the survivors."""
    doc_keys = np.arange(len(texts), dtype=np.int64)
    exact_removed: dict[int, int] = {}
    if exact and texts:
        members, firsts = duplicate_pairs(exact_hashes(texts), doc_keys)
        exact_removed = dict(zip(members.tolist(), firsts.tolist()))
    near_removed: dict[int, int] = {}
    survivors = np.array([i for i in range(len(texts)) if i not in exact_removed], dtype=np.int64)
    if near and len(survivors):
        num_bands, rows = params.bands()
        hasher = MinHasher(params.num_perm, params.seed, params.shingle_chars, params.shingle_whitespace)
        keys = band_keys(hasher.signatures([texts[i] for i in survivors], num_bands * rows), num_bands, rows)
        members, firsts = duplicate_pairs(keys.ravel(), np.repeat(survivors, num_bands))
        nodes, roots = connected_components(members, firsts)
        near_removed = {int(n): int(r) for n, r in zip(nodes, roots) if n != r}
    return Duplicates(exact_removed, near_removed)
