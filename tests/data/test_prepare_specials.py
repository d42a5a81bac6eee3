"""Issue 8 end to end: `prepare` with Polyglot-Ko's real tokenizer.json on documents that write
special-token strings ("<|endoftext|>" is Polyglot-Ko's EOS) packs exactly one EOS per document,
and the packed stream is each clean document encoded as plain text followed by EOS."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from kopretrain.config.common import TrackingConfig
from kopretrain.config.data_stages import SourceConfig
from kopretrain.config.prepare import PrepareConfig, TokenizeConfig
from kopretrain.data.command import run_prepare
from tests.data.test_pipeline import _korean_docs

pytestmark = pytest.mark.ray

ISSUE_DOC = "문서 사이에 <|endoftext|> 를 넣는다는 설명입니다."
WRITTEN = ["<|endoftext|>", "<|end_of_text|>", "<|begin_of_text|>", "<unk>", "<|pad|>", "<|sep|>", "</s>",
           "<unk> 와 </s> 그리고 <s> 를"]  # unpaired <s>/</s> are not strikethrough tags: normalize keeps them


def test_prepare_packs_one_eos_per_document_whatever_the_text_says(ray_local, shared_dir, tmp_path):
    tokenizer_json = shared_dir / "tokenizers/polyglot-ko/tokenizer.json"
    ko = _korean_docs(24)
    docs = [ISSUE_DOC + " " + ko[0]] + [f"{a} {WRITTEN[i % len(WRITTEN)]} {b}" for i, (a, b) in enumerate(zip(ko[1::2], ko[2::2]))]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    out, tokens = tmp_path / "out", tmp_path / "tokens"
    cfg = PrepareConfig(sources=[SourceConfig(name="docs", path=str(tmp_path / "docs.jsonl"), domain="ko")],
                        output_dir=str(out), tracking=TrackingConfig(enabled=False), tokens_dir=str(tokens),
                        tokenizer=TokenizeConfig(path=str(tokenizer_json)), seq_len=16, num_tokens_per_shard=16 * 8)
    report = run_prepare(cfg, out)

    clean = [t for f in sorted((out / "clean").glob("part-*.parquet")) for t in pq.read_table(f).column("text").to_pylist()]
    assert sorted(clean) == sorted(docs) and report["tokens"]["ko"]["num_docs"] == len(docs)  # nothing dropped or changed
    index = json.loads((tokens / "ko" / "index.json").read_text())
    packed = np.concatenate([np.fromfile(tokens / "ko" / s["file"], dtype=index["dtype"]) for s in index["shards"]]).tolist()
    # reference: Polyglot-Ko without its added tokens (plain text), EOS 1 after each document, in clean order
    plain = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    plain = Tokenizer.from_str(json.dumps({**plain, "added_tokens": [], "post_processor": None}))
    stream = [i for d in clean for i in plain.encode(d, add_special_tokens=False).ids + [1]]
    assert index["eos_id"] == 1 and stream.count(1) == len(docs)
    assert packed == stream[: index["num_tokens"]] and index["num_tokens"] + index["num_tokens_dropped"] == len(stream)
    eos_in_tail = stream[index["num_tokens"]:].count(1)
    assert packed.count(1) == len(docs) - eos_in_tail  # one EOS per document: the issue's document is not cut in two
