"""Dedup (pure): exact hashing, character shingles, MinHash LSH, clusters, representatives, and
agreement with the datasketch library's MinHashLSH on the same shingles and threshold."""

from __future__ import annotations

import random

import numpy as np
import pytest

from kopretrain.data.dedup import (
    DedupParams, MinHasher, band_keys, connected_components, duplicate_pairs, exact_hashes, find_duplicates,
    key_waves, lsh_params, shingle_hashes, shingles, splitmix64, _GOLDEN,
)
from kopretrain.paths import DATA_DIR


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """Real, distinct Korean comments of 40+ characters from the shipped sample."""
    lines = (DATA_DIR / "ko" / "news_comments.txt").read_text(encoding="utf-8").splitlines()
    seen, out = set(), []
    for line in lines:
        t = " ".join(line.split())
        if len(t) >= 40 and t not in seen:
            seen.add(t)
            out.append(t)
    return out[:600]


def mutate(text: str, num_edits: int, rng: random.Random) -> str:
    """Replace `num_edits` non-space characters with random Hangul syllables."""
    chars = list(text)
    positions = [i for i, c in enumerate(chars) if not c.isspace()]
    for i in rng.sample(positions, min(num_edits, len(positions))):
        chars[i] = chr(0xAC00 + rng.randrange(11172))
    return "".join(chars)


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def test_exact_duplicates_ignore_whitespace_runs_and_keep_the_first():
    texts = ["오늘은 날씨가 좋네요", "다른 문서", "오늘은  날씨가\n좋네요 ", "오늘은 날씨가 좋네요", "오늘은 날씨가 좋네요!"]
    h = exact_hashes(texts)
    assert h[0] == h[2] == h[3] and len({h[0], h[1], h[4]}) == 3
    dups = find_duplicates(texts, DedupParams(), near=False)
    assert dups.exact == {2: 0, 3: 0}
    assert dups.near == {}


def test_spacing_variants_are_near_duplicates_not_exact():
    a = "오늘은 날씨가 정말 좋아서 공원에 산책을 다녀왔습니다"
    b = "오늘은 날씨가 정말좋아서 공원에 산책을다녀왔습니다"  # 띄어쓰기 differs
    dups = find_duplicates([a, b], DedupParams())
    assert dups.exact == {} and dups.near == {1: 0}
    collapse = find_duplicates([a, b], DedupParams(shingle_whitespace="collapse"))
    assert collapse.near == {}  # with spaces kept in shingles the two differ by more than 20%


def test_vectorised_shingle_hashes_match_the_scalar_definition():
    texts = ["가나다라마바사", "abc", "", "Hello  World, 안녕", "x" * 5]
    hashes, starts = shingle_hashes(texts, 3)
    ends = list(starts[1:]) + [len(hashes)]
    for t, s, e in zip(texts, starts, ends):
        prepared = "".join(t.lower().split())
        grams = [prepared[i : i + 3] for i in range(len(prepared) - 2)] or [prepared]
        expected = []
        for g in grams:
            h = np.uint64(0)
            with np.errstate(over="ignore"):
                for c in g:
                    h = h * _GOLDEN + np.uint64(ord(c))
            expected.append(h)
        assert hashes[s:e].tolist() == splitmix64(np.array(expected, dtype=np.uint64)).tolist()
        assert len(set(hashes[s:e].tolist())) == len(shingles(t, 3))


def test_minhash_estimates_jaccard(sentences):
    rng = random.Random(0)
    pairs = [(t, mutate(t, rng.randrange(1, 8), rng)) for t in sentences[:200]]
    sig = MinHasher(num_perm=256).signatures([x for p in pairs for x in p])
    estimate = (sig[0::2] == sig[1::2]).mean(axis=1)
    truth = np.array([jaccard(a, b) for a, b in pairs])
    assert np.abs(estimate - truth).mean() < 0.03  # std of one estimate is ~0.03 at 256 perms
    assert np.corrcoef(estimate, truth)[0, 1] > 0.95
    texts = [x for p in pairs[:20] for x in p]
    assert np.array_equal(MinHasher(num_perm=256).signatures(texts, 117), MinHasher(num_perm=256).signatures(texts)[:, :117])


def test_lsh_params_match_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold in (0.5, 0.7, 0.8, 0.9):
        for num_perm in (64, 128, 256):
            assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_threshold_behaviour_follows_the_lsh_s_curve(sentences):
    """Pairs well above the threshold are caught, pairs well below are not, and raising the
    threshold catches fewer: the S-curve 1 - (1 - J^r)^b of (bands, rows) = lsh_params(...)."""
    rng = random.Random(1)
    pairs = [(t, mutate(t, rng.randrange(0, 12), rng)) for t in sentences]
    truth = np.array([jaccard(a, b) for a, b in pairs])
    sig = MinHasher().signatures([x for p in pairs for x in p])

    def caught(threshold: float) -> np.ndarray:
        b, r = lsh_params(threshold, 128)
        keys = band_keys(sig, b, r)
        return (keys[0::2] == keys[1::2]).any(axis=1)

    at_08 = caught(0.8)
    high, low = truth >= 0.9, truth <= 0.6
    assert high.sum() > 50 and low.sum() > 50
    assert at_08[high].mean() >= 0.9
    assert at_08[low].mean() <= 0.05
    assert caught(0.9).sum() < at_08.sum() < caught(0.6).sum()


def test_duplicate_pairs_point_every_member_at_the_smallest_key():
    keys = np.array([7, 3, 7, 9, 3, 7], dtype=np.uint64)
    docs = np.array([50, 40, 10, 99, 41, 30], dtype=np.int64)
    members, firsts = duplicate_pairs(keys, docs)
    assert sorted(zip(members.tolist(), firsts.tolist())) == [(30, 10), (41, 40), (50, 10)]


def test_pairs_found_wave_by_wave_are_the_pairs_of_one_pass(sentences):
    """The distributed dedup shuffles one key range (wave) at a time to bound memory: that must
    find exactly the pairs and clusters of a single pass, and the waves must split the keys about evenly."""
    rng = random.Random(5)
    texts = sentences + [mutate(rng.choice(sentences), 1, rng) for _ in range(200)] + sentences[:50]
    keys = band_keys(MinHasher().signatures(texts, 9 * 13), 9, 13).ravel()
    docs = np.repeat(np.arange(len(texts), dtype=np.int64), 9)
    whole = set(zip(*(x.tolist() for x in duplicate_pairs(keys, docs))))
    assert len(whole) >= 150
    for num_waves in (1, 3, 7):
        wave = key_waves(keys, num_waves)
        assert set(np.unique(wave).tolist()) == set(range(num_waves))
        assert np.bincount(wave).min() > 0.8 * len(keys) / num_waves
        pairs, nodes, roots = set(), np.empty(0, np.int64), np.empty(0, np.int64)
        for w in range(num_waves):
            m, f = duplicate_pairs(keys[wave == w], docs[wave == w])
            pairs |= set(zip(m.tolist(), f.tolist()))
            # the driver folds each wave into the (node, root) forest of the waves before it
            nodes, roots = connected_components(np.concatenate([nodes, m]), np.concatenate([roots, f]))
        assert pairs == whole
        expected = connected_components(*duplicate_pairs(keys, docs))
        assert np.array_equal(nodes, expected[0]) and np.array_equal(roots, expected[1])


def test_connected_components_root_is_the_smallest_node_whatever_the_edge_order():
    edges = [(5, 9), (9, 2), (7, 8), (8, 12), (12, 7), (20, 2), (30, 31)]
    expected = {5: 2, 9: 2, 2: 2, 20: 2, 7: 7, 8: 7, 12: 7, 30: 30, 31: 30}
    rng = random.Random(3)
    for _ in range(5):
        rng.shuffle(edges)
        flipped = [(v, u) if rng.random() < 0.5 else (u, v) for u, v in edges]
        u, v = (np.array(x, dtype=np.int64) for x in zip(*flipped))
        nodes, roots = connected_components(u, v)
        assert dict(zip(nodes.tolist(), roots.tolist())) == expected


def test_a_long_chain_resolves_to_one_cluster():
    n = 5000  # worst case for naive label propagation: a path, given in reverse order
    u, v = np.arange(n - 1, 0, -1), np.arange(n - 2, -1, -1)
    nodes, roots = connected_components(u, v)
    assert len(nodes) == n and set(roots.tolist()) == {0}


def test_representative_is_the_first_in_input_order_and_runs_are_identical(sentences):
    rng = random.Random(4)
    base = [t for t in sentences if len(t) >= 90][:50]  # one edit keeps Jaccard >= 0.85
    variants = [mutate(t, 1, rng) for t in base]
    texts = base + variants
    first = find_duplicates(texts, DedupParams())
    assert first == find_duplicates(texts, DedupParams())
    caught = {i: r for i, r in first.near.items()}
    assert sum(caught.get(50 + i) == i for i in range(50)) >= 45  # variant -> its original
    order = list(range(100))
    rng.shuffle(order)
    shuffled = find_duplicates([texts[i] for i in order], DedupParams())
    # same clusters; in each the kept document is the one that now comes first
    removed = {order[i] for i in shuffled.near}
    kept_for = {order[i]: order[r] for i, r in shuffled.near.items()}
    for i, r in kept_for.items():
        assert order.index(r) < order.index(i)
    assert len(removed) == len(first.near)


def _datasketch_removed(texts: list[str], threshold: float, num_perm: int) -> dict[int, int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=7)
        m.update_batch([s.encode("utf-8") for s in shingles(t, 5)])
        lsh.insert(i, m)
        hashes.append(m)
    u, v = [], []
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j != i:
                u.append(i), v.append(j)
    nodes, roots = connected_components(np.array(u, dtype=np.int64), np.array(v, dtype=np.int64))
    return {int(n): int(r) for n, r in zip(nodes, roots) if n != r}


def test_agrees_with_datasketch_minhash_lsh(sentences):
    """Same shingles, same threshold (0.8) and num_perm (128): the (removed, kept) pairs of our
    vectorised MinHash LSH and of datasketch's MinHashLSH coincide closely. Differences come only
    from the two independent random hash families (each catches a pair with probability
    1 - (1 - J^13)^9); measured here: recall 0.961, precision 0.968 (see bench/prepare.md)."""
    rng = random.Random(5)
    base = [" ".join(sentences[i : i + 3]) for i in range(0, 600, 3)]  # documents of ~150-400 characters
    # two thirds light edits (Jaccard ~0.85-1, what re-posted web text looks like), one third
    # heavy edits (Jaccard < 0.6: must not be removed)
    variants = [mutate(t, rng.randrange(0, 3) if i % 3 else len(t) // 6, rng) for i, t in enumerate(base)]
    texts = base + variants
    ours = find_duplicates(texts, DedupParams(), exact=False).near
    theirs = _datasketch_removed(texts, 0.8, 128)
    ours_pairs, their_pairs = set(ours.items()), set(theirs.items())
    both = ours_pairs & their_pairs
    recall, precision = len(both) / len(their_pairs), len(both) / len(ours_pairs)
    assert len(their_pairs) > 100  # 2/3 of the 200 pairs
    print(f"pairs: ours {len(ours_pairs)}, datasketch {len(their_pairs)}, recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    # and against the truth (Jaccard of the shingle sets >= 0.8 between a variant and its original)
    n = len(base)
    truly = {n + i for i in range(n) if jaccard(base[i], variants[i]) >= 0.8}
    assert len(truly & set(ours)) / len(truly) >= 0.9
