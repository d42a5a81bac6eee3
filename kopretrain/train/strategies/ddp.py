"""`strategy=ddp`: a full replica per worker, gradients all-reduced (torch DistributedDataParallel).

The DDP wrapper is rebuilt at every stage, because DDP registers its gradient hooks for the
parameters that require grad when it is constructed, and a `new_embeddings` stage freezes
everything but the embeddings. Accumulation micro-batches skip the all-reduce (`no_sync`);
the last one syncs. State is replicated, so rank 0 saves it (base.Strategy.save).
"""

from __future__ import annotations

import contextlib

from torch.nn.parallel import DistributedDataParallel

from kopretrain.train.strategies.base import RowFreeze, Strategy


class DDPStrategy(Strategy):
    """Data parallel with replicated parameters and optimizer state."""

    name = "ddp"

    def start_stage(self, param_groups: list[dict], freeze: RowFreeze) -> None:
        device_ids = [self.s.device.index] if self.s.device.type == "cuda" else None
        # broadcast_buffers=False: the only buffers are rotary tables, identical on every rank.
        self.model = DistributedDataParallel(self.module, device_ids=device_ids, broadcast_buffers=False)
        super().start_stage(param_groups, freeze)

    def _no_sync(self, last: bool):
        return contextlib.nullcontext() if last else self.model.no_sync()
