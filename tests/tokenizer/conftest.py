"""Fixtures for the tokenizer tests: the shipped Korean sample, held-out text, text cases, and
expanded tokenizers built once per session (real sentencepiece / tokenizers / transformers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kopretrain.config.tokenizer import SampleConfig, TokenizerCommandConfig

# Text that must survive decode(encode(x)) == x; the last three have no Korean at all.
CASES = {
    "korean": "안녕하세요, 오늘은 날씨가 좋네요. 대한민국 헌법 제1조 ①항을 보면 알 수 있습니다.",
    "mixed": "오늘 meeting은 3시에 Zoom으로 합니다 (PR #42 리뷰 포함, deadline은 금요일).",
    "emoji": "좋아요 👍🏽❤️ ㅋㅋㅋㅋ ㅠㅠ 🇰🇷 최고!!",
    "hanja": "大韓民國 憲法 第1條 대한민국은 民主共和國이다.",
    "whitespace": "  앞 공백\t탭\n\n줄바꿈   여러  칸  \r\n끝 ",
    "english": "The quick brown fox jumps over the lazy dog. It's 3:45 p.m., isn't it?",
    "code": "def area(r: float) -> float:\n    return 3.14159 * r ** 2  # TODO: math.pi\n\tprint({'a': [1, 2]})\n",
    "other_scripts": "中文字符测试 日本語のテキスト Ελληνικά 😀 — “quotes” …",
}
NON_KOREAN = ("english", "code", "other_scripts")


@pytest.fixture(scope="session")
def ko_texts(repo_root) -> list[str]:
    from kopretrain.tokenizer.corpus import sample_corpus

    return sample_corpus([str(repo_root / "data/ko")], SampleConfig()).texts


@pytest.fixture(scope="session")
def heldout(repo_root) -> dict[str, list[str]]:
    from kopretrain.eval.heldout import read_heldout

    return {d: read_heldout(repo_root / f"data/heldout/{d}.txt") for d in ("ko", "en")}


@pytest.fixture(scope="session")
def llama2_expanded(shared_dir, ko_texts, tmp_path_factory) -> tuple[Path, Path, dict]:
    """Llama-2's tokenizer.model expanded with the default config on the shipped Korean sample."""
    from kopretrain.tokenizer.expand import expand, resolve_base

    base = shared_dir / "tokenizers/llama2/tokenizer.model"
    out = tmp_path_factory.mktemp("llama2-ko")
    info = expand(resolve_base(base), ko_texts, TokenizerCommandConfig(base=str(base)), out)
    return base, out, info


@pytest.fixture(scope="session")
def en_base_dir(repo_root, tmp_path_factory) -> Path:
    """A small English SentencePiece BPE base (the demo's kind of base), as an HF directory."""
    from kopretrain.tokenizer.train_spm import build_base_tokenizer

    return build_base_tokenizer(repo_root / "data/en", 1000, tmp_path_factory.mktemp("en-base"))
