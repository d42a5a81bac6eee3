"""`kopretrain tokenizer` end to end: the YAMLs against the schema, the smoke recipe through the
real CLI (run dir printed last, report.json, real MLflow), one-line errors, model resizing,
and byte-identical outputs for the same inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kopretrain.cli import compose_typed
from kopretrain.config.tokenizer import SampleConfig, SpmTrainConfig, TokenizerCommandConfig
from kopretrain.config.common import TrackingConfig
from kopretrain.errors import UserError
from kopretrain.tokenizer.command import run_tokenizer


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "kopretrain", "tokenizer", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_yaml_and_smoke_recipe_match_the_schema():
    cfg = compose_typed("tokenizer", ["base=x.model"])
    assert isinstance(cfg, TokenizerCommandConfig) and cfg.corpus == ["data/ko"] and cfg.num_new_tokens is None
    assert cfg.num_new_tokens_or_default == 14336, "a trained Korean model: Llama-2-ko's count"
    merge_all = compose_typed("tokenizer", ["base=x.model", "extra_model=ko.model"])
    assert merge_all.num_new_tokens_or_default is None, "extra_model: all of its new pieces"
    ranked = compose_typed("tokenizer", ["base=x.model", "extra_model=ko.model", "num_new_tokens=500"])
    assert ranked.num_new_tokens_or_default == 500
    smoke = compose_typed("tokenizer", ["experiment=smoke"])
    assert smoke.train_base.corpus == "data/en" and smoke.num_new_tokens == 1000 and smoke.base == ""
    assert compose_typed("tokenizer", ["base=x", "corpus=[a.txt,b.txt]"]).corpus == ["a.txt", "b.txt"]


@pytest.mark.parametrize("overrides,message", [
    (["base=x", "num_new_tokens=-1"], "num_new_tokens: must be >= 0"),
    ([], "base: set the base tokenizer"),
    (["base=x", "spm.model_type=wordpiece"], "spm.model_type: 'wordpiece' is not one of"),
    (["base=x", "output_init=zeros"], "output_init"),
    (["base=x", "spm.character_coverage=0.5"], "spm.character_coverage"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        compose_typed("tokenizer", overrides)


def test_smoke_recipe_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli("experiment=smoke", f"hydra.run.dir={run_dir}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["base_vocab_size"] == 2000 and report["vocab_size"] % 64 == 0 and report["num_added"] >= 1000
    assert report["tokens_ratio_base_to_expanded"]["ko"] >= 2.0 and report["tokens_ratio_base_to_expanded"]["en"] == 1.0
    en = report["identical_without_hangul"]["en"]
    assert en["num_docs"] == 200 and en["num_identical"] == 200
    assert report["mlflow_run_id"] and "ko tok/char" in out.stdout
    info = json.loads((run_dir / "tokenizer/kopretrain_tokenizer.json").read_text())
    assert info["base_vocab_size"] == 2000 and len(info["added_tokens"]) == info["num_added"]
    assert (run_dir / "base/tokenizer.model").is_file() and (run_dir / "tokenizer/tokenizer.model").is_file()


@pytest.mark.parametrize("args,message", [
    (["base=no/such/tokenizer.model"], "base: tokenizer not found"),
    (["base=notes.txt"], "base: unrecognised tokenizer file"),
    (["base=x.model", "num_new_tokens=-1"], "num_new_tokens: must be >= 0"),
])
def test_bad_inputs_fail_with_one_line(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not a tokenizer\n")
    out = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", "tracking.enabled=false", cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith("kopretrain tokenizer: error:") and message in lines[0]


def _small_cfg(base: Path, **kw) -> TokenizerCommandConfig:
    return TokenizerCommandConfig(base=str(base), num_new_tokens=200, sample=SampleConfig(num_sample_docs=3000),
                                  spm=SpmTrainConfig(vocab_size=3000), max_heldout_docs=100,
                                  tracking=TrackingConfig(enabled=False), **kw)


def test_model_is_resized_with_the_tokenizer(en_base_dir, shared_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "base-model")
    cfg = _small_cfg(en_base_dir, model_dir=str(tmp_path / "base-model"), reference=str(shared_dir / "tokenizers/polyglot-ko"))
    report = run_tokenizer(cfg, tmp_path / "run")
    assert set(report["efficiency"]) == {"base", "expanded", "reference"}
    assert report["model"]["num_base_rows"] == 1000 and report["model"]["num_rows"] == report["vocab_size"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run/model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run/model")
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == report["vocab_size"]
    ids = tok("안녕하세요 hello", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == len(tok)


def test_same_inputs_give_identical_files(en_base_dir, tmp_path):
    a = run_tokenizer(_small_cfg(en_base_dir, output_dir=str(tmp_path / "a")), tmp_path / "ra")
    b = run_tokenizer(_small_cfg(en_base_dir, output_dir=str(tmp_path / "b")), tmp_path / "rb")
    assert a["efficiency"] == b["efficiency"]
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "kopretrain_tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_extra_model_report_and_summary_line(en_base_dir, ko_texts, tmp_path, capsys):
    """`extra_model=` with num_new_tokens null: all new pieces, user-defined symbols whole, and
    report.json's `merge` accounts for them; the CLI prints a one-line summary."""
    from tests.tokenizer.spm_models import train_model, write_model

    extra = write_model(train_model(ko_texts[:3000], vocab_size=2000, user_defined_symbols=("카카오톡",)), tmp_path / "ko.model")
    cfg = TokenizerCommandConfig(base=str(en_base_dir), extra_model=str(extra), sample=SampleConfig(num_sample_docs=3000),
                                 max_heldout_docs=50, tracking=TrackingConfig(enabled=False))
    report = run_tokenizer(cfg, tmp_path / "run")
    merge = report["merge"]
    assert merge["mode"] == "all" and merge["num_added_user_defined"] == 1 and merge["num_unreachable"] == 0
    assert report["num_added"] == merge["num_added_regular"] + 1 > 1000 and report["vocab_size"] % 64 == 0
    assert merge["num_added_regular"] + merge["num_skipped_in_base"] - merge["num_added_parts"] == 2000 - 1 - 259
    assert "extra_model (all): " in capsys.readouterr().out
