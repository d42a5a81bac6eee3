"""The per-record cleaning chain of `prepare`: validate -> normalize -> quality filters -> PII.

    kept, rejected, counters = clean_records(records, CleanConfig())

`records` are what `read.read_task` yields. Every input record ends up in exactly one of `kept`
({"id","text","domain","source"}) or `rejected` ({"id","source","reason","text"}; the text is the
reader's raw bytes or the normalized text the filter saw, cut to 64 KiB), so
len(kept) + len(rejected) == len(records). Counters: `dropped_<reason>` per rejected record
(they sum to len(rejected)), `pii_<type>` per replaced span, `docs_with_pii`, `docs_normalized`
(text changed by normalization) — plain ints, summable across batches.

This is the hot loop of a corpus-scale job: regexes are compiled at import, the filter object is
built once per batch, and every stage skips work with a cheap check when it cannot apply.
`bench/` measures its docs/s. Pure Python: no Ray.
"""

from __future__ import annotations

from collections import Counter

from kopretrain.config.data_stages import CleanConfig
from kopretrain.data.filters import QualityFilter
from kopretrain.data.formats import RAW_KEEP_BYTES
from kopretrain.data.normalize import normalize_text
from kopretrain.data.pii import scrub_pii
from kopretrain.data.validate import validate_record

def _rejected(record: dict, reason: str, text) -> dict:
    if isinstance(text, str) and len(text) > RAW_KEEP_BYTES:
        text = text[:RAW_KEEP_BYTES] + f" …[truncated: {len(text)} characters]"
    return {"id": record["id"], "source": record["source"], "reason": reason, "text": text if isinstance(text, str) else ""}


def clean_records(records: list[dict], cfg: CleanConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(kept, rejected, counters) for a batch of read records; order of input is preserved."""
    qf = QualityFilter(cfg.filter)  # cheap: the bad-word regex is cached per file
    kept, rejected = [], []
    counters: Counter = Counter()
    for rec in records:
        reason = validate_record(rec, cfg.validate)
        if reason:
            rejected.append(_rejected(rec, reason, rec.get("raw") if rec.get("reason") else rec.get("text")))
            counters["dropped_" + reason] += 1
            continue
        original = rec["text"]
        text = normalize_text(original, cfg.normalize)
        if text != original:
            counters["docs_normalized"] += 1
        reason = "empty_text" if not text else qf.check(text, rec["domain"])
        if reason:
            rejected.append(_rejected(rec, reason, text or original))
            counters["dropped_" + reason] += 1
            continue
        text, found = scrub_pii(text, cfg.pii)
        if found:
            counters["docs_with_pii"] += 1
            for kind, n in found.items():
                counters["pii_" + kind] += n
        kept.append({"id": rec["id"], "text": text, "domain": rec["domain"], "source": rec["source"]})
    return kept, rejected, dict(counters)
