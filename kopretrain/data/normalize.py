"""Normalize stage of `prepare`: one canonical form of the same text, before filters and PII.

    normalize_text("ㅅㅐㄲㅣ<br>&amp; 가\u1100\u1161", NormalizeConfig())  ->  "새끼\n& 가가"

Steps, in order (each switchable in NormalizeConfig):
1. HTML: comments and <script>/<style> bodies removed, block tags -> newline, other tags removed;
   entities decoded after that (so "&lt;b&gt;" stays visible text "<b>"). `<s>`/`</s>` are tags
   only as a pair "<s>x</s>" (-> "x") or with attributes: alone they are the special-token strings
   of Llama-style tokenizers written as text ("<unk> 와 </s> 그리고 <s> 를" stays as is).
2. Control characters: C0/C1 other than tab/newline, DEL, zero-width space, BOM removed;
   vertical separators (form feed, NEL, U+2028/2029) become newlines so words stay apart.
3. Unicode NFC: recomposes decomposed Hangul (conjoining jamo U+1100.. from NFD sources).
4. Compatibility jamo (U+3131..): NFC leaves "ㄱㅏ" alone, and most such jamo in Korean web text
   are emoticons and abbreviations that must stay ("ㅋㅋ", "ㅠㅠ", "ㅡㅡ", "ㅇㅋ"). But a
   consonant directly followed by a vowel is a syllable typed apart, usually to dodge a word
   filter ("ㅅㅐㄲㅣ", "ㄱㅐ소리"; 38 of 20,000 shipped news comments). Joining those gives the
   tokenizer and the bad-word filter the real word. A pair stays apart when it looks like an
   emoticon: the vowel repeats ("ㅎㅠㅠ"), or a vowel jamo is on either side ("ㅡㅅㅡ").
5. Whitespace: CRLF/CR -> LF, Unicode spaces -> ' ', runs of spaces collapsed, spaces at line
   ends removed, 3+ newlines -> 2 (paragraphs survive), the whole text stripped.

Pure Python, regexes compiled once; each step is skipped by a cheap check when it cannot apply.
"""

from __future__ import annotations

import html
import re
import unicodedata

from kopretrain.config.data_stages import NormalizeConfig

_HTML_HINT = re.compile(r"<[A-Za-z!/]")
_HTML_DROP = re.compile(r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_HTML_BLOCK = re.compile(r"</?(?:br|p|div|li|ul|ol|tr|table|h[1-6]|blockquote|pre|hr|section|article|header|footer|dd|dt)\b[^<>]*>", re.I)
# Only real HTML element names: "x<y and z>w" in math or code is text, not a tag.
_TAG_NAMES = ("a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption "
              "center cite code col colgroup data dd del details dfn dialog div dl dt em embed fieldset figcaption "
              "figure font footer form frame h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label "
              "legend li link main map mark meta meter nav noscript object ol optgroup option output p param picture "
              "pre progress q rp rt ruby samp section select small source span strike strong sub summary sup svg "
              "table tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr").split()
_HTML_TAG = re.compile(r"</?(?:" + "|".join(sorted(_TAG_NAMES, key=len, reverse=True)) + r")(?![A-Za-z0-9:-])(?:\s[^<>]*)?/?>"
                       r"|<![A-Za-z][^<>]*>", re.I)
# <s> (strikethrough) is also how Llama/SentencePiece spell BOS/EOS ("<s>", "</s>") in text about
# tokenizers: a tag only as a pair "<s>...</s>" (no <s>/</s> between; the content stays) or with attributes.
_S_PAIR = re.compile(r"<s(?:\s[^<>]*)?>((?:(?!</?s[\s>]).)*?)</s\s*>", re.S | re.I)
_S_ATTRS = re.compile(r"<s\s[^<>]*>", re.I)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b\ufeff]")
_VERTICAL = re.compile("[\x0b\x0c\x85\u2028\u2029]")  # form feed (page breaks in the law text), NEL, LS, PS

# Compatibility jamo: consonants ㄱ..ㅎ (U+3131-314E), vowels ㅏ..ㅣ (U+314F-3163).
_C, _V = "\u3131-\u314e", "\u314f-\u3163"
_JAMO_HINT = re.compile(f"[{_C}][{_V}]")
_JAMO_SYLLABLE = re.compile(f"([{_C}])([{_V}])(?![{_V}])([{_C}](?![{_C}{_V}]))?")
_LEADS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_VOWELS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_TAILS = " ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ"  # index 0 = no final consonant

_CRLF = re.compile(r"\r\n?")
_SPACES = re.compile("[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_LINE_EDGES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
_NEEDS_SPACE_WORK = re.compile("[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\r]|  | \n|\n |\n\n\n")


def _compose(m: re.Match, last_end: list[int]) -> str:
    start = m.start()
    if start and start != last_end[0] and "\u314f" <= m.string[start - 1] <= "\u3163":
        return m.group(0)  # a vowel jamo before the consonant (not one we just joined): "ㅡㅅㅡ"
    lead, vowel, tail = m.group(1), m.group(2), m.group(3)
    li, vi = _LEADS.find(lead), _VOWELS.find(vowel)
    if li < 0:  # a consonant cluster like ㄳ cannot start a syllable
        return m.group(0)
    last_end[0] = m.end()
    ti = _TAILS.find(tail) if tail else 0
    if ti <= 0:  # no tail, or one (ㄸ ㅃ ㅉ) that cannot end a syllable: keep it separate
        return chr(0xAC00 + (li * 21 + vi) * 28) + (tail or "")
    return chr(0xAC00 + (li * 21 + vi) * 28 + ti)


def compose_jamo(text: str) -> str:
    """Join consonant+vowel(+final) compatibility jamo into syllables, sparing emoticons."""
    if not _JAMO_HINT.search(text):
        return text
    last_end = [-1]
    return _JAMO_SYLLABLE.sub(lambda m: _compose(m, last_end), text)


def strip_html(text: str) -> str:
    """Remove tags (block tags become newlines), comments and script/style bodies."""
    if not _HTML_HINT.search(text):
        return text
    text = _HTML_DROP.sub("", text)
    text = _HTML_BLOCK.sub("\n", text)
    text = _S_ATTRS.sub("", _S_PAIR.sub(r"\1", text))
    return _HTML_TAG.sub("", text)


def normalize_whitespace(text: str) -> str:
    if not _NEEDS_SPACE_WORK.search(text):
        return text.strip() if text[:1].isspace() or text[-1:].isspace() else text
    text = _CRLF.sub("\n", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """The normalized text (may be empty: the caller rejects it)."""
    if cfg.strip_html:
        text = strip_html(text)
    if cfg.unescape_entities and "&" in text:
        text = html.unescape(text)
    if cfg.remove_control_chars:
        text = _VERTICAL.sub("\n", text)
        text = _CONTROL.sub("", text)
    if cfg.unicode_nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if cfg.compose_compat_jamo:
        text = compose_jamo(text)
    if cfg.normalize_whitespace:
        text = normalize_whitespace(text)
    return text
