"""Parameter counts from HF config dicts equal the Hugging Face model built on the meta device:
every known shape, a vocabulary expansion, and HF config directories (the shipped smoke model,
configs with biases, tied embeddings and GPT-NeoX written by transformers itself)."""

from __future__ import annotations

import pytest
import torch
import transformers

from kopretrain.errors import UserError
from kopretrain.paths import PROJECT_ROOT
from kopretrain.plan.model_size import model_size
from kopretrain.plan.shapes import KNOWN_SHAPES, load_model_config


def meta_model(config: dict):
    fields = dict(config)
    hf = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf)


def largest_module(model) -> int:
    """DeepSpeed's largest_layer_params (stage3.model_to_params), counted the same way."""
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


# The published sizes (model cards / the HF hub's parameter count), as a second check of the table.
PUBLISHED_BILLIONS = {"Llama-2-7B": 6.74, "Llama-2-13B": 13.02, "SOLAR-10.7B": 10.73, "Yi-6B": 6.06,
                      "Mistral-7B": 7.24, "Gemma-2B": 2.51, "Gemma-7B": 8.54, "Polyglot-Ko-1.3B": 1.33,
                      "Polyglot-Ko-5.8B": 5.89, "Polyglot-Ko-12.8B": 12.89, "Qwen2-7B": 7.62, "Llama-3-8B": 8.03}


@pytest.mark.parametrize("name", sorted(KNOWN_SHAPES))
def test_known_shape_counts_equal_the_meta_model(name):
    config = load_model_config(name)
    model = meta_model(config)
    size = model_size(config)
    assert size.total_params == sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    assert size.embedding_params == embed
    assert size.lm_head_params == (0 if size.tied else model.get_output_embeddings().weight.numel())
    assert size.largest_module_params == largest_module(model)
    assert round(size.total_params / 1e9, 2) == PUBLISHED_BILLIONS[name]


@pytest.mark.parametrize("name", ["Llama-2-7B", "Gemma-2B", "Polyglot-Ko-1.3B"])
def test_an_expanded_vocabulary_counts_its_new_rows(name):
    config = load_model_config(name)
    expanded = dict(config, vocab_size=config["vocab_size"] + 14336)
    assert model_size(config, vocab_size=expanded["vocab_size"]).total_params == \
        sum(p.numel() for p in meta_model(expanded).parameters())


def _written_by_transformers(tmp_path, cls, **fields):
    cls(**fields).save_pretrained(tmp_path)
    return tmp_path


CONFIG_DIRS = {
    "qwen2-biases": (transformers.Qwen2Config, dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=300)),
    "llama-all-biases-tied": (transformers.LlamaConfig, dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                                             num_attention_heads=4, num_key_value_heads=1, vocab_size=300,
                                                             attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                                                             head_dim=32)),
    "gemma": (transformers.GemmaConfig, dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, head_dim=32, vocab_size=300)),
    "gpt_neox-no-attention-bias": (transformers.GPTNeoXConfig, dict(hidden_size=64, intermediate_size=256,
                                                                     num_hidden_layers=2, num_attention_heads=4,
                                                                     vocab_size=300, attention_bias=False)),
    "mistral": (transformers.MistralConfig, dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=300)),
}


@pytest.mark.parametrize("case", sorted(CONFIG_DIRS))
def test_an_hf_config_directory_counts_like_the_meta_model(case, tmp_path):
    cls, fields = CONFIG_DIRS[case]
    directory = _written_by_transformers(tmp_path, cls, **fields)
    config = load_model_config(str(directory))
    assert model_size(config).total_params == sum(p.numel() for p in meta_model(config).parameters())


def test_the_shipped_smoke_model_directory():
    directory = PROJECT_ROOT / "data/smoke/model"
    config = load_model_config(str(directory))
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    assert model_size(config).total_params == sum(p.numel() for p in model.parameters())


def test_unknown_names_and_families_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="neither a known shape"):
        load_model_config("Llama-9B")
    (tmp_path / "config.json").write_text('{"model_type": "t5", "d_model": 512}')
    with pytest.raises(UserError, match="model_type 't5' is not one plan can size"):
        model_size(load_model_config(str(tmp_path)))
