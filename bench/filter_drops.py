"""What share of each shipped sample file each cleaning step drops, with the default CleanConfig.

    .venv/bin/python bench/filter_drops.py

One row per source of the shipped sample (data/ko, data/en; the same sources as
conf/source/sample.yaml), one column per reject reason that occurs (read, validate and filter
reasons alike), plus PII replacements. Prints the markdown table of the README.
"""

from __future__ import annotations

import os
from collections import Counter

from clean_throughput import SOURCES

from kopretrain.config.data_stages import CleanConfig
from kopretrain.data.clean import clean_records
from kopretrain.data.read import list_files, plan_reads, read_task


def main() -> None:
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = CleanConfig()
    rows, reasons = [], Counter()
    for source in SOURCES:
        records = [r for t in plan_reads(source, list_files(source), 1 << 30) for r in read_task(t, source)]
        kept, rejected, counters = clean_records(records, cfg)
        dropped = Counter(r["reason"] for r in rejected)
        reasons.update(dropped)
        pii = sum(v for k, v in counters.items() if k.startswith("pii_"))
        rows.append((source, len(records), len(kept), dropped, pii))
    columns = [r for r, _ in reasons.most_common()]
    print("| source | docs | kept | " + " | ".join(columns) + " | PII spans |")
    print("|---|---:|---:|" + "---:|" * len(columns) + "---:|")
    for source, n, k, dropped, pii in rows:
        cells = [f"{dropped[c] / n:.2%}" if dropped[c] else "" for c in columns]
        print(f"| {source.name} ({source.domain}) | {n:,} | {k / n:.1%} | " + " | ".join(cells) + f" | {pii} |")


if __name__ == "__main__":
    main()
