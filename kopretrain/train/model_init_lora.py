"""LoRA (peft=lora) loaded in place, as every other pretrained run: no full model on any rank.

    model = meta_model(plan, adapted=True)   # model_init: the meta model, then `adapt`: peft around it,
                                             # adapters and new-row deltas on the meta device too
    ... the strategy places it (allocated on the device; FSDP2: sharded first)
    load_weights(model, ckpt, plan, seed)    # model_init: the base weights and new rows as without LoRA,
                                             # then `fill_adapters`: lora_A / lora_B and the new-row deltas

What the full path (`build_model`: from_pretrained, resize, `apply_lora` + `init_lora_weights`)
builds, bitwise (tests/train/test_lora_in_place.py):
- base weights and the new embedding rows: `load_weights`, reading peft's base tensors under the
  base model's names (`base_name`);
- adapters: `adapters.init_lora_weights(model, seed)` in both paths (lora_A drawn in full on the
  CPU from a generator seeded with the run's seed, this rank's shard written; lora_B zeros). peft's
  `reset_lora_parameters` would draw a DTensor shard's values differently from the whole matrix;
- the trainable tokens (peft `trainable_token_indices`): each `trainable_tokens_delta` (a
  parameter, sharded by FSDP2) and `trainable_tokens_original` (a buffer, not in the state dict)
  hold the rows of the loaded matrix at the token ids, as peft's `update_layer` copies them from
  a real matrix. They come from the checkpoint rows and the new rows' values `load_weights` computed
  (`model_init.embedding_values`), so no rank gathers the sharded matrix.

ZeRO-3 is refused with LoRA on the driver; ZeRO-2, DDP and local hold a replica, FSDP2 a shard.
"""

from __future__ import annotations

import re

import torch

from kopretrain.train.model import ModelPlan

_WRAPPED = re.compile(r"\.(token_adapter\.)?base_layer(?=\.)")
PEFT_PREFIX = "base_model.model."


def adapt(model: torch.nn.Module, plan: ModelPlan):
    """The peft model around meta `model`, adapters on the meta device; fills `plan.lora`'s rows (as build_model)."""
    from kopretrain.train.adapters import apply_lora, with_new_rows

    plan.lora = with_new_rows(plan.lora, plan.num_base_rows, plan.num_rows)
    return apply_lora(model, plan.lora, low_cpu_mem_usage=True)


def base_name(name: str) -> str | None:
    """The base model's state-dict name of a peft model's tensor; None for an adapter or a new-row delta."""
    from kopretrain.train.adapters import is_adapter

    if is_adapter(name) or "trainable_tokens_" in name:
        return None
    return _WRAPPED.sub("", name.removeprefix(PEFT_PREFIX))


def shared_parameters(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> the name it shares its tensor with (a tied lm_head's, under peft's wrappers)."""
    first: dict[int, str] = {}
    shared = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            shared[name] = first[id(param)]
        first.setdefault(id(param), name)
    return shared


def retie(model: torch.nn.Module, shared: dict[str, str]) -> None:
    """After `to_empty` (which allocates each module's parameters apart): share them again."""
    for name, source in shared.items():
        module, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(module), attr, model.get_parameter(source))


def rows_as_loaded(name: str, ckpt, model: torch.nn.Module, plan: ModelPlan, embeddings: dict, ids: list[int]) -> torch.Tensor:
    """[len(ids), hidden] fp32: rows `ids` of the matrix `name` (a peft base tensor) as load_weights wrote it."""
    if name in embeddings:  # resized: the checkpoint rows, then the new rows' values over them
        rows, values = embeddings[name]
        where = {row: k for k, row in enumerate(plan.new_rows.rows)}
    else:
        rows, values, where = ckpt.read(ckpt.key_for(base_name(name), model.base_model_prefix)).float(), None, {}
    missing = [i for i in ids if i not in where and i >= rows.shape[0]]
    assert not missing, f"{name}: rows {missing[:3]} are neither in the checkpoint nor new"
    out = torch.empty(len(ids), rows.shape[1])
    old = [k for k, i in enumerate(ids) if i not in where]
    new = [k for k, i in enumerate(ids) if i in where]
    if old:
        out[old] = rows[[ids[k] for k in old]]
    if new:
        out[new] = values[[where[ids[k]] for k in new]]
    return out


@torch.no_grad()
def fill_adapters(model: torch.nn.Module, ckpt, plan: ModelPlan, embeddings: dict, seed: int) -> None:
    """After the base weights: the seeded adapters, and each new-row delta and its original from the loaded rows."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from kopretrain.train.adapters import init_lora_weights
    from kopretrain.train.shards import local_shard

    init_lora_weights(model, seed)
    for module_name, module in model.named_modules():
        if not isinstance(module, TrainableTokensLayer) or module.tied_adapter is not None:
            continue  # a tied output layer's adapter shares the input embedding's delta
        for adapter, ids in module.token_indices.items():
            values = rows_as_loaded(f"{module_name}.base_layer.weight", ckpt, model, plan, embeddings, list(ids))
            delta = module.trainable_tokens_delta[adapter]
            local, index = local_shard(delta)
            local.copy_(values[index].to(local.dtype))
            original = module.trainable_tokens_original[adapter]
            device = local.device if original.is_meta else original.device  # meta: the strategy placed no value
            module.trainable_tokens_original[adapter] = values.to(device, delta.dtype)
