"""The activation formula (kopretrain/plan/memory.py) equals the bytes autograd keeps for backward
in Hugging Face's own bf16 models: every tensor saved during a real forward pass (a
`saved_tensors_hooks` pack hook), one storage counted once, the parameters left out."""

from __future__ import annotations

import pytest
import torch
import transformers

from kopretrain.plan import memory
from kopretrain.plan.model_size import model_size

BATCH, SEQ, VOCAB = 3, 96, 1000


def _config(family: str, num_layers: int) -> dict:
    config = {"model_type": family, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": num_layers,
              "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": VOCAB, "tie_word_embeddings": False}
    if family == "gpt_neox":
        config["num_key_value_heads"] = 8
    if family == "gemma":
        config["head_dim"] = 64
    return config


def saved_bytes(config: dict, attention: str) -> int:
    """Bytes of the tensors autograd saves in one forward + loss of a bf16 model (parameters excluded)."""
    fields = dict(config)
    hf = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf, attn_implementation=attention).to(torch.bfloat16)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(storages.values())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma", "gpt_neox"])
def test_one_layer_keeps_what_the_formula_says(family, attention):
    """A third decoder layer adds the formula's bytes per token (within 1%: norms' fp32 rstd, rope tables)."""
    per_layer = (saved_bytes(_config(family, 3), attention) - saved_bytes(_config(family, 2), attention)) / (BATCH * SEQ)
    formula = memory.activation_bytes_per_layer_token(model_size(_config(family, 3)), SEQ, attention)
    assert per_layer == pytest.approx(formula, rel=0.01)


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt_neox"])
def test_the_whole_model_keeps_activations_plus_the_fp32_log_softmax(family):
    """All saved tensors = activations() + the 4 bytes per logit the loss keeps (the other 8 of
    LOGIT_BYTES are the gradients, made in backward)."""
    config = _config(family, 2)
    expected = memory.activations(model_size(config), BATCH, SEQ, False, "sdpa") + 4 * BATCH * SEQ * VOCAB
    assert saved_bytes(config, "sdpa") == pytest.approx(expected, rel=0.01)
