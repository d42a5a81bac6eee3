"""tokenizer.json vs tokenizer.model on NFKC (nmt_nfkc) bases with a user-defined symbol: compatibility
jamo typed apart are composed as SentencePiece composes them ("ㄱㅣㅈㅏ" -> "▁기" "자", where the
Precompiled normalizer of `tokenizers` alone gave "▁" <0xE1>... "ᄌ" "ᅡ"). Right values: sentencepiece's
pieces. The one difference left, a precomposed syllable followed by a conjoining final jamo ("가\\u11a8",
which SentencePiece leaves apart and NFC joins), is asserted as it is, so README's claim stays exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from kopretrain.tokenizer.hf_save import save_spm_dir
from tests.tokenizer.spm_models import english_lines, train_model

TEXTS = ["ㄱㅣㅈㅏ", "ㅅㅐㄲㅣ ㄱㅐ소리", "ㄱㅣ ㅈㅏ ㅋㅋ ㅎㅏㅎㅏ ㄱ ㅣ ㅠㅠ", "기자 <mask> 기사", "ᄀ\u1161\u11a8 각",
         "Ａ１ ﬁ ① Å", "......." , "a <mask>ㄱㅣ", "  space  runs\n줄"]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def nfkc_base(request, shared_dir, repo_root, tmp_path_factory):
    ko = [line for line in (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    proto = train_model(english_lines(shared_dir, "botchan/botchan.txt", 3000) + ko[:2000], vocab_size=2000,
                        model_type=request.param, rule="nmt_nfkc", remove_extra_whitespaces=True,
                        user_defined_symbols=("<mask>",))
    out = save_spm_dir(proto, tmp_path_factory.mktemp(request.param))
    return spm.SentencePieceProcessor(model_file=str(Path(out) / "tokenizer.model")), Tokenizer.from_file(str(out / "tokenizer.json"))


def test_nfkc_base_tokenizer_json_gives_sentencepiece_pieces(nfkc_base):
    sp, tok = nfkc_base
    assert sp.encode("ㄱㅣㅈㅏ", out_type=str) == ["▁기", "자"]
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False).tokens == sp.encode(text, out_type=str), text


def test_known_difference_syllable_then_conjoining_final(nfkc_base):
    sp, tok = nfkc_base
    text = "가\u11a8"
    assert sp.encode(text, out_type=str)[0] != "▁각" and "각" in "".join(tok.encode(text, add_special_tokens=False).tokens)
