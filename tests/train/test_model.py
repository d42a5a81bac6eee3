"""Model planning (driver-side checks), resize of a base model to the expanded tokenizer before any
sharding, export as an HF directory, and the driver's checks of the packed tokens."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kopretrain.errors import UserError
from kopretrain.paths import resolve_path
from kopretrain.train.command import check_stages, check_tokens
from kopretrain.train.model import build_model, export_model, plan_model
from tests.train.conftest import NUM_BASE_TOKENS, expanded_overrides, smoke_cfg


def test_from_scratch_model_takes_the_tokenizer_vocabulary_and_is_seeded():
    plan = plan_model(smoke_cfg())
    assert plan.tokenizer_len == plan.model_vocab_size == 2000 and not plan.needs_resize
    assert plan.special_ids == {"bos": 1, "eos": 2, "pad": None}
    a, info = build_model(plan, seed=0)
    b, _ = build_model(plan, seed=0)
    c, _ = build_model(plan, seed=1)
    assert info["vocab_size"] == 2000 and info["num_params"] == sum(p.numel() for p in a.parameters())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    with pytest.raises(UserError, match=r"^model\.arch\.vocab_size: 1000 is smaller than the tokenizer \(2000 tokens\)"):
        plan_model(smoke_cfg("+model.arch.vocab_size=1000"))


def test_base_model_is_resized_to_the_expanded_tokenizer_keeping_its_rows(base_model_dir):
    from transformers import AutoModelForCausalLM

    plan = plan_model(smoke_cfg(*expanded_overrides(base_model_dir)))
    assert plan.needs_resize and plan.model_vocab_size == NUM_BASE_TOKENS and plan.num_base_rows == NUM_BASE_TOKENS
    model, info = build_model(plan, seed=0)
    assert info["resize"]["num_base_rows"] == NUM_BASE_TOKENS and info["resize"]["num_rows"] == 2048
    assert info["vocab_size"] == 2048 and model.config.vocab_size == 2048
    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        new, old = model.state_dict()[name], base.state_dict()[name]
        assert torch.equal(new[:NUM_BASE_TOKENS], old)
        assert torch.isfinite(new).all()
    with pytest.raises(UserError, match=r"^model\.new_rows_init: 'zeros' is not one of"):
        plan_model(smoke_cfg(*expanded_overrides(base_model_dir), "model.new_rows_init=zeros"))


def test_base_rows_come_from_config_then_tokenizer_metadata(tmp_path):
    tok = tmp_path / "tok"
    shutil.copytree(resolve_path("data/smoke/tokenizer"), tok)
    assert plan_model(smoke_cfg(f"tokenizer={tok}")).num_base_rows is None
    (tok / "kopretrain_tokenizer.json").write_text(json.dumps({"base_vocab_size": 1700}))
    assert plan_model(smoke_cfg(f"tokenizer={tok}")).num_base_rows == 1700
    assert plan_model(smoke_cfg(f"tokenizer={tok}", "model.num_base_rows=1234")).num_base_rows == 1234


def test_new_embeddings_stage_needs_base_rows_and_zero3_a_single_stage():
    stages = ["num_steps=2", "stages=[{name:embed,num_steps:2,trainable:new_embeddings}]"]
    cfg = smoke_cfg(*stages)
    with pytest.raises(UserError, match=r"^model\.num_base_rows: a new_embeddings stage needs"):
        check_stages(cfg, plan_model(cfg))
    cfg = smoke_cfg(*stages, "model.num_base_rows=1500")
    check_stages(cfg, plan_model(cfg))
    two = ["num_steps=4", "stages=[{name:embed,num_steps:2,trainable:new_embeddings},{name:all,num_steps:2}]",
           "model.num_base_rows=1500"]
    check_stages(smoke_cfg(*two, "strategy=deepspeed_zero2"), plan_model(cfg))
    with pytest.raises(UserError, match=r"^stages: strategy 'deepspeed_zero3' trains a single stage"):
        check_stages(smoke_cfg(*two, "strategy=deepspeed_zero3"), plan_model(cfg))


def test_export_round_trips_through_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plan = plan_model(smoke_cfg())
    model, _ = build_model(plan, seed=3)
    out = export_model(model.state_dict(), plan, model.config, tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("안녕하세요, 오늘은 날씨가 좋네요", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert len(tok) == 2000


def test_packed_tokens_are_checked_against_the_mix_and_the_tokenizer(tmp_path):
    cfg = smoke_cfg()
    plan = plan_model(cfg)
    info = check_tokens(cfg, {"ko": 0.8, "en": 0.2}, plan)
    assert info["seq_len"] == 128 and info["num_sequences"] == {"ko": 400, "en": 300}
    with pytest.raises(UserError, match=r"^data\.tokens_dir: no packed tokens for domain 'code' .* \(found: en, ko\)"):
        check_tokens(cfg, {"ko": 0.5, "code": 0.5}, plan)
    tokens = tmp_path / "tokens"
    shutil.copytree(resolve_path("data/smoke/tokens"), tokens)
    index = json.loads((tokens / "en/index.json").read_text())
    (tokens / "en/index.json").write_text(json.dumps({**index, "tokenizer_fingerprint": "0123456789abcdef"}))
    other = smoke_cfg(f"data.tokens_dir={tokens}")
    with pytest.raises(UserError, match=r"^data\.tokens_dir: .*/en was tokenized with tokenizer 0123456789abcdef"):
        check_tokens(other, {"ko": 0.8, "en": 0.2}, plan)
    halves = {"seq_len": 64, "num_sequences": 600, "shards": [{"file": "shard-00000.bin", "num_sequences": 600}]}
    (tokens / "en/index.json").write_text(json.dumps({**index, **halves}))  # the same shard, read as 64-token rows
    with pytest.raises(UserError, match=r"different seq_len"):
        check_tokens(other, {"ko": 0.8, "en": 0.2}, plan)
    with pytest.raises(UserError, match=r"^data\.tokens_dir: not a directory"):
        check_tokens(smoke_cfg(f"data.tokens_dir={tmp_path}/nope"), {"ko": 1.0}, plan)


def test_a_malformed_index_or_a_shard_of_another_size_is_one_line_naming_the_file(tmp_path):
    """Caught on the driver, before Ray starts (was a JSONDecodeError traceback, or numpy's
    "mmap length is greater than file size" in the workers)."""
    from kopretrain.data.packed import PackedDataset

    plan = plan_model(smoke_cfg())
    tokens = tmp_path / "tokens"
    shutil.copytree(resolve_path("data/smoke/tokens"), tokens)
    ko, shard = tokens / "ko/index.json", tokens / "ko/shard-00000.bin"
    index, data = json.loads(ko.read_text()), shard.read_bytes()
    cfg, weights = smoke_cfg(f"data.tokens_dir={tokens}"), {"ko": 0.8, "en": 0.2}
    redo = "; re-run `kopretrain prepare`"

    def refusal(text: str, shard_bytes: bytes = data) -> str:
        ko.write_text(text)
        shard.write_bytes(shard_bytes)
        with pytest.raises(UserError) as err:
            check_tokens(cfg, weights, plan)
        with pytest.raises(UserError) as direct:  # the workers' reader says the same, without the key
            PackedDataset(tokens / "ko")
        assert str(err.value) == f"data.tokens_dir: {direct.value}" and "\n" not in str(err.value)
        return str(err.value)

    def edited(**fields) -> str:
        return json.dumps({k: v for k, v in {**index, **fields}.items() if v is not None})

    assert refusal('{"format": \n') == f"data.tokens_dir: {ko} is not valid JSON (Expecting value: line 2 column 1){redo}"
    assert refusal("[]") == f"data.tokens_dir: {ko} is not a packed-token index (a JSON object){redo}"
    assert refusal(edited(seq_len=None, shards=None)) == f"data.tokens_dir: {ko} lacks seq_len, shards{redo}"
    assert refusal(edited(format="v0")) == f"data.tokens_dir: {ko} has format 'v0', not 'kopretrain-packed-v1'{redo}"
    assert refusal(edited(seq_len="128")) == f"data.tokens_dir: {ko} has seq_len '128', not an integer >= 1{redo}"
    assert refusal(edited(num_sequences=True)) == f"data.tokens_dir: {ko} has num_sequences True, not an integer >= 0{redo}"
    assert refusal(edited(dtype="float32")) == f"data.tokens_dir: {ko} has dtype 'float32', not uint16 or uint32{redo}"
    assert "has a malformed shards list" in refusal(edited(shards=[{"file": "../en/shard-00000.bin", "num_sequences": 400}]))
    assert "has a malformed shards list" in refusal(edited(shards={"file": "shard-00000.bin"}))
    assert refusal(edited(num_sequences=440)) == f"data.tokens_dir: {ko} says num_sequences 440, but its shards list 400{redo}"
    more = edited(num_sequences=440, shards=[{"file": "shard-00000.bin", "num_sequences": 440}])
    assert refusal(more) == f"data.tokens_dir: {shard} holds 400 sequences, index.json says 440{redo}"
    assert refusal(edited(), data + data[:256]) == f"data.tokens_dir: {shard} holds 401 sequences, index.json says 400{redo}"
    assert refusal(edited(), data[:-1]) == (f"data.tokens_dir: {shard} holds 102399 bytes, not a whole number of "
                                            f"128-token uint16 rows, index.json says 400{redo}")
    ko.write_text(edited())
    shard.unlink()
    with pytest.raises(UserError, match=rf"^data\.tokens_dir: {shard} is missing \(listed in index\.json\)"):
        check_tokens(cfg, weights, plan)
    shard.write_bytes(data)
    assert check_tokens(cfg, weights, plan)["num_sequences"] == {"ko": 400, "en": 300}


def test_a_model_path_that_exists_nowhere_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value, where in (("/no/such/dir", ""), ("./x", " (relative paths are taken from the launch directory, then from "
                                                       "the project root)"), ("~/no/such", ""), ("a/b/c", " (relative")):
        with pytest.raises(UserError) as err:
            plan_model(smoke_cfg("model=pretrained", f"model.name_or_path='{value}'", "tokenizer="))
        assert str(err.value).startswith(f"model.name_or_path: {value}: no such directory{where}"), str(err.value)
        assert str(err.value).endswith(", and not a Hugging Face hub id")
    (tmp_path / "x").mkdir()  # exists: read as a model directory (it has no config: transformers says so)
    with pytest.raises(UserError, match=rf"^model\.name_or_path: cannot load a model config from '{tmp_path / 'x'}'"):
        plan_model(smoke_cfg("model=pretrained", "model.name_or_path=./x", "tokenizer="))


def test_a_model_dir_without_tokenizer_files_is_one_line_on_the_driver(base_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(base_model_dir / f, bare / f)
    with pytest.raises(UserError, match=r"^tokenizer: the model directory .*/bare has no tokenizer files \(tokenizer\.json"):
        plan_model(smoke_cfg("model=pretrained", f"model.name_or_path={bare}", "tokenizer="))
    # an expanded tokenizer needs the base model's tokenizer to split its new tokens into base pieces
    with pytest.raises(UserError, match=r"^model\.name_or_path: the base model .*/bare has no tokenizer files"):
        plan_model(smoke_cfg(*expanded_overrides(bare)))


def test_fsdp_refuses_a_model_class_without_decoder_layer_names_on_the_driver(tmp_path):
    from transformers import CTRLConfig

    CTRLConfig(n_embd=32, n_layer=1, n_head=2).save_pretrained(tmp_path / "ctrl")
    overrides = ["model=pretrained", f"model.name_or_path={tmp_path / 'ctrl'}", "tokenizer="]
    with pytest.raises(UserError, match=r"^strategy\.name: fsdp shards each decoder layer, but CTRLLMHeadModel does not name"):
        plan_model(smoke_cfg(*overrides, "strategy=fsdp"))
    with pytest.raises(UserError, match=r"^tokenizer: "):  # ddp does not shard by layer: the next check speaks
        plan_model(smoke_cfg(*overrides, "strategy=ddp"))
