"""Precision and recall of the PII scrubber per type on the labelled set.

    .venv/bin/python bench/pii_eval.py [tests/data/pii_labelled.jsonl] [--misses]

The set (tests/data/pii_labelled.jsonl) holds Korean sentences with labelled PII spans
({"type", "value"}) and decoys that must survive untouched (dates, prices, versions, model
names, counts, ISBNs, timestamps...). Rows with "split": "probe" were written in one go after
the scrubber was frozen, as a check on over-fitting; the table shows them separately.
Prints a markdown table (the README's) and, with --misses, every wrong example.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kopretrain.config.data_stages import PiiConfig
from kopretrain.data.pii import PLACEHOLDERS, score_labelled, scrub_pii

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_labelled.jsonl"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


def table(examples: list[dict], cfg: PiiConfig) -> list[str]:
    splits = {"all": examples, "probe": [e for e in examples if e.get("split") == "probe"]}
    scores = {name: score_labelled(rows, cfg) for name, rows in splits.items()}
    lines = ["| type | positives | precision | recall | probe positives | probe precision | probe recall |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    totals = {name: {"tp": 0, "fp": 0, "fn": 0} for name in splits}
    for kind in PLACEHOLDERS:
        cells = [kind]
        for name in splits:
            s = scores[name][kind]
            for k in s:
                totals[name][k] += s[k]
            cells += [str(s["tp"] + s["fn"]), _ratio(s["tp"], s["tp"] + s["fp"]), _ratio(s["tp"], s["tp"] + s["fn"])]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**all**"]
    for name in splits:
        t = totals[name]
        cells += [str(t["tp"] + t["fn"]), _ratio(t["tp"], t["tp"] + t["fp"]), _ratio(t["tp"], t["tp"] + t["fn"])]
    lines.append("| " + " | ".join(cells) + " |")
    num_decoys = sum(1 for e in examples if not e["pii"])
    damaged = sum(1 for e in examples if not e["pii"] and any(k not in scrub_pii(e["text"], cfg)[0] for k in e.get("keep", [])))
    lines.append("")
    lines.append(f"{len(examples)} sentences, {sum(len(e['pii']) for e in examples)} PII spans, "
                 f"{num_decoys} decoy sentences ({damaged} damaged).")
    return lines


def misses(examples: list[dict], cfg: PiiConfig) -> list[str]:
    out = []
    for e in examples:
        text, counts = scrub_pii(e["text"], cfg)
        gold = sorted(p["type"] for p in e["pii"])
        pred = sorted(k for k, n in counts.items() for _ in range(n))
        if gold != pred or any(p["value"] in text for p in e["pii"]) or any(k not in text for k in e.get("keep", [])):
            out.append(f"{e.get('split', 'main')}: {e['text']!r} -> {text!r} (gold {gold}, found {pred})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--misses", action="store_true", help="print every wrongly handled example")
    args = ap.parse_args()
    examples = [json.loads(line) for line in open(args.path, encoding="utf-8") if line.strip()]
    cfg = PiiConfig()
    print("\n".join(table(examples, cfg)))
    if args.misses:
        print("\n".join(misses(examples, cfg)) or "no misses")


if __name__ == "__main__":
    main()
