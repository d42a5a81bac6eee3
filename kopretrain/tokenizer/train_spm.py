"""Train SentencePiece models in memory: the Korean model whose pieces are merged into a base,
and (for the demo, which has no pretrained model) a small English base tokenizer.

Training reads the sampled documents split into lines (SentencePiece is line-based; a line
longer than `max_sentence_bytes` is skipped by the trainer) and at most
`input_sentence_size` of them, so memory stays bounded. Normalization is the identity with
whitespace kept as is (as in Llama-2), so that decode(encode(x)) == x; the same seed and
sample give the same model.

    proto = train_sentencepiece(texts, SpmTrainConfig(vocab_size=16000))
    base_dir = build_base_tokenizer(english_texts, 4000, "outputs/base")   # an HF directory

Pure sentencepiece; tested in tests/tokenizer/test_train_spm.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Iterator

from sentencepiece import sentencepiece_model_pb2 as pb

from kopretrain.config.tokenizer import SpmTrainConfig
from kopretrain.errors import UserError


def _lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                yield line


def train_sentencepiece(texts: Iterable[str], cfg: SpmTrainConfig) -> pb.ModelProto:
    """Train a SentencePiece model on `texts` with `cfg`; returns its ModelProto."""
    import sentencepiece as spm

    spm.set_random_generator_seed(cfg.seed)
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts),
            model_writer=out,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=cfg.max_sentence_bytes,
            num_threads=cfg.num_threads,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            hard_vocab_limit=False,  # a small sample may not support vocab_size pieces: take what it has
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise UserError(f"SentencePiece training failed: {' '.join(str(exc).split())}") from None
    proto = pb.ModelProto()
    proto.ParseFromString(out.getvalue())
    return proto


def read_texts(texts_or_files: Iterable[str] | str | Path) -> list[str]:
    """Accept a list of documents, or a path / list of paths of corpus files."""
    from kopretrain.config.tokenizer import SampleConfig
    from kopretrain.tokenizer.corpus import sample_corpus

    if isinstance(texts_or_files, (str, Path)):
        return sample_corpus([str(texts_or_files)], SampleConfig(domain="en")).texts
    items = list(texts_or_files)
    if items and all(isinstance(t, Path) for t in items):
        return sample_corpus([str(t) for t in items], SampleConfig(domain="en")).texts
    return items


def build_base_tokenizer(
    texts_or_files: Iterable[str] | str | Path,
    vocab_size: int,
    output_dir: str | Path,
    model_type: str = "bpe",
    *,
    byte_fallback: bool = True,
    seed: int = 0,
) -> Path:
    """Train a SentencePiece tokenizer (Llama-style: BOS <s>, EOS </s>, byte fallback) on
    English text and save it as an HF tokenizer directory (tokenizer.model + tokenizer.json).

    `texts_or_files`: documents, or a corpus path (file, dir, glob) / list of Paths.
    """
    from kopretrain.tokenizer.hf_save import save_spm_dir

    texts = read_texts(texts_or_files)
    if not texts:
        raise UserError("no text to train the base tokenizer on")
    cfg = SpmTrainConfig(model_type=model_type, vocab_size=vocab_size, byte_fallback=byte_fallback,
                         character_coverage=1.0, seed=seed)
    return save_spm_dir(train_sentencepiece(texts, cfg), Path(output_dir))
