"""Accounting of a prepare run: every document read is counted exactly once, as out, rejected
(per reason), an exact duplicate or a near duplicate, per source, per domain and in total.

    docs_in == docs_out + sum(rejected.values()) + exact_dups + near_dups      (checked, always)

Built from the jobs' markers (see `parts.py`), so a resumed run reports the same numbers as an
uninterrupted one. `format_summary` renders the table printed at the end of `kopretrain prepare`.
"""

from __future__ import annotations

from collections import Counter

COUNT_KEYS = ("docs_in", "docs_clean", "exact_dups", "near_dups", "docs_out",
              "bytes_in", "chars_clean", "bytes_clean", "chars_out", "bytes_out")


def _empty() -> dict:
    return {**{k: 0 for k in COUNT_KEYS}, "rejected": {}, "counters": {}}


def _add(into: dict, other: dict) -> None:
    for k in COUNT_KEYS:
        into[k] += other[k]
    for k in ("rejected", "counters"):
        merged = Counter(into[k])
        merged.update(other[k])
        into[k] = dict(sorted(merged.items()))


def check_balance(name: str, row: dict) -> None:
    """The invariant of the whole pipeline: nothing is lost, nothing is counted twice."""
    rejected = sum(row["rejected"].values())
    assert row["docs_in"] == row["docs_clean"] + rejected, f"{name}: read {row['docs_in']} != clean + rejected"
    assert row["docs_clean"] == row["docs_out"] + row["exact_dups"] + row["near_dups"], f"{name}: dedup lost documents"


def accounting(clean_markers: list[dict], final_markers: list[dict], bytes_in_by_source: dict[str, int],
               source_domains: dict[str, str]) -> dict:
    """{"sources": {name: row}, "domains": {domain: row}, "totals": row} from per-part markers."""
    sources = {name: _empty() for name in source_domains}
    for name, size in bytes_in_by_source.items():
        sources[name]["bytes_in"] = size
    finals = {m["index"]: m for m in final_markers}
    for m in clean_markers:
        f = finals[m["index"]]
        _add(sources[m["source"]], {
            "docs_in": m["num_docs_in"], "docs_clean": m["num_docs_clean"], "exact_dups": f["num_exact_dups"],
            "near_dups": f["num_near_dups"], "docs_out": f["num_docs_out"], "bytes_in": 0,
            "chars_clean": m["num_chars_clean"], "bytes_clean": m["num_bytes_clean"], "chars_out": f["num_chars_out"],
            "bytes_out": f["num_bytes_out"], "rejected": m["rejected"], "counters": m["counters"],
        })
    domains = {d: _empty() for d in sorted(set(source_domains.values()))}
    totals = _empty()
    for name, row in sources.items():
        check_balance(f"source {name}", row)
        _add(domains[source_domains[name]], row)
        _add(totals, row)
    for d, row in domains.items():
        check_balance(f"domain {d}", row)
    check_balance("total", totals)
    return {"sources": sources, "domains": domains, "totals": totals}


def add_tokens(report: dict, indexes: dict[str, dict]) -> None:
    """Put the packed-token counts of each domain's index.json into the report."""
    report["tokens"] = {
        d: {k: idx[k] for k in ("seq_len", "num_sequences", "num_tokens", "num_tokens_in", "num_tokens_dropped",
                                "num_docs", "tokenizer_fingerprint")}
        for d, idx in sorted(indexes.items())
    }
    for d, t in report["tokens"].items():
        assert t["num_tokens_in"] == t["num_tokens"] + t["num_tokens_dropped"]
        assert t["num_docs"] == report["domains"][d]["docs_out"], f"domain {d}: tokenized docs != clean docs"


def _fmt(n: int) -> str:
    return f"{n:,}"


def format_summary(report: dict) -> str:
    """The end-of-run table: per domain and total, documents through each stage, then sizes."""
    rows = [("domain", "read", "rejected", "exact dup", "near dup", "out", "MB in", "MB out", "chars out", "tokens")]
    tokens = report.get("tokens", {})
    named = list(report["domains"].items()) + [("total", report["totals"])]
    for name, r in named:
        tok = sum(t["num_tokens"] for t in tokens.values()) if name == "total" else tokens.get(name, {}).get("num_tokens")
        rows.append((name, _fmt(r["docs_in"]), _fmt(sum(r["rejected"].values())), _fmt(r["exact_dups"]),
                     _fmt(r["near_dups"]), _fmt(r["docs_out"]), f"{r['bytes_in'] / 1e6:.1f}", f"{r['bytes_out'] / 1e6:.1f}",
                     _fmt(r["chars_out"]), "-" if not tokens else _fmt(tok or 0)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    reasons = report["totals"]["rejected"]
    if reasons:
        lines.append("rejected: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)
