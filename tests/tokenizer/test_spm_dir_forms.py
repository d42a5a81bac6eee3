"""Issue 8 §1: every form of Llama-2's tokenizer gives SentencePiece's own ids.

Forms: the tokenizer.model file; a bare HF directory with only that file and a tokenizer_config.json
naming LlamaTokenizer (which transformers 5 would convert, mishandling leading spaces); kopretrain's
own directory (hf_save's tokenizer.json), and that directory re-saved by transformers. Right value: sentencepiece's ids, e.g.
" leading" -> [29871, 8236] and "a  leading" -> [263, 29871, 8236] (transformers' conversion gives
[8236] and [263, 259, 25369]).
"""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from kopretrain.tokenizer.load import load_tokenizer

TEXTS = [" leading", "a  leading", "trailing  ", "  two\n\nlines \n", "한국어  문장입니다.\n 둘째 줄",
         "<unk> 와 </s> 그리고 <s> 를", "   ", "x\t\ty"]


@pytest.fixture(scope="module")
def forms(shared_dir, tmp_path_factory):
    from kopretrain.tokenizer.hf_save import save_spm_dir
    from kopretrain.tokenizer.expand import INFO_FILE

    model = shared_dir / "tokenizers/llama2/tokenizer.model"
    root = tmp_path_factory.mktemp("llama2forms")
    bare = root / "bare"
    bare.mkdir()
    shutil.copy(model, bare / "tokenizer.model")
    (bare / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    own = save_spm_dir(proto, root / "own")
    (own / INFO_FILE).write_text("{}")  # as `kopretrain tokenizer` marks its directories
    from transformers import AutoTokenizer

    resaved = root / "own_resaved"  # kopretrain's directory re-saved by transformers 5 (tokenizer.json kept)
    AutoTokenizer.from_pretrained(own).save_pretrained(resaved)
    return {"model": model, "bare": bare, "own": own, "own_resaved": resaved}


def test_every_form_gives_sentencepiece_ids(forms):
    sp = spm.SentencePieceProcessor(model_file=str(forms["model"]))
    expected = sp.encode(TEXTS)
    assert expected[0] == [29871, 8236] and expected[1] == [263, 29871, 8236]
    for name, path in forms.items():
        assert load_tokenizer(path).encode_batch(TEXTS) == expected, name


def test_bare_dir_encodes_with_its_model(forms):
    tok = load_tokenizer(forms["bare"])
    assert (tok.kind, tok.eos_id, tok.bos_id, tok.vocab_size) == ("hf", 2, 1, 32000)
    assert tok.decode(tok.encode_batch(TEXTS[4:5])[0]) == TEXTS[4]
    assert load_tokenizer(forms["own"]).kind == "hf"
