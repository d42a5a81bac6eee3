"""`kopretrain tokenizer` on an output directory that already holds a tokenizer: it overwrites,
and nothing of the earlier tokenizer stays (a stale tokenizer.model next to a new
tokenizer.json would be loaded instead of it). The base's own directory is refused."""

from __future__ import annotations

import shutil

import pytest

from kopretrain.config.common import TrackingConfig
from kopretrain.config.tokenizer import SampleConfig, SpmTrainConfig, TokenizerCommandConfig
from kopretrain.errors import UserError
from kopretrain.tokenizer.command import run_tokenizer


def _cfg(base, out) -> TokenizerCommandConfig:
    return TokenizerCommandConfig(base=str(base), output_dir=str(out), num_new_tokens=64,
                                  sample=SampleConfig(num_sample_docs=500), spm=SpmTrainConfig(vocab_size=1000),
                                  max_heldout_docs=20, tracking=TrackingConfig(enabled=False))


def test_rerun_overwrites_and_leaves_no_stale_file(shared_dir, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.model").write_bytes(b"an earlier SentencePiece tokenizer")
    (out / "notes.txt").write_text("mine\n")
    report = run_tokenizer(_cfg(shared_dir / "tokenizers/polyglot-ko", out), tmp_path / "run")
    assert not (out / "tokenizer.model").exists(), "a byte-level BPE result has no tokenizer.model"
    assert (out / "tokenizer.json").is_file() and (out / "notes.txt").read_text() == "mine\n"
    assert len(AutoTokenizer.from_pretrained(out)) == report["vocab_size"]


def test_the_base_directory_is_not_an_output(repo_root, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(repo_root / "data/smoke/tokenizer", base)
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    with pytest.raises(UserError, match="^output_dir: .* holds the base tokenizer"):
        run_tokenizer(_cfg(base, base), tmp_path / "run")
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before
