"""Reading held-out evaluation text: `.txt` (one document per line) or `.jsonl` (`text` field)."""

from __future__ import annotations

import json
from pathlib import Path

from kopretrain.errors import UserError
from kopretrain.paths import resolve_path


def read_heldout(path: str | Path, max_docs: int = 0) -> list[str]:
    """Non-empty documents of a held-out file, in file order (at most `max_docs`, 0 = all)."""
    p = resolve_path(path)
    if not p.is_file():
        raise UserError(f"held-out file not found: {p}")
    docs: list[str] = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if p.suffix == ".jsonl":
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text") or ""
                except (json.JSONDecodeError, AttributeError):
                    raise UserError(f"{p}:{n}: not a JSON object with a 'text' field") from None
            else:
                text = line.rstrip("\n")
            if text.strip():
                docs.append(text)
            if max_docs and len(docs) >= max_docs:
                break
    if not docs:
        raise UserError(f"held-out file has no text: {p}")
    return docs
