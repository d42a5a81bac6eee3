"""How data/smoke/ was built (kept for provenance; `experiment=smoke` uses the committed files).

    .venv/bin/python data/smoke/build.py

- `tokenizer/`: a SentencePiece BPE of 2,000 pieces with byte fallback (any Korean syllable
  still encodes, as bytes), identity normalisation, trained on Korean and English lines of the
  shipped sample (data/ko, data/en); converted to a Hugging Face directory (tokenizer.json +
  tokenizer_config.json, with the SentencePiece `tokenizer.model` beside it).
- `tokens/ko/`, `tokens/en/`: packed training sequences in the kopretrain-packed-v1 format
  (kopretrain/data/packed.py): documents encoded with that tokenizer (no BOS), each followed
  by EOS, cut into rows of 128 tokens; 400 Korean and 300 English rows.

It uses sentencepiece and packed.py directly, not `kopretrain prepare`, so that the smoke
recipe of `train` works from a fresh clone with no other step. Deterministic: the same
sample gives the same files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
sys.path.insert(0, str(DATA.parent))

VOCAB_SIZE = 2000
SEQ_LEN = 128
NUM_SEQUENCES = {"ko": 400, "en": 300}


def korean_docs() -> list[str]:
    docs = []
    with open(DATA / "ko/korsts_train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            docs.append(row["sentence1"])
    with open(DATA / "ko/chatbot.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            docs.append(f"{row['Q']} {row['A']}")
    return [d.strip() for d in docs if d and d.strip()]


def english_docs() -> list[str]:
    docs = [json.loads(line)["text"] for line in (DATA / "en/tinyshakespeare.jsonl").read_text(encoding="utf-8").splitlines()]
    docs += (DATA / "en/botchan.txt").read_text(encoding="utf-8").splitlines()
    return [d.strip() for d in docs if d.strip()]


def build_tokenizer(ko: list[str], en: list[str], out: Path) -> None:
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        # Sentences from an iterator and the model into memory: no temp path ends up inside
        # the model's trainer spec, so the build is byte-for-byte reproducible.
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(ko[:6000] + en[:4000]), model_writer=model, vocab_size=VOCAB_SIZE,
            model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
            character_coverage=0.9995, num_threads=1, minloglevel=2,
        )
        (Path(tmp) / "tokenizer.model").write_bytes(model.getvalue())
        shutil.rmtree(out, ignore_errors=True)
        LlamaTokenizer.from_pretrained(tmp).save_pretrained(str(out))
        (out / "tokenizer.model").write_bytes(model.getvalue())


def build_tokens(domain: str, docs: list[str], tokenizer_dir: Path, out: Path) -> None:
    from kopretrain.data.packed import pack, token_dtype, write_index, write_shard
    from kopretrain.tokenizer.load import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    rows, _ = pack(tok.encode_batch(docs), SEQ_LEN, tok.eos_id)
    rows = rows[: NUM_SEQUENCES[domain]]
    assert len(rows) == NUM_SEQUENCES[domain], f"not enough {domain} text"
    shutil.rmtree(out, ignore_errors=True)
    dtype = token_dtype(tok.vocab_size)
    shard = write_shard(out, 0, rows, dtype)
    write_index(out, seq_len=SEQ_LEN, dtype=dtype, eos_id=tok.eos_id, vocab_size=tok.vocab_size,
                tokenizer_fingerprint=tok.fingerprint, shards=[shard], domain=domain,
                built_by="data/smoke/build.py")


def main() -> None:
    ko, en = korean_docs(), english_docs()
    build_tokenizer(ko, en, HERE / "tokenizer")
    # Train on the later part of each list, so the tokenizer's corpus and the tokens differ a little.
    build_tokens("ko", ko[6000:], HERE / "tokenizer", HERE / "tokens/ko")
    build_tokens("en", en[4000:], HERE / "tokenizer", HERE / "tokens/en")
    for path in sorted(HERE.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(HERE)}\t{path.stat().st_size}")


if __name__ == "__main__":
    main()
