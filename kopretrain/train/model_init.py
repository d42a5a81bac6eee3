"""Build a pretrained model the way a strategy holds it, reading only what this rank keeps.

    ckpt = Checkpoint.find(plan.name_or_path)         # the safetensors files (None: not loadable this way;
                                                      # .bin: converted on the driver, kopretrain/train/convert_bin.py)
    model = meta_model(plan)                          # parameters on the meta device, buffers real
    ... the strategy shards it (FSDP2: fully_shard), then materialize(model, device)
    load_weights(model, ckpt, plan)                   # each parameter (or this rank's DTensor shard) from the files

Nothing here holds the whole model per rank: a parameter that is a DTensor (FSDP2) gets only
its local rows, read with safetensors' `get_slice` (mmap; the same reads as torch's
`HuggingFaceStorageReader`, which refuses a resized embedding matrix, so it is not used);
ZeRO-3 builds under `deepspeed.zero.Init` and fills one gathered parameter at a time from rank
0 (`load_weights_zero3`); a full replica (local, DDP, ZeRO-2) is materialised on its device and
filled in place, without a second host copy. All of it runs inside `compact_host_memory` (glibc:
freed full-size tensors go back to the OS instead of staying in the heap). LoRA (peft=lora):
`meta_model(plan, adapted=True)` wraps the meta model with peft, adapters on the meta device too;
`load_weights` fills the base and then the adapters and new-row deltas (kopretrain/train/model_init_lora.py).

The new vocabulary rows are written in the same pass: the driver decided which rows are new
and from which base pieces (`ModelPlan.new_rows`, kopretrain.tokenizer.embeddings.plan_new_rows);
each rank reads the base rows of the embedding matrices once, computes the new rows with
`new_row_values` and writes those that fall in its shard (`write_rows`). The values are exactly
those of the full-model path (`build_model` + `resize_and_init`), tested in
tests/train/test_model_init.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kopretrain.train.model import ModelPlan
from kopretrain.train.shards import local_shard

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class Checkpoint:
    """The safetensors weights of a Hugging Face model directory: tensor name -> file."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    @classmethod
    def find(cls, name_or_path: str) -> Checkpoint | None:
        """The checkpoint of a local directory or a hub id (downloaded into the HF cache); None without safetensors."""
        directory = Path(name_or_path)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors"]))
        if (directory / INDEX).is_file():
            weight_map = json.loads((directory / INDEX).read_text())["weight_map"]
            return cls({k: directory / v for k, v in weight_map.items()})
        if (directory / SINGLE).is_file():
            from safetensors import safe_open

            with safe_open(str(directory / SINGLE), framework="pt") as f:
                return cls({k: directory / SINGLE for k in f.keys()})
        return None

    def read(self, key: str, index: tuple[slice, ...] | None = None) -> torch.Tensor:
        """The tensor (or its `index` slice, read alone), as stored."""
        from safetensors import safe_open

        with safe_open(str(self.files[key]), framework="pt") as f:
            part = f.get_slice(key)
            return part[index] if index is not None else part[:]

    def key_for(self, name: str, prefix: str) -> str | None:
        """The checkpoint key of model state-dict key `name` (checkpoints saved from the base model lack its prefix)."""
        for key in (name, name.removeprefix(f"{prefix}."), f"{prefix}.{name}"):
            if key in self.files:
                return key
        return None


def missing_keys(model: torch.nn.Module, ckpt: Checkpoint) -> list[str]:
    """State-dict keys of `model` the checkpoint lacks (a tied output layer needs none)."""
    tied = _tied(model)
    out = model.get_output_embeddings()
    out_names = {n + ".weight" for n, m in model.named_modules() if out is not None and m is out}
    return [k for k in model.state_dict() if ckpt.key_for(k, model.base_model_prefix) is None and not (tied and k in out_names)]


def sharded_checkpoint(plan: ModelPlan) -> tuple[Checkpoint | None, str]:
    """(the checkpoint to read in place, "") or (None, why the full-model path is taken)."""
    if not plan.name_or_path:
        return None, "from scratch"
    ckpt = Checkpoint.find(plan.safetensors_dir or plan.name_or_path)  # safetensors_dir: the driver's .bin conversion
    if ckpt is None:
        return None, "no safetensors"
    missing = missing_keys(meta_model(plan), ckpt)
    if missing:
        return None, f"the checkpoint lacks {missing[0]}"
    return ckpt, ""


def retied_keys(plan: ModelPlan) -> list[str]:
    """Names the model re-ties from another parameter (a tied output layer), with and without the base model's prefix."""
    model = meta_model(plan)
    seen: set[int] = set()
    names = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            names |= {name, name.removeprefix(f"{model.base_model_prefix}.")}
        seen.add(id(param))
    return sorted(names)


def _tied(model: torch.nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is None or _matrix(out) is _matrix(model.get_input_embeddings())


def _matrix(layer: torch.nn.Module) -> torch.Tensor:
    """The weight parameter of an embedding or output layer (peft's TrainableTokensWrapper: of the layer it wraps)."""
    return getattr(layer, "original_module", layer).weight


def model_config(plan: ModelPlan):
    """The HF config of the model the workers train (vocabulary: the final number of rows)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(plan.name_or_path)
    config.vocab_size = plan.num_rows
    config.use_cache = False
    return config


def finish(model: torch.nn.Module, plan: ModelPlan) -> torch.nn.Module:
    """What build_model does after the weights: tied weights, gradient checkpointing, no KV cache."""
    model.tie_weights()
    if plan.gradient_checkpointing:  # as build_model: non-reentrant checkpointing around each decoder layer
        model.activation_checkpointing_enable()
    model.train()
    model.config.use_cache = False
    return model


def meta_model(plan: ModelPlan, adapted: bool = False) -> torch.nn.Module:
    """The model with its parameters on the meta device (buffers such as rotary tables real, on CPU);
    `adapted` and LoRA: the peft model around it (model_init_lora.adapt; sets plan.lora's rows)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(model_config(plan), dtype=torch.float32)
    model = finish(model, plan)
    if adapted and plan.lora is not None:
        from kopretrain.train.model_init_lora import adapt

        model = adapt(model, plan)
    return model


def materialize(model: torch.nn.Module, device: torch.device) -> None:
    """Allocate the (possibly sharded) meta parameters on `device`, keeping the buffers' values
    (meta buffers, peft's trainable_tokens_original: load_weights fills them)."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if not b.is_meta}
    adapted = hasattr(model, "peft_config")
    if adapted:  # peft hides the tied names from HF's tie_weights: re-tie what was shared
        from kopretrain.train.model_init_lora import retie, shared_parameters

        shared = shared_parameters(model)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, value in buffers.items():
            model.get_buffer(name).copy_(value)
    if adapted:
        retie(model, shared)
    else:
        model.tie_weights()


def _key(ckpt: Checkpoint, model: torch.nn.Module, name: str) -> str | None:
    """The checkpoint key of a state-dict name of `model` (a peft model: model_init_lora.base_name; None for adapters)."""
    if hasattr(model, "peft_config"):
        from kopretrain.train.model_init_lora import base_name

        name = base_name(name)
    return None if name is None else ckpt.key_for(name, model.base_model_prefix)


def embedding_values(model: torch.nn.Module, ckpt: Checkpoint, plan: ModelPlan) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Embedding state-dict key -> (its checkpoint rows [old_rows, hidden], its new rows' values) when rows are added."""
    from kopretrain.tokenizer.embeddings import new_row_values

    if plan.new_rows is None:
        return {}
    matrices = {id(_matrix(model.get_input_embeddings())): "mean"}
    if not _tied(model):
        matrices[id(_matrix(model.get_output_embeddings()))] = plan.new_rows_init
    out = {}
    for name, param in model.named_parameters():
        if id(param) in matrices:
            rows = ckpt.read(_key(ckpt, model, name)).float()
            out[name] = (rows, new_row_values(rows[: plan.new_rows.num_base], plan.new_rows, matrices[id(param)]))
    return out


@torch.no_grad()
def load_weights(model: torch.nn.Module, ckpt: Checkpoint, plan: ModelPlan, seed: int = 0) -> None:
    """Fill every parameter (or this rank's shard of it) and persistent buffer from the checkpoint, new rows included;
    a peft model: then its adapters (seeded by `seed`) and new-row deltas (model_init_lora.fill_adapters)."""
    from kopretrain.tokenizer.embeddings import write_rows

    embeddings = embedding_values(model, ckpt, plan)
    params = dict(model.named_parameters())
    done: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = _key(ckpt, model, name)
        if key is None or id(tensor) in done:  # a tied output layer (missing_keys checked the rest), an adapter
            continue
        done.add(id(tensor))
        local, index = local_shard(tensor)
        offset = tuple(i.start for i in index)
        if name in embeddings:
            rows, values = embeddings[name]
            held = min(max(rows.shape[0] - offset[0], 0), local.shape[0])  # rows below old_rows in this shard
            local[:held].copy_(rows[offset[0]: offset[0] + held, *index[1:]])
            write_rows(params[name], plan.new_rows.rows, values)
        else:
            local.copy_(ckpt.read(key, index) if local.dim() else ckpt.read(key))
        del local
    if hasattr(model, "peft_config"):
        from kopretrain.train.model_init_lora import fill_adapters

        fill_adapters(model, ckpt, plan, embeddings, seed)


@torch.no_grad()
def load_weights_zero3(model: torch.nn.Module, ckpt: Checkpoint, plan: ModelPlan, rank: int) -> None:
    """ZeRO-3 (a model built under deepspeed.zero.Init): rank 0 fills one gathered parameter at a time."""
    import deepspeed

    from kopretrain.tokenizer.embeddings import write_rows

    embeddings = embedding_values(model, ckpt, plan) if rank == 0 else {}
    for name, param in model.named_parameters():
        key = ckpt.key_for(name, model.base_model_prefix)
        if key is None:
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            if rank != 0:
                continue
            if name in embeddings:
                rows, values = embeddings[name]
                param.data[: rows.shape[0]].copy_(rows)
                write_rows(param.data, plan.new_rows.rows, values)
            else:
                param.data.copy_(ckpt.read(key))
    persistent = set(model.state_dict().keys())
    for name, buf in model.named_buffers():  # buffers are not partitioned
        key = ckpt.key_for(name, model.base_model_prefix)
        if key is not None and name in persistent:
            buf.copy_(ckpt.read(key))


def build_info(model: torch.nn.Module, plan: ModelPlan, mode: str) -> dict:
    """What build_model reports: parameter count (full, also when sharded; LoRA: the base's), vocabulary, resize."""
    from kopretrain.train.adapters import count_trainable, is_adapter, is_new_rows

    base = [p for n, p in model.named_parameters() if not (is_adapter(n) or is_new_rows(n))]
    info = {"num_params": sum(int(getattr(p, "ds_numel", 0) or p.numel()) for p in base), "vocab_size": plan.num_rows, "load": mode}
    if plan.lora is not None:
        info["num_trainable_params"] = count_trainable(model)
    if plan.new_rows is not None:
        info["resize"] = plan.new_rows.info(_tied(model), plan.new_rows_init)
    return info
