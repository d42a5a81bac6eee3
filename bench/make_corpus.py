"""Build N MB of realistic raw input for `kopretrain prepare` from the shipped real sentences.

    .venv/bin/python bench/make_corpus.py --out /tmp/corpus --size-mb 100 [--seed 0]

Writes `<out>/ko/part-NNNNN.jsonl` and `<out>/en/part-NNNNN.jsonl` (~64 MB each; 80% Korean,
20% English by bytes) of JSON lines `{"id": ..., "text": ...}`, plus `<out>/manifest.json` with
what was planted. Documents are 1-40 real sentences (6 on average) of the shipped sample (data/ko, data/en, read
with prepare's own reader), so scripts, spacing, punctuation and lengths are those of real text.
Controlled rates, per document (defaults in RATES):

- exact duplicate: an earlier document again (half of them with other whitespace);
- near duplicate: an earlier document with 1-3 characters changed (Jaccard of 5-char shingles
  > 0.85) or a sentence appended;
- PII: an e-mail address, a mobile number or a resident registration number appended;
- junk: symbol spam, a run of ㅋ, a too-short text, a document wrapped in HTML (normalised, kept),
  a malformed JSON line, a line of invalid UTF-8, a JSON object without `text`.

Earlier documents come from a ring buffer of the last 20,000, so memory stays flat at any size.
Deterministic for a given seed and size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import Counter, deque
from pathlib import Path

RATES = {"exact_dup": 0.08, "near_dup": 0.04, "pii": 0.03, "junk": 0.05}
JUNK = ["symbols", "laughter", "short", "html", "malformed_json", "invalid_utf8", "missing_text"]
SHARD_BYTES = 64 << 20


def sentence_pools() -> dict[str, list[str]]:
    """Real sentences of the shipped sample per domain (prepare's reader; lines of 8+ characters)."""
    from kopretrain.cli import compose_typed
    from kopretrain.data.read import list_files, plan_reads, read_task

    pools: dict[str, list[str]] = {"ko": [], "en": []}
    for source in compose_typed("prepare", ["source=sample"]).sources:
        for task in plan_reads(source, list_files(source), 1 << 30):
            for rec in read_task(task, source):
                if rec["text"]:
                    pools[source.domain].extend(s.strip() for s in rec["text"].splitlines() if len(s.strip()) >= 8)
    return {d: sorted(set(p)) for d, p in pools.items()}


def _pii(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f" 문의: user{rng.randrange(10**6)}@example.co.kr"
    if kind == 1:
        return f" 연락처 010-{rng.randrange(1000, 10000)}-{rng.randrange(1000, 10000)}"
    return f" 주민번호 {rng.randrange(50, 100):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}-{rng.randrange(1, 3)}{rng.randrange(10**5, 10**6)}"


def _near(text: str, rng: random.Random, pool: list[str]) -> str:
    if rng.random() < 0.3:
        return text + " " + rng.choice(pool)
    chars = list(text)
    for _ in range(rng.randint(1, 3) if len(text) >= 150 else 1):
        i = rng.randrange(len(chars))
        if not chars[i].isspace():
            chars[i] = chr(0xAC00 + rng.randrange(11172)) if "\uac00" <= chars[i] <= "\ud7a3" else rng.choice("abcdefghij")
    return "".join(chars)


def _line(doc_id: str, text: str) -> bytes:
    return json.dumps({"id": doc_id, "text": text}, ensure_ascii=False).encode() + b"\n"


def _junk(kind: str, doc_id: str, rng: random.Random, pool: list[str]) -> bytes:
    if kind == "symbols":
        return _line(doc_id, " ".join(rng.choice(["!!!", "###", "$$$", "***", "^^;", "@@"]) for _ in range(30)))
    if kind == "laughter":
        return _line(doc_id, "ㅋ" * rng.randrange(20, 200))
    if kind == "short":
        return _line(doc_id, rng.choice(pool)[:5])
    if kind == "html":
        return _line(doc_id, f"<div><p>{rng.choice(pool)}</p><br/><b>{rng.choice(pool)}</b></div>")
    if kind == "malformed_json":  # cut at a character, not inside one: that is invalid_utf8's job
        return json.dumps({"id": doc_id, "text": rng.choice(pool)}, ensure_ascii=False)[:-6].encode() + b"\n"
    if kind == "invalid_utf8":
        return b'{"id": "' + doc_id.encode() + b'", "text": "\xff\xfe\xfa broken"}\n'
    return json.dumps({"id": doc_id, "body": rng.choice(pool)}, ensure_ascii=False).encode() + b"\n"


def generate(out: Path, size_mb: float, seed: int = 0, rates: dict | None = None, junk: list[str] | None = None) -> dict:
    rates, junk = rates or RATES, junk or JUNK
    pools = sentence_pools()
    rng = random.Random(seed)
    planted: Counter = Counter()
    written = {"ko": 0, "en": 0}
    files: dict[str, tuple] = {}
    recent = {d: deque(maxlen=20_000) for d in pools}
    target = size_mb * 1e6
    n = 0
    while sum(written.values()) < target:
        domain = "ko" if written["en"] >= 0.25 * written["ko"] else "en"
        pool, doc_id = pools[domain], f"{domain}-{n}"
        r = rng.random()
        if r < rates["exact_dup"] and recent[domain]:
            text = rng.choice(recent[domain])
            line = _line(doc_id, text if rng.random() < 0.5 else "  " + text.replace(" ", "  ", 3) + "\n")
            planted["exact_dup"] += 1
        elif r < rates["exact_dup"] + rates["near_dup"] and recent[domain]:
            line = _line(doc_id, _near(rng.choice(recent[domain]), rng, pool))
            planted["near_dup"] += 1
        elif r < rates["exact_dup"] + rates["near_dup"] + rates["junk"]:
            kind = rng.choice(junk)
            line = _junk(kind, doc_id, rng, pool)
            planted[f"junk_{kind}"] += 1
        else:
            k = min(40, 1 + int(rng.expovariate(1 / 6)))
            text = (" " if rng.random() < 0.7 else "\n").join(rng.choice(pool) for _ in range(k))
            if rng.random() < rates["pii"]:
                text += _pii(rng)
                planted["pii"] += 1
            recent[domain].append(text)
            line = _line(doc_id, text)
            planted["original"] += 1
        shard, f, size = files.get(domain, (-1, None, SHARD_BYTES))
        if size >= SHARD_BYTES:
            if f:
                f.close()
            shard += 1
            (out / domain).mkdir(parents=True, exist_ok=True)
            f, size = open(out / domain / f"part-{shard:05d}.jsonl", "wb"), 0
        f.write(line)
        files[domain] = (shard, f, size + len(line))
        written[domain] += len(line)
        n += 1
    for _, f, _ in files.values():
        f.close()
    manifest = {"seed": seed, "size_mb": size_mb, "rates": rates, "junk": junk, "num_docs": n, "bytes": written, "planted": dict(planted)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(generate(args.out.resolve(), args.size_mb, args.seed), indent=1))


if __name__ == "__main__":
    main()
