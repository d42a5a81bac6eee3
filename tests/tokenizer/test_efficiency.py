"""Token efficiency counts and the printed table."""

from __future__ import annotations

from kopretrain.tokenizer.efficiency import EXAMPLE_SENTENCE, format_table, measure, measure_all, ratios


class CharTokenizer:
    """One token per character: makes the expected numbers obvious."""

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]


class WordTokenizer:
    def encode_batch(self, texts):
        return [t.split() for t in texts]


def test_measure_counts_chars_words_tokens():
    m = measure(CharTokenizer(), ["한국어 문장", "ab c"], batch_size=1)
    assert (m["num_docs"], m["num_chars"], m["num_words"], m["num_tokens"]) == (2, 10, 4, 10)
    assert m["tokens_per_char"] == 1.0 and m["tokens_per_word"] == 2.5


def test_table_and_ratios():
    table = measure_all({"base": CharTokenizer(), "expanded": WordTokenizer()}, {"ko": ["가나 다라 마바"], "en": ["a b"]})
    assert table["base"]["example_tokens"] == len(EXAMPLE_SENTENCE) and table["expanded"]["example_tokens"] == 4
    assert ratios(table) == {"ko": 8 / 3, "en": 3 / 2}
    text = format_table(table, {"base": 10, "expanded": 20})
    lines = text.splitlines()
    assert "ko tok/char" in lines[0] and lines[1].split()[:2] == ["base", "10"] and lines[2].split()[-1] == "4"
