"""Reading KoBEST TSV files into the documents of lm-evaluation-harness's `kobest_*` tasks.

    docs = read_task("data/kobest", "COPA", "test")  # [{"premise", "question", "alternative_1", ..., "label"}]

The files keep KoBEST's own layout (SKT-LSL/KoBEST_datarepo v1.0): tab-separated with a header
row, no quoting (QUOTE_NONE), CRLF or LF line ends; the columns are found by header name, since
they differ per task and per split (SentiNeg's test split adds Label_origin/Text_origin/
Category_neg). Each row becomes a dict with the field names of the Hugging Face `skt/kobest_v1`
dataset that lm-eval's task definitions read, and an integer `label`. A missing file, a missing
column, a row with the wrong number of fields, an empty cell or an unknown label is one UserError
naming the file (and the line).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kopretrain.errors import UserError

_BOOL = {"true": 1, "false": 0}

# task -> {doc field: TSV column}, label column, label parser (text -> int)
SCHEMA: dict[str, tuple[dict[str, str], str, dict[str, int]]] = {
    "BoolQ": ({"paragraph": "Text", "question": "Question"}, "Answer", _BOOL),
    "COPA": ({"premise": "sentence", "question": "question", "alternative_1": "1", "alternative_2": "2"},
             "Answer", {"1": 0, "2": 1}),
    "HellaSwag": ({"context": "context", "ending_1": "choice1", "ending_2": "choice2", "ending_3": "choice3",
                   "ending_4": "choice4"}, "label", {"0": 0, "1": 1, "2": 2, "3": 3}),
    "SentiNeg": ({"sentence": "Text"}, "Label", {"0": 0, "1": 1}),
    "WiC": ({"word": "Target", "context_1": "SENTENCE1", "context_2": "SENTENCE2"}, "ANSWER", _BOOL),
}
COPA_QUESTIONS = ("원인", "결과")


def task_path(data_dir: str | Path, task: str, split: str) -> Path:
    from kopretrain.paths import resolve_path

    return resolve_path(data_dir) / task / f"{split}.tsv"


def read_task(data_dir: str | Path, task: str, split: str, limit: int = 0) -> list[dict]:
    """The documents of `<data_dir>/<task>/<split>.tsv` (the first `limit`, 0 = all)."""
    path = task_path(data_dir, task, split)
    if not path.is_file():
        raise UserError(f"kobest: {task} {split} split not found: {path} (kobest.data_dir holds <Task>/<split>.tsv)")
    fields, label_col, labels = SCHEMA[task]
    try:  # the whole file at once, so that the error's offset is the file's; a UTF-8 BOM (Excel, Notepad) is dropped
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"kobest: {path} is not UTF-8 ({e.reason} at byte {e.start})") from None
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise UserError(f"kobest: {path} is empty (expected a header row)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in [*fields.values(), label_col] if c not in header]
    if missing:
        raise UserError(f"kobest: {path} has no column {', '.join(map(repr, missing))} "
                        f"(header: {', '.join(header)})")
    col = {name: header.index(name) for name in header}
    docs = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line (a trailing newline)
        if len(row) != len(header):
            raise UserError(f"kobest: {path} line {line_no}: {len(row)} fields, the header has {len(header)}")
        doc = {key: row[col[c]].strip() for key, c in fields.items()}
        empty = [c for key, c in fields.items() if not doc[key]]
        if empty:  # an empty choice would score 0 nats and always win
            raise UserError(f"kobest: {path} line {line_no}: empty column {empty[0]!r}")
        raw = row[col[label_col]].strip()
        if raw.lower() not in labels:
            raise UserError(f"kobest: {path} line {line_no}: unknown label {raw!r} in column {label_col!r} "
                            f"(expected one of {', '.join(labels)})")
        doc["label"] = labels[raw.lower()]
        if task == "COPA" and doc["question"] not in COPA_QUESTIONS:
            raise UserError(f"kobest: {path} line {line_no}: unknown question {doc['question']!r} in column "
                            f"'question' (expected 원인 or 결과)")
        docs.append(doc)
        if limit and len(docs) >= limit:
            break
    if not docs:
        raise UserError(f"kobest: {path} has no items")
    return docs
