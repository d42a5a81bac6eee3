"""Memory per GPU: the ZeRO model states equal DeepSpeed's own estimators (the installed
deepspeed, counting a real model), the activation formula reduces to Korthikanti et al.'s, the
largest micro-batch is the largest that fits, and LoRA counts what peft builds."""

from __future__ import annotations

import pytest
import torch
import transformers

from kopretrain.plan import memory
from kopretrain.plan.model_size import model_size
from kopretrain.plan.shapes import load_model_config

from .test_model_size import largest_module, meta_model

TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 5000, "tie_word_embeddings": False}


def _states(strategy, size, num_gpus):
    s = memory.model_states(strategy, size, num_gpus)
    return s["parameters"] + s["gradients"] + s["optimizer"]


def _deepspeed(total, largest, gpus_per_node, num_nodes):
    """{strategy: GPU bytes} from DeepSpeed's estimators (what its *_all_live functions print)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    kw = dict(num_gpus_per_node=gpus_per_node, num_nodes=num_nodes)
    return {
        "deepspeed_zero2": estimate_zero2_model_states_mem_needs(total, cpu_offload=False, **kw)[1],
        "deepspeed_zero2_offload": estimate_zero2_model_states_mem_needs(total, cpu_offload=True, **kw)[1],
        "deepspeed_zero3": estimate_zero3_model_states_mem_needs(total, largest, cpu_offload=False, **kw)[1],
        "deepspeed_zero3_offload": estimate_zero3_model_states_mem_needs(total, largest, cpu_offload=True,
                                                                         cpu_offload_params=False, **kw)[1],
    }


@pytest.mark.parametrize("gpus_per_node,num_nodes", [(1, 1), (2, 1), (8, 1), (8, 4)])
def test_zero_states_equal_deepspeed_on_a_real_model(gpus_per_node, num_nodes):
    """A real (CPU) model: DeepSpeed's model_to_params counts it, its estimators size it."""
    from deepspeed.runtime.zero import stage3, stage_1_and_2

    fields = dict(TINY)
    hf = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    model = transformers.AutoModelForCausalLM.from_config(hf)
    total = stage_1_and_2.model_to_params(model)
    assert (total, stage3.model_to_params(model)[1]) == (model_size(TINY).total_params, model_size(TINY).largest_module_params)
    size = model_size(TINY)
    for strategy, expected in _deepspeed(*stage3.model_to_params(model), gpus_per_node, num_nodes).items():
        mine = _states(strategy, size, gpus_per_node * num_nodes)
        assert abs(mine - expected) <= 0.05 * expected, (strategy, mine, expected)


@pytest.mark.parametrize("name", ["Llama-2-7B", "Gemma-7B", "Polyglot-Ko-12.8B", "Qwen2-7B"])
def test_zero_states_equal_deepspeed_at_full_size(name):
    """Known shapes on the meta device (DeepSpeed's total counts data_ptr, which meta lacks: the
    total is the de-duplicated parameters; the largest layer is its own loop)."""
    config = load_model_config(name)
    model = meta_model(config)
    total, largest = sum(p.numel() for p in model.parameters()), largest_module(model)
    size = model_size(config)
    for strategy, expected in _deepspeed(total, largest, 2, 1).items():
        assert abs(_states(strategy, size, 2) - expected) <= 0.05 * expected, strategy


def test_strategy_states_order_and_sharding():
    size = model_size(load_model_config("Llama-2-7B"))
    n = size.total_params
    assert _states("ddp", size, 8) == 22 * n  # fp32 params + bf16 autocast copies, grads + DDP buckets, 2 moments
    assert _states("deepspeed_zero3", size, 1) > _states("deepspeed_zero3", size, 8) > _states("deepspeed_zero3_offload", size, 8)
    assert _states("fsdp", size, 4) == pytest.approx(16 * n / 4 + 6 * size.layer_params)
    for offload in ("deepspeed_zero2_offload", "deepspeed_zero3_offload"):  # fp32 grads, master, 2 moments on the host
        assert memory.model_states(offload, size, 4)["cpu_optimizer"] == 16 * n / 4


def test_a_gpt_layer_is_korthikantis_count_without_dropout_masks():
    """A GPT-style layer (MHA, 4h GELU MLP): 32h + the log-sum-exp with SDPA, i.e. the paper's 34sbh
    less its 2sbh of dropout masks; eager adds the [s, s] softmax (6as here, the paper's 5as with dropout)."""
    h, a, s = 1024, 16, 2048
    gpt = model_size({"model_type": "gpt_neox", "hidden_size": h, "intermediate_size": 4 * h, "num_hidden_layers": 1,
                      "num_attention_heads": a, "vocab_size": 1000})
    assert memory.activation_bytes_per_layer_token(gpt, s, "sdpa") == 34 * h - 2 * h + 4 * a
    assert memory.activation_bytes_per_layer_token(gpt, s, "eager") == 32 * h + 6 * a * s - 2 * h


def test_checkpointing_keeps_layer_inputs_plus_one_layer():
    size = model_size(load_model_config("Llama-2-7B"))
    full = memory.activations(size, 1, 4096, False, "sdpa")
    ckpt = memory.activations(size, 1, 4096, True, "sdpa")
    per_layer = memory.activation_bytes_per_layer_token(size, 4096, "sdpa")
    final = memory.final_norm_bytes_per_token(size)
    assert ckpt == 4096 * (size.num_layers * 2 * size.hidden + per_layer + final)
    assert full == 4096 * (size.num_layers * per_layer + final)
    assert 10 * ckpt < full


def test_gemma_logits_are_12_bytes_per_element():
    size = model_size(load_model_config("Gemma-7B"))
    assert memory.logits(size, 1, 4096) == 12 * 4096 * 256000  # 11.7 GiB for one sequence


@pytest.mark.parametrize("strategy", memory.STRATEGIES)
def test_max_micro_batch_is_the_largest_that_fits(strategy):
    size = model_size(load_model_config("Mistral-7B"))
    usable = 0.9 * 80 * 2**30
    plan = memory.plan_memory(strategy, size, 8, 1, 4096, True, "sdpa", usable, trainable=10**7)
    best = plan["max_micro_batch"]
    if best:
        assert memory.plan_memory(strategy, size, 8, best, 4096, True, "sdpa", usable, 10**7)["fits"]
    assert not memory.plan_memory(strategy, size, 8, best + 1, 4096, True, "sdpa", usable, 10**7)["fits"]
    assert plan["fits"] == (best >= 1)


@pytest.mark.parametrize("targets", [(), ("q_proj", "v_proj")])
def test_lora_trainable_params_equal_peft(targets):
    """Adapters r x (in + out) per target per layer, as peft builds them (plus the new rows, not peft's here)."""
    import peft

    config = dict(TINY)
    size = model_size(config)
    fields = dict(config)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(fields.pop("model_type"), **fields))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=list(targets or size.linears)))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert memory.lora_trainable_params(size, memory.Lora(rank=8, targets=targets, train_new_rows=False)) == trainable
    with_rows = memory.Lora(rank=8, targets=targets, num_new_rows=100)
    assert memory.lora_trainable_params(size, with_rows) == trainable + 2 * 100 * size.hidden  # untied: embed + lm_head rows
    states = memory.model_states("lora", size, 2, trainable)
    assert states["optimizer"] == 8 * trainable and states["parameters"] == 4 * size.total_params + 4 * trainable


def _printed_gpu_gib(text: str) -> dict[str, float]:
    """{options: per-GPU GiB} from the table DeepSpeed's *_all_live estimators print."""
    rows = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].endswith("GB"):
            rows[parts[2].replace("OffloadDeviceEnum.", "")] = float(parts[1][:-2])
    return rows


def test_the_all_live_estimators_print_what_plan_computes(capsys):
    """DeepSpeed's `estimate_zero{2,3}_model_states_mem_needs_all_live(model, num_gpus_per_node, num_nodes)`
    on a real 166M-parameter model (bf16, CPU): their printed per-GPU GiB within 5% of plan's."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_live
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_live

    config = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
              "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32000, "tie_word_embeddings": False}
    fields = dict(config)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(fields.pop("model_type"), **fields), dtype=torch.bfloat16)
    size = model_size(config)
    capsys.readouterr()
    estimate_zero2_model_states_mem_needs_all_live(model, num_gpus_per_node=2, num_nodes=1)
    estimate_zero3_model_states_mem_needs_all_live(model, num_gpus_per_node=2, num_nodes=1)
    printed = _printed_gpu_gib(capsys.readouterr().out)
    expected = {
        "deepspeed_zero2": printed["offload_optimizer=none"],
        "deepspeed_zero2_offload": printed["offload_optimizer=cpu"],
        "deepspeed_zero3": printed["offload_param=none, offload_optimizer=none, zero_init=1"],
        "deepspeed_zero3_offload": printed["offload_param=none, offload_optimizer=cpu, zero_init=1"],
    }
    for strategy, gib in expected.items():
        assert _states(strategy, size, 2) / 2**30 == pytest.approx(gib, rel=0.05), strategy
