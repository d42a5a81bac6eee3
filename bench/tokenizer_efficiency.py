"""The README's token-efficiency table: each real base tokenizer before and after Korean expansion.

    .venv/bin/python bench/tokenizer_efficiency.py [--shared ../shared] [--out outputs/bench/tokenizer]

Runs `kopretrain tokenizer` (the real command, default config: a Korean SentencePiece / byte-level
BPE trained on the shipped `data/ko`, held-out text from `data/heldout/`) once per base in
`../shared/tokenizers` and prints one markdown row per tokenizer: vocabulary size, tokens per
character and per word on held-out Korean, tokens per character on held-out English, and the
number of tokens for "안녕하세요, 오늘은 날씨가 좋네요". Each run's report.json stays in --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, base path under shared/tokenizers, extra overrides)
BASES = [
    ("Llama-2", "llama2/tokenizer.model", []),
    ("Mistral", "mistral/tokenizer.model.v1", []),
    ("Llama-3", "llama3/tokenizer.model", ["num_new_tokens=8960"]),
    ("Polyglot-Ko", "polyglot-ko/tokenizer.json", []),
]


def run(label: str, base: Path, extra: list[str], out: Path) -> dict:
    run_dir = out / label.lower()
    cmd = [sys.executable, "-m", "kopretrain", "tokenizer", f"base={base}", "tracking.enabled=false",
           f"hydra.run.dir={run_dir}", *extra]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))


def row(name: str, vocab: int, eff: dict, bold: bool = False) -> str:
    cells = [name, f"{vocab:,}", f"{eff['ko']['tokens_per_char']:.3f}", f"{eff['ko']['tokens_per_word']:.3f}",
             f"{eff['en']['tokens_per_char']:.3f}", f"{eff['example_tokens']} tokens"]
    if bold:
        cells = [f"**{c}**" for c in cells]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/bench/tokenizer")
    args = parser.parse_args()
    print("| tokenizer | vocab | ko tokens/char | ko tokens/word | en tokens/char | \"안녕하세요, 오늘은 날씨가 좋네요\" |")
    print("|---|---|---|---|---|---|")
    for label, rel, extra in BASES:
        report = run(label, args.shared / "tokenizers" / rel, extra, args.out.resolve())
        eff = report["efficiency"]
        print(row(label, report["base_vocab_size"], eff["base"]), flush=True)
        print(row(f"{label} + Korean", report["vocab_size"], eff["expanded"], bold=label == "Llama-2"), flush=True)


if __name__ == "__main__":
    main()
