"""`strategy=fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`), parameters sharded over workers.

Each decoder layer (the classes in the HF model's `_no_split_modules`) is its own FSDP unit,
then the root (embeddings, final norm, lm_head: tied weights stay in one unit). Parameters
become DTensors sharded on dim 0; forward all-gathers a layer, backward reduce-scatters its
gradients. On GPU, `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` computes in
bf16 while the sharded master weights and AdamW state stay fp32.

- Accumulation: `set_requires_gradient_sync(last)` skips the reduce-scatter on all but the
  last micro-batch.
- Frozen rows: the sharded gradient holds rows [offset, offset + local) of the full matrix on
  this rank; rows below `num_base_rows` are zeroed by global index.
- Checkpoints: torch.distributed.checkpoint (DCP): every rank writes its own shard files
  (`__<rank>_0.distcp`), rank 0 the metadata; Ray Train merges the ranks' directories.
- Export: the full state dict is gathered to rank 0 (`full_state_dict=True, cpu_offload=True`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from kopretrain.train.strategies.base import Strategy


def hsdp_node_warning(node_ranks: list[int], replicas: int) -> str | None:
    """A line naming the HSDP shard groups that span several nodes, or None when each lies in one node.

    `node_ranks[i]`: the node of global rank i (Ray Train's `get_node_rank()`); the mesh's shard
    groups are the `replicas` blocks of len(node_ranks) / replicas consecutive ranks. A group
    across nodes all-gathers every layer's parameters over the inter-node network, which HSDP is
    meant to avoid (it happens when the nodes hold unequal numbers of workers, or r is not the
    number of nodes).
    """
    size = len(node_ranks) // replicas
    split = []
    for g in range(replicas):
        nodes = sorted(set(node_ranks[g * size : (g + 1) * size]))
        if len(nodes) > 1:
            split.append(f"shard group {g} (ranks {g * size}-{(g + 1) * size - 1}) spans nodes {', '.join(map(str, nodes))}")
    if not split:
        return None
    counts = {n: node_ranks.count(n) for n in sorted(set(node_ranks))}
    return (f"strategy.hsdp_replicate_degree={replicas}: " + "; ".join(split) + ": its parameter all-gathers cross "
            f"nodes (workers per node: {', '.join(f'{n}: {c}' for n, c in counts.items())}); for HSDP as meant, set it "
            f"to the number of nodes ({len(counts)}) with as many workers on each")


class FSDPStrategy(Strategy):
    """Fully sharded data parallel, FSDP2."""

    name = "fsdp"

    def _fully_shard_kwargs(self) -> dict:
        """The keyword arguments of every `fully_shard` call: mesh, resharding, precision, offload.

        HSDP (`hsdp_replicate_degree` r > 1): a 2-D mesh (replicate=r, shard=world/r); each group of
        world/r consecutive ranks (one node: Ray Train numbers a node's workers consecutively)
        shards the model, the r groups replicate it; gradients reduce-scatter within a group and
        all-reduce across groups. `offload_params`: CPUOffloadPolicy keeps the sharded parameters,
        their gradients and the optimizer step in CPU memory, copying each unit to the device to
        all-gather it.
        """
        replicas = self.s.hsdp_replicate_degree
        if replicas > 1:
            assert self.s.world_size % replicas == 0, (self.s.world_size, replicas)
            mesh = init_device_mesh(self.s.device.type, (replicas, self.s.world_size // replicas),
                                    mesh_dim_names=("replicate", "shard"))
        else:
            mesh = init_device_mesh(self.s.device.type, (self.s.world_size,))
        self.mesh_shape = dict(zip(mesh.mesh_dim_names or ("shard",), mesh.shape))  # for the report
        kwargs = {"mesh": mesh, "reshard_after_forward": self.s.reshard_after_forward}
        if self.s.autocast_dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.s.autocast_dtype, reduce_dtype=torch.float32)
        if self.s.offload_params:
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=self.s.device.type == "cuda")
        return kwargs

    def wrap(self, model: torch.nn.Module) -> None:
        # The model stays on CPU: fully_shard moves each unit to the mesh's device as it shards
        # it, so a GPU holds one unsharded layer at a time, never the whole model.
        kwargs = self._fully_shard_kwargs()
        block_names = set(getattr(model, "_no_split_modules", None) or [])
        assert block_names, f"{type(model).__name__} does not name its decoder layers (_no_split_modules)"
        for module in model.modules():
            if type(module).__name__ in block_names:
                fully_shard(module, **kwargs)
        fully_shard(model, **kwargs)
        self.module = self.model = model

    def _place(self, model: torch.nn.Module) -> None:
        """A meta-device model: shard it, then allocate only this rank's shards (in CPU memory when offloading)."""
        from kopretrain.train.model_init import materialize

        self.wrap(model)
        materialize(model, torch.device("cpu") if self.s.offload_params else self.s.device)

    def _autocast(self):
        return contextlib.nullcontext()  # FSDP2 casts parameters itself (MixedPrecisionPolicy)

    def forward_backward(self, batch, last: bool, scale=None) -> torch.Tensor:
        self.model.set_requires_gradient_sync(last)
        return super().forward_backward(batch, last, scale)

    def _zero_frozen_rows(self) -> None:
        named = dict(self.module.named_parameters())
        for name in self.freeze.param_names:
            grad = named[name].grad
            if grad is None:
                continue
            assert isinstance(grad, DTensor)
            _, offset = compute_local_shape_and_global_offset(grad.shape, grad.device_mesh, grad.placements)
            local = grad.to_local()
            num_frozen_here = min(max(self.freeze.num_base_rows - offset[0], 0), local.shape[0])
            local[:num_frozen_here].zero_()

    def _clip(self, params: list[torch.nn.Parameter]) -> torch.Tensor:
        max_norm = self.s.max_grad_norm if self.s.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False).detach()
        return norm.full_tensor() if isinstance(norm, DTensor) else norm  # already Replicate: no collective

    # ------------------------------------------------------------ state
    def save(self, directory: Path) -> None:
        model_sd, optim_sd = get_state_dict(self.module, self.optimizer)
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(directory / "fsdp"))

    def load(self, directory: Path, with_optimizer: bool) -> None:
        if with_optimizer:
            model_sd, optim_sd = get_state_dict(self.module, self.optimizer)
            state = {"model": model_sd, "optimizer": optim_sd}
            dcp.load(state, checkpoint_id=str(directory / "fsdp"))
            set_state_dict(self.module, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        else:
            state = {"model": get_model_state_dict(self.module)}
            dcp.load(state, checkpoint_id=str(directory / "fsdp"))
            set_model_state_dict(self.module, state["model"])

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        sd = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.s.rank == 0 else None
