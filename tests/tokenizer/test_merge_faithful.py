"""Issue 8 §2: merging an existing SentencePiece model (`extra_model`) is faithful. By default all
its new pieces arrive, in its order, whatever the language; its user-defined symbols arrive whole;
pieces written in a form the base's normalizer never produces are added in the base's form or
reported with the reason. Models are trained here (English text, Korean with user-defined
symbols, identity vs NFKC) and merged into the real Llama-2 tokenizer.model."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import Tokenizer

from kopretrain.config.tokenizer import TokenizerCommandConfig
from kopretrain.tokenizer.expand import INFO_FILE, expand, resolve_base
from kopretrain.tokenizer.merge_sentencepiece import merge_pieces, read_model
from kopretrain.tokenizer.select import has_hangul
from kopretrain.tokenizer.spm_normalize import piece_form
from tests.tokenizer.spm_models import english_lines, train_model, write_model

Piece = pb.ModelProto.SentencePiece
SYMBOLS = ("카카오톡", "유튜브", "넷플릭스")


@pytest.fixture(scope="module")
def llama2_path(shared_dir):
    return shared_dir / "tokenizers/llama2/tokenizer.model"


def _merge(base_path, extra, texts, out, **cfg):
    """`expand` as `kopretrain tokenizer base=... extra_model=...` runs it; no warning allowed."""
    extra_path = write_model(extra, out.parent / f"{out.name}-extra.model")
    config = TokenizerCommandConfig(base=str(base_path), extra_model=str(extra_path), **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = expand(resolve_base(base_path), texts, config, out)
    assert json.loads((out / INFO_FILE).read_text())["merge"] == info["merge"]
    return info, read_model(out / "tokenizer.model")


def _base_unchanged(base: pb.ModelProto, merged: pb.ModelProto) -> None:
    for a, b in zip(base.pieces, merged.pieces):
        assert (a.piece, a.score, a.type) == (b.piece, b.score, b.type)


def _regular_and_symbols(proto: pb.ModelProto) -> tuple[list[str], list[str]]:
    return ([p.piece for p in proto.pieces if p.type == Piece.NORMAL],
            [p.piece for p in proto.pieces if p.type == Piece.USER_DEFINED])


@pytest.fixture(scope="module")
def english_model(shared_dir):
    """20,000 pieces (the README's example): WikiText-2, Tiny Shakespeare and Botchan."""
    lines = [line for name in ("wikitext-2/valid.txt", "tinyshakespeare/input.txt", "botchan/botchan.txt")
             for line in english_lines(shared_dir, name, 100_000)]
    return train_model(lines, vocab_size=20_000)


def test_all_new_pieces_of_an_english_model_arrive_in_its_order(llama2_path, english_model, shared_dir, tmp_path):
    base = read_model(llama2_path)
    info, merged = _merge(llama2_path, english_model, [], tmp_path / "out")
    in_base = {p.piece for p in base.pieces}
    regular, _ = _regular_and_symbols(english_model)
    new = [p for p in regular if p not in in_base]
    assert len(english_model.pieces) == 20_000 and len(new) > 9000 and not any(has_hangul(p) for p in new)
    report = info["merge"]
    assert report["mode"] == "all" and report["num_unreachable"] == 0 and report["num_added_parts"] == 0
    assert report["num_added_regular"] == len(new) == info["num_added"]
    assert report["num_skipped_in_base"] == len(regular) - len(new)
    assert report["not_merged_types"] == {"unknown": 1, "control": 2, "byte": 256}
    _base_unchanged(base, merged)
    assert [p.piece for p in merged.pieces[32000:32000 + len(new)]] == new, "the model's own order"
    assert len(merged.pieces) % 64 == 0 and len(merged.pieces) - 32000 - len(new) == info["num_placeholders"] < 64
    scores = [p.score for p in merged.pieces[32000:32000 + len(new)]]
    assert all(a > b for a, b in zip(scores, scores[1:])), "merge priority follows the model's order"
    # The new pieces are used: English text now needs fewer tokens, and round trips exactly.
    old, now = spm.SentencePieceProcessor(model_file=str(llama2_path)), spm.SentencePieceProcessor(model_file=str(tmp_path / "out/tokenizer.model"))
    text = " ".join(english_lines(shared_dir, "botchan/botchan.txt", 200))
    assert len(now.encode(text)) < len(old.encode(text)) and now.decode(now.encode(text)) == text
    assert Tokenizer.from_file(str(tmp_path / "out/tokenizer.json")).encode(text, add_special_tokens=False).ids == now.encode(text)


def test_a_ranked_subset_only_when_num_new_tokens_is_set(llama2_path, english_model, shared_dir, tmp_path):
    texts = english_lines(shared_dir, "tinyshakespeare/input.txt", 5000)
    info, merged = _merge(llama2_path, english_model, texts, tmp_path / "out", num_new_tokens=100, require_hangul=False)
    assert info["merge"]["mode"] == "most_frequent" and info["num_added"] == 128 and len(merged.pieces) == 32128
    info, _ = _merge(llama2_path, english_model, texts, tmp_path / "hangul", num_new_tokens=100)
    assert info["num_added"] == 0 and info["merge"]["num_without_hangul"] > 1000 and info["vocab_size"] == 32000


@pytest.fixture(scope="module")
def korean_with_symbols(ko_texts):
    return train_model(ko_texts[:4000], vocab_size=3000, user_defined_symbols=SYMBOLS)


def test_user_defined_symbols_arrive_whole(llama2_path, korean_with_symbols, ko_texts, tmp_path):
    from transformers import AutoTokenizer

    base = read_model(llama2_path)
    info, merged = _merge(llama2_path, korean_with_symbols, ko_texts[:4000], tmp_path / "out")
    _base_unchanged(base, merged)
    assert info["num_user_defined"] == info["merge"]["num_added_user_defined"] == 3
    assert [(p.piece, p.type) for p in merged.pieces[32000:32003]] == [(s, Piece.USER_DEFINED) for s in SYMBOLS]
    out = tmp_path / "out"
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(out)
    kakao = sp.piece_to_id("카카오톡")
    for text in ("카카오톡", "카카오톡으로 보내줘", "어제 유튜브랑 넷플릭스를 봤어", "<카카오톡>", " 카카오톡 ", "hello카카오톡world"):
        ids = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False).ids == ids == hf(text, add_special_tokens=False)["input_ids"]
        assert sp.decode(ids) == tok.decode(ids) == hf.decode(ids) == text
    assert sp.encode("카카오톡", out_type=str) == ["▁", "카카오톡"] and kakao in sp.encode("카카오톡으로")
    old = spm.SentencePieceProcessor(model_file=str(llama2_path))
    assert len(old.encode("카카오톡")) > 2, "Llama-2 alone splits it"


def test_normalization_difference_is_handled_and_reported(shared_dir, ko_texts, tmp_path):
    """An NFKC base and a Korean model trained with the identity rule: compatibility jamo (ㅋ, ㅠ)
    and the ellipsis "…" are strings the base never produces. They arrive in the base's form, or are
    reported with the reason; every added piece is one the base's normalizer can produce."""
    nfkc_base = train_model(english_lines(shared_dir, "botchan/botchan.txt"), vocab_size=1500, rule="nmt_nfkc")
    base_path = write_model(nfkc_base, tmp_path / "nfkc-base.model")
    korean = train_model(ko_texts[:4000], vocab_size=3000, user_defined_symbols=("ㅋㅋ", "카카오톡"))
    info, merged = _merge(base_path, korean, ko_texts[:4000], tmp_path / "out")
    report = info["merge"]
    assert report["normalizer_differences"]["name"] == ["nmt_nfkc", "identity"]
    adjusted = dict(report["normalization_adjusted"])
    assert adjusted["ㅠ"] == "ᅲ" and adjusted["…"] == "..." and report["num_normalization_adjusted"] >= len(adjusted) > 0
    reasons = {u["piece"]: u["reason"] for u in report["unreachable"]}
    assert "normalizer changes" in reasons["ㅋㅋ"], "a symbol NFKC changes is reported, not added"
    assert all(reasons.values()) and report["num_unreachable"] == sum(report["unreachable_by_reason"].values())
    form_of = piece_form(nfkc_base, korean)
    added = [p.piece for p in merged.pieces[len(nfkc_base.pieces):] if p.type != Piece.UNUSED]
    assert added == info["added_tokens"] and all(form_of(p)[0] == p for p in added), "no dead pieces"
    assert "ㅠ" not in added and "ᅲ" in added and "..." in added
    # Every piece of the model is accounted for.
    regular, symbols = _regular_and_symbols(korean)
    assert len(regular) + len(symbols) == (report["num_added_regular"] - report["num_added_parts"] + report["num_added_user_defined"]
                                           + report["num_skipped_in_base"] + report["num_unreachable"])
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "out/tokenizer.model"))
    tok = Tokenizer.from_file(str(tmp_path / "out/tokenizer.json"))
    for text in ("ㅋㅋㅋ 카카오톡 ㅠㅠ", "①항 ＡＢ 안녕하세요"):
        ids = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False).ids == ids
        assert set(sp.encode(text, out_type=str)) & set(adjusted.values()) or "①" in text


def test_identity_pieces_into_identity_llama2_need_no_adjustment(llama2_path, ko_texts):
    """The reverse direction: an NFKC model's pieces are all text an identity base can see."""
    nfkc_korean = train_model(ko_texts[:3000], vocab_size=2000, rule="nmt_nfkc")
    result = merge_pieces(read_model(llama2_path), nfkc_korean, Counter(), num_new_tokens=None)
    assert result.report["normalizer_differences"]["name"] == ["identity", "nmt_nfkc"]
    assert result.report["num_normalization_adjusted"] == 0 and result.report["num_unreachable"] == 0
