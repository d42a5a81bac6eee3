"""Normalization: Hangul (NFD syllables, split compatibility jamo vs emoticons), HTML tags and
entities, control characters, whitespace; every switch; idempotence on real text."""

from __future__ import annotations

import unicodedata

import pytest

from kopretrain.config.data_stages import NormalizeConfig
from kopretrain.data.normalize import compose_jamo, normalize_text

CFG = NormalizeConfig()


def test_decomposed_syllables_are_recomposed():
    nfd = unicodedata.normalize("NFD", "한국어 문장")
    assert len(nfd) > len("한국어 문장")
    assert normalize_text(nfd, CFG) == "한국어 문장"


@pytest.mark.parametrize("text,expected", [
    ("ㅅㅐㄲㅣ", "새끼"),                 # syllables typed apart to dodge a filter
    ("ㄱㅐ소리", "개소리"),
    ("ㅎㅏㄴ글", "한글"),                 # with a final consonant
    ("ㅂㅅㄱㅣㅈㅏ", "ㅂㅅ기자"),          # an abbreviation stays, the syllables join
    ("ㄸㅏㄸ", "따ㄸ"),                   # ㄸ cannot end a syllable
    ("ㅋㅋㅋㅋ", "ㅋㅋㅋㅋ"),             # emoticons and abbreviations stay
    ("ㅠㅠ", "ㅠㅠ"),
    ("ㅎㅎㅠㅠㅠ", "ㅎㅎㅠㅠㅠ"),         # the vowel repeats: crying, not 휴
    ("ㅉㅉㅜㅜㅜ", "ㅉㅉㅜㅜㅜ"),
    ("ㅡㅅㅡ", "ㅡㅅㅡ"),                 # a face: vowel jamo on both sides
    ("ㅡㄷㅡ mbc", "ㅡㄷㅡ mbc"),
    ("ㅇㅋ", "ㅇㅋ"),
    ("ㄷㅏㅋㅋ", "다ㅋㅋ"),
])
def test_compatibility_jamo(text, expected):
    assert compose_jamo(text) == expected


def test_html_tags_entities_and_scripts():
    html = ('<div class="a">첫 줄<br/>둘째 줄</div><script>var x = "<b>";</script><!-- 주석 -->'
            '<p>A &amp; B &lt;b&gt; &#39;따옴표&#39;&nbsp;끝</p><style>p{}</style>')
    # Block tags break lines; two in a row (</div><p>) leave a paragraph break.
    assert normalize_text(html, CFG) == "첫 줄\n둘째 줄\n\nA & B <b> '따옴표' 끝"
    # Not tags: comparisons, hearts, placeholders-to-be.
    assert normalize_text("a < b > c <3 x<y", CFG) == "a < b > c <3 x<y"
    assert normalize_text("if x<y and z>w then <책 제목> <SPAN CLASS=x>끝</SPAN>", CFG) == "if x<y and z>w then <책 제목> 끝"


def test_control_chars_and_whitespace():
    text = " 가\x00나\x07다\u200b라\ufeff \t\t마\r\n\r\n\r\n\r\n바  \u3000사\xa0아 \n 자 "
    assert normalize_text(text, CFG) == "가나다라 마\n\n바 사 아\n자"
    assert normalize_text("\n\n 제1조\x0c제2조 \u2028끝\n", CFG) == "제1조\n제2조\n끝"  # page breaks keep words apart
    assert normalize_text("abc\n", CFG) == "abc"


def test_switches_turn_steps_off():
    off = NormalizeConfig(unicode_nfc=False, compose_compat_jamo=False, strip_html=False, unescape_entities=False,
                          remove_control_chars=False, normalize_whitespace=False)
    text = unicodedata.normalize("NFD", "한") + " ㄱㅏ <b>&amp;</b>\x00  "
    assert normalize_text(text, off) == text
    assert normalize_text(text, NormalizeConfig(strip_html=False)) == "한 가 <b>&</b>"
    assert normalize_text(text, NormalizeConfig(compose_compat_jamo=False)) == "한 ㄱㅏ &"


def test_idempotent_on_real_noisy_text(repo_root):
    lines = (repo_root / "data/ko/news_comments.txt").read_text(encoding="utf-8").splitlines()
    once = [normalize_text(line, CFG) for line in lines]
    assert [normalize_text(line, CFG) for line in once] == once
    assert sum(a != b for a, b in zip(lines, once)) >= 20  # it does change real text (spaces, split jamo)
    assert all(unicodedata.is_normalized("NFC", line) for line in once)


@pytest.mark.parametrize("text, expected", [
    ("라마 2의 <unk> 와 </s> 그리고 <s> 를", "라마 2의 <unk> 와 </s> 그리고 <s> 를"),  # tokens written as text
    ("문서 끝</s>", "문서 끝</s>"),
    ("<s>앞 공백", "<s>앞 공백"),
    ("가격 <s>만원</s> 9천원", "가격 만원 9천원"),  # strikethrough pair: a tag, content kept
    ("<S>a</S> <s>b</s>", "a b"),
    ('<s class="old">x</s> y', "x y"),
    ("</s> 다음 <s>취소</s>", "</s> 다음 취소"),
    ("<strike>x</strike> <del>y</del>", "x y"),
])
def test_bos_eos_strings_stay_text_strikethrough_pairs_go(text, expected):
    assert normalize_text(text, NormalizeConfig()) == expected
