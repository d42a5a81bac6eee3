"""LoRA (peft=lora) and the low-memory options, in-process on the tiny expanded base model (no Ray):
every frozen base weight stays bit-identical while the adapters and the new rows train, EEVE
stages with LoRA, both exports against the adapter model's logits, activation checkpointing,
8-bit AdamW, the one-line refusals, and `plan`'s LoRA parameter count against the real model.
The Ray runs (FSDP2, a killed worker) are in test_lora_ray.py."""

from __future__ import annotations

import re

import pytest
import torch

from kopretrain.config.common import ConfigError
from kopretrain.data.packed import PackedDataset
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path
from kopretrain.train.adapters import TARGET_MODULES, is_adapter, is_new_rows, load_adapter, lora_targets
from kopretrain.train.loop import LoopPlan, StageSpec, TrainState, train
from kopretrain.train.mixing import MixingSampler
from kopretrain.train.model import build_model, plan_model
from kopretrain.train.strategies.base import StrategySettings
from kopretrain.train.strategies.local import LocalStrategy
from tests.train.conftest import NUM_BASE_TOKENS, expanded_overrides, smoke_cfg
from tests.train.test_loop import Recorder

WEIGHTS = {"ko": 0.8, "en": 0.2}
LORA = ["peft=lora", "strategy.name=local", "scale.num_workers=1", "batch.num_sequences_per_step=8"]
STAGED = [StageSpec("embed", 2, "new_embeddings"), StageSpec("full", 3, "all")]


def lora_setup(base_dir, *overrides: str, optimizer: str = "adamw"):
    cfg = smoke_cfg(*expanded_overrides(base_dir), *LORA, *overrides)
    plan = plan_model(cfg)
    model, info = build_model(plan, seed=0)
    strategy = LocalStrategy(StrategySettings(device=torch.device("cpu"), micro_batch_size=2, num_accumulation_steps=4,
                                              max_grad_norm=1.0, optimizer=optimizer))
    strategy.wrap(model)
    datasets = {d: PackedDataset(resolve_path(cfg.data.tokens_dir) / d) for d in WEIGHTS}
    sampler = MixingSampler({d: len(v) for d, v in datasets.items()}, WEIGHTS, seed=0, seq_lens={d: 128 for d in WEIGHTS})
    return plan, strategy, datasets, sampler, info


def loop_plan(stages):
    return LoopPlan(stages=stages, lr=3e-3, lr_warmup_steps=1, weight_decay=0.1, num_sequences_per_step=8,
                    micro_batch_size=2, num_base_rows=NUM_BASE_TOKENS)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, after, name) -> float:
    return float((after[name] - before[name]).abs().max())


def test_lora_stages_freeze_every_base_weight_and_train_adapters_and_new_rows(base_model_dir):
    plan, strategy, datasets, sampler, info = lora_setup(base_model_dir)
    model = strategy.module
    assert plan.lora.new_rows == list(range(NUM_BASE_TOKENS, 2048))  # the new tokens and the padding rows
    initial = snapshot(model)
    base_names = [k for k in initial if not is_adapter(k) and not is_new_rows(k)]
    assert len(base_names) == 21  # every weight of the base model (embed, 2 x 9, norm, lm_head)

    hooks = Recorder()
    state = train(strategy, datasets, sampler, loop_plan(STAGED[:1]), TrainState(), hooks)
    after_embed = snapshot(model)
    for name in initial:
        if is_new_rows(name):
            assert changed(initial, after_embed, name) > 1e-4, f"{name}: new rows did not train"
        else:  # base weights and the adapters: frozen in the new_embeddings stage
            assert torch.equal(after_embed[name], initial[name]), f"{name} moved in the new_embeddings stage"
    assert state.stages[0]["num_trainable_params"] == 2 * 548 * 64

    state = train(strategy, datasets, sampler, loop_plan(STAGED), state, hooks)
    final = snapshot(model)
    for name in base_names:
        assert torch.equal(final[name], initial[name]), f"{name}: a frozen base weight changed"
    for name in initial:
        if "lora_B" in name or is_new_rows(name):  # lora_A moves too once B is non-zero
            assert changed(after_embed, final, name) > 1e-5, f"{name} did not train in the `all` stage"
    assert state.stages[1]["num_trainable_params"] == info["num_trainable_params"] == 102_912
    losses = [r["loss"] for r in state.losses]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.1, losses


def test_merged_and_adapter_exports_match_the_adapter_model(base_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from kopretrain.train.adapters import export_adapted

    plan, strategy, datasets, sampler, _ = lora_setup(base_model_dir, "peft.dropout=0.0")
    train(strategy, datasets, sampler, loop_plan([StageSpec("full", 3, "all")]), TrainState(), Recorder())
    model = strategy.module.eval()
    plan.lora.export = "both"
    export_adapted(snapshot(model), plan.lora, plan.name_or_path, model.config, plan.tokenizer_dir, tmp_path / "model")

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    adapter = load_adapter(tmp_path / "model" / "adapter").eval()
    ids = torch.randint(0, 2000, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        assert (merged(input_ids=ids).logits - want).abs().max() < 1e-4
        assert (adapter(input_ids=ids).logits - want).abs().max() < 1e-4
    weights = load_file(tmp_path / "model" / "model.safetensors")
    base = load_file(base_model_dir / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert weights[name].shape == (2048, 64)
        assert torch.equal(weights[name][:NUM_BASE_TOKENS], base[name]), f"{name}: merged base rows differ"
    assert torch.equal(weights["model.norm.weight"], base["model.norm.weight"])  # not a LoRA target
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    saved = load_file(tmp_path / "model" / "adapter" / "adapter_model.safetensors")
    assert any("trainable_tokens_delta" in k for k in saved) and any("lora_A" in k for k in saved)
    assert not any("base_layer" in k for k in saved), "the adapter holds no base weights"


def test_activation_checkpointing_with_lora_gives_the_same_gradients(base_model_dir):
    grads = {}
    for ckpt in ("false", "true"):
        plan, strategy, datasets, *_ = lora_setup(base_model_dir, f"model.gradient_checkpointing={ckpt}", "peft.dropout=0.0",
                                                  "peft.train_new_rows=false")
        model = strategy.module
        assert model.is_gradient_checkpointing == (ckpt == "true")
        with torch.no_grad():  # non-zero B so that A gets a gradient too
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
        ids = torch.from_numpy(datasets["ko"][0][None].copy())
        model(input_ids=ids, labels=ids).loss.backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads["true"].keys() == grads["false"].keys() and len(grads["true"]) == 28  # the adapters only
    for name, g in grads["false"].items():
        assert g.abs().max() > 0, name
        assert torch.allclose(grads["true"][name], g, atol=1e-6), name


def test_adamw_8bit_trains_lora_with_8bit_state_and_resumes_bitwise(base_model_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from kopretrain.train.checkpoint import load_train_state, restore_rng

    _, strategy, datasets, sampler, _ = lora_setup(base_model_dir, optimizer="adamw_8bit")
    stages = [StageSpec("full", 4, "all")]
    every_2 = LoopPlan(**{**loop_plan(stages).__dict__, "checkpoint_every_num_steps": 2})
    reference = train(strategy, datasets, sampler, every_2, TrainState(), Recorder(strategy, tmp_path))
    delta = next(p for n, p in strategy.module.named_parameters() if is_new_rows(n))
    assert strategy.optimizer.state[delta]["state1"].dtype == torch.uint8  # 8-bit moments (548 x 64 >= 4,096)
    assert reference.losses[-1]["loss"] < reference.losses[0]["loss"]

    _, strategy, datasets, sampler, _ = lora_setup(base_model_dir, optimizer="adamw_8bit")
    state = load_train_state(tmp_path / "step-2")
    sampler.load_state_dict(state.sampler)
    restore_rng(tmp_path / "step-2", 0)  # LoRA dropout draws random numbers
    resumed = train(strategy, datasets, sampler, loop_plan(stages), state, Recorder(), tmp_path / "step-2")
    assert [r["loss"] for r in resumed.losses] == [r["loss"] for r in reference.losses]


def test_targets_table_and_one_line_refusals(base_model_dir):
    assert lora_targets("llama", []) == TARGET_MODULES["llama"] and lora_targets("llama", ["q_proj"]) == ["q_proj"]
    assert "query_key_value" in lora_targets("gpt_neox", [])
    with pytest.raises(UserError, match="peft.target_modules: no default for model_type 'bert'"):
        lora_targets("bert", [])
    with pytest.raises(ConfigError, match=re.escape("LoRA runs with strategy=local|ddp|fsdp|deepspeed_zero2 (got deepspeed_zero3)")):
        smoke_cfg(*expanded_overrides(base_model_dir), "peft=lora", "strategy=deepspeed_zero3")
    with pytest.raises(ConfigError, match="set model.name_or_path"):
        smoke_cfg("peft=lora")
    with pytest.raises(ConfigError, match=re.escape("adamw_8bit runs with strategy=local|ddp (got fsdp")):
        smoke_cfg("optim=adamw_8bit")
    with pytest.raises(ConfigError, match="offload_optimizer: is a DeepSpeed ZeRO option"):
        smoke_cfg("strategy.offload_optimizer=true")
    with pytest.raises(UserError, match="peft.train_new_rows: a new_embeddings stage"):
        plan_model(smoke_cfg(*expanded_overrides(base_model_dir), *LORA, "peft.train_new_rows=false", "num_steps=2",
                             "stages=[{name:embed,num_steps:2,trainable:new_embeddings}]"))
    with pytest.raises(UserError, match="peft.target_modules"):
        build_model(plan_model(smoke_cfg(*expanded_overrides(base_model_dir), *LORA, "peft.target_modules=[nope]")), 0)


def test_fingerprint_changes_with_the_lora_settings(base_model_dir):
    from kopretrain.train.fingerprint import changed_keys, fingerprint, math_keys

    a = math_keys(smoke_cfg(*expanded_overrides(base_model_dir), *LORA))
    b = math_keys(smoke_cfg(*expanded_overrides(base_model_dir), *LORA, "peft.r=8"))
    assert fingerprint(a) != fingerprint(b) and changed_keys(a, b) == ["peft.r 16 -> 8"]
    full = math_keys(smoke_cfg(*expanded_overrides(base_model_dir), "strategy.name=local", "scale.num_workers=1",
                               "batch.num_sequences_per_step=8"))
    assert "peft.method \"none\" -> \"lora\"" in changed_keys(full, a)


def test_plan_counts_the_trainable_parameters_of_the_real_lora_model(base_model_dir):
    import json

    memory = pytest.importorskip("kopretrain.plan.memory")
    from kopretrain.plan.model_size import model_size

    _, strategy, _, _, info = lora_setup(base_model_dir)
    config = json.loads((base_model_dir / "config.json").read_text())
    size = model_size(config, vocab_size=2048)
    lora = memory.Lora(rank=16, targets=tuple(TARGET_MODULES["llama"]), train_new_rows=True, num_new_rows=2048 - NUM_BASE_TOKENS)
    trainable = sum(p.numel() for p in strategy.module.parameters() if p.requires_grad)
    assert memory.lora_trainable_params(size, lora) == info["num_trainable_params"] == trainable == 102_912
    # plan's parameter bytes = what the peft model holds: fp32 base, adapters, new-row deltas and their copy
    module = strategy.module
    held = sum(t.numel() * t.element_size() for t in module.parameters()) + sum(
        b.numel() * b.element_size() for n, b in module.named_buffers() if "trainable_tokens" in n)
    states = memory.model_states("lora", size, 1, trainable, memory.lora_copied_rows(size, lora))
    assert states["parameters"] == held


OFFLOAD = """
import json, os, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
torch.set_num_threads(1)
from transformers import LlamaConfig, LlamaForCausalLM
from kopretrain.train.strategies.deepspeed import DeepSpeedZero2Strategy
from kopretrain.train.strategies.base import RowFreeze, StrategySettings
out = {}
for offload in (False, True):
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2))
    s = DeepSpeedZero2Strategy(StrategySettings(device=torch.device("cpu"), micro_batch_size=2, max_grad_norm=1.0,
                                                offload_optimizer=offload))
    s.wrap(m)
    s.start_stage([{"params": list(m.parameters()), "weight_decay": 0.1}], RowFreeze())
    g, losses = torch.Generator().manual_seed(0), []
    for _ in range(3):
        losses.append(float(s.forward_backward(torch.randint(0, 256, (2, 32), generator=g), last=True)))
        s.step(1e-3)
    out[str(offload)] = {"losses": losses, "offload": str(s.engine.zero_offload_optimizer())}
print("RESULT " + json.dumps(out))
"""


def test_deepspeed_optimizer_offload_runs_and_keeps_the_math(tmp_path):
    """strategy.offload_optimizer=true: ZeRO keeps the optimizer state and step on the CPU (torch
    AdamW there, no DeepSpeedCPUAdam build); same losses as without. One process (its own
    process group, hence a subprocess)."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port)}
    out = subprocess.run([sys.executable, "-c", OFFLOAD], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, out.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    assert result["False"]["offload"] == "None" and "device='cpu'" in result["True"]["offload"]
    assert torch.allclose(torch.tensor(result["True"]["losses"]), torch.tensor(result["False"]["losses"]), rtol=1e-5)


def test_a_run_that_exported_only_the_adapter_counts_as_finished(tmp_path):
    import json

    from kopretrain.train.command import _finished_report

    model_dir = tmp_path / "model"
    (model_dir / "adapter").mkdir(parents=True)
    (tmp_path / "report.json").write_text(json.dumps({"config_fingerprint": "abc", "model_path": str(model_dir)}))
    assert _finished_report(tmp_path, "abc", model_dir) is None  # nothing exported yet
    (model_dir / "adapter" / "adapter_config.json").write_text("{}")
    assert _finished_report(tmp_path, "abc", model_dir)["model_path"] == str(model_dir)
    assert _finished_report(tmp_path, "other", model_dir) is None


def test_tied_embeddings_share_the_new_rows():
    """A tied lm_head (Gemma-style): one set of new rows serves input and output; the merge keeps the tie."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.train.adapters import LoraPlan, apply_lora

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    before = base.get_input_embeddings().weight.detach().clone()
    model = apply_lora(base, LoraPlan(r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], new_rows=list(range(100, 128))))
    rows = [n for n, p in model.named_parameters() if p.requires_grad and is_new_rows(n)]
    assert len(rows) == 1 and "embed_tokens" in rows[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    merged = model.merge_and_unload()
    weight = merged.get_input_embeddings().weight
    assert merged.get_output_embeddings().weight is weight
    assert torch.equal(weight[:100], before[:100]) and (weight[100:] - before[100:]).abs().max() > 1e-3
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - want).abs().max() < 1e-5
