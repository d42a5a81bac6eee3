"""LoRA (peft) for continual pretraining with an expanded vocabulary: plain torch + peft, no Ray.

    targets = lora_targets("llama", [])             # driver: the per-architecture default table
    model = apply_lora(model, plan.lora)            # worker: after build_model, before strategy.wrap
    plan = plan_adapter_stage(model, "all", 0.1)    # loop: what a stage trains (adapters, new rows)
    export_adapted(state_dict, plan, config, dir)   # rank 0: merged HF model and/or the adapter

What trains: LoRA adapters (rank r, scale alpha / r) on the target linears of every decoder
layer, and, with `train_new_rows`, the embedding rows of the new vocabulary, fully, in the input
embedding and in an untied lm_head; every base weight and every base row is frozen.

How the new rows train (decision): peft's trainable tokens (`LoraConfig.trainable_token_indices`
= {input embedding module: new ids, output module: new ids}), not `modules_to_save` plus
kopretrain's base-row gradient mask (RowFreeze, as the full-model `new_embeddings` stage does):
- peft 0.21 wraps an untied lm_head as well as the input embedding (`TrainableTokensWrapper`),
  and a tied lm_head shares the input embedding's rows; checked in tests/train/test_lora.py.
- Only the new rows are parameters (`trainable_tokens_delta`, [num_new, hidden]); their values
  replace the matrix rows in forward (index_copy, not an added delta). Gradients and AdamW state
  exist for those rows only; `modules_to_save` would copy both full matrices and keep gradients
  and AdamW state for every row, base rows included (for Llama-2-7B + 14k rows: ~0.8 GB more
  weights and ~3 GB more optimizer state), and would rely on the mask and on no weight decay to
  keep the base rows.
- The base rows are frozen by construction (they are not parameters of any optimizer), so weight
  decay on the new rows (stage `all`) cannot touch them.
- `merge_and_unload` writes adapters and rows into the base matrices: the merged export is a
  plain HF model.

EEVE stages with LoRA: `new_embeddings` trains the new rows only (no weight decay, as without
LoRA), `all` trains adapters + new rows (weight decay on matrices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from kopretrain.errors import UserError
from kopretrain.train.stages import RowFreeze, StagePlan

_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_MODULES: dict[str, list[str]] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "gemma": _LLAMA, "gemma2": _LLAMA, "qwen3": _LLAMA,
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
"""model_type -> every linear of a decoder layer (the default `peft.target_modules`)."""
ADAPTER_INFO = "kopretrain_adapter.json"
"""Beside an exported adapter: the base model and the embedding rows to resize it to before loading."""


@dataclass
class LoraPlan:
    """The LoRA settings the workers apply (decided on the driver; picklable)."""

    r: int
    alpha: float
    dropout: float
    target_modules: list[str]
    train_new_rows: bool = True
    new_rows: list[int] = field(default_factory=list)
    """Token ids whose embedding (and output) rows train fully: [num_base_rows, num_rows)."""
    export: str = "merged"


def lora_targets(model_type: str, configured: list[str]) -> list[str]:
    """`configured`, or the architecture's default; a one-line UserError for an unknown one."""
    if configured:
        return list(configured)
    if model_type not in TARGET_MODULES:
        raise UserError(f"peft.target_modules: no default for model_type {model_type!r} "
                        f"(known: {', '.join(sorted(TARGET_MODULES))}); set e.g. peft.target_modules=[q_proj,v_proj]")
    return list(TARGET_MODULES[model_type])


def _module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def lora_config(model: torch.nn.Module, plan: LoraPlan):
    """peft's LoraConfig for `model` (the HF model, before get_peft_model)."""
    from peft import LoraConfig

    rows = None
    if plan.new_rows:
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
        rows = {_module_name(model, inp): list(plan.new_rows)}
        if out is not None and out.weight is not inp.weight:  # tied: peft shares the input rows
            rows[_module_name(model, out)] = list(plan.new_rows)
    return LoraConfig(r=plan.r, lora_alpha=plan.alpha, lora_dropout=plan.dropout, target_modules=list(plan.target_modules),
                      trainable_token_indices=rows, bias="none", task_type="CAUSAL_LM")


def with_new_rows(plan: LoraPlan, num_base_rows: int | None, num_rows: int) -> LoraPlan:
    """`plan` with its trained rows filled in: [num_base_rows, num_rows) with `train_new_rows`, else none."""
    import dataclasses

    base_rows = min(num_base_rows or num_rows, num_rows)
    return dataclasses.replace(plan, new_rows=list(range(base_rows, num_rows)) if plan.train_new_rows else [])


def apply_lora(model: torch.nn.Module, plan: LoraPlan, low_cpu_mem_usage: bool = False):
    """The PeftModel around `model`: base weights frozen, adapters (and new rows) trainable.

    `low_cpu_mem_usage`: the adapters are created on the meta device (a meta `model`, loaded in
    place: kopretrain/train/model_init_lora.py); otherwise call `init_lora_weights` after this."""
    from peft import get_peft_model

    if getattr(model, "is_gradient_checkpointing", False):
        model.enable_input_require_grads()  # reentrant checkpointing needs an input that requires grad
    try:
        return get_peft_model(model, lora_config(model, plan), low_cpu_mem_usage=low_cpu_mem_usage)
    except ValueError as exc:  # e.g. a target module the model does not have
        raise UserError(f"peft.target_modules: {str(exc).splitlines()[0]}") from None


@torch.no_grad()
def init_lora_weights(model: torch.nn.Module, seed: int) -> None:
    """peft's default adapter init, seeded: lora_A kaiming-uniform (a=sqrt(5)) from a generator
    seeded with `seed`, drawn in full on the CPU in parameter order, lora_B zeros. The same values
    on every rank and whether the model was built whole or in place (this rank writes its shard
    of a DTensor; peft's `reset_lora_parameters` would draw a DTensor's values differently)."""
    import math

    from kopretrain.train.shards import local_shard

    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if not is_adapter(name):
            continue
        local, index = local_shard(param)
        if "lora_A" in name:
            full = torch.empty(tuple(param.shape))
            torch.nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=generator)
            local.copy_(full[index])
        else:
            local.zero_()


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether `model` is (or wraps) a peft model."""
    return hasattr(model, "peft_config")  # a PeftModel (also once FSDP2 has swapped its class)


def is_new_rows(name: str) -> bool:
    return "trainable_tokens_delta" in name


def is_adapter(name: str) -> bool:
    return "lora_A" in name or "lora_B" in name


def plan_adapter_stage(model: torch.nn.Module, trainable: str, weight_decay: float) -> StagePlan:
    """`new_embeddings`: the new rows only (no decay); `all`: adapters + new rows."""
    if trainable == "new_embeddings":
        names = {n for n, _ in model.named_parameters() if is_new_rows(n)}
        return StagePlan(names, 0.0, RowFreeze())
    names = {n for n, _ in model.named_parameters() if is_new_rows(n) or is_adapter(n)}
    return StagePlan(names, weight_decay, RowFreeze())


def count_trainable(model: torch.nn.Module) -> int:
    """Elements of the adapters and new rows (stage `all`)."""
    return sum(p.numel() for n, p in model.named_parameters() if is_new_rows(n) or is_adapter(n))


def _rebuild(state_dict: dict, plan: LoraPlan, model_config):
    """The PeftModel on CPU with `state_dict` (a full PeftModel state dict) loaded."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
        model = apply_lora(base, plan)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True, strict=False)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    assert not missing, f"export is missing weights: {missing[:5]}"
    return model


def export_adapted(state_dict: dict, plan: LoraPlan, base_name: str, model_config, tokenizer_dir: str, out_dir: Path) -> Path:
    """`merged`: out_dir is a plain HF model (adapters and rows merged); `adapter`: out_dir/adapter
    (peft's adapter_model.safetensors + adapter_config.json, the new rows included); `both`."""
    import json

    from transformers import AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    model = _rebuild(state_dict, plan, model_config)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if plan.export in ("adapter", "both"):
        adapter_dir = out_dir / "adapter"
        model.peft_config["default"].base_model_name_or_path = base_name
        model.save_pretrained(adapter_dir, save_embedding_layers=False)  # the new rows are the trainable tokens
        tokenizer.save_pretrained(adapter_dir)
        rows = model.get_input_embeddings().weight.shape[0]
        info = {"base_model": base_name, "num_rows": rows, "new_rows": [plan.new_rows[0], plan.new_rows[-1] + 1] if plan.new_rows else []}
        (adapter_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    if plan.export in ("merged", "both"):
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return out_dir


def load_adapter(adapter_dir: str | Path):
    """An exported adapter on its base model (resized to the exported rows), for inference or tests."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    info = json.loads((Path(adapter_dir) / ADAPTER_INFO).read_text())
    base = AutoModelForCausalLM.from_pretrained(info["base_model"], dtype=torch.float32)
    base.resize_token_embeddings(info["num_rows"], mean_resizing=False)  # the new rows come from the adapter
    return PeftModel.from_pretrained(base, str(adapter_dir))
