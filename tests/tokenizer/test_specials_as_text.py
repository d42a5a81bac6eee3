"""Issue 8: a special-token string written inside a document stays text, for every form of every
tokenizer `load_tokenizer` accepts (real Llama-2, Mistral, Polyglot-Ko and Llama-3 files, the
shipped smoke tokenizer, an HF directory saved from Llama-2, transformers' SentencePiece backend).

Right values: no special id (and no unk id where the vocabulary has byte fallback) comes from the
text; the ids are those of the same tokenizer with its added tokens taken away (tokenizer.json
kinds) or SentencePiece's own (which spells control symbols out); every form of one tokenizer
gives the same ids; decode(encode(x)) == x.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from kopretrain.data.tokenize import encode_with_eos
from kopretrain.errors import UserError
from kopretrain.tokenizer.efficiency import measure
from kopretrain.tokenizer.load import load_tokenizer
from kopretrain.tokenizer.tiktoken_convert import tiktoken_to_json

ISSUE_DOC = "문서 사이에 <|endoftext|> 를 넣는다는 설명입니다."
DOCS = [
    ISSUE_DOC,
    "Llama-3 문서는 <|begin_of_text|>로 시작하고 <|end_of_text|>로 끝납니다.",
    "<unk> 토큰과 <s>, </s> 표기법",
    "</s>", "<s>", "<unk>", "<s>앞 공백</s>", "끝</s>", "<|endoftext|><|endoftext|>",
    "chat: <|start_header_id|>user<|end_header_id|> 안녕<|eot_id|>",
    "Polyglot: <|tel|> <|rrn|> <|acc|> <|pad|> <|sep|> <|unk|> <|endoftext|>",
]
SPACED = [" <s>앞 공백</s> ", "a  <unk>\t</s>\n\n<s>  b  "]
"""Whitespace around special strings (checked on Llama-2, whose SentencePiece model keeps all whitespace;
the smoke model removes extra whitespace, and its tokenizer.json does not copy that: not this issue)."""

# name -> (how to get the path, the tokenizer it is a form of)
FORMS = {
    "llama2.model": "llama2",
    "llama2.hf_dir": "llama2",
    "llama2.hf_dir/tokenizer.json": "llama2",
    "llama2.sentencepiece_backend": "llama2",
    "mistral.model": "mistral",
    "mistral.hf_dir": "mistral",
    "polyglot-ko.tokenizer.json": "polyglot-ko",
    "polyglot-ko.hf_dir": "polyglot-ko",
    "llama3.tiktoken": "llama3",
    "smoke.model": "smoke",
    "smoke.hf_dir": "smoke",
}
UNK_BY_BYTE_FALLBACK = {"llama2": 0, "mistral": 0, "smoke": 0}
"""SentencePiece vocabularies with byte fallback: their unk id never comes from text either."""


@pytest.fixture(scope="module")
def paths(shared_dir, repo_root, tmp_path_factory) -> dict[str, Path]:
    from kopretrain.tokenizer.hf_save import save_spm_dir

    t = shared_dir / "tokenizers"
    root = tmp_path_factory.mktemp("forms")
    out = {"llama2.model": t / "llama2/tokenizer.model", "mistral.model": t / "mistral/tokenizer.model.v1",
           "polyglot-ko.tokenizer.json": t / "polyglot-ko/tokenizer.json", "polyglot-ko.hf_dir": t / "polyglot-ko",
           "llama3.tiktoken": t / "llama3/tokenizer.model", "smoke.model": repo_root / "data/smoke/tokenizer/tokenizer.model",
           "smoke.hf_dir": repo_root / "data/smoke/tokenizer"}
    for name in ("llama2", "mistral"):
        proto = pb.ModelProto()
        proto.ParseFromString(out[f"{name}.model"].read_bytes())
        out[f"{name}.hf_dir"] = save_spm_dir(proto, root / name)  # what `kopretrain tokenizer` writes
    out["llama2.hf_dir/tokenizer.json"] = out["llama2.hf_dir"] / "tokenizer.json"
    backend = root / "llama2-spbackend"  # transformers' SentencePiece-backed class: load.py's non-Rust path
    backend.mkdir()
    (backend / "tokenizer.model").write_bytes(out["llama2.model"].read_bytes())
    (backend / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "SentencePieceBackend", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    out["llama2.sentencepiece_backend"] = backend
    return out


@pytest.fixture(scope="module")
def loaded(paths):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_tokenizer(paths[name])
        return cache[name]

    return get


@pytest.fixture(scope="module")
def heldout(repo_root) -> list[str]:
    ko = (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:40]
    en = (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()[:20]
    return ko + en


def _without_added_tokens(tokenizer_json: dict) -> Tokenizer:
    """The same tokenizer with no added tokens: what "tokenized as ordinary text" means."""
    plain = {**tokenizer_json, "added_tokens": [], "post_processor": None}
    return Tokenizer.from_str(json.dumps(plain))


@pytest.fixture(scope="module")
def reference(paths):
    """Tokenizer name -> encoder that never knew about special tokens (built independently of load.py)."""
    def sentencepiece(path):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        return lambda texts: sp.encode(texts)

    def plain(tokenizer_json):
        tok = _without_added_tokens(tokenizer_json)
        return lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    polyglot = json.loads(paths["polyglot-ko.tokenizer.json"].read_text(encoding="utf-8"))
    return {"llama2": sentencepiece(paths["llama2.model"]), "mistral": sentencepiece(paths["mistral.model"]),
            "smoke": sentencepiece(paths["smoke.model"]), "polyglot-ko": plain(polyglot),
            "llama3": plain(tiktoken_to_json(paths["llama3.tiktoken"]))}


@pytest.mark.parametrize("form", FORMS)
def test_special_strings_in_text_give_no_special_id(form, loaded):
    tok = loaded(form)
    assert tok.eos_id in tok.special_ids and (tok.bos_id is None or tok.bos_id in tok.special_ids)
    forbidden = tok.special_ids | {UNK_BY_BYTE_FALLBACK.get(FORMS[form], -1)}
    own = [tok.decode([i]) for i in sorted(tok.special_ids)]  # this tokenizer's own special strings
    own = [" ".join(own)] if all(own) else []  # SentencePiece decodes control ids to "" (<s>, </s> are in DOCS)
    assert own or form in ("llama2.model", "mistral.model", "smoke.model", "llama2.sentencepiece_backend", "smoke.hf_dir")
    for doc in DOCS + own:
        ids = tok.encode_batch([doc])[0]
        assert not set(ids) & forbidden, (doc, sorted(set(ids) & forbidden))
        assert tok.decode(ids) == doc


@pytest.mark.parametrize("form", FORMS)
def test_ids_are_those_of_the_text_without_special_tokens(form, loaded, reference, heldout):
    texts = DOCS + heldout
    assert loaded(form).encode_batch(texts) == reference[FORMS[form]](texts)


def test_every_form_of_llama2_gives_the_same_ids(loaded, heldout):
    """The issue's case: `<unk>` in text was id 0 through the HF directory, spelled out through tokenizer.model."""
    texts = DOCS + SPACED + heldout
    ids = {form: loaded(form).encode_batch(texts) for form in FORMS if FORMS[form] == "llama2"}
    assert len(ids) == 4 and all(v == ids["llama2.model"] for v in ids.values())
    assert all(loaded(form).decode(e) == t for form in ids for e, t in zip(ids[form], texts))
    assert ids["llama2.hf_dir"][DOCS.index("<unk>")] == [529, 2960, 29958]  # "▁<" "unk" ">", not [0]


@pytest.mark.parametrize("form", ["polyglot-ko.tokenizer.json", "polyglot-ko.hf_dir", "llama3.tiktoken", "llama2.hf_dir"])
def test_the_packer_adds_the_only_eos(form, loaded):
    tok = loaded(form)
    flat = encode_with_eos([ISSUE_DOC], tok).tolist()
    assert flat.count(tok.eos_id) == 1 and flat[-1] == tok.eos_id
    flat = encode_with_eos(DOCS, tok, num_docs_per_batch=4).tolist()
    ends = [i for i, t in enumerate(flat) if t == tok.eos_id]
    lengths = [len(ids) for ids in tok.encode_batch(DOCS)]
    assert ends == [sum(lengths[: k + 1]) + k for k in range(len(DOCS))]  # one EOS, right after each document
    assert tok.bos_id is None or tok.bos_id not in flat


def test_efficiency_counts_special_strings_as_text(loaded, reference):
    tok = loaded("polyglot-ko.tokenizer.json")
    expected = sum(len(ids) for ids in reference["polyglot-ko"](DOCS))
    assert measure(tok, DOCS)["num_tokens"] == expected > len(DOCS) * 5


def test_a_unigram_hf_dir_spells_control_pieces_out_as_sentencepiece_does(tmp_path, repo_root, heldout):
    """tokenizers' Unigram would take "</s>" whole (a control piece scores 0, and '<' is not even a piece
    of this small model, so spelling it out costs unk penalties); load.py encodes through a copy whose
    control and unk pieces cannot match text."""
    import io

    from kopretrain.tokenizer.hf_save import save_spm_dir

    model = io.BytesIO()
    lines = [line for d in ("ko", "en") for line in (repo_root / f"data/heldout/{d}.txt").read_text(encoding="utf-8").splitlines()]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=800,
                                   model_type="unigram", character_coverage=0.98, byte_fallback=True,
                                   minloglevel=2, num_threads=1)
    (tmp_path / "uni.model").write_bytes(model.getvalue())
    proto = pb.ModelProto()
    proto.ParseFromString(model.getvalue())
    assert "<" not in {p.piece for p in proto.pieces}
    sp, hf = load_tokenizer(tmp_path / "uni.model"), load_tokenizer(save_spm_dir(proto, tmp_path / "uni"))
    texts = DOCS + heldout
    assert hf.encode_batch(texts) == sp.encode_batch(texts)
    assert hf.special_ids == sp.special_ids == {1, 2}
    for ids, text in zip(hf.encode_batch(DOCS), DOCS):
        assert not set(ids) & {0, 1, 2} and hf.decode(ids) == text


def _tiny_json(tmp_path, specials: list[AddedToken], user: list[AddedToken], vocab=None) -> Path:
    tok = Tokenizer(models.WordLevel(vocab or {"[UNK]": 0, "a": 1, "b": 2, "<": 3, ">": 4, "</": 5, "s": 6},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    tok.add_tokens(user)
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path / "tokenizer.json"


def test_non_special_added_tokens_stay_whole_and_an_unmarked_eos_is_still_kept_as_text(tmp_path):
    """Added tokens marked special=False (SentencePiece user-defined symbols) are matched whole, as the
    tokenizer intends; an EOS that its tokenizer.json forgot to mark special is treated as special."""
    path = _tiny_json(tmp_path, [AddedToken("<s>", special=True)], [AddedToken("</s>", special=False),
                                                                     AddedToken("<tel>", special=False)])
    raw = Tokenizer.from_file(str(path))
    eos, bos, tel = raw.token_to_id("</s>"), raw.token_to_id("<s>"), raw.token_to_id("<tel>")
    assert raw.encode("a </s> <tel>", add_special_tokens=False).ids == [1, eos, tel]  # as written, EOS from text
    tok = load_tokenizer(path)
    assert (tok.eos_id, tok.bos_id) == (eos, bos) and {eos, bos} <= tok.special_ids and tel not in tok.special_ids
    assert tok.encode_batch(["a </s> <tel> <s> b"]) == [[1, 5, 6, 4, tel, 3, 6, 4, 2]]


def test_a_tokenizer_that_forms_its_eos_from_plain_text_is_refused(tmp_path):
    vocab = {"[UNK]": 0, "a": 1, "</s>": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # "</s>" is one word, and a word of the vocabulary
    tok.add_special_tokens([AddedToken("</s>", special=True)])
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="encodes to special id 2"):
        load_tokenizer(tmp_path / "tokenizer.json")
