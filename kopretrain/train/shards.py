"""This rank's part of a parameter: a DTensor's local shard (FSDP2) or the whole tensor (a replica).

    local, index = local_shard(param)   # write values[index] into local, whatever the strategy

A leaf module (torch only): model_init, model_init_lora and adapters all write rows into shards.
"""

from __future__ import annotations

import torch


def local_tensor(param: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(the tensor this rank holds, its global offset): a DTensor's local shard, or the tensor itself."""
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        local = param.to_local()
        assert tuple(local.shape) == tuple(shape), f"unexpected shard layout {tuple(local.shape)} vs {tuple(shape)}"
        return local, tuple(offset)
    return param.data, (0,) * param.dim()


def local_shard(param: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """(the tensor this rank holds, its index in the full tensor)."""
    local, offset = local_tensor(param)
    return local, tuple(slice(o, o + n) for o, n in zip(offset, local.shape))
